"""The code layout: packages by concern, imports that run only downward, no circles, every module importable alone."""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Units of tflow/ (a root module or a subpackage), bottom to top: each imports only the units before it.
UNITS = ("errors", "allocator", "lru", "checkpoints", "scoring", "tasks", "merge_cost", "cpu_dtype", "lora", "prefix",
         "sources", "agents", "peft_io", "generators", "engines", "results", "pipeline", "diagnostics", "tools",
         "studio")


def modules() -> dict[str, Path]:
    """Every module of tflow/ by its dotted name (a package by its own name)."""
    out = {}
    for path in sorted((ROOT / "tflow").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """The tflow modules a module imports anywhere in its body (relative imports resolved; a name imported from a
    package counts as its submodule when there is one)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else (package if node.level else "")
            module = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


def unit(module: str) -> str:
    return module.split(".")[1] if module != "tflow" else ""


def test_every_module_of_tflow_belongs_to_a_known_unit():
    assert {unit(m) for m in modules()} - {""} == set(UNITS)


def test_imports_run_only_downward_between_units():
    upward = []
    for name, path in modules().items():
        if name == "tflow":
            continue  # the lazy top-level exports name modules as strings, imported on first use
        for dep in imports(name, path):
            if unit(dep) != unit(name) and UNITS.index(unit(dep)) > UNITS.index(unit(name)):
                upward.append(f"{name} -> {dep}")
    assert not upward, "imports up a floor: " + ", ".join(upward)


def test_no_import_circle_between_modules_of_tflow():
    graph = {name: imports(name, path) for name, path in modules().items()}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            pytest.fail("import circle: " + " -> ".join([*trail[trail.index(node):], node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            # a package's __init__ importing its own submodules is how packages work, not a circle
            if not (dep.startswith(node + ".") and ROOT.joinpath(*node.split("."), "__init__.py").exists()):
                visit(dep, [*trail, node])
        done.add(node)

    for name in graph:
        visit(name, [])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_every_module_of_tflow_imports_on_its_own():
    """Each module first in a fresh child process (forked after the heavy third-party imports, so it is quick)."""
    import gradio  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    failed = []
    for name in modules():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: nothing of tflow is imported yet
            os.close(read)
            for loaded in [m for m in sys.modules if m == "tflow" or m.startswith("tflow.")]:
                del sys.modules[loaded]
            try:
                __import__(name)
                message = b""
            except BaseException as e:  # noqa: BLE001 - any failure is the finding
                message = f"{type(e).__name__}: {e}".encode()
            os.write(write, message)
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as r:
            message = r.read().decode()
        os.waitpid(pid, 0)
        if message:
            failed.append(f"{name}: {message}")
    assert not failed, "\n".join(failed)
