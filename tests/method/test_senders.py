"""Senders on their own backbone: another hidden size, depth and tokenizer than the receiver's."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CORPUS, _qwen3
from torch import nn

from tflow import (
    GeneratorConfig,
    GeneratorMismatchError,
    ParameterGenerator,
    Pipeline,
    Roles,
    SenderShape,
    infer_targets,
)
from tflow.agents import Backbone
from tflow.generators import load_generator
from tflow.pipeline import sender_shape
from tflow.tools.tokenizer import build_tokenizer
from tflow.tools.train_memory import estimate

QUESTIONS = ["How old is Tovi?", "Who is Marek's friend?", "What is Lomi's lucky number?"]


def make_specialist(dtype: torch.dtype = torch.float32, name: str = "specialist-3x96") -> Backbone:
    """A sender backbone of another hidden size (96), depth (3) and tokenizer than the receiver."""
    tok = build_tokenizer(CORPUS + QUESTIONS * 10, vocab_size=300)
    return Backbone(_qwen3(len(tok), seed=5, layers=3, hidden=96).to(dtype), tok, name)


@pytest.fixture(scope="module")
def specialist() -> Backbone:
    return make_specialist()


def cross_generator(receiver: Backbone, sender: Backbone, seed: int = 0) -> ParameterGenerator:
    torch.manual_seed(seed)
    gen = ParameterGenerator(GeneratorConfig(d_model=32, n_heads=2, chunk_size=32, output_scale=3.0),
                             infer_targets(receiver.model), receiver.name, sender=sender_shape(sender))
    nn.init.normal_(gen.head_b.weight, std=0.5)
    return gen


@pytest.fixture(scope="module")
def pipe(qwen3, specialist) -> Pipeline:
    static = Pipeline(qwen3, cross_generator(qwen3, specialist, seed=1), sender_backbone=specialist).condition(
        [QUESTIONS[0]], [[None, None]], Roles()).perturbation.only([0])
    return Pipeline(qwen3, cross_generator(qwen3, specialist), static=static, sender_backbone=specialist)


@pytest.mark.parametrize("mode", ["single", "textmas", "tflow", "static"])
def test_a_sender_backbone_of_another_shape_drives_the_receiver_in_every_mode(pipe, qwen3, specialist, mode):
    res = pipe.run(QUESTIONS[0], mode=mode, max_new_tokens=6, sender_max_new_tokens=6)
    receiver = res.usage.by_agent["Executor"]
    assert receiver.backbone == qwen3.name and receiver.parameters == qwen3.num_parameters
    if mode in ("textmas", "tflow"):
        for role in ("Strategist", "Knowledge Extractor"):
            assert res.usage.by_agent[role].backbone == specialist.name
            assert res.usage.by_agent[role].parameters == specialist.num_parameters != qwen3.num_parameters
    if mode == "tflow":
        view = res.sender_states[0]
        assert view.hidden.shape[0] == specialist.num_layers + 1 and view.hidden.shape[2] == specialist.hidden_size
        # the question span comes from the sender's own tokenizer
        assert specialist.tokenizer.convert_tokens_to_string(view.tokens) == QUESTIONS[0]
        assert pipe.generator.aggregator.weights().shape == (specialist.num_layers + 1,)
        for name, (fan_out, fan_in) in infer_targets(qwen3.model).modules.items():  # the receiver's linears
            assert res.perturbation.A[name].shape[-1] == fan_in and res.perturbation.B[name].shape[-2] == fan_out
        assert all(b.abs().sum() > 0 for b in res.perturbation.B.values())


def test_textmas_messages_are_written_by_the_sender_backbone(pipe, specialist):
    res = pipe.run(QUESTIONS[1], mode="textmas", max_new_tokens=4, sender_max_new_tokens=5)
    sent = res.usage.by_agent["Strategist"]
    assert sent.kv_cache_bytes == specialist.kv_cache_bytes(sent.prompt_tokens + sent.generated_tokens)
    prompt = specialist.tokenizer.apply_chat_template(
        [{"role": "system", "content": Roles().senders[0].system_prompt}, {"role": "user", "content": QUESTIONS[1]}],
        add_generation_prompt=True, tokenize=False)
    assert sent.prompt_tokens == len(specialist.tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_batched_cross_backbone_run_equals_one_by_one(pipe):
    pipe.run(QUESTIONS[0], mode="tflow", max_new_tokens=1)  # role prefixes cached, so both count alike
    batched = pipe.run_batch(QUESTIONS, mode="tflow", max_new_tokens=8)
    for q, b in zip(QUESTIONS, batched):
        alone = pipe.run(q, mode="tflow", max_new_tokens=8)
        assert alone.answer == b.answer and alone.usage.total_tokens == b.usage.total_tokens
        for name in alone.perturbation.A:
            torch.testing.assert_close(alone.perturbation.A[name], b.perturbation.A[name], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(alone.perturbation.B[name], b.perturbation.B[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["single", "textmas", "tflow"])
def test_per_agent_accounting_adds_up_across_backbones(pipe, qwen3, specialist, mode):
    res = pipe.run(QUESTIONS[2], mode=mode, max_new_tokens=5, sender_max_new_tokens=5)
    parts = res.usage.by_agent.values()
    assert res.usage.total_tokens == sum(u.prompt_tokens + u.generated_tokens for u in parts)
    assert res.usage.kv_cache_bytes == sum(u.kv_cache_bytes for u in parts)
    recv = res.usage.by_agent["Executor"]
    assert recv.kv_cache_bytes == res.kv_cache_bytes == qwen3.kv_cache_bytes(recv.prompt_tokens + recv.generated_tokens)
    if mode == "tflow":
        assert all(res.usage.by_agent[r].generated_tokens == 0 < res.usage.by_agent[r].prompt_tokens
                   for r in ("Strategist", "Knowledge Extractor"))


def test_a_wrong_sender_or_receiver_is_a_clear_error_naming_which(qwen3, make_qwen3, specialist, tmp_path):
    cross_generator(qwen3, specialist).save_pretrained(tmp_path)
    spec = infer_targets(qwen3.model)
    assert load_generator(tmp_path, spec, qwen3.name, sender_shape(specialist)).sender == sender_shape(specialist)
    with pytest.raises(GeneratorMismatchError, match="wrong sender.*specialist-3x96.*sender_model="):
        load_generator(tmp_path, spec, qwen3.name)  # senders on the receiver, as by default
    with pytest.raises(GeneratorMismatchError, match="wrong sender"):
        load_generator(tmp_path, spec, qwen3.name, SenderShape("other", 48, 2))
    other = make_qwen3(layers=3, hidden=96)
    with pytest.raises(GeneratorMismatchError, match="wrong receiver"):
        load_generator(tmp_path, infer_targets(other.model), other.name, sender_shape(specialist))
    with pytest.raises(GeneratorMismatchError, match="wrong sender"):
        Pipeline(qwen3, cross_generator(qwen3, specialist))  # no sender_backbone: the receiver's shape


def test_same_sender_model_loads_one_backbone_once(tmp_path):
    pipe = Pipeline.from_pretrained("checkpoints/tiny-qwen3", generator="checkpoints/generators/relay",
                                    sender_model="checkpoints/tiny-qwen3", device="cpu")
    assert pipe.sender_backbone is pipe.backbone
    assert Pipeline.from_pretrained("checkpoints/tiny-qwen3", device="cpu").sender_backbone is not None


def test_from_pretrained_loads_a_separate_sender_backbone(qwen3, specialist, tmp_path):
    qwen3.model.save_pretrained(tmp_path / "receiver")
    qwen3.tokenizer.save_pretrained(tmp_path / "receiver")
    specialist.model.save_pretrained(tmp_path / "sender")
    specialist.tokenizer.save_pretrained(tmp_path / "sender")
    cross_generator(qwen3, specialist).save_pretrained(tmp_path / "gen")
    pipe = Pipeline.from_pretrained(
        str(tmp_path / "receiver"), generator=tmp_path / "gen", sender_model=str(tmp_path / "sender"), device="cpu"
    )
    assert pipe.sender_backbone is not pipe.backbone and pipe.sender_backbone.hidden_size == 96
    assert pipe.generator.sender.num_layers == 3
    assert pipe.run(QUESTIONS[0], mode="tflow", max_new_tokens=3).usage.by_agent["Strategist"].backbone == str(
        tmp_path / "sender"
    )
    with pytest.raises(
        GeneratorMismatchError, match="wrong sender.*specialist-3x96.*could not be loaded.*sender_model="
    ):
        Pipeline.from_pretrained(
            str(tmp_path / "receiver"), generator=tmp_path / "gen", device="cpu"
        )  # records a name, not a path


def test_the_training_memory_estimate_counts_the_sender_backbone_but_does_not_allocate_it_again(
    pipe, qwen3, specialist
):
    alone = estimate(qwen3, pipe.generator, batch=4, seq_len=32, checkpointing=False)
    both = estimate(qwen3, pipe.generator, batch=4, seq_len=32, checkpointing=False, sender_backbone=specialist)
    assert both.sender_weights == sum(p.numel() * p.element_size() for p in specialist.model.parameters()) > 0
    assert both.to_allocate == alone.to_allocate  # the specialist is already loaded: nothing more to allocate
    # on CPU the process's measured resident memory already holds the specialist: it is not counted twice
    held = both.weights + both.sender_weights + both.runtime
    assert abs(held - (alone.weights + alone.runtime)) < 64 * 2**20 and both.total >= alone.total - 64 * 2**20
    assert "sender backbone weights" in both.describe() and "sender backbone" not in alone.describe()
    assert estimate(qwen3, pipe.generator, 4, 32, False, sender_backbone=qwen3).sender_weights == 0


def test_a_generator_runs_by_default_on_the_specialist_it_records():
    pipe = Pipeline.from_pretrained("checkpoints/tiny-qwen3", generator="checkpoints/generators/kb", device="cpu")
    assert pipe.sender_backbone is not pipe.backbone
    assert pipe.sender_backbone.name == pipe.generator.sender.name == "checkpoints/tiny-qwen3-kb"


def test_a_recorded_specialist_path_is_found_from_any_working_directory(tmp_path, monkeypatch):
    from tflow.checkpoints import recorded_sender

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)  # the recorded "checkpoints/tiny-qwen3-kb" is relative to the repository root
    found = recorded_sender(root / "checkpoints" / "generators" / "kb")
    assert found is not None and found.name == str(root / "checkpoints" / "tiny-qwen3-kb")
