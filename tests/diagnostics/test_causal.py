"""The causal probes' maths (tflow/causal.py), checked against independent computations, in fp32 and bf16."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import loud_generator

from tflow import Pipeline, apply
from tflow.agents import Backbone, GenerationSettings, build_prompt, generate
from tflow.diagnostics import causal
from tflow.diagnostics.causal import SCALES, Probe, spearman
from tflow.lora import is_patched

QUESTION, CONTEXTS = "What is the key plus 3?", ["The key is 12.", "The key is 40."]
# bf16: a run merges W + BA into bf16 weights and a probe adds B(Ax) on the low-rank path; they round differently
TOLERANCE = {torch.float32: {"abs": 1e-4}, torch.bfloat16: {"abs": 0.15, "rel": 0.02}}


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def backbone(request, qwen3) -> Backbone:
    if request.param == torch.float32:
        return qwen3
    return Backbone(copy.deepcopy(qwen3.model).to(torch.bfloat16), qwen3.tokenizer, "tiny-qwen3-bf16")


def tflow_run(backbone: Backbone, generator=None):
    pipe = Pipeline(backbone, generator if generator is not None else loud_generator(backbone, seed=3))
    return pipe.run(QUESTION, "tflow", sender_context=CONTEXTS, max_new_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def run(backbone):
    return tflow_run(backbone)


def teacher_forced(
    backbone: Backbone, pert, prompt: list[int], answer: list[int], merge: bool | str = "auto"
) -> torch.Tensor:
    """(answer length, vocab) fp32 log-softmax of one plain forward pass, with `pert` applied as a TFlow run
    applies it."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad(), apply(backbone.model, pert, merge) if pert is not None else contextlib.nullcontext():
        logits = backbone.model(input_ids=ids).logits[0].float()
    return logits.log_softmax(-1)[len(prompt) - 1 : -1]


def answer_logprob(logp: torch.Tensor, answer: list[int]) -> float:
    return float(logp.gather(-1, torch.tensor(answer)[:, None]).sum())


def test_the_probe_explains_the_runs_own_answer(backbone, run):
    probe = Probe.of_result(backbone, run)
    assert probe.prompt_ids == build_prompt(backbone, Pipeline(backbone).roles.receiver, QUESTION).input_ids
    assert probe.answer_ids == run.answer_ids and len(run.answer_ids) == 6
    assert backbone.tokenizer.decode(run.answer_ids, skip_special_tokens=True).strip() == run.answer


def test_removing_nothing_has_effect_zero(backbone, run):
    probe = Probe.of_result(backbone, run)
    effects, full = probe.removal_effects([frozenset(), frozenset(), frozenset()])
    assert np.all(effects == 0.0), effects
    assert np.isfinite(full) and full < 0


def test_removing_a_part_equals_zeroing_it_by_hand(backbone, run):
    probe = Probe.of_result(backbone, run)
    ablation = probe.ablation()
    layer, name = 1, "mlp.up_proj"
    zeroed = replace(run.perturbation, B={**run.perturbation.B, name: run.perturbation.B[name].clone()})
    zeroed.B[name][:, :, layer] = 0
    full, cut = (
        answer_logprob(teacher_forced(backbone, p, probe.prompt_ids, probe.answer_ids, merge=False), probe.answer_ids)
        for p in (run.perturbation, zeroed)
    )
    cell = ablation.cells[layer][ablation.modules.index(name)]
    assert cell == pytest.approx(cut - full, abs=1e-4 if backbone.dtype == torch.float32 else 0.05)
    assert np.array(ablation.cells).shape == (2, 7) and len(ablation.per_layer) == 2 and len(ablation.per_module) == 7
    assert any(abs(v) > 1e-3 for v in ablation.per_layer), "a loud perturbation's layers should matter"


def scaled_cell(pert, layer: int, name: str, scale: float):
    out = replace(pert, B={**pert.B, name: pert.B[name].clone()})
    out.B[name][:, :, layer] *= scale
    return out


def test_attribution_is_the_derivative_of_log_p_in_each_cells_scale(qwen3):
    run = tflow_run(qwen3)
    probe = Probe.of_result(qwen3, run)
    estimate = probe.attribution()
    assert estimate.shape == (2, 7)
    eps = 1e-3
    for layer, name in ((0, "self_attn.q_proj"), (1, "mlp.up_proj"), (1, "self_attn.o_proj")):
        full, cut = (answer_logprob(teacher_forced(qwen3, p, probe.prompt_ids, probe.answer_ids, merge=False),
                                    probe.answer_ids)
                     for p in (run.perturbation, scaled_cell(run.perturbation, layer, name, 1 - eps)))
        # removing a cell is its scale 1 -> 0: the estimate is -d log p / d scale = (log p(1 - eps) - log p(1)) / eps
        assert estimate[layer, list(run.perturbation.spec.modules).index(name)] == pytest.approx(
            (cut - full) / eps, abs=2e-3, rel=2e-2)


