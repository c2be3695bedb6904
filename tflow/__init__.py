"""TFlow: weight-space communication between LLM agents.

Frozen role-prompted senders read the query once; a learned parameter generator turns
their hidden states into LoRA factors; the fused perturbation is applied to the
receiver only while it generates from the plain question.
"""
from .agents import Agent, Backbone, GenerationSettings, Roles, load_backbone
from .generators import (
    Generator, GeneratorConfig, GeneratorMismatchError, ParameterGenerator, ReleaseConfig, ReleaseGenerator, SenderShape,
    load_generator,
)
from .lora import Perturbation, TargetSpec, apply, infer_targets
from .modes import MODES, Pipeline, RunResult, Usage

__all__ = [
    "Agent", "Backbone", "GenerationSettings", "Roles", "load_backbone",
    "Generator", "GeneratorConfig", "GeneratorMismatchError", "ParameterGenerator", "ReleaseConfig", "ReleaseGenerator",
    "SenderShape", "load_generator",
    "Perturbation", "TargetSpec", "apply", "infer_targets",
    "MODES", "Pipeline", "RunResult", "Usage",
]
