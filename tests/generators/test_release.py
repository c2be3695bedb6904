"""The release architecture: exact against the authors' generator, safe conversion, one interface.

Every fixture directory (the shipped tests/fixtures/release-*, ../shared/fixtures/*, and any
listed in TFLOW_RELEASE_FIXTURES, separated by the OS path separator) holds a checkpoint in
the release's format, its backbone's config.json, fixture.json (the hyper-parameters that
tensor shapes cannot tell) and io.safetensors (the release's own inputs and outputs). Nothing
shape-specific is written here: shapes come from the checkpoint and the config.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from tflow import Pipeline, Roles, apply, infer_targets, load_generator
from tflow.generators import ReleaseConfig, ReleaseGenerator, stack_conditions
from tflow.peft_io import peft_state
from tflow.tools import convert_release as cr

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the code plus 5?"


def fixture_dirs() -> list[Path]:
    roots = [
        *sorted((ROOT / "tests" / "fixtures").glob("release-*")),
        *sorted((ROOT.parent / "shared" / "fixtures").glob("*")),
    ]
    roots += [Path(p) for p in os.environ.get("TFLOW_RELEASE_FIXTURES", "").split(os.pathsep) if p]
    seen, out = set(), []
    for d in roots:
        if all((d / f).is_file() for f in ("checkpoint.pt", "config.json", "fixture.json", "io.safetensors")):
            digest = hashlib.sha256(
                (d / "checkpoint.pt").read_bytes() + (d / "io.safetensors").read_bytes()
            ).hexdigest()
            if digest not in seen:
                seen.add(digest)
                out.append(d)
    return out


FIXTURES = fixture_dirs()


def fixed_hyperparameters(fx: dict) -> dict:
    g = fx["generator"]
    return {
        "head_dim": int(g["head_dim"]),
        "alpha": float(g["alpha"]),
        "output_scale": float(fx["scales"]["pg_output_scale"]),
        "rope_theta": float(g.get("rope_theta", 10000.0)),
        "norm_eps": float(g.get("rms_norm_eps", 1e-6)),
    }


def assert_matches(name: str, got: torch.Tensor, ref: torch.Tensor) -> None:
    """max|diff| <= 1e-5 * max|ref|, per tensor, in float32."""
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    diff, scale = float((got.float() - ref.float()).abs().max()), float(ref.abs().max())
    assert diff <= 1e-5 * scale, f"{name}: max|diff| {diff:.3g} > 1e-5 x max|ref| {scale:.3g}"


def test_a_fixture_is_shipped_with_the_repository():
    assert any(d.is_relative_to(ROOT) for d in FIXTURES)


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda d: d.parent.name + "/" + d.name)
def test_converted_release_checkpoint_reproduces_every_release_output(fixture: Path, tmp_path: Path):
    torch.set_num_threads(2)
    fx, io = json.loads((fixture / "fixture.json").read_text()), load_file(str(fixture / "io.safetensors"))
    cr.convert(fixture / "checkpoint.pt", str(fixture), tmp_path / "gen", **fixed_hyperparameters(fx))
    config = AutoConfig.from_pretrained(fixture)
    torch.manual_seed(0)
    receiver = (
        AutoModelForCausalLM.from_config(config).float().eval()
    )  # random weights: only the linears' shapes matter
    gen = load_generator(tmp_path / "gen", infer_targets(receiver), "fixture").eval()
    assert isinstance(gen, ReleaseGenerator)
    g, c = fx["generator"], gen.config
    assert (c.d_model, c.rank, c.dim_accumulation, c.token_dim, c.n_blocks) == (
        g["d_model"], g["rank"], g["dim_accumulation"], g["token_dim"], g["num_pg_layers"])
    assert gen.provenance()["converted_from"]["samples_seen"] == fx["spec"]["samples_seen"]

    senders = sorted({int(m.group(1)) for k in io if (m := re.match(r"sender(\d+)\.hidden_states$", k))})
    states = [io[f"sender{s}.hidden_states"] for s in senders]
    with torch.no_grad():
        assert_matches("aggregator.layer_softmax", gen.aggregator.weights(), io["aggregator.layer_softmax"])
        for s, h in zip(senders, states):
            cond = gen.aggregator(h)
            assert_matches(f"sender{s}.condition", cond, io[f"sender{s}.condition"])
            tokens = gen.generator_tokens(cond[None], torch.ones(1, cond.shape[0], dtype=torch.bool))[0]
            if f"sender{s}.generator_tokens" in io:  # raw tokens: a diagnostic; the factors below are the contract
                assert_matches(f"sender{s}.generator_tokens", tokens, io[f"sender{s}.generator_tokens"])
        # all senders in one padded, masked batch: the shorter ones' padding must not matter
        pert = gen(*stack_conditions(states, len(senders)), tuple(f"sender{s}" for s in senders))
    torch.testing.assert_close(pert.weights[0], torch.tensor(fx["scales"]["sender_fusion_weights"]))
    assert pert.scaling == pytest.approx(fx["scales"]["lora_scale_alpha_over_rank"])
    factors = 0
    for key, ref in io.items():
        if m := re.match(r"sender(\d+)\.layers\.(\d+)\.(.+)\.lora_([AB])$", key):
            side = pert.A if m.group(4) == "A" else pert.B
            assert_matches(key, side[m.group(3)][0, senders.index(int(m.group(1))), int(m.group(2))], ref)
            factors += 1
    assert factors == 2 * len(senders) * gen.spec.num_layers * len(gen.spec.modules)
    fused = [m for k in io if (m := re.match(r"fused\.layers\.(\d+)\.(.+)\.delta_weight$", k))]
    probes = [m for k in io if (m := re.match(r"probe\.layers\.(\d+)\.(.+)\.x$", k))]
    assert fused and probes
    for m in fused:
        assert_matches(m.group(0), pert.delta(int(m.group(1)), m.group(2)), io[m.group(0)])
    for m in probes:  # the LoRA part of the patched linear's output, through our transient patch
        layer, name = int(m.group(1)), m.group(2)
        linear = receiver.get_submodule(gen.spec.module_name(layer, name))
        x = io[m.group(0)][None]  # (1, rows, in): the patched linear sees (batch, tokens, in)
        with torch.no_grad():
            base = linear(x)
            with apply(receiver, pert, merge=False):
                patched = linear(x)
        assert_matches(f"probe {layer}.{name}", (patched - base)[0], io[f"probe.layers.{layer}.{name}.lora_output"])


class _Boom:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_malicious_pickle_is_refused_before_torch_load_ever_sees_it(tmp_path, monkeypatch, capsys, protocol):
    marker, bad = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"parameter_generator": {"x": _Boom(marker)}}, bad, pickle_protocol=protocol)
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append((a, k)))
    with pytest.raises(cr.UnsafeCheckpointError, match=r"refused: its pickle references posix\.system"):
        cr.read_checkpoint(bad)
    with pytest.raises(SystemExit) as exit_info:
        cr.main([str(bad), "--model", str(ROOT / "checkpoints" / "tiny-qwen3"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "posix.system" in err
    assert loads == [] and not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_the_scan_reads_the_globals_of_a_plain_state_dict_in_any_protocol(tmp_path, protocol):
    path = tmp_path / "plain.pt"
    torch.save(nn.Linear(3, 2).state_dict(), path, pickle_protocol=protocol)
    assert set(cr.scan_checkpoint(path)) <= {f"{m}.{n}" for m, n in cr.ALLOWED_GLOBALS}
    assert "torch._utils._rebuild_tensor_v2" in cr.scan_checkpoint(path)


def test_a_pickle_that_is_not_a_torch_archive_is_refused(tmp_path):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(cr.UnsafeCheckpointError, match="not a torch.save zip archive"):
        cr.read_checkpoint(path)


@pytest.mark.skipif(not FIXTURES, reason="no release fixture")
def test_a_checkpoint_for_another_backbone_is_a_one_line_error_naming_the_mismatch(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cr.main(
            [
                str(FIXTURES[0] / "checkpoint.pt"),
                "--model",
                str(ROOT / "checkpoints" / "tiny-qwen3"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "does not fit the model" in err and "hidden size is 128" in err and "backbone layers" in err
    with pytest.raises(SystemExit):
        cr.main(
            [str(FIXTURES[0] / "checkpoint.pt"), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
        )
    assert capsys.readouterr().err.startswith("error: could not read the config")
    with pytest.raises(SystemExit):  # the shipped fixture's d_model (64) does not take the released head size (128)
        cr.main([str(FIXTURES[0] / "checkpoint.pt"), "--model", str(FIXTURES[0]), "--out", str(tmp_path / "o")])
    assert "e.g. --head-dim" in capsys.readouterr().err


def loud_release(backbone, seed: int = 0, **sizes) -> ReleaseGenerator:
    """A small release generator with a random (non-zero) B head."""
    torch.manual_seed(seed)
    cfg = ReleaseConfig(**{"d_model": 32, "head_dim": 8, "token_dim": 16, "output_scale": 0.3, **sizes})
    gen = ReleaseGenerator(cfg, infer_targets(backbone.model), backbone.name)
    nn.init.normal_(gen.model.proj_out_B.weight, std=0.5)
    return gen.eval()


def test_an_untrained_release_generator_gives_a_zero_perturbation(qwen3):
    gen = ReleaseGenerator(ReleaseConfig(d_model=32, head_dim=8, token_dim=16), infer_targets(qwen3.model))
    assert not gen.is_trained
    pert = Pipeline(qwen3, gen).condition([QUESTION], [["The code is 47.", None]], Roles()).perturbation
    assert all(float(b.abs().max()) == 0.0 for b in pert.B.values())
    assert loud_release(qwen3).is_trained


def test_release_factors_of_a_batch_equal_those_of_each_query_alone(qwen3):
    pipe = Pipeline(qwen3, loud_release(qwen3))
    qs = ["What is the code plus 5?", "What is the pin?", "How many apples does Ann have now, after all that?"]
    ctx = [["The code is 47.", None], [None, "The pin is 12."], ["Ann has 23 apples.", "Ann buys 14 more apples."]]
    batched = pipe.condition(qs, ctx, Roles()).perturbation
    for i, (q, c) in enumerate(zip(qs, ctx)):
        alone = pipe.condition([q], [c], Roles()).perturbation
        for name in alone.A:
            torch.testing.assert_close(batched.A[name][i], alone.A[name][0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(batched.B[name][i], alone.B[name][0], atol=1e-6, rtol=1e-5)
    assert float((batched.B["mlp.up_proj"][0] - batched.B["mlp.up_proj"][1]).abs().max()) > 1e-4  # per-query factors


def test_a_saved_release_generator_runs_every_path_like_the_grid(qwen3, tmp_path):
    gen = loud_release(qwen3, seed=1)
    gen.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generator_config.json").read_text())["arch"] == "release"
    again = load_generator(tmp_path, infer_targets(qwen3.model), qwen3.name)
    pipe = Pipeline(qwen3, again)
    merged = pipe.run(QUESTION, "tflow", "The code is 47.", max_new_tokens=8)
    lowrank = Pipeline(qwen3, again, merge=False).run(QUESTION, "tflow", "The code is 47.", max_new_tokens=8)
    single = pipe.run(QUESTION, "single", max_new_tokens=8)
    assert merged.answer == lowrank.answer and merged.perturbation.layer_weights is not None
    assert any(float(b.abs().max()) > 0 for b in merged.perturbation.B.values()) and merged.answer != single.answer
    # the PEFT export of the fused perturbation computes the same linear outputs
    _, tensors = peft_state(merged.perturbation)
    spec = merged.perturbation.spec
    for layer, name, _linear in spec.linears(qwen3.model):
        key = "base_model.model." + spec.module_name(layer, name)
        a, b = tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"]
        torch.testing.assert_close(b @ a, merged.perturbation.delta(layer, name), atol=1e-6, rtol=1e-5)


def test_release_generator_in_bf16_gives_the_fp32_factors_to_bf16_precision(qwen3):
    gen = loud_release(qwen3, seed=2)
    pipe = Pipeline(qwen3, gen)
    want = pipe.condition([QUESTION], [["The code is 47.", None]], Roles()).perturbation
    pipe.generator.to(torch.bfloat16)
    pipe.clear_cache()
    got = pipe.condition([QUESTION], [["The code is 47.", None]], Roles()).perturbation
    for name in want.A:
        assert got.B[name].dtype == torch.bfloat16 and torch.isfinite(got.B[name]).all()
        err = float((got.delta(0, name) - want.delta(0, name)).abs().max()) / float(want.delta(0, name).abs().max())
        assert err < 0.1
    assert pipe.run(QUESTION, "tflow", "The code is 47.", max_new_tokens=4).answer


def test_an_unknown_architecture_in_a_checkpoint_is_a_readable_error(qwen3, tmp_path):
    loud_release(qwen3).save_pretrained(tmp_path)
    card = json.loads((tmp_path / "generator_config.json").read_text())
    (tmp_path / "generator_config.json").write_text(json.dumps({**card, "arch": "hologram"}))
    with pytest.raises(ValueError, match="unknown architecture 'hologram'"):
        load_generator(tmp_path, infer_targets(qwen3.model))
