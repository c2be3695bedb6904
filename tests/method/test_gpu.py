"""On a CUDA GPU in bf16: the merged and low-rank decoding paths agree, and the benchmark's
shape workload runs (skipped without a GPU; see pytest.ini's `gpu` marker)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_core import random_perturbation

from tflow import apply
from tflow.agents import Backbone
from tflow.tools.bench import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu


def test_merged_and_low_rank_paths_agree_in_bf16_on_cuda(make_qwen3):
    cpu = make_qwen3(seed=5)
    backbone = Backbone(cpu.model.to("cuda", torch.bfloat16), cpu.tokenizer, cpu.name)
    pert = random_perturbation(backbone, batch=1)
    ids = torch.randint(5, 200, (1, 9), device="cuda")
    with torch.no_grad():
        plain = backbone.model(ids).logits
        with apply(backbone.model, pert, merge=True):
            merged = backbone.model(ids).logits
        with apply(backbone.model, pert, merge=False):
            lowrank = backbone.model(ids).logits
    assert float((merged - plain).abs().max()) > 1e-2  # the perturbation changes the logits
    torch.testing.assert_close(merged.float(), lowrank.float(), atol=5e-2, rtol=5e-2)


def test_shape_benchmark_runs_in_bf16_on_cuda(tmp_path):
    out = tmp_path / "gpu.json"
    main(
        [
            "--workload",
            "shape",
            "--model",
            str(ROOT / "checkpoints" / "tiny-qwen3"),
            "--device",
            "cuda",
            "--dtype",
            "bf16",
            "--layers",
            "2",
            "-M",
            "8",
            "-R",
            "4",
            "--queries",
            "1",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["device_name"] and report["shape"]["config"]["dtype"] == "torch.bfloat16"
    assert report["ratios"]["tflow_receiver_prefill_equals_single"] is True


@pytest.mark.parametrize("gen_dtype", [torch.float32, torch.bfloat16], ids=["generator-fp32", "generator-bf16"])
def test_embedded_checkpoints_answer_in_every_mode_on_cuda_in_bf16(gen_dtype):
    """The Studio's code path: Pipeline.from_pretrained on CUDA (bf16 by default there)."""
    from tflow import Pipeline, tasks

    pipe = Pipeline.from_pretrained(
        str(ROOT / "checkpoints" / "tiny-qwen3"),
        generator=str(ROOT / "checkpoints" / "generators" / "relay"),
        static_adapter=str(ROOT / "checkpoints" / "static" / "relay"),
        device="cuda",
    )
    pipe.generator.to(gen_dtype)
    assert pipe.backbone.dtype == torch.bfloat16
    examples = tasks.examples("relay", "test", 20, seed=0)
    correct = {}
    for mode in ("single", "textmas", "tflow", "static"):
        one = pipe.run(examples[0].question, mode, examples[0].contexts, max_new_tokens=16)  # merged path
        assert one.usage.total_tokens > 0
        batch = pipe.run_batch([e.question for e in examples], mode, [e.contexts for e in examples], max_new_tokens=16)
        correct[mode] = sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(batch, examples))
    assert correct["tflow"] >= 17 and correct["textmas"] >= 17 and correct["single"] <= 2, correct
