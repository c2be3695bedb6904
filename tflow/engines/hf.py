"""The Hugging Face engine: `generate` in this process, perturbations applied by `lora.apply`."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from .. import lora
from ..agents import Backbone, GenerationSettings, Generated, generate


class HFEngine:
    name = "hf"

    def __init__(self, merge: bool | str = "auto"):
        """merge: how perturbations are applied while decoding (see `lora.apply`)."""
        self.merge = merge

    def describe(self) -> str:
        return "hf (transformers generate, in process)"

    def generate(
        self,
        backbone: Backbone,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        settings: GenerationSettings,
        perturbation: lora.Perturbation | None = None,
        on_text: Callable[[list[str]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        started: float | None = None,
        steps: int | None = None,
    ) -> list[Generated]:
        streamer = None
        if on_text is not None:
            ids: list[list[int]] = [[] for _ in prompts]
            tok = backbone.tokenizer

            def streamer(step: int, new: torch.Tensor) -> None:
                for row, t in zip(ids, new.tolist()):
                    row.append(t)
                on_text([tok.decode(r, skip_special_tokens=True) for r in ids])

        applied = (lora.apply(backbone.model, perturbation, self.merge, steps) if perturbation is not None
                   else contextlib.nullcontext())
        with applied:
            return generate(backbone, prompts, max_new_tokens, settings, streamer, should_stop, started=started)
