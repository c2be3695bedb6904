"""Core library behaviour: exact fused LoRA, transient patching, modes and accounting."""
from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import loud_generator
from torch import nn

from tflow import GeneratorConfig, ParameterGenerator, Pipeline, Roles, apply, infer_targets, lora, merge_cost
from tflow.agents import (
    EXECUTOR,
    GenerationSettings,
    build_prompt,
    generate,
    load_backbone,
    sender_prompts,
    sender_states,
)
from tflow.generators import GeneratorMismatchError, load_generator

QUESTION = "What is the code plus 5?"


def weights_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def random_perturbation(backbone, batch: int = 2, senders: int = 2, seed: int = 0, scale: float = 1.0):
    pipe = Pipeline(backbone, loud_generator(backbone, seed, scale))
    qs = [f"What is the key minus {i}?" for i in range(batch)]
    pert = pipe.condition(qs, [[f"The key is {10 + i}.", None] for i in range(batch)], Roles()).perturbation
    assert pert.weights.shape == (batch, senders)
    return pert


def test_targets_are_every_linear_in_a_decoder_layer(qwen3, llama):
    q = infer_targets(qwen3.model)
    assert set(q.modules) == {f"self_attn.{p}_proj" for p in "qkvo"} | {f"mlp.{p}_proj" for p in ("gate", "up", "down")}
    assert q.modules["self_attn.k_proj"] == (32, 64)  # GQA: 2 kv heads x 16
    l_spec = infer_targets(llama.model)
    assert l_spec.modules["self_attn.k_proj"] == (16, 64)  # 1 kv head
    assert l_spec.layers_path == "model.layers"


