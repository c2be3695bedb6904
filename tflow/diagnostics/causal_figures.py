"""Figures of the causal probes (`tflow.diagnostics.causal`): the probes' JSON in, plotly figure out.

They take the plain-JSON form of a probe (what the Studio's API returns), so the page draws
exactly the numbers a client gets.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .viz import HEIGHT, agent_colour, clean_token, layout, short_module

EFFECT_SCALE = "RdBu"  # red: removing the part lowers log p (the part helps the answer), blue: raises it


def _fmt_logp(v: float) -> str:
    return f"{v:.3g}"


def effect_heatmap(ablation: Mapping) -> go.Figure:
    """Layers x modules Δ log p(answer) with a cell removed (same axes as the ‖ΔW‖ heatmap), and its
    marginals: the whole layer removed (right), the module type removed in every layer (below)."""
    modules = [short_module(m) for m in ablation["modules"]]
    layers = ablation["layers"]
    top = (
        float(np.abs(np.array(ablation["cells"])).max(initial=0.0)) or 1.0
    )  # the cells' own scale: the marginals are larger
    fig = make_subplots(rows=2, cols=2, shared_xaxes="columns", shared_yaxes="rows", column_widths=[0.78, 0.22],
                        row_heights=[0.78, 0.22], horizontal_spacing=0.03, vertical_spacing=0.06)
    text = len(layers) * len(modules) <= 120
    fig.add_heatmap(z=ablation["cells"], x=modules, y=layers, zmin=-top, zmax=top, zmid=0, colorscale=EFFECT_SCALE,
                    row=1, col=1, texttemplate="%{z:.2g}" if text else None,
                    colorbar={"title": "Δ log p", "len": 0.75, "y": 0.62, "x": 1.02, "xanchor": "left"},
                    hovertemplate="layer %{y}, %{x} removed<br>Δ log p(answer) = %{z:.3g}<extra></extra>")
    colours = ["#d6604d" if v < 0 else "#4393c3" for v in ablation["per_layer"]]
    fig.add_bar(x=ablation["per_layer"], y=layers, orientation="h", marker_color=colours, row=1, col=2,
                showlegend=False, hovertemplate="whole layer %{y} removed<br>Δ log p = %{x:.3g}<extra></extra>")
    colours = ["#d6604d" if v < 0 else "#4393c3" for v in ablation["per_module"]]
    fig.add_bar(x=modules, y=ablation["per_module"], marker_color=colours, row=2, col=1, showlegend=False,
                hovertemplate="%{x} removed in every layer<br>Δ log p = %{y:.3g}<extra></extra>")
    fig.update_yaxes(title_text="decoder layer", row=1, col=1)
    fig.update_xaxes(title_text="whole layer", row=1, col=2)
    fig.update_yaxes(title_text="module type", row=2, col=1)
    fig.update_xaxes(title_text="module (linear layer inside each decoder layer)", row=2, col=1)
    fig.update_xaxes(visible=False, row=2, col=2)
    fig.update_yaxes(visible=False, row=2, col=2)
    how = ("" if ablation.get("method", "exact") == "exact" else
           f"; first-order estimates but the {len(ablation['exact_cells'])} cells removed exactly (outlined)")
    for layer, m in ablation.get("exact_cells", []):
        fig.add_shape(type="rect", x0=m - 0.5, x1=m + 0.5, y0=layers[layer] - 0.5, y1=layers[layer] + 0.5,
                      line={"color": "#222", "width": 1.5}, row=1, col=1)
    fig = layout(
        fig,
        "Effect of removing each part of ΔW",
        f"Δ log p(answer) with that part removed, the rest kept (full ΔW: {_fmt_logp(ablation['logprob'])}); "
        f"red: it helps{how}",
        None,
        None,
        height=HEIGHT + 120,
    )
    return fig.update_layout(margin={"r": 90})


def sweep_figure(sweep: Mapping) -> go.Figure:
    """log p(answer) against the scale of ΔW, each point labelled with the greedy answer at that scale."""
    scales, logp, answers = sweep["scales"], sweep["logprob"], sweep["answers"]
    reference = answers[scales.index(1.0)] if 1.0 in scales else None
    colours = ["#54a24b" if a == reference else "#e45756" for a in answers]
    fig = go.Figure(go.Scatter(
        x=scales, y=logp, mode="lines+markers+text", text=[a[:14] or "∅" for a in answers], textposition="top center",
        marker={"size": 10, "color": colours}, line={"color": "#4c78a8"}, customdata=answers, name="log p(answer)",
        hovertemplate="ΔW × %{x}<br>log p(answer) = %{y:.3g}<br>greedy answer: %{customdata}<extra></extra>"))
    fig.add_vline(
        x=1.0, line_dash="dash", line_color="#666", annotation_text="as generated", annotation_position="bottom right"
    )
    pad = 0.12 * (max(logp) - min(logp) or 1.0)
    fig.update_yaxes(range=[min(logp) - pad, max(logp) + 2 * pad])
    return layout(
        fig,
        "How much of the answer hangs on ΔW",
        "log p(answer) with ΔW scaled; labels: the greedy answer at that scale "
        "(green: the same as at 1×, red: another)",
        "scale of ΔW (0 = the receiver alone)",
        "log p(answer)",
    )


def token_kl_figure(kl: Mapping) -> go.Figure:
    """Per answer token: KL(perturbed || plain) of the receiver's next-token distribution."""
    tokens = [f"{i}: {clean_token(t)}" for i, t in enumerate(kl["tokens"])]
    fig = go.Figure(
        go.Bar(
            x=tokens,
            y=kl["kl"],
            marker_color="#b279a2",
            customdata=np.stack([kl["logprob"], kl["plain_logprob"]], axis=-1),
            text=[f"{v:.2g}" for v in kl["kl"]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{x}<br>KL = %{y:.3g} nats<br>"
                          "log p(token): perturbed %{customdata[0]:.3g}, plain %{customdata[1]:.3g}<extra></extra>",
        )
    )
    return layout(
        fig,
        "Where in the answer ΔW acts",
        "per answer token: KL(perturbed ‖ plain) of the next-token distributions, teacher-forced on the answer",
        "answer token (position: token)",
        "KL (nats)",
    )


def senders_figure(senders: Mapping) -> go.Figure:
    """log p(answer) with each sender alone, all and none, beside each sender's norm-based share."""
    names = list(senders["senders"])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35], horizontal_spacing=0.06)
    labels = [f"{n} alone" for n in names] + ["all senders", "no sender (plain)"]
    values = list(senders["alone"]) + [senders["all"], senders["none"]]
    colours = [agent_colour(n, names) for n in names] + ["#333333", "#bbbbbb"]
    fig.add_bar(x=values, y=labels, orientation="h", marker_color=colours, text=[_fmt_logp(v) for v in values],
                textposition="auto", row=1, col=1, showlegend=False,
                hovertemplate="%{y}: log p = %{x:.3g}<extra></extra>")
    share = [100 * v for v in senders["norm_share"]]
    fig.add_bar(x=share, y=[f"{n} alone" for n in names], orientation="h", marker_color=colours[: len(names)],
                text=[f"{v:.0f}%" for v in share], textposition="auto", row=1, col=2, showlegend=False,
                hovertemplate="%{y}: %{x:.1f}% of the size<extra></extra>")
    fig.update_xaxes(title_text="log p(answer) with…", row=1, col=1)
    fig.update_xaxes(title_text="share of ‖ΔW‖ (%)", range=[0, 100], row=1, col=2)
    fig.update_yaxes(categoryorder="array", categoryarray=labels, showticklabels=False, row=1, col=2)
    fig.update_yaxes(categoryorder="array", categoryarray=labels, row=1, col=1)
    return layout(fig, "Which sender carries the answer",
                   "the same log p with the other senders' fusion weight set to 0, next to the size-based share",
                   None, None)
