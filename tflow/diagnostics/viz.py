"""Figures of TFlow Studio: pure functions, data in, plotly figure out.

Numbers first, figures second: `delta_norms`, `spectrum`, `sender_layer_norms`,
`perturbation_features` and `embed_2d` compute what the figures show, so tests can
check a figure's cells against an independent computation. Norms and singular values
come from the LoRA factors (never the dense out x in matrix), so they stay cheap on a
multi-billion-parameter backbone:

    ||B A||_F^2 = sum((B^T B) * (A A^T))     and     svd(B A) = svd(R_B R_A^T)

with B = Q_B R_B and A^T = Q_A R_A; only rank-sized matrices are decomposed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..lora import Perturbation
from ..results import RunResult, SenderStates
from .measures import delta_norms, embed_2d, relative_spread, sender_layer_norms, spectrum

MODE_LABELS = {"single": "Single", "textmas": "TextMAS", "tflow": "TFlow", "static": "Static LoRA"}
STAGE_LABELS = {"senders": "senders write messages", "sender_pass": "sender pass (prefill only)",
                "generator": "parameter generator", "receiver": "receiver generates"}
STAGE_COLOURS = {"senders": "#e45756", "sender_pass": "#72b7b2", "generator": "#b279a2", "receiver": "#54a24b"}
ROLE_COLOURS = {"Strategist": "#4c78a8", "Knowledge Extractor": "#f58518", "Executor": "#54a24b"}
AGENT_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d"]
COMPARE_COLOURS = {"vs TextMAS": "#4c78a8", "vs Single": "#9d755d"}
HEIGHT = 340


# ----------------------------------------------------------------------------- numbers


# ----------------------------------------------------------------------------- figures

def layout(
    fig: go.Figure, title: str, subtitle: str, x: str | None, y: str | None, height: int = HEIGHT, **kwargs
) -> go.Figure:
    """Shared look: a title, a one-line explanation under it, labelled axes, legend below."""
    fig.update_layout(
        title={
            "text": title,
            "subtitle": {"text": subtitle, "font": {"size": 12, "color": "#555"}},
            "x": 0.0,
            "xanchor": "left",
            "font": {"size": 15},
        },
        xaxis_title=x,
        yaxis_title=y,
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 78, "b": 60},
        legend={"orientation": "h", "y": -0.22 if x else -0.12, "yanchor": "top"},
        **kwargs,
    )
    return fig


def placeholder(text: str, height: int = HEIGHT) -> go.Figure:
    """An empty figure that says what will appear here and how to get it."""
    fig = go.Figure()
    fig.add_annotation(
        text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14, "color": "#666"}
    )
    fig.update_layout(template="plotly_white", height=height, xaxis={"visible": False}, yaxis={"visible": False},
                      margin={"l": 20, "r": 20, "t": 20, "b": 20})
    return fig


def short_module(name: str) -> str:
    """'self_attn.q_proj' -> 'q_proj'."""
    return name.rsplit(".", 1)[-1]


def agent_colour(role: str, order: Sequence[str]) -> str:
    """The same colour for a role in every figure (the paper's roles have fixed ones)."""
    return ROLE_COLOURS.get(role) or AGENT_COLOURS[(3 + list(order).index(role)) % len(AGENT_COLOURS)]


def tokens_figure(results: Mapping[str, RunResult]) -> go.Figure:
    """Processed tokens (prompt + generated) per mode, stacked by agent."""
    if not results:
        return placeholder("Run a question to compare the modes' token cost.")
    modes = [MODE_LABELS.get(m, m) for m in results]
    agents = list(dict.fromkeys(role for r in results.values() for role in r.usage.by_agent))
    fig = go.Figure()
    for role in agents:
        usage = [r.usage.by_agent.get(role) for r in results.values()]
        fig.add_bar(
            name=role,
            x=modes,
            y=[u.total_tokens if u else 0 for u in usage],
            marker_color=agent_colour(role, agents),
            customdata=[[u.prompt_tokens, u.generated_tokens] if u else [0, 0] for u in usage],
            hovertemplate=f"{role}<br>%{{y}} tokens = %{{customdata[0]}} prompt + %{{customdata[1]}} "
                          "generated<extra></extra>",
        )
    for mode, r in zip(modes, results.values()):
        fig.add_annotation(x=mode, y=r.usage.total_tokens, text=str(r.usage.total_tokens), showarrow=False, yshift=10)
    return layout(fig, "Processed tokens per mode",
                  "stacked by agent; each agent's prompt (read) + generated (written) tokens", None, "tokens",
                  barmode="stack")


def time_figure(results: Mapping[str, RunResult]) -> go.Figure:
    """Wall time per mode in milliseconds, stacked by stage."""
    if not results:
        return placeholder("Run a question to compare the modes' wall time.")
    modes = [MODE_LABELS.get(m, m) for m in results]
    stages = [s for s in STAGE_LABELS if any(s in r.timings for r in results.values())]
    fig = go.Figure()
    for stage in stages:
        fig.add_bar(
            name=STAGE_LABELS[stage], x=modes, y=[1000 * r.timings.get(stage, 0.0) for r in results.values()],
            marker_color=STAGE_COLOURS[stage], hovertemplate=f"{STAGE_LABELS[stage]}: %{{y:.1f}} ms<extra></extra>",
        )
    for mode, r in zip(modes, results.values()):
        fig.add_annotation(
            x=mode, y=1000 * r.timings["total"], text=f"{1000 * r.timings['total']:.0f} ms", showarrow=False, yshift=10
        )
    return layout(
        fig, "Wall time per mode", "stacked by stage, measured on this machine", None, "milliseconds", barmode="stack"
    )


def total_kv_bytes(r: RunResult) -> int:
    """KV-cache bytes summed over every agent of a run."""
    return sum(u.kv_cache_bytes for u in r.usage.by_agent.values())


def savings(results: Mapping[str, RunResult]) -> dict[str, dict[str, float]]:
    """TFlow's saving in percent versus each other mode it ran with: {"vs TextMAS": {"tokens": 71.0, ...}}.

    saving = (other - tflow) / other * 100: positive when TFlow uses less."""
    if "tflow" not in results:
        return {}
    metrics = {"tokens": lambda r: r.usage.total_tokens, "wall time": lambda r: r.timings["total"],
               "KV cache": total_kv_bytes}
    ours = results["tflow"]
    out = {}
    for mode in ("textmas", "single"):
        if mode in results:
            other = results[mode]
            out[f"vs {MODE_LABELS[mode]}"] = {
                k: 100.0 * (f(other) - f(ours)) / f(other) if f(other) else 0.0 for k, f in metrics.items()
            }
    return out


def savings_figure(results: Mapping[str, RunResult]) -> go.Figure:
    """Grouped bars: TFlow's percentage saving in tokens, wall time and KV cache versus TextMAS and Single."""
    table = savings(results)
    if not table:
        return placeholder("Run TFlow together with TextMAS or Single to see its savings.")
    fig = go.Figure()
    for name, row in table.items():
        fig.add_bar(name=f"TFlow {name}", x=list(row), y=list(row.values()), marker_color=COMPARE_COLOURS[name],
                    text=[f"{v:+.0f}%" for v in row.values()], textposition="outside", cliponaxis=False,
                    hovertemplate=f"TFlow {name}: %{{y:+.1f}}% on %{{x}}<extra></extra>")
    fig.add_hline(y=0, line_color="#333", line_width=1)
    values = [v for row in table.values() for v in row.values()]
    pad = 0.15 * (max(values + [0.0]) - min(values + [0.0])) + 5
    fig.update_yaxes(range=[min(values + [0.0]) - pad, max(values + [0.0]) + pad])
    return layout(fig, "TFlow's savings", "(other − TFlow) / other; above 0: TFlow uses less",
                   None, "saving (%)", barmode="group")


def perturbation_heatmap(
    p: Perturbation, view: str = "fused", weight_norms: np.ndarray | None = None, sample: int = 0
) -> go.Figure:
    """Layers x modules heatmap of ||dW||_F: fused, each sender's share, or relative to ||W||_F."""
    if view not in ("fused", "senders", "relative"):
        raise ValueError(f"unknown view {view!r}: use fused, senders or relative")
    modules = [short_module(m) for m in p.spec.modules]
    layers = list(range(p.spec.num_layers))
    text = p.spec.num_layers * len(modules) <= 120
    cell = {"x": modules, "y": layers, "colorscale": "Viridis", "texttemplate": "%{z:.2g}" if text else None}
    if view == "senders":
        grids = [delta_norms(p, sample, i) for i in range(len(p.senders))]
        top = max(float(g.max()) for g in grids) or 1.0
        fig = make_subplots(
            rows=1,
            cols=len(grids),
            shared_yaxes=True,
            subplot_titles=[f"{s} (w = {float(p.weights[sample, i]):.2f})" for i, s in enumerate(p.senders)],
        )
        for i, grid in enumerate(grids):
            fig.add_heatmap(z=grid, zmin=0, zmax=top, showscale=i == 0,
                            colorbar={"title": "‖ΔW<sub>i</sub>‖<sub>F</sub>"},
                            hovertemplate="layer %{y}, %{x}<br>‖ΔW_i‖_F = %{z:.3g}<extra></extra>", row=1, col=i + 1,
                            **cell)
        fig.update_xaxes(title_text="module")
        fig.update_yaxes(title_text="decoder layer", row=1, col=1)
        fig.update_annotations(yshift=4, font_size=12)
        return layout(
            fig,
            "Size of each sender's share per layer and module",
            "‖ΔW<sub>i</sub>‖<sub>F</sub> of ΔW<sub>i</sub> = w<sub>i</sub>·s·B<sub>i</sub>·A<sub>i</sub> "
            "(the fused ΔW is their sum)",
            None,
            None,
            height=HEIGHT + 30,
        )
    z = delta_norms(p, sample)
    label, subtitle = "‖ΔW‖<sub>F</sub>", "Frobenius norm of the fused ΔW of each targeted linear layer"
    if view == "relative":
        if weight_norms is None:
            raise ValueError("the relative view needs the base weights' norms")
        z, label, subtitle = (z / weight_norms, "‖ΔW‖<sub>F</sub> / ‖W‖<sub>F</sub>",
                              "the change relative to the frozen base weight W")
    fig = go.Figure(
        go.Heatmap(z=z, colorbar={"title": label},
                   hovertemplate=f"layer %{{y}}, %{{x}}<br>{label} = %{{z:.3g}}<extra></extra>", **cell)
    )
    return layout(fig, "Size of ΔW per layer and module", subtitle, "module (linear layer inside each decoder layer)",
                  "decoder layer")


def spectrum_figure(p: Perturbation, layer: int, name: str, sample: int = 0) -> go.Figure:
    """Bars of the nonzero singular values of one module's fused dW."""
    values = spectrum(p, layer, name, sample)
    fig = go.Figure(go.Bar(x=list(range(1, len(values) + 1)), y=values, marker_color="#4c78a8",
                           hovertemplate="σ_%{x} = %{y:.3g}<extra></extra>"))
    total = float((values ** 2).sum())
    top = f"σ<sub>1</sub> holds {100 * values[0] ** 2 / total:.0f}% of ‖ΔW‖²<sub>F</sub>" if total > 0 else "ΔW is zero"
    return layout(fig, f"Singular values of ΔW: layer {layer} · {short_module(name)}",
                   f"rank ≤ senders × r = {len(values)}, every later singular value is 0; {top}",
                   "index (largest first)", "singular value")


def sender_share_figure(p: Perturbation, sample: int = 0) -> go.Figure:
    """Per layer, each sender's share (in %) of the perturbation's size, stacked to 100%."""
    norms = sender_layer_norms(p, sample)
    totals = norms.sum(axis=0)
    share = np.divide(100 * norms, totals, out=np.zeros_like(norms), where=totals > 0)
    fig = go.Figure()
    for i, role in enumerate(p.senders):
        fig.add_bar(name=role, x=list(range(p.spec.num_layers)), y=share[i], marker_color=agent_colour(role, p.senders),
                    customdata=norms[i],
                    hovertemplate=f"{role}, layer %{{x}}: %{{y:.0f}}% (‖ΔW_i‖_F = %{{customdata:.3g}})<extra></extra>")
    return layout(fig, "Each sender's share, per layer",
                  "‖ΔW<sub>i</sub>‖<sub>F</sub> over all modules, as % of the senders' sum", "decoder layer",
                  "share (%)", barmode="stack")


def layer_weights_figure(weights: torch.Tensor | None, readout: bool = False) -> go.Figure:
    """Bars of the layer aggregator's softmax weight for each hidden state (embeddings + every layer, then the
    senders' read-out when the generator reads it)."""
    if weights is None:
        return placeholder("This perturbation has no layer aggregator (a static adapter reads no hidden states).")
    w = weights.detach().float().cpu().numpy()
    names = ["emb"] + [str(i) for i in range(1, len(w) - readout)] + ["read-out"] * readout
    top3 = 100 * np.sort(w)[::-1][:3].sum()
    fig = go.Figure(
        go.Bar(x=names, y=w, marker_color="#72b7b2", hovertemplate="hidden state %{x}: %{y:.3f}<extra></extra>")
    )
    return layout(fig, "Layer aggregator weights",
                  f"how much each hidden state feeds the generator; top 3 hold {top3:.0f}%",
                  "hidden state (emb, then after layer n)", "softmax weight")


def fusion_weights_figure(weights: torch.Tensor, senders: Sequence[str], sample: int = 0) -> go.Figure:
    """Horizontal bars of the fusion weights w_i, with the uniform mean 1/S marked."""
    w = weights[sample].detach().float().cpu().numpy()
    fig = go.Figure(
        go.Bar(x=w, y=list(senders), orientation="h", marker_color=[agent_colour(s, senders) for s in senders],
               text=[f"{v:.2f}" for v in w], textposition="auto", hovertemplate="%{y}: w = %{x:.3f}<extra></extra>")
    )
    fig.add_vline(
        x=1 / len(senders),
        line_dash="dash",
        line_color="#666",
        annotation_text="uniform 1/S",
        annotation_position="top",
    )
    fig.update_xaxes(range=[0, 1])
    return layout(fig, "Fusion weights w<sub>i</sub>",
                  "ΔW = Σ<sub>i</sub> w<sub>i</sub>·s·B<sub>i</sub>·A<sub>i</sub>; dashed: plain mean", "fusion weight",
                  None)


def clean_token(token: str) -> str:
    """A readable form of a byte-level BPE token ('Ġmany' -> '␣many')."""
    return token.replace("Ġ", "␣").replace("Ċ", "⏎")


def hidden_states_figure(states: Sequence[SenderStates], seed: int = 0, max_points: int = 4000,
                         backbone: str = "") -> tuple[go.Figure, str]:
    """UMAP (or PCA) of every sender's hidden states over the question tokens, every layer
    (backbone: the senders' backbone, named in the title; any hidden size).

    Each state is RMS-normalised first (as the layer aggregator does), so layers compare by
    direction rather than by their very different scales. Returns (figure, note)."""
    if not states:
        return placeholder("Run TFlow to see the senders' hidden states."), ""
    rows, meta = [], []
    for s in states:
        h = s.hidden.detach().float().cpu()
        h = h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        for layer in range(h.shape[0]):
            name = "read-out" if s.readout and layer == h.shape[0] - 1 else str(layer)
            for pos, tok in enumerate(s.tokens):
                rows.append(h[layer, pos].numpy())
                meta.append((s.role, layer, pos, clean_token(tok), name))
    step = max(1, math.ceil(len(rows) / max_points))
    rows, meta = rows[::step], meta[::step]
    emb = embed_2d(np.stack(rows), seed)
    fig = go.Figure()
    roles = list(dict.fromkeys(m[0] for m in meta))
    symbols = ["circle", "diamond", "square", "triangle-up", "x"]
    num_states = max(m[1] for m in meta) + 1
    for i, role in enumerate(roles):
        idx = [j for j, m in enumerate(meta) if m[0] == role]
        fig.add_scatter(
            x=emb.coords[idx, 0],
            y=emb.coords[idx, 1],
            mode="markers",
            name=role,
            marker={
                "symbol": symbols[i % len(symbols)],
                "size": 9,
                "color": [meta[j][1] for j in idx],
                "colorscale": "Viridis",
                "cmin": 0,
                "cmax": num_states - 1,
                "line": {"width": 0.5, "color": "#333"},
                "showscale": i == 0,
                **({"colorbar": {"title": "layer<br>(0 = emb" + (", last = read-out)" if states[0].readout else ")")}}
                   if i == 0 else {}),
            },
            customdata=[[meta[j][3], meta[j][4], meta[j][2]] for j in idx],
            hovertemplate=f"{role}<br>token “%{{customdata[0]}}” (position %{{customdata[2]}})<br>"
                          "layer %{customdata[1]}<extra></extra>",
        )
    on = f" ({backbone}, hidden {states[0].hidden.shape[-1]})" if backbone else ""
    fig = layout(fig, f"Senders' hidden states on the tokens the generator reads{on}",
                  f"{emb.method} of the RMS-normalised states; colour = layer, symbol = sender; hover for the token",
                  f"{emb.method} 1", f"{emb.method} 2", height=HEIGHT + 120)
    note = emb.note + (f" (every {step}th state shown)" if step > 1 else "")
    return fig, note


def queries_figure(features: np.ndarray, tasks: Sequence[str], answers: Sequence[str], questions: Sequence[str],
                   colour_by: str = "task", seed: int = 0) -> tuple[go.Figure, str]:
    """UMAP (or PCA) of per-query perturbation vectors, coloured by task or by reference answer."""
    emb = embed_2d(features, seed)
    hover = [[t, a, q] for t, a, q in zip(tasks, answers, questions)]
    template = "task %{customdata[0]} · answer %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
    fig = go.Figure()
    if colour_by == "task":
        for i, task in enumerate(dict.fromkeys(tasks)):
            idx = [j for j, t in enumerate(tasks) if t == task]
            fig.add_scatter(
                x=emb.coords[idx, 0],
                y=emb.coords[idx, 1],
                mode="markers",
                name=task,
                marker={
                    "size": 11,
                    "color": AGENT_COLOURS[i % len(AGENT_COLOURS)],
                    "line": {"width": 0.5, "color": "#333"},
                },
                customdata=[hover[j] for j in idx],
                hovertemplate=template,
            )
    elif colour_by == "answer":
        values = [float(a) if _is_number(a) else np.nan for a in answers]
        fig.add_scatter(
            x=emb.coords[:, 0],
            y=emb.coords[:, 1],
            mode="markers",
            name="queries",
            customdata=hover,
            hovertemplate=template,
            marker={
                "size": 11,
                "color": values,
                "colorscale": "Plasma",
                "colorbar": {"title": "reference<br>answer"},
                "line": {"width": 0.5, "color": "#333"},
            },
        )
    else:
        raise ValueError(f"unknown colouring {colour_by!r}: use task or answer")
    spread = relative_spread(features)
    note = (f"Relative spread between the queries' perturbations: **{spread:.2f}** "
            "(0 would mean the same perturbation for every query, like a static adapter). " + emb.note)
    fig = layout(
        fig,
        "One point per query: the perturbation generated for it",
        f"{emb.method}; colour = {'task' if colour_by == 'task' else 'reference answer'}; hover for the question",
        f"{emb.method} 1",
        f"{emb.method} 2",
        height=HEIGHT + 120,
    )
    return fig, note.strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