def test_first_order_ablation_removes_its_top_cells_exactly(backbone, run):
    probe = Probe.of_result(backbone, run)
    exact, approx = probe.ablation(exact=True), probe.ablation(exact=False, top_k=5)
    assert (exact.method, approx.method) == ("exact", "first-order") and len(approx.exact_cells) == 5
    estimate = np.array(approx.estimate)
    ranked = np.argsort(-np.abs(estimate).ravel(), kind="stable")[:5]
    assert [divmod(int(i), 7) for i in ranked] == [tuple(c) for c in approx.exact_cells]
    for layer, m in approx.exact_cells:
        assert approx.cells[layer][m] == pytest.approx(exact.cells[layer][m], **TOLERANCE[backbone.dtype])
    others = np.ones_like(estimate, dtype=bool)
    others.ravel()[ranked] = False
    assert np.array(approx.cells)[others] == pytest.approx(estimate[others], abs=0)
    assert approx.per_layer == pytest.approx(estimate.sum(1).tolist()) and approx.per_module == pytest.approx(
        estimate.sum(0).tolist())
    assert approx.logprob == pytest.approx(exact.logprob, **TOLERANCE[backbone.dtype])
    assert approx.agreement is None or -1 <= approx.agreement <= 1


def test_the_default_ablation_is_exact_on_a_small_backbone_only(qwen3, run):
    probe = Probe.of_result(qwen3, run)
    assert probe.ablation().method == "exact"  # 2 layers x 7 modules: 23 parts
    assert probe.ablation(exact=False).method == "first-order"


def test_the_sweeps_answers_are_greedy_decoding_at_each_scale_from_the_start(qwen3, monkeypatch):
    """The sweep decodes a scale only from where its teacher-forced choice leaves the answer, on the keys and values
    that pass computed, each scale leaving the batch when it ends: the same answers as decoding every scale from the
    prompt (fp32: bf16 may break a near-tie either way), also past the answer's end."""
    probe = Probe.of_result(qwen3, tflow_run(qwen3))
    batches = []
    real = Probe._decode

    def recording(self, variants, rows, prompts, kv, budgets):
        batches.append(len(rows))
        return real(self, variants, rows, prompts, kv, budgets)

    monkeypatch.setattr(Probe, "_decode", recording)
    monkeypatch.setattr(causal, "generate", None)  # no second prefill: HF's generate is not called
    for budget in (3, 6, 9):
        batches.clear()
        sweep = probe.sweep(max_new_tokens=budget)
        assert batches, "some scale leaves the answer"
        decoded = []
        for scale in sweep.scales:
            with apply(qwen3.model, probe.scaled([scale]), merge=False):
                settings = GenerationSettings(max_new_tokens=budget)
                decoded.append(generate(qwen3, [probe.prompt_ids], budget, settings)[0].text)
        assert sweep.answers == decoded, budget
        assert len(set(sweep.answers)) > 1


def test_scale_one_logprob_equals_the_tflow_runs_teacher_forced(backbone, run):
    probe = Probe.of_result(backbone, run)
    sweep = probe.sweep()
    assert sweep.scales == list(SCALES) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    reference = answer_logprob(
        teacher_forced(backbone, run.perturbation, probe.prompt_ids, probe.answer_ids), probe.answer_ids
    )
    assert sweep.logprob[4] == pytest.approx(reference, **TOLERANCE[backbone.dtype])
    plain = answer_logprob(teacher_forced(backbone, None, probe.prompt_ids, probe.answer_ids), probe.answer_ids)
    assert sweep.logprob[0] == pytest.approx(plain, **TOLERANCE[backbone.dtype])
    if backbone.dtype == torch.float32:
        assert sweep.answers[4] == run.answer, "greedy decoding at scale 1 is the TFlow run's answer"


def test_batched_sweep_equals_variants_one_by_one(backbone, run):
    probe = Probe.of_result(backbone, run)
    batched = probe.sweep(max_new_tokens=6)
    alone = [probe.sweep([s], max_new_tokens=6) for s in SCALES]
    assert batched.logprob == pytest.approx([a.logprob[0] for a in alone], **TOLERANCE[backbone.dtype])
    if backbone.dtype == torch.float32:
        assert batched.answers == [a.answers[0] for a in alone]
    assert len(set(batched.answers)) > 1, "a loud perturbation should change the greedy answer somewhere on 0..2"


def test_token_kl_is_zero_under_a_zero_perturbation(backbone):
    untrained = tflow_run(backbone, loud_generator(backbone, seed=3, scale=0.0))
    assert all(float(b.abs().max()) == 0 for b in untrained.perturbation.B.values())
    kl = Probe.of_result(backbone, untrained).token_kl()
    assert kl.kl == [0.0] * len(untrained.answer_ids)
    assert kl.logprob == kl.plain_logprob


