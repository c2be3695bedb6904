"""The Hugging Face engine: `generate` in this process, perturbations applied by `lora.apply`."""
from __future__ import annotations

import contextlib
from dataclasses import replace

import torch

from .. import lora
from ..agents import Backbone, Generated, generate
from . import Decode


class HFEngine:
    name = "hf"

    def __init__(self, merge: bool | str = "auto"):
        """merge: how perturbations are applied while decoding (see `lora.apply`)."""
        self.merge = merge

    def describe(self) -> str:
        return "hf (transformers generate, in process)"

    def generate(self, backbone: Backbone, job: Decode) -> list[Generated]:
        streamer = None
        if job.on_text is not None:
            ids: list[list[int]] = [[] for _ in job.prompts]
            tok, on_text = backbone.tokenizer, job.on_text

            def streamer(step: int, new: torch.Tensor) -> None:
                for row, t in zip(ids, new.tolist()):
                    row.append(t)
                on_text([tok.decode(r, skip_special_tokens=True) for r in ids])

        merged = None
        applied = contextlib.nullcontext()
        if job.perturbation is not None:
            merged = lora.will_merge(backbone.model, job.perturbation, self.merge, job.steps)
            applied = lora.apply(backbone.model, job.perturbation, merged)
        with applied:
            gens = generate(
                backbone, job.prompts, job.max_new_tokens, job.settings, streamer, job.should_stop, started=job.started
            )
        return [replace(g, merged=merged) for g in gens]
