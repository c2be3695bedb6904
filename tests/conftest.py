"""Shared fixtures: tiny random-initialised Qwen3 and Llama backbones built in memory."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from tflow import GeneratorConfig, ParameterGenerator, infer_targets
from tflow.agents import Backbone
from tflow.tools.tokenizer import build_tokenizer

torch.set_num_threads(min(2, os.cpu_count() or 1))

CORPUS = [
    "The code is 47. What is the code plus 5? 52",
    "Ann has 23 apples. Ann buys 14 more apples. How many apples does Ann have now?",
    "You are the Strategist. Say how to approach the problem.",
    "You are the Executor. Solve the problem and give the final answer.",
] * 20


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=320)


def _qwen3(vocab: int, seed: int = 0, layers: int = 2, hidden: int = 64) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def make_qwen3(tokenizer):
    def make(seed: int = 0, layers: int = 2, hidden: int = 64) -> Backbone:
        return Backbone(_qwen3(len(tokenizer), seed, layers, hidden), tokenizer, f"tiny-qwen3-{layers}x{hidden}")
    return make


@pytest.fixture(scope="session")
def qwen3(make_qwen3) -> Backbone:
    return make_qwen3()


@pytest.fixture(scope="session")
def llama(tokenizer) -> Backbone:
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
    )
    return Backbone(LlamaForCausalLM(cfg).eval(), tokenizer, "tiny-llama")


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a CUDA device: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def loud_generator(backbone, seed: int = 0, scale: float = 3.0) -> ParameterGenerator:
    """A generator whose B head is random, so it produces a clearly non-zero perturbation."""
    torch.manual_seed(seed)
    gen = ParameterGenerator(
        GeneratorConfig(d_model=32, n_heads=2, chunk_size=32, output_scale=scale),
        infer_targets(backbone.model),
        backbone.name,
    )
    nn.init.normal_(gen.head_b.weight, std=0.5)
    return gen