def test_token_kl_is_the_kl_of_the_perturbed_and_plain_receivers(backbone, run):
    probe = Probe.of_result(backbone, run)
    kl = probe.token_kl()
    p = teacher_forced(backbone, run.perturbation, probe.prompt_ids, probe.answer_ids)
    q = teacher_forced(backbone, None, probe.prompt_ids, probe.answer_ids)
    expected = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    tol = 1e-4 if backbone.dtype == torch.float32 else 0.1
    assert kl.kl == pytest.approx(expected.tolist(), abs=tol, rel=tol)
    assert len(kl.tokens) == len(run.answer_ids) and max(kl.kl) > 0


def test_each_sender_alone_is_the_run_with_the_others_weight_zero(backbone, run):
    probe = Probe.of_result(backbone, run)
    senders = probe.senders()
    assert senders.senders == list(run.perturbation.senders)
    for i in range(len(senders.senders)):
        alone = teacher_forced(backbone, run.perturbation.only([i]), probe.prompt_ids, probe.answer_ids)
        assert senders.alone[i] == pytest.approx(answer_logprob(alone, probe.answer_ids), **TOLERANCE[backbone.dtype])
    # a sweep of one scale is a batch of one (lora's shared 2-D path), the senders' probe a batch of variants
    # (the per-sample path): the same sums in another order, equal in fp32, within bf16's rounding in bf16
    assert senders.all == pytest.approx(probe.sweep([1.0], max_new_tokens=1).logprob[0], **TOLERANCE[backbone.dtype])
    assert senders.none == pytest.approx(probe.sweep([0.0], max_new_tokens=1).logprob[0], **TOLERANCE[backbone.dtype])


def test_another_querys_senders_give_that_querys_perturbation_and_its_greedy_answer(backbone, run):
    """The shuffled control for one item: log p(answer) under the ΔW the same generator makes from another query's
    senders is the teacher-forced log p under that run's perturbation, and the answer is what that ΔW decodes."""
    pipe = Pipeline(backbone, loud_generator(backbone, seed=3))
    other_contexts = ["The key is 7.", "The key is 90."]
    other = pipe.run(QUESTION, "tflow", sender_context=other_contexts, max_new_tokens=6, ignore_eos=True)
    probe = Probe.of_result(backbone, run)
    got = probe.other_query(other.perturbation, QUESTION, other_contexts, max_new_tokens=6)
    mine = teacher_forced(backbone, other.perturbation, probe.prompt_ids, probe.answer_ids)
    assert got.other_logprob == pytest.approx(answer_logprob(mine, probe.answer_ids), **TOLERANCE[backbone.dtype])
    assert got.logprob == pytest.approx(probe.senders().all, **TOLERANCE[backbone.dtype])
    assert got.none == pytest.approx(probe.senders().none, **TOLERANCE[backbone.dtype])
    if backbone.dtype == torch.float32:  # bf16's low-rank path and merged weights may pick another near-tied token
        assert got.other_answer == other.answer
    assert (got.other_question, got.other_contexts) == (QUESTION, other_contexts)
    same = probe.other_query(run.perturbation, QUESTION, max_new_tokens=6)
    assert same.other_logprob == pytest.approx(same.logprob, **TOLERANCE[backbone.dtype])
    with pytest.raises(ValueError, match="same generator"):
        probe.other_query(probe.scaled([0.0, 1.0]), "two queries")


def test_the_backbone_is_left_unpatched_and_bit_identical(backbone, run):
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    probe = Probe.of_result(backbone, run)
    probe.ablation(), probe.sweep(), probe.token_kl(), probe.senders()
    assert not is_patched(backbone.model)
    assert all(torch.equal(before[k], v) for k, v in backbone.model.state_dict().items())


def test_bad_probes_are_readable_errors(qwen3, run):
    with pytest.raises(ValueError, match="nothing to explain"):
        Probe(qwen3, run.perturbation, [1, 2, 3], [])
    with pytest.raises(ValueError, match="one query's perturbation"):
        Probe(qwen3, Probe.of_result(qwen3, run).scaled([0.0, 1.0]), [1, 2, 3], [4])
    single = Pipeline(qwen3).run(QUESTION, "single", max_new_tokens=2)
    with pytest.raises(ValueError, match="no perturbation to probe"):
        Probe.of_result(qwen3, single)


def test_spearman_is_the_rank_correlation_and_undefined_for_constants():
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 25.0, 100.0])) == pytest.approx(1.0)
    assert spearman(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[4.0, 3.0], [2.0, 1.0]])) == pytest.approx(-1.0)
    assert spearman(np.zeros(4), np.arange(4.0)) is None