@pytest.mark.parametrize("merge", [True, False])
def test_fused_patch_equals_explicit_weight_sum(qwen3, merge):
    pert = random_perturbation(qwen3, batch=1).sample(0)
    model, spec = qwen3.model, pert.spec
    for layer in range(spec.num_layers):
        for name, (_fout, fin) in spec.modules.items():
            mod = model.get_submodule(spec.module_name(layer, name))
            xin = torch.randn(1, 5, fin)
            explicit_w = mod.weight.detach().clone()
            for i in range(len(pert.senders)):
                explicit_w += pert.weights[0, i] * pert.scaling * pert.B[name][0, i, layer] @ pert.A[name][0, i, layer]
            with torch.no_grad(), apply(model, pert, merge=merge):
                got = mod(xin)
            want = nn.functional.linear(xin, explicit_w, mod.bias)
            assert float((explicit_w - mod.weight).abs().max()) > 1e-3  # a real perturbation
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_linears_reading_one_input_share_one_first_gemm_on_the_low_rank_path(qwen3, monkeypatch):
    """q/k/v and gate/up read the same tensor: one x A_cat^T per group per layer, the same logits as the merge."""
    model = qwen3.model
    pert = random_perturbation(qwen3, batch=1).sample(0)
    assert lora._same_input_groups(list(pert.spec.modules)) == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["mlp.gate_proj", "mlp.up_proj"]]
    computed, real = [], lora._SharedProduct.__call__

    def counting(self, x):
        before = self._xa
        out = real(self, x)
        if out is not before:
            computed.append(self)
        return out

    monkeypatch.setattr(lora._SharedProduct, "__call__", counting)
    ids = torch.randint(3, len(qwen3.tokenizer), (1, 9))
    with torch.no_grad():
        with apply(model, pert, merge=False):
            low = model(input_ids=ids).logits
        with apply(model, pert, merge=True):
            merged = model(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    assert len(computed) == 2 * pert.spec.num_layers
    assert float((low - plain).abs().max()) > 1e-3  # a real perturbation
    torch.testing.assert_close(low, merged, atol=1e-4, rtol=1e-4)


def test_a_single_inference_query_decodes_with_merged_weights_when_the_merge_pays(qwen3, monkeypatch):
    used = []
    real = lora._Active.__init__
    monkeypatch.setattr(
        lora._Active, "__init__", lambda self, model, p, merge: (used.append(merge), real(self, model, p, merge))[1]
    )
    monkeypatch.setattr(merge_cost, "measure", lambda *args: merge_cost.MergeCosts(merge_s=0.0, lowrank_step_s=1.0))
    gen = loud_generator(qwen3, scale=1.0)
    merged = Pipeline(qwen3, gen).run(QUESTION, mode="tflow", sender_context="The code is 47.", max_new_tokens=10)
    lowrank = Pipeline(qwen3, gen, merge=False).run(
        QUESTION, mode="tflow", sender_context="The code is 47.", max_new_tokens=10
    )
    Pipeline(qwen3, gen).run_batch([QUESTION, "What is the pin?"], mode="tflow", max_new_tokens=2)
    assert used == [True, False, False]  # one query: merged; forced low rank; a batch: per-sample low rank
    assert merged.answer == lowrank.answer
    assert (merged.receiver_merged, lowrank.receiver_merged) == (True, False)  # the run says which path decoded


def test_a_short_answer_stays_low_rank_when_merging_costs_more_than_its_steps(qwen3, monkeypatch):
    costs = merge_cost.MergeCosts(merge_s=1.0, lowrank_step_s=0.01)  # the merge pays after 100 steps
    monkeypatch.setattr(merge_cost, "measure", lambda *args: costs)
    used = []
    real = lora._Active.__init__
    monkeypatch.setattr(
        lora._Active, "__init__", lambda self, model, p, merge: (used.append(merge), real(self, model, p, merge))[1]
    )
    pert = random_perturbation(qwen3, batch=1)
    for steps in (None, 33, 101):
        with lora.apply(qwen3.model, pert, steps=steps):
            pass
    assert used == [True, False, True]  # unknown length: merged (when it fits); 33 steps: low rank; 101: merged


def test_the_merge_cost_model_is_measured_once_per_model_and_rank(qwen3, monkeypatch):
    monkeypatch.setattr(merge_cost, "_MEASURED", weakref.WeakKeyDictionary())  # earlier tests measured this model
    pert = random_perturbation(qwen3, batch=1)
    calls = []

    def applied(rank):
        def ctx(merged):
            calls.append((rank, merged))
            return lora.apply(qwen3.model, lora.random_perturbation(qwen3.model, pert.spec, rank), merged)
        return ctx

    first = merge_cost.measure(qwen3.model, pert.stacked_rank, applied(pert.stacked_rank))
    assert first.merge_s > 0 and first.lowrank_step_s > 0
    assert {merged for _, merged in calls} == {True, False}, "both paths are timed through apply"
    assert not lora.is_patched(qwen3.model)
    n = len(calls)
    assert merge_cost.measure(qwen3.model, pert.stacked_rank, applied(pert.stacked_rank)) is first
    assert len(calls) == n, "the second call is served from the cache"
    assert merge_cost.measure(qwen3.model, pert.stacked_rank + 1, applied(pert.stacked_rank + 1)) is not first


def test_auto_merge_falls_back_to_low_rank_for_gradients_and_tight_memory(qwen3, monkeypatch):
    pert = random_perturbation(qwen3, batch=1)
    assert lora.should_merge(qwen3.model, pert)
    trainable = replace(pert, A={k: v.clone().requires_grad_() for k, v in pert.A.items()})
    assert not lora.should_merge(qwen3.model, trainable)
    monkeypatch.setattr(
        lora, "free_bytes", lambda device: lora.merged_bytes(qwen3.model, pert.spec)
    )  # copies need half of it
    lora.release_buffers()
    assert not lora.should_merge(qwen3.model, pert)
    with lora.apply(qwen3.model, pert, merge=True):  # leaves one request's copies in the pool ...
        pass
    assert lora.should_merge(qwen3.model, pert)  # ... which the next merge reuses, so they count as free


def test_per_sample_factors_in_a_batch_match_one_by_one(qwen3):
    pert = random_perturbation(qwen3, batch=3)
    ids = torch.randint(5, 200, (3, 7))
    with torch.no_grad():
        with apply(qwen3.model, pert):
            batched = qwen3.model(ids).logits
        for i in range(3):
            with apply(qwen3.model, pert.sample(i)):
                alone = qwen3.model(ids[i : i + 1]).logits
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=1e-4)


