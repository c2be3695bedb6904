"""Checkpoint files: the one owner of their names and of what a checkpoint records.

A generator checkpoint is `generator_config.json` (architecture, config, the receiver's card with the
senders' backbone, provenance) + `generator.safetensors`. A static adapter or a specialist is a PEFT
adapter (`adapter_config.json` + `adapter_model.safetensors`) with `training.json` (its recipe and task)
beside it. `train_state.json` is where a training run stands, for resuming. Everything here reads JSON
only (no torch): which receiver and task a checkpoint was trained for, and its senders' backbone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GENERATOR_CONFIG = "generator_config.json"
GENERATOR_WEIGHTS = "generator.safetensors"
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's names
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINING_RECORD = "training.json"  # a PEFT adapter's recipe: {"task": ..., "config": {"model": ...}, ...}
TRAIN_STATE = "train_state.json"


@dataclass(frozen=True)
class SenderShape:
    """The backbone whose hidden states condition the generator (the senders'), by its shape."""

    name: str
    hidden_size: int
    num_layers: int

    def describe(self) -> str:
        return f"{self.name!r} (hidden {self.hidden_size}, {self.num_layers} layers)"


@dataclass(frozen=True)
class Record:
    """What a checkpoint says it was trained for: its receiver's name, its task and its provenance."""

    receiver: str
    task: str
    meta: dict


def read_record(directory: str | Path, static: bool = False) -> Record | None:
    """The record of a generator (static: a PEFT adapter's training record), or None when there is none to read."""
    directory = Path(directory)
    try:
        if static:
            meta = json.loads((directory / TRAINING_RECORD).read_text())
            return Record(str(meta.get("config", {}).get("model", "")), str(meta.get("task", "")), meta)
        card = json.loads((directory / GENERATOR_CONFIG).read_text())
        meta = dict(card.get("meta", {}))
        return Record(str(card.get("backbone", {}).get("name", "")), str(meta.get("task", "")), meta)
    except (OSError, json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None


def _located(name: str, directory: Path) -> str:
    """A sender recorded as a relative path is relative to where training ran (the repository root): from another
    working directory it is the first folder above the generator's that holds it; else the name as recorded."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return name
    return next((str(up / path) for up in directory.resolve().parents if (up / path).is_dir()), name)


def recorded_sender(directory: str | Path) -> SenderShape | None:
    """The senders' backbone a generator checkpoint records, when it is not its receiver (else None)."""
    try:
        bb = json.loads((Path(directory) / GENERATOR_CONFIG).read_text())["backbone"]
        sc = bb.get("sender")
        if not sc or sc["name"] == bb.get("name"):
            return None
        return SenderShape(_located(str(sc["name"]), Path(directory)), int(sc["hidden_size"]), int(sc["num_layers"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{directory}: unreadable generator config ({e})") from e
