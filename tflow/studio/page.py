"""The Studio's page: the Blocks and its components, tab by tab (no event handlers; see `wiring`).

Header, status line, then six tabs: 1 · Ask, 2 · Compare, 3 · Perturbation (with the causal
section, `causal_section`), 4 · Activations, 5 · History, 6 · Benchmark (`benchmark_tab`).
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import tasks
from ..diagnostics import viz
from ..pipeline import MODES
from .benchmark_tab import BenchmarkTab
from .causal_section import CausalSection
from .examples import ASSETS
from .registry import NONE, QUERIES_PER_TASK, Studio
from .render import header_html, messages_markdown
from .worker import DEFAULT_ROLES, MAX_NEW_TOKENS, available_modes

MODE_CAPTIONS = {
    "single": "The receiver alone, from the question only.",
    "textmas": "Senders write text messages; the receiver reads the question plus the messages.",
    "tflow": "Senders only read (one prefill); their hidden states become a LoRA for the receiver, "
             "which sees just the question.",
    "static": "One fixed LoRA trained on the task, the same for every query (ablation).",
}


@dataclass
class ModeView:
    """One column of the Compare tab."""

    column: gr.Column
    answer: gr.Textbox
    info: gr.Markdown



class Page(BenchmarkTab):
    """Builds the Blocks and holds the component handles the event handlers update."""

    def __init__(self, studio: Studio):
        self.studio = studio

    # ---------------------------------------------------------------- build

    def build(self) -> gr.Blocks:
        """The page's components, not yet wired to any event."""
        s = self.studio
        with gr.Blocks(title="TFlow Studio", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
            self.history = gr.State([])
            self.current = gr.State(None)
            self.header = gr.HTML(header_html(s, s.default_generator))
            self.status = gr.Markdown(
                "Pick an example or type a question, choose the modes, then press **Run**.", elem_id="run-status"
            )
            with gr.Tabs(selected="ask") as self.tabs:
                with gr.Tab("1 · Ask", id="ask"):
                    self._ask_tab()
                with gr.Tab("2 · Compare", id="compare"):
                    self._compare_tab()
                with gr.Tab("3 · Perturbation", id="perturbation"):
                    self._perturbation_tab()
                with gr.Tab("4 · Activations", id="activations") as self.activations_tab:
                    self._activations_tab()
                with gr.Tab("5 · History", id="history"):
                    self._history_tab()
                with gr.Tab("6 · Benchmark", id="benchmark"):
                    self._benchmark_tab()
        return demo

    def _ask_tab(self) -> None:
        s = self.studio
        with gr.Accordion("How TFlow works (pipeline diagram)", open=True, elem_id="diagram-box"):
            gr.HTML((ASSETS / "pipeline.svg").read_text(), elem_id="pipeline-diagram")
        rows = [[e["task"], e["question"], *[c or "—" for c in e["contexts"]], e["answer"]] for e in s.examples]
        self.examples = gr.Dataset(
            label="Examples from the built-in tasks' test split (click one; it also picks that task's checkpoints)"
            + (
                "; kb: facts about invented people that only the specialist sender backbone knows, "
                "never seen by its generator"
                if any(e["task"] in tasks.SPECIALIST_TASKS for e in s.examples)
                else ""
            )
            + (
                "; note: a private note only the senders hold, "
                "with a value and phrasings the generator never trained on"
                if any(e["task"] in tasks.REAL_MODEL_TASKS for e in s.examples)
                else ""
            ),
            components=["textbox"] * len(rows[0]),
            samples=rows,
            type="index",
            elem_id="examples",
            samples_per_page=16,
            headers=["task", "question", *[f"{a.role} knows" for a in DEFAULT_ROLES.senders], "answer"],
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                self.question = gr.Textbox(label="Question (the receiver sees only this)", lines=2, max_lines=6,
                                           elem_id="question", placeholder="e.g. How many apples does Ann have now?")
                with gr.Row():
                    self.contexts = [
                        gr.Textbox(label=f"{a.role}'s private context (optional)", lines=2, max_lines=4,
                                   elem_id=f"ctx-{i}", info="Only this sender reads it; the receiver never sees it.")
                        for i, a in enumerate(DEFAULT_ROLES.senders)
                    ]
                self.reference = gr.Textbox(
                    label="Reference answer (optional, to mark answers correct or wrong)", elem_id="reference"
                )
            with gr.Column(scale=2):
                self.generator = gr.Dropdown([(c.label(), k) for k, c in s.generators.items()],
                                             value=s.default_generator, label="Parameter generator (TFlow)",
                                             elem_id="generator")
                default_static = s.static_for(s.generators[s.default_generator].task)
                self.static = gr.Dropdown(
                    [("none · no static adapter", NONE), *[(c.label(), k) for k, c in s.statics.items()]],
                    value=default_static,
                    label="Static LoRA adapter (ablation)",
                    elem_id="static",
                    visible=bool(s.statics),
                )
                self.modes = gr.CheckboxGroup(self._mode_choices(default_static), value=available_modes(default_static),
                                              label="Modes to run", elem_id="modes",
                                              info="Picking checkpoints ticks every available mode.")
                with gr.Accordion("Generation settings", open=False, elem_id="settings-box"):
                    self.max_new = gr.Slider(
                        1, 256, value=MAX_NEW_TOKENS, step=1, label="Max new tokens (receiver)", elem_id="max-new"
                    )
                    self.sender_max_new = gr.Slider(1, 256, value=MAX_NEW_TOKENS, step=1,
                                                    label="Max new tokens per TextMAS sender message",
                                                    elem_id="sender-max-new")
                    self.decoding = gr.Radio(
                        ["greedy", "sampling"], value="greedy", label="Decoding", elem_id="decoding"
                    )
                    self.temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="Temperature (sampling only)")
                    self.top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (sampling only)")
                    self.seed = gr.Number(0, precision=0, label="Seed (sampling only)")
                with gr.Accordion("Role prompts (system prompts of the agents)", open=False, elem_id="prompts-box"):
                    gr.Markdown(
                        "The generators were trained with these exact prompts (the embedded backbone was pretrained "
                        "with them too); edits change what the senders' states carry."
                    )
                    self.prompts = [
                        gr.Textbox(a.system_prompt,
                                   label=f"{a.role}{' (receiver)' if a is DEFAULT_ROLES.receiver else ' (sender)'}",
                                   elem_id=f"prompt-{i}")
                        for i, a in enumerate((*DEFAULT_ROLES.senders, DEFAULT_ROLES.receiver))
                    ]
                self.run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")

    def _compare_tab(self) -> None:
        gr.Markdown(
            "Each column answers the same question in one mode. **Processed tokens** count every token any agent "
            "reads (prompt) or writes (generated); **KV cache** is the attention cache those tokens occupy.",
            elem_classes="caption",
        )
        self.views: dict[str, ModeView] = {}
        with gr.Row(equal_height=False):
            for mode in MODES:
                with gr.Column(visible=mode != "static" or bool(self.studio.statics), elem_id=f"col-{mode}",
                               elem_classes="mode-col", min_width=230) as col:
                    gr.Markdown(f"### {viz.MODE_LABELS[mode]}\n{MODE_CAPTIONS[mode]}", elem_classes="mode-head")
                    answer = gr.Textbox(label="Answer", lines=2, interactive=False, elem_id=f"answer-{mode}")
                    info = gr.Markdown("", elem_id=f"info-{mode}")
                    if mode == "textmas":
                        with gr.Accordion("Senders' messages", open=False):
                            self.messages = gr.Markdown(messages_markdown(None), elem_id="textmas-messages")
                self.views[mode] = ModeView(col, answer, info)
        with gr.Row():
            self.chart_tokens = gr.Plot(viz.tokens_figure({}), elem_id="chart-tokens", show_label=False)
            self.chart_time = gr.Plot(viz.time_figure({}), elem_id="chart-time", show_label=False)
            self.chart_savings = gr.Plot(viz.savings_figure({}), elem_id="chart-savings", show_label=False)

    def _perturbation_tab(self) -> None:
        spec = self.studio.spec
        gr.Markdown(
            "The perturbation TFlow generated for the current question: **ΔW = Σᵢ wᵢ·s·Bᵢ·Aᵢ** for every targeted "
            "linear layer, applied to the receiver only while it answers. Download it to reuse it with PEFT.",
            elem_classes="caption",
        )
        with gr.Row(equal_height=True):
            self.source = gr.Radio([(viz.MODE_LABELS[m], m) for m in ("tflow", "static")], value="tflow",
                                   label="Perturbation of", elem_id="pert-source",
                                   info="Static LoRA: the fixed adapter, when the run included that mode.")
            self.download_peft = gr.DownloadButton(
                "Download as PEFT adapter (.zip)", interactive=False, elem_id="download-peft"
            )
            self.download_raw = gr.DownloadButton(
                "Download raw factors (.safetensors)", interactive=False, elem_id="download-raw"
            )
        self.pert_note = gr.Markdown("*Run TFlow (or Static LoRA) to see its perturbation.*", elem_classes="caption")
        empty = viz.placeholder("Run TFlow to see its perturbation.")
        with gr.Row(equal_height=False):
            with gr.Column():
                self.view = gr.Radio(
                    [("fused ΔW", "fused"), ("each sender", "senders"), ("relative to ‖W‖", "relative")],
                    value="fused",
                    label="Heatmap shows",
                    elem_id="pert-view",
                )
                self.heatmap = gr.Plot(empty, elem_id="pert-heatmap", show_label=False)
            with gr.Column():
                with gr.Row():
                    self.layer = gr.Dropdown(list(range(spec.num_layers)), value=0, label="Spectrum of layer")
                    self.module = gr.Dropdown(
                        list(spec.modules), value=next(iter(spec.modules)), label="Spectrum of module"
                    )
                self.spectrum = gr.Plot(empty, elem_id="pert-spectrum", show_label=False)
        with gr.Row():
            self.share = gr.Plot(empty, elem_id="pert-share", show_label=False)
            self.layers = gr.Plot(empty, elem_id="pert-layers", show_label=False)
            self.fusion = gr.Plot(empty, elem_id="pert-fusion", show_label=False)
        self.causal = CausalSection.build()

    def _activations_tab(self) -> None:
        gr.Markdown(
            "**This question:** every sender's hidden state at every token the generator reads (the question; a real "
            "model's generator: the whole message or prompt) and every layer, embedded in 2-D with UMAP. Hover a point "
            "to see its token.",
            elem_classes="caption",
        )
        self.hidden_note = gr.Markdown("", elem_classes="caption", elem_id="hidden-note")
        self.hidden_plot = gr.Plot(
            viz.placeholder("Run TFlow to see the senders' hidden states."), elem_id="hidden-plot", show_label=False
        )
        self.next_tokens = gr.Dataframe(
            headers=["sender", "#", "token read", "what the sender would say next (its top 3, probability)"],
            value=[], interactive=False, wrap=True, max_height=360, elem_id="next-tokens",
            column_widths=["18%", "6%", "18%", "58%"],
            label="The senders' read-out: their own next-token distribution at each position the generator reads "
                  "(a generator with the read-out reads its expected embedding)",
        )
        gr.Markdown(
            f"**Across queries:** the perturbation generated for each of {QUERIES_PER_TASK * len(tasks.TASKS)} test "
            "questions (every built-in task; a specialist's or a real model's generator: as many of its own task's), "
            "one point per query. Scattered points mean the generator writes a different LoRA for every query "
            "(instance-dependent); one tight blob would mean a fixed task adapter.",
            elem_classes="caption",
        )
        with gr.Row():
            self.features_kind = gr.Radio(
                [("flattened ΔW (random sketch)", "sketch"), ("pooled ‖ΔW‖ per layer × module", "pooled")],
                value="sketch",
                label="Perturbation as a vector",
            )
            self.colour_by = gr.Radio(
                [("task", "task"), ("reference answer", "answer")], value="task", label="Colour by"
            )
            self.queries_btn = gr.Button("Embed the example queries' perturbations", elem_id="queries-btn")
        self.queries_note = gr.Markdown("", elem_classes="caption")
        self.queries_plot = gr.Plot(viz.placeholder("Press the button to embed the per-query perturbations."),
                                    elem_id="queries-plot", show_label=False)

    def _history_tab(self) -> None:
        gr.Markdown("The runs made since this page was opened (newest first). Click a row to bring the whole run back: "
                    "its inputs and settings as well as its results.", elem_classes="caption")
        self.table = gr.Dataframe(
            headers=["#", "time", "question", "generator", "processed tokens", "answers"],
            value=[],
            interactive=False,
            wrap=True,
            elem_id="history-table",
            column_widths=["4%", "8%", "28%", "12%", "22%", "26%"],
        )

    # ---------------------------------------------------------------- wiring


    def _mode_choices(self, static: str) -> list[tuple[str, str]]:
        return [(viz.MODE_LABELS[m], m) for m in available_modes(static)]
