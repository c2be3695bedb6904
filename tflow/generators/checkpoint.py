"""Reading generator checkpoints (safetensors + JSON) of any architecture, validated first.

The JSON's "arch" names the class ("grid" when absent: checkpoints written before there were
two); its "backbone" card must match the backbone the generator is loaded onto, else
`GeneratorMismatchError`; every other defect is a `ValueError` naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from ..lora import TargetSpec
from .base import CONFIG_NAME, WEIGHTS_NAME, Generator, GeneratorMismatchError
from .grid import ParameterGenerator
from .release import ReleaseGenerator

ARCHES: dict[str, type[Generator]] = {cls.arch: cls for cls in (ParameterGenerator, ReleaseGenerator)}


def build_generator(arch: str, config, spec: TargetSpec, backbone_name: str = "", meta: dict | None = None) -> Generator:
    """A freshly initialised generator of architecture `arch`."""
    if arch not in ARCHES:
        raise ValueError(f"unknown generator architecture {arch!r}: choose one of {', '.join(ARCHES)}")
    return ARCHES[arch](config, spec, backbone_name, meta)


def load_generator(directory: str | Path, spec: TargetSpec, backbone_name: str = "") -> Generator:
    """Load the generator saved in `directory` for the backbone described by `spec`."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise ValueError(f"{directory} is not a generator checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        card = json.loads(cfg_path.read_text())
        arch = card.get("arch", "grid")
        if arch not in ARCHES:
            raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHES)})")
        config = ARCHES[arch].config_class(**card["generator"])
        bb = card["backbone"]
        want = {k: tuple(v) for k, v in bb["targets"].items()}
        hidden, layers, trained_on = int(bb["hidden_size"]), int(bb["num_layers"]), str(bb.get("name", ""))
        meta = dict(card.get("meta", {}))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{cfg_path}: invalid generator config ({e})") from e
    if (hidden, layers, want) != (spec.hidden_size, spec.num_layers, dict(spec.modules)):
        raise GeneratorMismatchError(
            f"generator in {directory} was trained for backbone {trained_on!r} "
            f"(hidden {hidden}, {layers} layers, targets {sorted(want)}), but the loaded backbone "
            f"{backbone_name!r} has hidden {spec.hidden_size}, {spec.num_layers} layers, "
            f"targets {sorted(spec.modules)}"
            + ("" if want.keys() != spec.modules.keys() else " with other shapes")
        )
    gen = build_generator(arch, config, spec, backbone_name or trained_on, meta)
    try:
        state = load_file(str(w_path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{w_path}: unreadable safetensors file ({e})") from e
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{w_path}: tensors do not match the config ({str(e).splitlines()[0]})") from e
    return gen
