"""Reading generator checkpoints (safetensors + JSON) of any architecture, validated first.

The JSON's "arch" names the class ("grid" when absent: checkpoints written before there were
two); its "backbone" card must match the receiver the generator is loaded onto, and its
"sender" card (absent: the receiver's own shape) the senders' backbone, else a
`GeneratorMismatchError` naming which; every other defect is a `ValueError` naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from ..checkpoints import GENERATOR_CONFIG, GENERATOR_WEIGHTS, SenderShape
from ..lora import TargetSpec
from .base import Generator, GeneratorMismatchError, ReceiverMismatchError
from .grid import ParameterGenerator
from .release import ReleaseGenerator

ARCHES: dict[str, type[Generator]] = {cls.arch: cls for cls in (ParameterGenerator, ReleaseGenerator)}


def build_generator(arch: str, config, spec: TargetSpec, backbone_name: str = "", meta: dict | None = None,
                    sender: SenderShape | None = None) -> Generator:
    """A freshly initialised generator of architecture `arch` (sender: the senders' backbone, default the receiver)."""
    if arch not in ARCHES:
        raise ValueError(f"unknown generator architecture {arch!r}: choose one of {', '.join(ARCHES)}")
    return ARCHES[arch](config, spec, backbone_name, meta, sender)


def check_generator(directory: str | Path, spec: TargetSpec, backbone_name: str = "",
                    sender: SenderShape | None = None) -> tuple[str, object, dict, str, SenderShape]:
    """Validate the generator checkpoint in `directory` against the receiver (`spec`) and the senders'
    backbone (`sender`; None: the receiver) from its JSON alone, weights unread. Returns (arch, config,
    meta, receiver name, sender shape) for `load_generator`."""
    directory = Path(directory)
    cfg_path = directory / GENERATOR_CONFIG
    if not cfg_path.is_file() or not (directory / GENERATOR_WEIGHTS).is_file():
        raise ValueError(
            f"{directory} is not a generator checkpoint (needs {GENERATOR_CONFIG} and {GENERATOR_WEIGHTS})"
        )
    try:
        card = json.loads(cfg_path.read_text())
        arch = card.get("arch", "grid")
        if arch not in ARCHES:
            raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHES)})")
        config = ARCHES[arch].config_class(**card["generator"])
        bb = card["backbone"]
        want = {k: tuple(v) for k, v in bb["targets"].items()}
        hidden, layers, trained_on = int(bb["hidden_size"]), int(bb["num_layers"]), str(bb.get("name", ""))
        sc = bb.get("sender") or {"name": trained_on, "hidden_size": hidden, "num_layers": layers}
        trained_sender = SenderShape(str(sc["name"]), int(sc["hidden_size"]), int(sc["num_layers"]))
        meta = dict(card.get("meta", {}))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{cfg_path}: invalid generator config ({e})") from e
    if (hidden, layers, want) != (spec.hidden_size, spec.num_layers, dict(spec.modules)):
        raise ReceiverMismatchError(
            f"wrong receiver: generator in {directory} was trained for backbone {trained_on!r} "
            f"(hidden {hidden}, {layers} layers, targets {sorted(want)}), but the loaded backbone "
            f"{backbone_name!r} has hidden {spec.hidden_size}, {spec.num_layers} layers, "
            f"targets {sorted(spec.modules)}"
            + ("" if want.keys() != spec.modules.keys() else " with other shapes")
        )
    sender = sender or SenderShape(backbone_name or trained_on, spec.hidden_size, spec.num_layers)
    if (sender.hidden_size, sender.num_layers) != (trained_sender.hidden_size, trained_sender.num_layers):
        raise GeneratorMismatchError(
            f"wrong sender: generator in {directory} reads the states of sender backbone {trained_sender.describe()}, "
            f"but the senders run on {sender.describe()}"
            + (
                f": pass sender_model={trained_sender.name!r} (--sender-model)"
                if sender.name == (backbone_name or trained_on)
                else ""
            )
        )
    return arch, config, meta, backbone_name or trained_on, sender


def load_generator(
    directory: str | Path, spec: TargetSpec, backbone_name: str = "", sender: SenderShape | None = None
) -> Generator:
    """Load the generator saved in `directory` for the receiver described by `spec` and the
    senders' backbone `sender` (None: the senders run on the receiver)."""
    arch, config, meta, name, sender = check_generator(directory, spec, backbone_name, sender)
    w_path = Path(directory) / GENERATOR_WEIGHTS
    gen = build_generator(arch, config, spec, name, meta, sender)
    try:
        state = load_file(str(w_path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{w_path}: unreadable safetensors file ({e})") from e
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{w_path}: tensors do not match the config ({str(e).splitlines()[0]})") from e
    return gen