def test_untrained_generator_gives_exactly_the_single_answer(qwen3):
    pipe = Pipeline(qwen3)
    assert not pipe.generator_trained
    single = pipe.run(QUESTION, mode="single", max_new_tokens=12)
    tflow = pipe.run(QUESTION, mode="tflow", sender_context="The code is 47.", max_new_tokens=12)
    assert all(float(b.abs().max()) == 0.0 for b in tflow.perturbation.B.values())
    assert tflow.answer == single.answer
    assert (
        tflow.usage.by_agent["Executor"].generated_tokens == single.usage.total_tokens - single.receiver_prompt_tokens
    )


def test_weights_bit_identical_and_no_patch_left_after_a_failing_generation(qwen3):
    pipe = Pipeline(qwen3, loud_generator(qwen3))
    before = weights_hash(qwen3.model)
    reference = pipe.run(QUESTION, mode="single", max_new_tokens=8).answer

    def boom(texts):
        if len(texts[0]) >= 0:
            raise RuntimeError("injected failure mid-generation")

    with pytest.raises(RuntimeError, match="injected"):
        pipe.run(QUESTION, mode="tflow", max_new_tokens=8, on_token=boom)
    assert weights_hash(qwen3.model) == before
    assert not any("forward" in m.__dict__ for m in qwen3.model.modules())
    assert pipe.run(QUESTION, mode="single", max_new_tokens=8).answer == reference


def test_batched_run_equals_one_by_one(qwen3):
    pipe = Pipeline(qwen3, loud_generator(qwen3, scale=1.0))
    qs = ["What is the code plus 5?", "What is the pin?", "What is the key minus 3?"]
    ctx = ["The code is 47.", "The pin is 12.", ["The key is 9.", None]]
    pipe.run("What is the code?", mode="tflow", max_new_tokens=1)  # role prefixes cached, so both count alike
    batched = pipe.run_batch(qs, mode="tflow", sender_contexts=ctx, max_new_tokens=10)
    for q, c, b in zip(qs, ctx, batched):
        alone = pipe.run(q, mode="tflow", sender_context=c, max_new_tokens=10)
        assert alone.answer == b.answer
        assert alone.usage.total_tokens == b.usage.total_tokens


def test_concurrent_threads_each_see_only_their_own_perturbation(make_qwen3):
    backbone = make_qwen3(seed=3)
    pipes = [Pipeline(backbone, loud_generator(backbone, seed=s, scale=1.0)) for s in (1, 2)]
    jobs = [(pipes[0], "The code is 47."), (pipes[1], "The pin is 3."), (pipes[0], None), (pipes[1], "The key is 99.")]
    alone = [p.run(QUESTION, mode="tflow", sender_context=c, max_new_tokens=16).answer for p, c in jobs]
    single = pipes[0].run(QUESTION, mode="single", max_new_tokens=16).answer
    together: dict[int, str] = {}
    barrier = threading.Barrier(len(jobs) + 1)

    def work(i, p, c):
        barrier.wait()
        for _ in range(3):
            together.setdefault(i, p.run(QUESTION, mode="tflow", sender_context=c, max_new_tokens=16).answer)
            assert p.run(QUESTION, mode="tflow", sender_context=c, max_new_tokens=16).answer == together[i]

    def plain():
        barrier.wait()
        for _ in range(3):
            together.setdefault(-1, pipes[0].run(QUESTION, mode="single", max_new_tokens=16).answer)

    threads = [threading.Thread(target=work, args=(i, p, c)) for i, (p, c) in enumerate(jobs)] + [
        threading.Thread(target=plain)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(jobs))] == alone
    assert together[-1] == single
    assert len(set(alone)) > 1  # the perturbations really differ


@pytest.mark.parametrize("which", ["qwen3", "llama"])
def test_question_span_decodes_back_to_the_question(request, which):
    backbone = request.getfixturevalue(which)
    q = "How many apples does Ann have now?"
    p = build_prompt(backbone, EXECUTOR, q, context="Ann has 23 apples.")
    s, e = p.question_span
    assert backbone.tokenizer.decode(p.input_ids[s:e]).strip() == q


