"""Half precision on the CPU, as a GPU user runs it: a bf16 receiver with a generator in fp32
or bf16 through every mode, a batch, a static adapter, a PEFT export that PEFT itself loads,
figures, training steps (with and without gradient checkpointing), and senders on a bf16
backbone of their own."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import loud_generator
from peft import PeftModel
from test_senders import QUESTIONS, cross_generator, make_specialist
from torch import nn

from tflow import GeneratorConfig, Pipeline, apply, infer_targets, tasks
from tflow.agents import Backbone, Roles
from tflow.peft_io import peft_state
from tflow.tools.train import TrainConfig, _Objective

MODES = ("single", "textmas", "tflow", "static")


@pytest.fixture(scope="module")
def bf16(make_qwen3) -> Backbone:
    fp32 = make_qwen3(seed=21)
    return Backbone(fp32.model.to(torch.bfloat16), fp32.tokenizer, "tiny-qwen3-bf16")


def _pipe(backbone: Backbone, gen_dtype: torch.dtype) -> Pipeline:
    gen = loud_generator(backbone, seed=3).to(gen_dtype)
    static = (
        Pipeline(backbone, loud_generator(backbone, seed=4))
        .condition(["What is the key?"], [[None, None]], Roles())
        .perturbation.only([0])
    )
    return Pipeline(backbone, gen, static=static)


def _relative(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.parametrize("gen_dtype", [torch.float32, torch.bfloat16], ids=["generator-fp32", "generator-bf16"])
def test_every_mode_and_a_batch_run_on_a_bf16_receiver(bf16, make_qwen3, gen_dtype):
    pipe = _pipe(bf16, gen_dtype)
    for mode in MODES:
        res = pipe.run("What is the code plus 5?", mode, "The code is 47.", max_new_tokens=4, sender_max_new_tokens=4)
        assert res.usage.total_tokens > 0 and res.stop_reason in ("eos", "length")
    qs = ["What is the key?", "What is the pin minus 3?", "What is the code plus 1?"]
    ctx = ["The key is 12.", "The pin is 40.", "The code is 7."]
    batch = pipe.run_batch(qs, "tflow", ctx, max_new_tokens=4)
    assert len(batch) == 3 and all(r.batch_size == 3 for r in batch)
    fp32 = make_qwen3(seed=21)  # the same weights in fp32: the reference both bf16 computations round away from
    ref_pipe = Pipeline(fp32, loud_generator(fp32, seed=3))
    pipe.clear_cache()
    for r, q, c in zip(batch, qs, ctx):  # per-sample factors in a bf16 batch are each query's own
        one = pipe.run(q, "tflow", c, max_new_tokens=4).perturbation
        ref = ref_pipe.run(q, "tflow", c, max_new_tokens=1).perturbation
        for name in one.A:
            for got, alone, exact in (
                (r.perturbation.A[name], one.A[name], ref.A[name]),
                (r.perturbation.B[name], one.B[name], ref.B[name]),
            ):
                # Element-wise bounds do not hold in bf16: a batch pads the shorter prompts, which changes the CPU
                # kernels' blocking and so the rounding of every reduction (on AVX2 a few elements of a 1024-element
                # lora_B differ by 0.16, 86% of a small element). What bf16 promises is relative to the tensor: the
                # batch is as close to the fp32 result as the one-by-one run is, and both are a few 2^-8 away.
                assert _relative(got, alone) < 0.03, (name, _relative(got, alone))
                assert _relative(got, exact) <= 1.5 * _relative(alone, exact) + 2e-3, (
                    name,
                    _relative(got, exact),
                    _relative(alone, exact),
                )
    pert = batch[0].perturbation
    assert all(torch.isfinite(t).all() for t in (*pert.A.values(), *pert.B.values()))
    assert (
        torch.isfinite(pert.delta(0, "self_attn.q_proj")).all()
        and pert.delta(0, "self_attn.q_proj").dtype == torch.float32
    )


def test_the_reported_repro_a_bf16_generator_on_an_uncached_tflow_run(bf16):
    # the GPU run's crash: fp32 RMS-normalised states met a bf16 generator's layer softmax
    pipe = Pipeline(bf16, loud_generator(bf16))
    pipe.generator.to(torch.bfloat16)
    pipe.clear_cache()
    res = pipe.run("What is the code?", "tflow", "The code is 12.", max_new_tokens=3)
    assert res.usage.total_tokens > 0
    states = torch.randn(1, 2, 3, 5, 64, dtype=torch.bfloat16)
    assert pipe.generator.aggregator(states).dtype == torch.float32  # it mixes the layers in fp32


def test_merged_and_low_rank_decoding_agree_in_bf16(bf16):
    pert = _pipe(bf16, torch.float32).condition(["What is the key?"], [["The key is 5.", None]], Roles()).perturbation
    ids = torch.randint(5, 200, (1, 9))
    with torch.no_grad():
        plain = bf16.model(ids).logits.float()
        with apply(bf16.model, pert, merge=True):
            merged = bf16.model(ids).logits.float()
        with apply(bf16.model, pert, merge=False):
            low = bf16.model(ids).logits.float()
    assert (merged - plain).abs().max() > 1e-2
    torch.testing.assert_close(merged, low, atol=0.1, rtol=0.05)


def test_a_peft_export_of_a_bf16_run_loads_in_peft_and_gives_the_same_logits(bf16, tmp_path):
    from safetensors.torch import save_file

    pert = (
        _pipe(bf16, torch.bfloat16)
        .condition(["What is the key?"], [["The key is 5.", "The key is 5."]], Roles())
        .perturbation
    )
    config, tensors = peft_state(pert)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    (tmp_path / "adapter_config.json").write_text(__import__("json").dumps(config))
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    ids = torch.randint(5, 200, (1, 7))
    with torch.no_grad(), apply(bf16.model, pert, merge=False):
        ours = bf16.model(ids).logits.float()
    peft_model = PeftModel.from_pretrained(bf16.model, tmp_path)
    try:
        with torch.no_grad():
            theirs = peft_model(input_ids=ids).logits.float()
    finally:
        peft_model.unload()  # leave the shared fixture's model as it was
    torch.testing.assert_close(ours, theirs, atol=0.1, rtol=0.05)
    # and back: the exported adapter, read by our importer, is a static adapter of the bf16 receiver
    from tflow.peft_io import load_peft_adapter
    static = Pipeline(bf16, static=load_peft_adapter(tmp_path, infer_targets(bf16.model)))
    with torch.no_grad(), apply(bf16.model, static.static, merge=False):
        again = bf16.model(ids).logits.float()
    torch.testing.assert_close(again, ours, atol=0.1, rtol=0.05)
    assert static.run("What is the key?", "static", max_new_tokens=3).usage.total_tokens > 0


def test_figures_of_a_bf16_perturbation_are_computed_in_full_precision(bf16):
    from tflow.diagnostics.measures import delta_norms, spectrum

    pert = _pipe(bf16, torch.bfloat16).condition(["What is the key?"], [["The key is 5.", None]], Roles()).perturbation
    norms = delta_norms(pert)
    assert norms.dtype.itemsize == 8 and norms.shape == (2, 7) and (norms > 0).all()
    dense = torch.linalg.matrix_norm(pert.delta(1, "mlp.down_proj").double())
    assert abs(norms[1, list(pert.spec.modules).index("mlp.down_proj")] - float(dense)) < 1e-3 * float(dense)
    assert spectrum(pert, 0, "self_attn.q_proj").shape == (2 * pert.rank,)


@pytest.mark.parametrize("gen_dtype", ["fp32", "bf16"])
def test_a_training_step_on_a_bf16_receiver_gives_finite_gradients(bf16, gen_dtype):
    cfg = TrainConfig(
        generator=GeneratorConfig(d_model=32, n_heads=2, chunk_size=32), generator_dtype=gen_dtype, batch_size=2
    )
    obj = _Objective(cfg, bf16, Roles())
    nn.init.normal_(obj.module.head_b.weight, std=0.02)
    from tflow import tasks
    with obj.loss(obj.module, tasks.examples("relay", "train", 2, seed=1)) as loss:
        loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    grads = [p.grad for p in obj.module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert float(obj.module.head_a.weight.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in bf16.model.parameters())  # the receiver stays frozen


def test_the_studio_runs_and_draws_on_a_bf16_backbone():
    from pathlib import Path

    from tflow import tasks
    from tflow.diagnostics import measures, viz
    from tflow.studio import render
    from tflow.studio.registry import Studio, StudioConfig

    root = Path(__file__).resolve().parents[2] / "checkpoints"
    studio = Studio(StudioConfig(model=str(root / "tiny-qwen3"), checkpoints=str(root), device="cpu", dtype="bf16",
                                 sender_model=str(root / "tiny-qwen3-kb")))
    try:
        assert studio.backbone.dtype == torch.bfloat16 and np_finite(studio.weight_norms)
        assert (
            studio.sender_backbone.dtype == torch.bfloat16 and studio.generators["kb"].sender is studio.sender_backbone
        )
        kb = tasks.examples("kb", "test", 1, seed=0)[0]
        r = studio.pipeline("kb", "none").run(kb.question, "tflow", max_new_tokens=16)
        assert tasks.is_correct(r.answer, kb.answer)  # the specialist's fact still travels in bf16
        assert viz.hidden_states_figure(r.sender_states, backbone="tiny-qwen3-kb")[0].data
        ex = tasks.examples("relay", "test", 1, seed=0)[0]
        pipe = studio.pipeline(studio.generator_for("relay"), studio.static_for("relay"))
        for mode in MODES:
            r = pipe.run(ex.question, mode, ex.contexts, max_new_tokens=16)
            assert "processed tokens" in render.result_markdown(r, ex.answer)
        r = pipe.run(ex.question, "tflow", ex.contexts, max_new_tokens=16)
        assert tasks.is_correct(r.answer, ex.answer)  # the embedded relay generator still answers in bf16
        assert np_finite(measures.delta_norms(r.perturbation))
        for fig in (
            viz.perturbation_heatmap(r.perturbation, "relative", studio.weight_norms),
            viz.sender_share_figure(r.perturbation),
            viz.layer_weights_figure(r.perturbation.layer_weights),
            viz.hidden_states_figure(r.sender_states)[0],
        ):
            assert fig.data  # every figure of the Perturbation and Activations tabs draws from the bf16 run
    finally:
        studio.close()


def np_finite(a) -> bool:
    import numpy as np
    return bool(np.isfinite(a).all())


@pytest.mark.parametrize("gen_dtype", [torch.float32, torch.bfloat16], ids=["generator-fp32", "generator-bf16"])
def test_senders_on_their_own_bf16_backbone_drive_a_bf16_receiver(bf16, gen_dtype):
    specialist = make_specialist(torch.bfloat16, "specialist-3x96-bf16")
    pipe = Pipeline(bf16, cross_generator(bf16, specialist).to(gen_dtype), sender_backbone=specialist)
    for mode in ("single", "textmas", "tflow"):
        res = pipe.run(QUESTIONS[0], mode, max_new_tokens=4, sender_max_new_tokens=4)
        assert res.usage.total_tokens > 0, mode
    batch = pipe.run_batch(QUESTIONS, "tflow", max_new_tokens=4)
    pipe.clear_cache()
    for r, q in zip(batch, QUESTIONS):
        one = pipe.run(q, "tflow", max_new_tokens=4).perturbation
        for name in one.A:
            torch.testing.assert_close(r.perturbation.A[name].float(), one.A[name].float(), atol=2e-2, rtol=2e-2)
    assert batch[0].usage.by_agent["Strategist"].backbone == "specialist-3x96-bf16"


def test_the_embedded_kb_specialist_answers_the_same_in_bf16():
    root = Path(__file__).resolve().parents[2] / "checkpoints"
    if not (root / "generators" / "kb").is_dir():
        pytest.skip("embedded checkpoints not built")
    examples = tasks.examples("kb", "test", 20, seed=0)
    answers = {}
    for dtype in ("fp32", "bf16"):
        pipe = Pipeline.from_pretrained(str(root / "tiny-qwen3"), generator=str(root / "generators" / "kb"),
                                        sender_model=str(root / "tiny-qwen3-kb"), device="cpu", dtype=dtype)
        assert pipe.sender_backbone.dtype == pipe.backbone.dtype
        answers[dtype] = [
            r.answer
            for r in pipe.run_batch([e.question for e in examples], "tflow", max_new_tokens=tasks.ANSWER_TOKENS)
        ]
    right = {d: sum(tasks.is_correct(a, e.answer) for a, e in zip(ans, examples)) for d, ans in answers.items()}
    assert right["bf16"] >= right["fp32"] - 1 and right["fp32"] >= 15, right
