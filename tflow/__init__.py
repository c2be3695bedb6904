"""TFlow: weight-space communication between LLM agents.

Frozen role-prompted senders read the query once; a learned parameter generator turns
their hidden states into LoRA factors; the fused perturbation is applied to the
receiver only while it generates from the plain question.

The names below load on first use (PEP 562), so `import tflow.<tool>` pays only for what the
tool imports, and `tflow-studio` can configure the environment before transformers loads.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "agents": ("Agent", "Backbone", "GenerationSettings", "Roles", "load_backbone"),
    "checkpoints": ("SenderShape",),
    "generators": ("Generator", "GeneratorConfig", "GeneratorMismatchError", "ParameterGenerator", "ReleaseConfig",
                   "ReleaseGenerator", "load_generator"),
    "lora": ("Perturbation", "TargetSpec", "apply", "infer_targets"),
    "pipeline": ("MODES", "Pipeline"),
    "results": ("RunResult", "Usage"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'tflow' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
