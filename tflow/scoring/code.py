"""Code's answer kind: the completion is run against the benchmark's tests, in the sandbox (`sandbox.py`).

The code is the completion's last fenced block (```python or plain ```), else the whole completion (thinking
removed). The program run is:
- HumanEval / HumanEval+ (`entry_point` given): the problem's prompt (its imports, helpers and the stub), then the
  code, then the tests and `check(entry_point)`. A completion that redefines the entry point (a whole function,
  as chat models write) replaces the stub, whose docstring alone is a valid body; a completion that continues the
  stub (an indented body) completes it.
- MBPP+ (no entry point): the test imports, the code, then the tests (module-level asserts).
Passing means the program exits 0 within the sandbox's limits.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .sandbox import Limits, Outcome, Sandbox
from .thinking import strip_thinking

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.S)


@dataclass(frozen=True)
class CodeTests:
    """What a code item is checked with: the tests, and for function-completion benchmarks the prompt and entry
    point."""

    test: str
    prompt: str = ""
    entry_point: str = ""
    imports: tuple[str, ...] = ()


def extract_code(completion: str) -> str:
    """The code of a completion: its last fenced block (an unclosed one runs to the end), else all of it."""
    text = strip_thinking(completion)
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def program(completion: str, tests: CodeTests) -> str:
    """The whole program that decides a completion."""
    code = extract_code(completion)
    if tests.entry_point:
        if not code.startswith((" ", "\t")) and not re.search(rf"^def {re.escape(tests.entry_point)}\b", code, re.M):
            code = "    " + code.replace("\n", "\n    ")  # an unindented body: the stub's
        return f"{tests.prompt}{code}\n\n{tests.test}\n\ncheck({tests.entry_point})\n"
    return "\n".join([*tests.imports, code, "", tests.test, ""])


def run(completions: Sequence[str], tests: Sequence[CodeTests], limits: Limits | None = None,
        workers: int | None = None) -> list[Outcome]:
    """Each completion against its tests, in parallel up to `workers` (default: the cores)."""
    sandbox = Sandbox(limits or Limits(), workers)
    return sandbox.run_all([program(c, t) for c, t in zip(completions, tests, strict=True)])


def score(completions: Sequence[str], tests: Sequence[CodeTests], limits: Limits | None = None) -> list[bool]:
    return [o.passed for o in run(completions, tests, limits)]
