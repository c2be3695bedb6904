"""The paper's benchmarks load by name (a local copy in the hub's schema, or HumanEval from its package) and score;
procedural reasoning-gym tasks have seeded, disjoint splits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tflow import tasks
from tflow.tasks import benchmarks, procedural

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
HUB = ["gsm8k", "math", "mmlu-redux", "mbpp+", "humaneval+"]


def _reference_completion(ex: tasks.Example) -> str:
    """What a perfect model would write for a fixture item."""
    if ex.kind == "code":
        code = ex.grading.get("prompt", "") + ex.answer
        return f"Here it is:\n```python\n{code}```"
    if ex.kind == "choice":
        return f"<think>Thinking about it at length first.</think>The answer is \\boxed{{{ex.answer}}}."
    final = tasks.extract_answer(ex.answer) if ex.kind == "number" else ex.answer
    return f"Working... \\boxed{{{final}}}"


@pytest.mark.parametrize("name", HUB)
def test_each_hub_benchmark_loads_from_a_local_copy_in_the_hubs_schema_and_scores(name):
    items = tasks.examples(name, "test", None, dataset_path=str(FIXTURES / name))
    assert items and all(e.kind == benchmarks.BENCHMARKS[name].kind for e in items)
    assert all(tasks.grade(items, [_reference_completion(e) for e in items]))
    assert not any(tasks.grade(items, ["I do not know."] * len(items)))


def test_humaneval_needs_no_flag_its_problems_come_from_the_installed_package():
    items = tasks.examples("humaneval", "test", None)
    assert len(items) == 164 and items[0].grading["id"] == "HumanEval/0"
    first = items[:8]
    assert all(tasks.grade(first, [e.answer for e in first])), "the canonical solutions pass their own tests"


def test_mmlu_redux_keeps_the_ok_items_and_its_all_variant_flags_the_rest():
    ok = tasks.examples("mmlu-redux", "test", None, dataset_path=str(FIXTURES / "mmlu-redux"))
    every = tasks.examples("mmlu-redux-all", "test", None, dataset_path=str(FIXTURES / "mmlu-redux"))
    rows = [json.loads(line) for line in (FIXTURES / "mmlu-redux" / "test.jsonl").read_text().splitlines()]
    assert len(every) == len(rows) > len(ok) == sum(r["error_type"] == "ok" for r in rows)
    assert {e.grading["error_type"] for e in every} > {"ok"}


def test_a_benchmark_without_a_train_split_says_so_and_gsm8k_trains_on_its_own():
    with pytest.raises(ValueError, match="no train split"):
        tasks.examples("mmlu-redux", "train", None, dataset_path=str(FIXTURES / "mmlu-redux"))
    draw = tasks.stream("gsm8k", seed=0, dataset_path=str(FIXTURES / "gsm8k"))
    train = {json.loads(line)["question"] for line in (FIXTURES / "gsm8k" / "train.jsonl").read_text().splitlines()}
    assert all(draw().question.split("\n\n")[0] in train for _ in range(5))


def test_a_missing_or_malformed_local_copy_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        tasks.examples("gsm8k", "test", None, dataset_path=str(tmp_path / "nope"))
    (tmp_path / "test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="hub's schema"):
        tasks.examples("gsm8k", "test", None, dataset_path=str(tmp_path))


def test_benchmark_names_ending_in_plus_are_not_mixtures():
    assert tasks.parts("humaneval+") == ["humaneval+"] and tasks.parts("note+note-split") == ["note", "note-split"]
    assert tasks.parts("humaneval++mbpp+") == ["humaneval+", "mbpp+"]


def test_procedural_tasks_are_seeded_disjoint_and_scored_by_their_own_verifier():
    test = procedural.examples("rg:chain_sum", "test", 40, seed=0)
    again = procedural.examples("rg:chain_sum", "test", 40, seed=0)
    train = procedural.examples("rg:chain_sum", "train", 400, seed=0)
    assert [e.question for e in test] == [e.question for e in again]
    assert not {e.question for e in test} & {e.question for e in train}
    assert all(tasks.grade(test[:5], [f"So \\boxed{{{e.answer}}}" for e in test[:5]]))
    assert not any(tasks.grade(test[:5], ["\\boxed{nonsense}"] * 5))
    assert all(tasks.grade(test[:5], [e.target for e in test[:5]]))  # trained on the boxed answer it is asked for
    assert all(e.target == f"\\boxed{{{e.answer}}}" for e in test)
    with pytest.raises(ValueError, match="unknown reasoning-gym dataset"):
        procedural.examples("rg:no_such_thing", "test", 2)


def test_procedural_settings_set_the_difficulty_and_a_small_item_space_says_so():
    easy = procedural.examples("rg:chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1", "test", 5)
    assert all(e.question.count("+") + e.question.count("-") == 1 for e in easy)
    with pytest.raises(ValueError, match="only 37 distinct test items"):
        procedural.examples("rg:chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1", "test", 50)
    with pytest.raises(ValueError, match="not a setting of chain_sum"):
        procedural.examples("rg:chain_sum:digits=1", "test", 1)
