"""Which shipped checkpoint was trained for a (receiver, task): the defaults of `evaluate` and `bench`.

Every checkpoint records its receiver's name and task (`tflow.checkpoints.read_record`); several worlds (the
embedded tiny Qwen3, SmolLM2, ...) share one checkpoints folder.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoints import read_record
from ..sources import known_as, source_checkpoints
from ..tasks import REAL_MODEL_TASKS, SPECIALIST_TASKS, TASKS, checkpoint_name, covers

PREFERRED = "preferred.json"  # beside the generators: which one a task defaults to when several cover it


def trained_for(task: str, model: str, static: bool = False, root: Path | None = None) -> Path | None:
    """The generator (or static adapter) under `root` trained on `task` (alone or in a mixture) for the receiver
    `model`. Among several: the one `preferred` names, then the one named after the task (the embedded world's
    layout), then by name (a directory's listing order is the file system's)."""
    root = root or source_checkpoints()
    folder = root / ("static" if static else "generators")
    first = None if static else preferred(task, root)
    name = checkpoint_name(task)
    want = known_as(model)
    candidates = sorted(folder.iterdir(), key=lambda d: (d.name != first, d.name != name, d.name)) \
        if folder.is_dir() else []
    for d in candidates:
        rec = read_record(d, static)
        if rec is not None and covers(rec.task, task) and known_as(rec.receiver) == want:
            return _short(d)
    return None


def preferred(task: str, root: Path | None = None) -> str | None:
    """The generator folder that `<root>/generators/preferred.json` names for `task`, when several were trained on it
    (the one its table measured best), else None."""
    return preferred_all(root).get(task)


def preferred_all(root: Path | None = None) -> dict[str, str]:
    """Every task's preferred generator folder in `<root>/generators/preferred.json`
    ({"TASK": {"generator": "FOLDER", "why": "..."}}); {} without the file."""
    path = (root or source_checkpoints()) / "generators" / PREFERRED
    if not path.is_file():
        return {}
    try:
        return {task: entry["generator"] for task, entry in json.loads(path.read_text()).items() if entry}
    except (ValueError, AttributeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected {{task: {{\"generator\": folder, \"why\": text}}}} ({e})") from None


def tasks_for(model: str, root: Path | None = None) -> list[str]:
    """The tasks the generators under `root` were trained on for the receiver `model`: the built-in ones in their
    usual order, then any other (a fresh knowledge base kb@N or kb-words@N, a JSONL file) by name."""
    folder = (root or source_checkpoints()) / "generators"
    want = known_as(model)
    recorded = {rec.task for d in (folder.iterdir() if folder.is_dir() else ())
                if (rec := read_record(d)) and rec.task and known_as(rec.receiver) == want}
    order = (*TASKS, *REAL_MODEL_TASKS, *SPECIALIST_TASKS)
    return [t for t in order if t in recorded] + sorted(recorded - set(order))


def _short(path: Path) -> Path:
    """Relative to the working directory when under it (what reports record)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
