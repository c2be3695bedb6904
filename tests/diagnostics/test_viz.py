"""The figure builders of tflow.diagnostics.viz show exactly the numbers they claim.

A hand-made perturbation (two senders, uneven fusion weights, rectangular modules) is
checked against dense matrices built here independently of the library:
heatmap cells = Frobenius norms, spectrum = torch.linalg.svdvals, and so on.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tflow.diagnostics import measures, viz
from tflow.lora import Perturbation, TargetSpec
from tflow.results import AgentUsage, RunResult, SenderStates, Usage

torch.set_num_threads(1)

SENDERS = ("Strategist", "Knowledge Extractor")
MODULES = {"self_attn.q_proj": (8, 8), "mlp.up_proj": (12, 8), "mlp.down_proj": (8, 12)}
LAYERS, RANK = 3, 2


@pytest.fixture(scope="module")
def pert() -> Perturbation:
    g = torch.Generator().manual_seed(0)
    spec = TargetSpec("model.layers", LAYERS, 8, MODULES)
    batch, s = 2, len(SENDERS)
    A = {n: torch.randn(batch, s, LAYERS, RANK, fin, generator=g) for n, (fout, fin) in MODULES.items()}
    B = {n: torch.randn(batch, s, LAYERS, fout, RANK, generator=g) for n, (fout, fin) in MODULES.items()}
    weights = torch.tensor([[0.3, 0.7], [0.5, 0.5]])
    return Perturbation(
        spec, A, B, weights, 2.0, SENDERS, layer_weights=torch.softmax(torch.randn(LAYERS + 1, generator=g), 0)
    )


def dense(p: Perturbation, layer: int, name: str, sample: int = 0, sender: int | None = None) -> torch.Tensor:
    """sum_i w_i * s * B_i @ A_i, written out (float64)."""
    senders = range(len(p.senders)) if sender is None else [sender]
    return sum(
        float(p.weights[sample, i])
        * p.scaling
        * p.B[name][sample, i, layer].double()
        @ p.A[name][sample, i, layer].double()
        for i in senders
    )


def dense_norms(p: Perturbation, sample: int = 0, sender: int | None = None) -> np.ndarray:
    return np.array(
        [
            [float(torch.linalg.norm(dense(p, layer, name, sample, sender))) for name in MODULES]
            for layer in range(LAYERS)
        ]
    )


def test_heatmap_cells_are_the_frobenius_norms(pert: Perturbation) -> None:
    fig = viz.perturbation_heatmap(pert, "fused")
    np.testing.assert_allclose(np.array(fig.data[0].z), dense_norms(pert), rtol=1e-6)
    assert list(fig.data[0].x) == ["q_proj", "up_proj", "down_proj"] and list(fig.data[0].y) == list(range(LAYERS))
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text and fig.layout.title.text


def test_heatmap_of_another_sample_and_the_library_delta_agree(pert: Perturbation) -> None:
    np.testing.assert_allclose(measures.delta_norms(pert, sample=1), dense_norms(pert, sample=1), rtol=1e-6)
    lib = [[float(torch.linalg.norm(pert.delta(layer, name))) for name in MODULES] for layer in range(LAYERS)]
    np.testing.assert_allclose(measures.delta_norms(pert), lib, rtol=1e-5)


def test_heatmap_per_sender_and_relative(pert: Perturbation) -> None:
    fig = viz.perturbation_heatmap(pert, "senders")
    assert len(fig.data) == len(SENDERS)
    for i, trace in enumerate(fig.data):
        np.testing.assert_allclose(np.array(trace.z), dense_norms(pert, sender=i), rtol=1e-6)
    w_norms = np.arange(1, LAYERS * len(MODULES) + 1, dtype=float).reshape(LAYERS, len(MODULES))
    rel = viz.perturbation_heatmap(pert, "relative", w_norms)
    np.testing.assert_allclose(np.array(rel.data[0].z), dense_norms(pert) / w_norms, rtol=1e-6)
    with pytest.raises(ValueError, match="norms"):
        viz.perturbation_heatmap(pert, "relative")
    with pytest.raises(ValueError, match="unknown view"):
        viz.perturbation_heatmap(pert, "nope")


@pytest.mark.parametrize("layer,name", [(0, "self_attn.q_proj"), (2, "mlp.up_proj"), (1, "mlp.down_proj")])
def test_spectrum_is_svdvals(pert: Perturbation, layer: int, name: str) -> None:
    fig = viz.spectrum_figure(pert, layer, name)
    full = torch.linalg.svdvals(dense(pert, layer, name)).numpy()
    shown = np.array(fig.data[0].y)
    assert len(shown) == len(SENDERS) * RANK
    np.testing.assert_allclose(shown, full[: len(shown)], rtol=1e-6, atol=1e-9)
    assert np.all(full[len(shown):] < 1e-9 * full[0]), "the rank bound S*r does not hold"


def test_sender_share_layer_and_fusion_weights(pert: Perturbation) -> None:
    share = viz.sender_share_figure(pert)
    per_layer = np.sqrt([(dense_norms(pert, sender=i) ** 2).sum(axis=1) for i in range(len(SENDERS))])
    np.testing.assert_allclose(np.array([t.y for t in share.data]), 100 * per_layer / per_layer.sum(axis=0), rtol=1e-6)
    layers = viz.layer_weights_figure(pert.layer_weights)
    np.testing.assert_allclose(layers.data[0].y, pert.layer_weights.numpy(), rtol=1e-6)
    assert list(layers.data[0].x) == ["emb", "1", "2", "3"]
    fusion = viz.fusion_weights_figure(pert.weights, pert.senders)
    np.testing.assert_allclose(fusion.data[0].x, [0.3, 0.7], rtol=1e-6)
    assert "static adapter" in viz.layer_weights_figure(None).layout.annotations[0].text


def test_perturbation_features(pert: Perturbation) -> None:
    np.testing.assert_allclose(measures.perturbation_features(pert, 0, "pooled"), dense_norms(pert).ravel(), rtol=1e-6)
    a, b = measures.perturbation_features(pert, 0), measures.perturbation_features(pert, 1)
    assert a.shape == b.shape and not np.allclose(a, b)
    np.testing.assert_array_equal(a, measures.perturbation_features(pert, 0))  # deterministic
    zero = Perturbation(
        pert.spec, pert.A, {k: torch.zeros_like(v) for k, v in pert.B.items()}, pert.weights, 2.0, SENDERS
    )
    assert not measures.perturbation_features(zero, 0).any()
    assert measures.relative_spread(np.ones((5, 3))) == 0.0 and measures.relative_spread(np.eye(3)) > 0


def result(mode: str, agents: dict[str, tuple[int, int, int]], timings: dict[str, float]) -> RunResult:
    usage = Usage({role: AgentUsage(*u) for role, u in agents.items()})
    receiver = usage.by_agent["Executor"]
    return RunResult(
        mode,
        "q",
        "42",
        usage,
        {**timings, "total": sum(timings.values())},
        receiver.kv_cache_bytes,
        "eos",
        receiver.prompt_tokens,
    )


@pytest.fixture(scope="module")
def results() -> dict[str, RunResult]:
    return {
        "single": result("single", {"Executor": (40, 10, 1000)}, {"receiver": 0.010}),
        "textmas": result(
            "textmas",
            {"Strategist": (40, 60, 2000), "Knowledge Extractor": (40, 60, 2000), "Executor": (160, 10, 3400)},
            {"senders": 0.080, "receiver": 0.020},
        ),
        "tflow": result(
            "tflow",
            {"Strategist": (40, 0, 0), "Knowledge Extractor": (40, 0, 0), "Executor": (40, 10, 1000)},
            {"sender_pass": 0.002, "generator": 0.004, "receiver": 0.012},
        ),
    }


def test_tokens_and_time_stacks_add_up(results: dict[str, RunResult]) -> None:
    tokens = viz.tokens_figure(results)
    stacked = np.sum([t.y for t in tokens.data], axis=0)
    assert list(stacked) == [r.usage.total_tokens for r in results.values()]
    assert [t.name for t in tokens.data] == ["Executor", "Strategist", "Knowledge Extractor"]
    assert list(tokens.data[0].x) == ["Single", "TextMAS", "TFlow"]
    time = viz.time_figure(results)
    np.testing.assert_allclose(
        np.sum([t.y for t in time.data], axis=0), [1000 * r.timings["total"] for r in results.values()]
    )
    assert time.layout.yaxis.title.text == "milliseconds"


def test_savings_in_percent(results: dict[str, RunResult]) -> None:
    table = viz.savings(results)
    assert table["vs TextMAS"]["tokens"] == pytest.approx(100 * (370 - 130) / 370)
    assert table["vs Single"]["tokens"] == pytest.approx(100 * (50 - 130) / 50)
    assert table["vs TextMAS"]["wall time"] == pytest.approx(100 * (0.100 - 0.018) / 0.100)
    assert table["vs TextMAS"]["KV cache"] == pytest.approx(100 * (7400 - 1000) / 7400)
    fig = viz.savings_figure(results)
    assert [t.name for t in fig.data] == ["TFlow vs TextMAS", "TFlow vs Single"]
    np.testing.assert_allclose(fig.data[0].y, list(table["vs TextMAS"].values()))
    assert viz.savings({"single": results["single"]}) == {}
    for builder in (viz.tokens_figure, viz.time_figure, viz.savings_figure):
        assert builder({}).layout.annotations, "an empty figure must say what will appear"


def test_embeddings_fall_back_to_pca_with_a_note() -> None:
    few = measures.embed_2d(np.random.default_rng(0).normal(size=(5, 4)))
    assert few.method == "PCA" and "only 5 points" in few.note and few.coords.shape == (5, 2)
    same = measures.embed_2d(np.ones((20, 4)))
    assert same.method == "PCA" and "identical" in same.note
    states = [SenderStates(role, ["How", "Ġmany"], torch.randn(2, 2, 8)) for role in SENDERS]
    fig, note = viz.hidden_states_figure(states)
    assert "PCA" in note and [t.name for t in fig.data] == list(SENDERS)
    assert [c[0] for c in fig.data[0].customdata] == ["How", "␣many", "How", "␣many"]
    assert [c[1] for c in fig.data[0].customdata] == ["0", "0", "1", "1"]
    qfig, qnote = viz.queries_figure(np.random.default_rng(1).normal(size=(6, 3)), ["relay"] * 3 + ["split"] * 3,
                                     ["1", "2", "3", "4", "5", "x"], ["q"] * 6, colour_by="answer")
    assert "PCA" in qnote and "Relative spread" in qnote and np.isnan(qfig.data[0].marker.color[-1])


def test_a_read_out_slice_is_named_so_in_the_hidden_states_figure_not_counted_as_a_layer() -> None:
    states = [SenderStates(role, ["How", "Ġmany"], torch.randn(3, 2, 8), readout=True) for role in SENDERS]
    fig, _ = viz.hidden_states_figure(states)
    assert [c[1] for c in fig.data[0].customdata] == ["0", "0", "1", "1", "read-out", "read-out"]
    assert "read-out" in fig.data[0].marker.colorbar.title.text
    bars = viz.layer_weights_figure(torch.softmax(torch.zeros(4), 0), readout=True)
    assert list(bars.data[0].x) == ["emb", "1", "2", "read-out"]
    assert list(viz.layer_weights_figure(torch.softmax(torch.zeros(3), 0)).data[0].x) == ["emb", "1", "2"]
