"""Which shipped generator a task resolves to when several were trained on it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tflow.checkpoints import GENERATOR_CONFIG
from tflow.tools import catalog


def _generator(root: Path, name: str, task: str, model: str = "smollm2-135m-instruct") -> None:
    d = root / "generators" / name
    d.mkdir(parents=True)
    (d / GENERATOR_CONFIG).write_text(json.dumps({"backbone": {"name": model}, "meta": {"task": task}}))


def test_among_generators_trained_on_a_task_the_first_by_name_is_chosen_whatever_the_listing_order(tmp_path):
    # created in reverse order, so that a file system listing them by creation would offer the later name first
    for name in ("smollm2-shared-copy", "smollm2-shared", "another-receiver"):
        _generator(tmp_path, name, "rg:a+rg:b", model="other-model" if name == "another-receiver" else
                   "smollm2-135m-instruct")
    found = catalog.trained_for("rg:b", "smollm2-135m-instruct", root=tmp_path)
    assert found is not None and found.name == "smollm2-shared"
    assert catalog.trained_for("rg:c", "smollm2-135m-instruct", root=tmp_path) is None


def test_the_generator_named_after_its_task_comes_before_any_other_that_covers_it(tmp_path):
    _generator(tmp_path, "a-mixture", "note+note-split")
    _generator(tmp_path, "note", "note")
    assert catalog.trained_for("note", "smollm2-135m-instruct", root=tmp_path).name == "note"


def test_the_generator_preferred_json_names_for_a_task_comes_first_and_only_for_that_task(tmp_path):
    for name in ("smollm2-kbw4", "smollm2-kbw4-readout"):
        _generator(tmp_path, name, "kb-words@4")
    _generator(tmp_path, "smollm2-kbw5", "kb-words@5")
    assert catalog.trained_for("kb-words@4", "smollm2-135m-instruct", root=tmp_path).name == "smollm2-kbw4"
    (tmp_path / "generators" / catalog.PREFERRED).write_text(
        json.dumps({"kb-words@4": {"generator": "smollm2-kbw4-readout", "why": "its table"}}))
    assert catalog.trained_for("kb-words@4", "smollm2-135m-instruct", root=tmp_path).name == "smollm2-kbw4-readout"
    assert catalog.trained_for("kb-words@5", "smollm2-135m-instruct", root=tmp_path).name == "smollm2-kbw5"
    # a name that does not cover the task (or is absent) is passed over, not trusted
    (tmp_path / "generators" / catalog.PREFERRED).write_text(
        json.dumps({"kb-words@5": {"generator": "smollm2-kbw4-readout"}}))
    assert catalog.trained_for("kb-words@5", "smollm2-135m-instruct", root=tmp_path).name == "smollm2-kbw5"


def test_a_malformed_preferred_json_is_one_readable_error(tmp_path):
    _generator(tmp_path, "smollm2-kbw4", "kb-words@4")
    (tmp_path / "generators" / catalog.PREFERRED).write_text('{"kb-words@4": "smollm2-kbw4"')
    with pytest.raises(ValueError, match="preferred.json: expected"):
        catalog.trained_for("kb-words@4", "smollm2-135m-instruct", root=tmp_path)
