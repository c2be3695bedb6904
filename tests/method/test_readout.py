"""The senders' read-out: the expected input embedding of each position's next token (the sender's output head's
softmax times its embedding matrix), one more slice the grid generator may read (`readout = 1`); off by default,
so a checkpoint without it reads and answers as before."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tflow import GeneratorConfig, ParameterGenerator, Pipeline, Roles, infer_targets, load_generator
from tflow.agents import sender_prompts, sender_states
from tflow.checkpoints import GENERATOR_CONFIG
from tflow.diagnostics.next_tokens import next_tokens
from tflow.results import SenderStates

QUESTION = "What is the code?"


@pytest.mark.parametrize("which", ["qwen3", "llama"])
def test_the_read_out_slice_is_the_expected_embedding_of_the_next_token_after_the_unchanged_layers(request, which):
    backbone = request.getfixturevalue(which)
    prompts = sender_prompts(backbone, Roles().senders, [QUESTION], [["The code is 47.", None]])
    plain, _ = sender_states(backbone, prompts, "prompt")
    read, _ = sender_states(backbone, prompts, "prompt", readout=True)
    model = backbone.model
    for p, without, with_readout in zip(prompts, plain, read):
        assert with_readout.shape[0] == model.config.num_hidden_layers + 2 == without.shape[0] + 1
        torch.testing.assert_close(with_readout[:-1], without)
        lo, hi = p.span("prompt")
        logits = model(input_ids=torch.tensor([p.input_ids], device=backbone.device)).logits[0, lo:hi]
        want = torch.softmax(logits.float(), dim=-1) @ model.get_input_embeddings().weight.float()
        torch.testing.assert_close(with_readout[-1], want, atol=1e-5, rtol=1e-4)


def _generator(backbone, **over) -> ParameterGenerator:
    torch.manual_seed(0)
    cfg = GeneratorConfig(d_model=32, n_heads=2, chunk_size=32, condition="prompt", readout=1, **over)
    return ParameterGenerator(cfg, infer_targets(backbone.model), backbone.name)


def _perturbation(pipe: Pipeline):
    pipe.clear_cache()
    return pipe.condition([QUESTION], [["The code is 47.", None]], Roles()).perturbation


def test_an_untrained_read_out_generator_gives_a_zero_perturbation_and_weighs_the_read_out_slice(qwen3):
    gen = _generator(qwen3, copy=1)
    assert gen.reads_readout and gen.aggregator.logits.numel() == qwen3.model.config.num_hidden_layers + 2
    assert gen.copy_path.aggregator.logits.numel() == gen.aggregator.logits.numel()
    pert = _perturbation(Pipeline(qwen3, gen))
    assert all(float(b.abs().max()) == 0.0 for b in pert.B.values())


def test_a_read_out_generator_saves_and_loads_it_and_a_checkpoint_without_the_field_reads_none(qwen3, tmp_path):
    gen = _generator(qwen3)
    nn.init.normal_(gen.head_b.weight, std=0.02)  # as if trained: a non-zero perturbation to compare
    gen.save_pretrained(tmp_path / "with")
    spec = infer_targets(qwen3.model)
    loaded = load_generator(tmp_path / "with", spec, qwen3.name).eval()
    assert loaded.config.readout == 1
    want, got = _perturbation(Pipeline(qwen3, gen.eval())), _perturbation(Pipeline(qwen3, loaded))
    for name in want.B:
        torch.testing.assert_close(got.B[name], want.B[name])
        torch.testing.assert_close(got.A[name], want.A[name])
    old = ParameterGenerator(GeneratorConfig(d_model=32, n_heads=2, chunk_size=32), spec, qwen3.name)
    old.save_pretrained(tmp_path / "old")
    card = json.loads((tmp_path / "old" / GENERATOR_CONFIG).read_text())
    del card["generator"]["readout"]  # a checkpoint written before the field existed
    (tmp_path / "old" / GENERATOR_CONFIG).write_text(json.dumps(card))
    before = load_generator(tmp_path / "old", spec, qwen3.name)
    assert not before.reads_readout and before.aggregator.logits.numel() == qwen3.model.config.num_hidden_layers + 1


def test_read_out_must_be_zero_or_one():
    with pytest.raises(ValueError, match="readout must be 0 or 1"):
        GeneratorConfig(readout=2)


@pytest.mark.parametrize("readout", [False, True])
def test_the_senders_top_next_tokens_are_their_heads_argmax_at_every_position_read(qwen3, readout):
    prompts = sender_prompts(qwen3, Roles().senders, [QUESTION], [["The code is 47.", None]])
    states, _ = sender_states(qwen3, prompts, "prompt", readout=readout)
    tok = qwen3.tokenizer
    views = [SenderStates(a.role, tok.convert_ids_to_tokens(p.input_ids[slice(*p.span("prompt"))]), h, readout)
             for a, p, h in zip(Roles().senders, prompts, states)]
    rows = next_tokens(qwen3, views, k=3)
    assert len(rows) == sum(len(v.tokens) for v in views)
    for v, p in zip(views, prompts):
        lo, hi = p.span("prompt")
        logits = qwen3.model(input_ids=torch.tensor([p.input_ids], device=qwen3.device)).logits[0, lo:hi]
        probs = torch.softmax(logits.float(), dim=-1)
        mine = [r for r in rows if r.role == v.role]
        assert [r.token for r in mine] == v.tokens and [r.position for r in mine] == list(range(hi - lo))
        for r, want in zip(mine, probs):
            got = [q for _, q in r.top]
            assert got == sorted(got, reverse=True) and len(got) == 3
            # ties aside, the first token is the head's argmax; its probability as a full forward gives it
            assert want[tok.convert_tokens_to_ids(r.top[0][0])].item() == pytest.approx(got[0], abs=1e-5)
            assert got[0] == pytest.approx(want.max().item(), abs=1e-5)
