"""Parameter generators: sender hidden states -> LoRA factors for the receiver.

Two architectures behind one interface (`gen(states, mask, senders) -> Perturbation`):
`grid` (ours, `ParameterGenerator`) and `release` (the paper's, `ReleaseGenerator`, which
loads the authors' checkpoint after `tflow-convert-release`). `load_generator`
reads a checkpoint directory of either kind.
"""
from .base import Generator, GeneratorMismatchError, LayerAggregator, stack_conditions
from .checkpoint import ARCHES, build_generator, check_generator, load_generator
from .grid import GeneratorConfig, ParameterGenerator
from .release import ReleaseConfig, ReleaseGenerator

__all__ = [
    "ARCHES", "Generator", "GeneratorConfig", "GeneratorMismatchError", "LayerAggregator", "ParameterGenerator",
    "ReleaseConfig", "ReleaseGenerator", "build_generator", "check_generator", "load_generator", "stack_conditions",
]