@pytest.mark.parametrize("mode", ["single", "textmas", "tflow"])
def test_usage_total_is_the_sum_of_the_agents(qwen3, mode):
    res = Pipeline(qwen3).run(
        QUESTION, mode=mode, sender_context="The code is 47.", max_new_tokens=6, sender_max_new_tokens=6
    )
    parts = res.usage.by_agent.values()
    assert res.usage.total_tokens == sum(u.prompt_tokens + u.generated_tokens for u in parts)
    assert set(res.usage.by_agent) == (
        {"Executor"} if mode == "single" else {"Strategist", "Knowledge Extractor", "Executor"}
    )
    assert res.kv_cache_bytes == res.usage.by_agent["Executor"].kv_cache_bytes > 0
    assert res.timings["total"] == pytest.approx(sum(v for k, v in res.timings.items() if k != "total"))
    if mode == "textmas":
        assert set(res.messages) == {"Strategist", "Knowledge Extractor"}
        assert (
            res.receiver_prompt_tokens
            > Pipeline(qwen3).run(QUESTION, mode="single", max_new_tokens=2).receiver_prompt_tokens
        )
    if mode == "tflow":
        assert res.usage.by_agent["Strategist"].generated_tokens == 0
        assert res.sender_states[0].hidden.shape[0] == qwen3.num_layers + 1


def test_paper_accounting_counts_only_tflows_receiver_and_every_agent_elsewhere(qwen3):
    pipe = Pipeline(qwen3, loud_generator(qwen3))
    for mode in ("single", "textmas", "tflow"):
        res = pipe.run(QUESTION, mode=mode, sender_context="The code is 47.", max_new_tokens=6, sender_max_new_tokens=6)
        receiver = res.usage.by_agent["Executor"]
        if mode == "tflow":
            assert res.paper_tokens == receiver.prompt_tokens + receiver.generated_tokens < res.usage.total_tokens
        else:
            assert res.paper_tokens == res.usage.total_tokens


def test_llama_backbone_runs_every_mode(llama):
    pipe = Pipeline(llama, loud_generator(llama))
    for mode in ("single", "textmas", "tflow"):
        assert pipe.run(QUESTION, mode=mode, max_new_tokens=4, sender_max_new_tokens=4).usage.total_tokens > 0


def test_generator_save_and_reload_gives_identical_factors(qwen3, tmp_path):
    gen = loud_generator(qwen3)
    pipe = Pipeline(qwen3, gen)
    pert = pipe.condition([QUESTION], [["The code is 47.", None]], Roles()).perturbation
    gen.save_pretrained(tmp_path)
    again = load_generator(tmp_path, infer_targets(qwen3.model), qwen3.name)
    pert2 = Pipeline(qwen3, again).condition([QUESTION], [["The code is 47.", None]], Roles()).perturbation
    for name in pert.A:
        assert torch.equal(pert.A[name], pert2.A[name]) and torch.equal(pert.B[name], pert2.B[name])
    assert torch.equal(pert.weights, pert2.weights)


def test_generator_for_another_backbone_is_a_clear_error(qwen3, make_qwen3, tmp_path):
    loud_generator(qwen3).save_pretrained(tmp_path)
    other = make_qwen3(layers=3, hidden=96)
    with pytest.raises(GeneratorMismatchError, match="trained for backbone"):
        load_generator(tmp_path, infer_targets(other.model), other.name)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p.run("   ", mode="single"), "empty"),
        (lambda p: p.run("", mode="tflow"), "empty"),
        (lambda p: p.run("seven " * 400, mode="single"), "context"),
        (lambda p: p.run(QUESTION, mode="telepathy"), "unknown mode"),
        (lambda p: p.run(QUESTION, mode="static"), "static adapter"),
        (lambda p: p.run(QUESTION, mode="single", max_new_tokens=0), "max_new_tokens"),
        (lambda p: p.run(QUESTION, mode="single", temperature=-1.0, do_sample=True), "temperature"),
        (lambda p: p.run(QUESTION, mode="tflow", sender_context=["a", "b", "c"]), "3 sender contexts"),
    ],
)
def test_bad_input_is_a_value_error_with_a_readable_message(qwen3, call, message):
    with pytest.raises(ValueError, match=message):
        call(Pipeline(qwen3))


