"""The import path of the generator before it became the `tflow.generators` package; kept so
that `from tflow.generator import ParameterGenerator, ...` (the Studio, user code) still works."""
from .generators import (  # noqa: F401
    Generator,
    GeneratorConfig,
    GeneratorMismatchError,
    LayerAggregator,
    ParameterGenerator,
    load_generator,
    stack_conditions,
)
from .generators.base import CONFIG_NAME, WEIGHTS_NAME  # noqa: F401
