"""The CPU dtype probe (tflow/cpu_dtype.py): bf16 only when it is measured clearly faster, at the model's own shapes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tflow import cpu_dtype, infer_targets
from tflow.agents import load_backbone

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("fp32", "bf16", "chosen"), [(1.0, 0.5, torch.bfloat16), (1.0, 0.95, torch.float32),
                                                       (1.0, 1.6, torch.float32)])
def test_bf16_is_chosen_only_when_it_runs_at_least_the_margin_faster(monkeypatch, fp32, bf16, chosen):
    monkeypatch.setattr(cpu_dtype, "_step_seconds", lambda weights, repeats: {torch.float32: fp32,
                                                                               torch.bfloat16: bf16}[weights[0].dtype])
    choice = cpu_dtype.probe([(8, 4)], budget=1024)
    assert (choice.dtype, choice.fp32_s, choice.bf16_s) == (chosen, fp32, bf16)
    assert choice.why.startswith("bf16" if chosen == torch.bfloat16 else "fp32")
    assert f"{fp32 / bf16:.2f}x" in choice.why


def test_the_probe_streams_the_model_shapes_up_to_its_budget_in_both_dtypes():
    shapes = [(16, 8), (8, 16)]
    weights = cpu_dtype._weights(shapes, torch.bfloat16, budget=4096)
    assert [tuple(w.shape) for w in weights[:2]] == shapes and all(w.dtype == torch.bfloat16 for w in weights)
    assert sum(w.numel() * 4 for w in weights) >= 4096
    choice = cpu_dtype.probe(shapes, repeats=1, budget=4096)  # a real, tiny timing: only its form is checked
    assert choice.fp32_s > 0 and choice.bf16_s > 0 and choice.dtype in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="at least one weight shape"):
        cpu_dtype.probe([])


def test_model_shapes_are_a_decoder_layers_linears(qwen3, llama):
    for backbone in (qwen3, llama):
        spec = infer_targets(backbone.model)
        assert sorted(cpu_dtype.model_shapes(backbone.model.config)) == sorted(spec.modules.values())


def test_fastest_loads_the_measured_dtype_and_says_why(monkeypatch):
    monkeypatch.setattr(cpu_dtype, "probe", lambda shapes: cpu_dtype.DtypeChoice(torch.bfloat16, 2.0, 1.0))
    fast = load_backbone(str(ROOT / "checkpoints" / "tiny-qwen3"), "cpu", "fastest")
    assert fast.dtype == torch.bfloat16 and fast.dtype_why.startswith("bf16: ") and "2.00x" in fast.dtype_why
    plain = load_backbone(str(ROOT / "checkpoints" / "tiny-qwen3"), "cpu")
    assert plain.dtype == torch.float32 and plain.dtype_why == ""


def test_the_studio_command_takes_the_probes_dtype_unless_told(monkeypatch):
    from tflow.studio.cli import parse_args

    assert parse_args(["--model", "tiny"]).dtype == "fastest"
    assert parse_args(["--model", "tiny", "--dtype", "fp32"]).dtype == "fp32"