def test_unknown_model_path_is_a_readable_error(tmp_path):
    with pytest.raises(ValueError, match="could not load model"):
        load_backbone(str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("which", ["qwen3", "llama"])
def test_cached_role_prefix_gives_the_states_of_a_full_prefill(request, which):
    backbone = request.getfixturevalue(which)
    backbone.prefix_cache.clear()
    roles = Roles()
    prompts = sender_prompts(
        backbone, roles.senders, [QUESTION, "How many pens?"], [["The code is 47.", None], [None, "Ann has 3 pens."]]
    )
    decoder = getattr(backbone.model, backbone.model.base_model_prefix)
    first, processed = sender_states(backbone, prompts)
    again, processed_again = sender_states(backbone, prompts)
    for p, got, hit in zip(prompts, first, again):
        s, e = p.question_span
        ids = torch.tensor([p.input_ids], device=backbone.device)
        full = decoder(input_ids=ids, output_hidden_states=True).hidden_states
        want = torch.stack([h[0, s:e] for h in full])
        assert torch.allclose(got, want, atol=1e-5) and torch.allclose(hit, want, atol=1e-5)
    # each distinct role prefix is computed once (and counted once); afterwards only the rest up to the question's
    # end runs
    seen, want_first = set(), []
    for p in prompts:
        prefix = tuple(p.input_ids[: p.prefix_len])
        want_first.append(p.question_span[1] - (0 if prefix not in seen else p.prefix_len))
        seen.add(prefix)
    assert processed == want_first
    assert processed_again == [p.question_span[1] - p.prefix_len for p in prompts]
    assert len(backbone.prefix_cache) == len(roles.senders)


def test_the_prompt_condition_reads_the_message_and_the_answer_header_after_it(qwen3):
    prompts = sender_prompts(qwen3, Roles().senders, [QUESTION], [["The code is 47.", None]])
    message, _ = sender_states(qwen3, prompts, "message")
    prompt, processed = sender_states(qwen3, prompts, "prompt")
    for p, m, full in zip(prompts, message, prompt):
        assert p.span("prompt") == (p.prefix_len, len(p.input_ids)) and len(p.input_ids) > p.question_span[1]
        assert full.shape[1] == len(p.input_ids) - p.prefix_len
        assert torch.allclose(full[:, : m.shape[1]], m, atol=1e-5)  # causal: the header changes no earlier state
    assert all(n >= len(p.input_ids) - p.prefix_len for n, p in zip(processed, prompts))
    with pytest.raises(ValueError, match="condition must be one of question, message, prompt"):
        ParameterGenerator(GeneratorConfig(condition="answer"), infer_targets(qwen3.model), qwen3.name)


def test_ignore_eos_decodes_the_whole_budget_where_the_model_would_have_ended():
    tiny = load_backbone(str(Path(__file__).resolve().parents[2] / "checkpoints" / "tiny-qwen3"), "cpu")
    prompt = build_prompt(tiny, Roles().receiver, "What is 2 + 3?").input_ids
    budget = 24  # room to spare: the embedded model's answer (10 tokens here) may round differently on another CPU
    natural = generate(tiny, [prompt], budget, GenerationSettings(max_new_tokens=budget))[0]
    fixed = generate(tiny, [prompt], budget, GenerationSettings(max_new_tokens=budget, ignore_eos=True))[0]
    assert natural.stop_reason == "eos" and natural.generated_tokens < budget  # the model ends this answer early
    assert fixed.stop_reason == "length" and fixed.generated_tokens == budget  # fixed-length benchmarks rely on it
    assert fixed.token_ids[: natural.generated_tokens - 1] == natural.token_ids[:-1]  # the same answer up to its end
