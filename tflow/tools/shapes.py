"""Real model shapes without their weights: Qwen3-0.6B / 4B / 8B built from published configs.

The benchmark and the GPU check measure cost at the shapes people run, with random weights
(no hub download is possible here). Each shape carries the generator size that goes with it
(the release's d_model 1024 for Qwen3-4B). The embedded tokenizer is used for text; the model
keeps the full 151,936-token vocabulary, so the LM head costs what it costs in the real model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from ..agents import Backbone, load_backbone, resolve_device, resolve_dtype
from ..generators import GeneratorConfig


@dataclass(frozen=True)
class ModelShape:
    """The published config of a Qwen3 model, and the generator sized for it."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    generator: GeneratorConfig

    def config(self, layers: int | None = None) -> Qwen3Config:
        return Qwen3Config(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
                           num_hidden_layers=layers or self.layers, num_attention_heads=self.heads,
                           num_key_value_heads=self.kv_heads, head_dim=self.head_dim, max_position_embeddings=40960,
                           rope_theta=1_000_000.0, tie_word_embeddings=self.tied)


# Generator: 512 factor values per parameter token (the release's token_dim 256 x dim accumulation 2);
# d_model 1024 with 8 heads is the released Qwen3-4B generator's size.
SHAPES = {
    "qwen3-0.6b": ModelShape("qwen3-0.6b", 1024, 3072, 28, 16, 8, 128, 151_936, True,
                             GeneratorConfig(d_model=512, n_heads=4, chunk_size=512)),
    "qwen3-4b": ModelShape("qwen3-4b", 2560, 9728, 36, 32, 8, 128, 151_936, True,
                           GeneratorConfig(d_model=1024, n_heads=8, chunk_size=512)),
    "qwen3-8b": ModelShape("qwen3-8b", 4096, 12288, 36, 32, 8, 128, 151_936, False,
                           GeneratorConfig(d_model=1024, n_heads=8, chunk_size=512)),
}


def get_shape(name: str) -> ModelShape:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    return SHAPES[name]


def shape_backbone(shape: ModelShape, tokenizer_dir: str, layers: int | None = None, device: str = "auto",
                   dtype: str | None = None, seed: int = 0) -> Backbone:
    """A randomly initialised model of `shape` (first `layers` of its layers) with the tokenizer of
    `tokenizer_dir`. Weights are created on the target device in the target dtype: initialising a
    4B model on the CPU in fp32 and then moving it takes minutes on a GPU machine's CPU."""
    tok = load_backbone(tokenizer_dir, device="cpu").tokenizer
    if len(tok) > shape.vocab:
        raise ValueError(f"the tokenizer has {len(tok)} tokens, more than the shape's vocabulary ({shape.vocab})")
    layers = layers or shape.layers
    if not 1 <= layers <= shape.layers:
        raise ValueError(f"{shape.name} has {shape.layers} layers: ask for 1..{shape.layers} of them, not {layers}")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    with torch.device(dev):
        model = Qwen3ForCausalLM._from_config(shape.config(layers), dtype=resolve_dtype(dtype, dev))
    return Backbone(model.eval(), tok, f"random {shape.name} shape, {layers}/{shape.layers} layers")
