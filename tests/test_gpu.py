"""On a CUDA GPU in bf16: the merged and low-rank decoding paths agree, and the benchmark's
shape workload runs (skipped without a GPU; see pytest.ini's `gpu` marker)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tflow import apply
from tflow.agents import Backbone
from tflow.bench import main

from test_core import random_perturbation

ROOT = Path(__file__).resolve().parents[1]
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
    main(["--workload", "shape", "--model", str(ROOT / "checkpoints" / "tiny-qwen3"), "--device", "cuda", "--dtype", "bf16",
          "--layers", "2", "-M", "8", "-R", "4", "--queries", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["device_name"] and report["shape"]["config"]["dtype"] == "torch.bfloat16"
    assert report["ratios"]["tflow_receiver_prefill_equals_single"] is True
