"""The grid generator's copy path: a gated attention read of the senders' full-width states
into the B columns of residual-width modules (zero until trained, padding-blind, saved)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tflow import GeneratorConfig, ParameterGenerator, Pipeline, Roles, infer_targets, load_generator

COPY = GeneratorConfig(d_model=32, n_heads=2, chunk_size=32, copy=1)


def copy_generator(backbone, gate: float = 0.0) -> ParameterGenerator:
    torch.manual_seed(0)
    gen = ParameterGenerator(COPY, infer_targets(backbone.model), backbone.name)
    nn.init.constant_(gen.copy_path.gate.bias, gate)
    return gen


def condition(pipe: Pipeline, contexts=("The key is 10.",)):
    return pipe.condition(["What is the key?"] * len(contexts), [[c, None] for c in contexts], Roles()).perturbation


def test_untrained_copy_generator_gives_a_zero_perturbation(qwen3):
    pert = condition(Pipeline(qwen3, copy_generator(qwen3)))
    assert all(float(b.abs().max()) == 0.0 for b in pert.B.values())


def test_copy_path_writes_only_modules_of_the_residual_width(qwen3):
    gen = copy_generator(qwen3, gate=1.0)  # head_b still zero: every non-zero B column is the copy path's
    pert = condition(Pipeline(qwen3, gen))
    for name, (fan_out, _) in gen.spec.modules.items():
        assert (float(pert.B[name].abs().max()) > 0) == (fan_out == gen.spec.hidden_size), name


def test_copy_read_is_a_convex_mix_of_the_projected_sender_states(qwen3):
    gen = copy_generator(qwen3, gate=1.0)
    states = torch.randn(1, 1, qwen3.model.config.num_hidden_layers + 1, 5, gen.spec.hidden_size)
    mask = torch.tensor([[[True, True, True, False, False]]])
    values = gen.copy_path.memory(states.flatten(0, 1), torch.zeros(1, 5, COPY.d_model))[1][
        0, :3
    ]  # (3 real tokens, hidden)
    with torch.no_grad():
        values = values.detach()
        pert = gen(states, mask, ("Sender",))
    name = next(n for n, (fo, _) in gen.spec.modules.items() if fo == gen.spec.hidden_size)
    column = pert.B[name][0, 0, 0, :, 0]  # one B column: weights over the real tokens, summing to 1
    weights = torch.linalg.lstsq(values.T, column[:, None]).solution.squeeze(1)
    torch.testing.assert_close(values.T @ weights, column, atol=1e-4, rtol=1e-4)
    assert float(weights.min()) >= -1e-4 and float(weights.sum()) == pytest.approx(1.0, abs=1e-3)


def test_copy_path_ignores_padding(qwen3):
    gen = copy_generator(qwen3, gate=1.0)
    pipe = Pipeline(qwen3, gen)
    alone = condition(pipe, ("The key is 10.",))
    batched = condition(pipe, ("The key is 10.", "The key of the old blue door in the north wing is 77."))
    for name in alone.B:
        torch.testing.assert_close(batched.B[name][:1], alone.B[name], atol=1e-5, rtol=1e-4)


def test_copy_generator_round_trips_through_its_checkpoint(qwen3, tmp_path):
    gen = copy_generator(qwen3, gate=0.5)
    gen.save_pretrained(tmp_path)
    back = load_generator(tmp_path, gen.spec, qwen3.name)
    assert back.config.copy == 1
    states, mask = (
        torch.randn(1, 1, qwen3.model.config.num_hidden_layers + 1, 4, gen.spec.hidden_size),
        torch.ones(1, 1, 4, dtype=torch.bool),
    )
    for name, b in gen(states, mask, ("Sender",)).B.items():
        torch.testing.assert_close(back(states, mask, ("Sender",)).B[name], b)


def test_copy_must_be_zero_or_one():
    with pytest.raises(ValueError, match="copy must be 0 or 1"):
        GeneratorConfig(copy=2)
