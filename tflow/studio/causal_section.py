"""The causal section of the Perturbation tab: what the current run's ΔW *does* to its answer.

A button runs the four probes of `tflow.diagnostics.causal` on the selected run and source (one batched
forward each, cached in the run's record), streaming each figure as it is ready; the
figures are drawn from the same JSON the `/causal` API endpoint returns.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from ..diagnostics import causal_figures, viz
from .registry import Studio
from .worker import PROBES, RunRecord, causal_probe

PROBE_TEXT = {"ablation": "removing each part of ΔW", "sweep": "scaling ΔW (and decoding every scale)",
              "token_kl": "per-token KL", "senders": "each sender alone", "other_query": "senders from another query"}
EMPTY = "Press the button to test what this perturbation does to the answer."
CAPTION = (
    "**What ΔW does (causal inspection).** The size of a part of ΔW is not its effect. These probes change ΔW and "
    "measure the receiver's log-probability of its own answer (teacher-forced, answer tokens only): with each "
    "layer / module removed, with ΔW scaled from 0 (the receiver alone) to 2, token by token against the plain "
    "receiver, with each sender alone, and with the ΔW the generator makes when the senders read another query of "
    "the same task (did this answer depend on this query's senders?). Every probe is one batched forward pass (each "
    "variant of ΔW is one sample of the batch) and is computed once per run."
)


def _fmt(v: float | None) -> str:
    return "undefined (one of them is constant)" if v is None else f"{v:+.2f}"


def notes_markdown(record: RunRecord, source: str) -> str:
    """What the probes computed so far found, in words, with their timings."""
    done = {name: record.causal[(source, name)] for name in PROBES if (source, name) in record.causal}
    if not done:
        return f"*{EMPTY}*"
    lines = []
    if "ablation" in done:
        ablation = done["ablation"]
        lines.append(f"Spearman rank correlation between ‖ΔW‖ and |Δ log p| over the layer × module cells: "
                     f"**ρ = {_fmt(ablation['spearman'])}** (1: the largest parts matter most).")
        if ablation.get("method") == "first-order":
            lines.append(f"The removal effects are first-order estimates (one backward pass: −∂ log p / ∂ scale of "
                         f"each part), except the {len(ablation['exact_cells'])} cells they rank highest, removed "
                         f"exactly; estimate vs exact on those cells: ρ = {_fmt(ablation['agreement'])}.")
    if "sweep" in done:
        sweep = done["sweep"]
        plain, full = sweep["answers"][sweep["scales"].index(0.0)], sweep["answers"][sweep["scales"].index(1.0)]
        verb = "changes" if plain != full else "does not change"
        lines.append(f"Removing all of ΔW (scale 0) {verb} the greedy answer: “{plain}” instead of “{full}”.")
    if "senders" in done:
        s = done["senders"]
        alone = ", ".join(f"{n} alone {v:.3g} ({100 * share:.0f}% of the size)"
                          for n, v, share in zip(s["senders"], s["alone"], s["norm_share"]))
        lines.append(f"log p(answer): all senders {s['all']:.3g}, {alone}, none {s['none']:.3g}.")
    if "other_query" in done:
        o = done["other_query"]
        same = "the same answer" if o["other_answer"].strip() == o["answer"].strip() else "a different answer"
        read = " ".join([o["other_question"], *(c for c in o["other_contexts"] if c)])
        lines.append(f"Senders from another query (they read “{read[:120]}”): log p(answer) {o['logprob']:.3g} "
                     f"with this query's senders, {o['other_logprob']:.3g} with the other's, {o['none']:.3g} with "
                     f"none; under the other's ΔW the receiver gives {same}: “{o['other_answer']}”.")
    times = " · ".join(f"{PROBE_TEXT[n]} {1000 * d['seconds']:.0f} ms" for n, d in done.items())
    lines.append(f"<small>computed in: {times}</small>")
    return "\n\n".join(lines)


def sweep_rows(sweep: dict) -> list[list]:
    return [[f"{s:g}", round(lp, 4), a] for s, lp, a in zip(sweep["scales"], sweep["logprob"], sweep["answers"])]


@dataclass
class CausalSection:
    """The section's components."""

    button: gr.Button
    status: gr.Markdown
    norms: gr.Plot
    effects: gr.Plot
    sweep: gr.Plot
    sweep_table: gr.Dataframe
    token_kl: gr.Plot
    senders: gr.Plot

    @classmethod
    def build(cls) -> CausalSection:
        gr.Markdown(CAPTION, elem_classes="caption", elem_id="causal-caption")
        button = gr.Button("Test what this perturbation does", variant="primary", elem_id="causal-btn")
        status = gr.Markdown(f"*{EMPTY}*", elem_id="causal-status")
        empty = viz.placeholder(EMPTY)
        with gr.Row(equal_height=False):
            norms = gr.Plot(empty, elem_id="causal-norms", show_label=False)
            effects = gr.Plot(empty, elem_id="causal-effects", show_label=False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                sweep = gr.Plot(empty, elem_id="causal-sweep", show_label=False)
            with gr.Column(scale=2):
                table = gr.Dataframe(headers=["scale of ΔW", "log p(answer)", "greedy answer"], value=[],
                                     interactive=False, wrap=True, elem_id="causal-sweep-table", label="Scale sweep")
        with gr.Row(equal_height=False):
            token_kl = gr.Plot(empty, elem_id="causal-kl", show_label=False)
            senders = gr.Plot(empty, elem_id="causal-senders", show_label=False)
        return cls(button, status, norms, effects, sweep, table, token_kl, senders)

    def outputs(self) -> list:
        return [self.status, self.norms, self.effects, self.sweep, self.sweep_table, self.token_kl, self.senders]

    def view(self, studio: Studio, record: RunRecord | None, source: str) -> list:
        """The section for a record and source: the probes already computed, placeholders for the others."""
        if record is None or source not in record.results or record.results[source].perturbation is None:
            empty = viz.placeholder("Run TFlow (or Static LoRA) first.")
            return ["*Run TFlow (or Static LoRA), then test what its perturbation does.*", empty, empty, empty, [],
                    empty, empty]
        done = {n: record.causal.get((source, n)) for n in PROBES}
        empty = viz.placeholder(EMPTY)
        pert = record.results[source].perturbation
        return [notes_markdown(record, source), viz.perturbation_heatmap(pert, "fused", studio.weight_norms),
                causal_figures.effect_heatmap(done["ablation"]) if done["ablation"] else empty,
                causal_figures.sweep_figure(done["sweep"]) if done["sweep"] else empty,
                sweep_rows(done["sweep"]) if done["sweep"] else [],
                causal_figures.token_kl_figure(done["token_kl"]) if done["token_kl"] else empty,
                causal_figures.senders_figure(done["senders"]) if done["senders"] else empty]

    def inspect(self, studio: Studio, record: RunRecord | None, source: str) -> Iterator[list]:
        """Run the probes one after another, showing each result as soon as it is ready."""
        if record is None or source not in record.results:
            gr.Warning("Run TFlow (or Static LoRA) first: there is no perturbation to test.")
            yield self.view(studio, record, source)
            return
        probes = [n for n in PROBES if n != "other_query" or source == "tflow"]  # a static LoRA reads no senders
        for i, name in enumerate(probes):
            out = self.view(studio, record, source)
            out[0] = f"● {i + 1}/{len(probes)}: {PROBE_TEXT[name]}…\n\n" + out[0]
            yield out
            try:
                causal_probe(studio, record, source, name)
            except ValueError as e:
                gr.Warning(str(e))
                out[0] = f"⚠ **Cannot test:** {e}"
                yield out
                return
        yield self.view(studio, record, source)

