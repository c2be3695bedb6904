"""The Studio's event handlers and their wiring: what each control does to the page.

`StudioUI` adds the handlers to the `Page`'s components. A run streams: a worker thread runs
the chosen modes (`worker.execute`) and posts events to a queue; `run` drains it and yields
page updates. Bad input becomes a readable message in the status line; nothing typed is cleared.
The light actions (examples, checkpoints, perturbation views, history) bypass the queue.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from ..diagnostics import measures, viz
from ..diagnostics.next_tokens import next_tokens
from .api import Api
from .benchmark_run import ask_examples
from .page import Page
from .registry import NONE, Studio
from .render import header_html, history_rows, live_markdown, messages_markdown, status_markdown
from .worker import (
    HISTORY_LIMIT,
    Live,
    RunRecord,
    available_modes,
    context_warning,
    execute,
    export_perturbations,
    make_roles,
    request_from_form,
)

YIELD_EVERY_S = 0.15


class StudioUI(Page):
    """The page with its handlers wired (the JSON API's functions come from `Api`)."""

    def __init__(self, studio: Studio):
        super().__init__(studio)
        self.api = Api(studio)
        if not any(e["task"] == "humaneval" for e in studio.examples):  # the benchmarks' items among the examples
            studio.examples += ask_examples()

    def build(self) -> gr.Blocks:
        demo = super().build()
        with demo:
            self._wire()
        return demo

    def _wire(self) -> None:
        v = self.views
        inputs = [*self._form(), self.history, self.source, self.view, self.layer, self.module]
        self.run_outputs = [self.status, self.tabs, *self._record_outputs()]
        self.run_btn.click(
            self.run, inputs, self.run_outputs, api_name="run", show_progress="hidden", concurrency_id="model"
        )
        checkpoint_outputs = [self.header, self.generator, self.static, self.modes, v["static"].column]
        self.examples.click(self.load_example, [self.examples],
                            [self.question, *self.contexts, self.reference, *checkpoint_outputs],
                            api_name="load_example", queue=False)
        self.generator.input(self.select_generator, [self.generator], checkpoint_outputs, api_name="select_generator",
                             queue=False)
        self.static.input(
            self.select_static, [self.generator, self.static], checkpoint_outputs, api_name="select_static", queue=False
        )
        controls = [self.current, self.source, self.view, self.layer, self.module]
        for control, name in zip(controls[1:], ("source", "view", "layer", "module")):
            control.input(self.perturbation_view, controls, self._perturbation_outputs(),
                          api_name=f"perturbation_{name}", queue=False)
        q_inputs = [self.generator, self.features_kind, self.colour_by, *self.prompts]
        for trigger, name in ((self.queries_btn.click, "across_queries"),
                              (self.features_kind.input, "across_queries_features"),
                              (self.colour_by.input, "across_queries_colour")):
            trigger(self.across_queries, q_inputs, [self.queries_plot, self.queries_note], api_name=name,
                    concurrency_id="model")
        self.table.select(self.select_history, [self.history, self.source, self.view, self.layer, self.module],
                          [*self._form(), self.header, v["static"].column, *self.run_outputs],
                          api_name="history_select", queue=False)
        self.activations_tab.select(self.hidden_states, [self.current],
                                    [self.hidden_plot, self.hidden_note, self.next_tokens],
                                    api_name="hidden_states", concurrency_id="model")
        self.causal.button.click(self.inspect, [self.current, self.source], self.causal.outputs(),
                                 api_name="causal_inspect", show_progress="minimal", concurrency_id="model")
        gr.api(self.api.ask, api_name="ask", concurrency_id="model")
        gr.api(self.api.causal, api_name="causal", concurrency_id="model")
        gr.api(self.api.health, api_name="health", queue=False)
        self._wire_benchmark()

    def _form(self) -> list:
        """Every input of a run, in the order `run` takes them (what History brings back)."""
        return [self.question, *self.contexts, self.reference, self.modes, self.generator, self.static, self.max_new,
                self.sender_max_new, self.decoding, self.temperature, self.top_p, self.seed, *self.prompts]

    def _perturbation_outputs(self) -> list:
        return [self.source, self.heatmap, self.spectrum, self.share, self.layers, self.fusion, self.pert_note,
                self.download_peft, self.download_raw, *self.causal.outputs()]

    def _record_outputs(self) -> list:
        columns = [c for m in self.views.values() for c in (m.column, m.answer, m.info)]
        return [self.messages, *columns, *self._perturbation_outputs(), self.chart_tokens, self.chart_time,
                self.chart_savings, self.hidden_plot, self.hidden_note, self.next_tokens, self.history, self.table,
                self.current]

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint_updates(self, generator: str, static: str) -> list:
        """Header, both dropdowns and the modes (every available one ticked: the choices change with the
        static adapter, and the previous ticks are not read back, which could race with this update)."""
        return [header_html(self.studio, generator), gr.Dropdown(value=generator), gr.Dropdown(value=static),
                gr.CheckboxGroup(choices=self._mode_choices(static), value=available_modes(static)),
                gr.Column(visible=static != NONE)]

    def load_example(self, index: int) -> list:
        """Fill the inputs with an example and switch to its task's generator and static adapter."""
        ex = self.studio.examples[int(index)]
        generator = self.studio.generator_for(ex["task"]) or self.studio.default_generator
        static = self.studio.static_for(ex["task"])
        contexts = [c or "" for c in ex["contexts"]]
        return [ex["question"], *contexts, ex["answer"], *self._checkpoint_updates(generator, static)]

    def select_generator(self, generator: str) -> list:
        """A generator was picked: show its provenance and pair the static adapter of its task."""
        return self._checkpoint_updates(generator, self.studio.static_for(self.studio.generators[generator].task))

    def select_static(self, generator: str, static: str) -> list:
        return self._checkpoint_updates(generator, static)

    # ---------------------------------------------------------------- run
    def run(self, question: str, ctx0: str, ctx1: str, reference: str, modes: list[str], generator: str, static: str,
            max_new: float, sender_max_new: float, decoding: str, temperature: float, top_p: float, seed: float,
            p0: str, p1: str, p2: str, history: list[RunRecord], source: str, view: str, layer: int,
            module: str) -> Iterator[dict]:
        """Stream a run: status and columns while it runs, then every chart, the history and the downloads."""
        try:
            req = request_from_form(self.studio, question, [ctx0, ctx1], reference, modes, generator, static, max_new,
                                    sender_max_new, decoding == "sampling", temperature, top_p, seed, [p0, p1, p2])
        except ValueError as e:
            gr.Warning(str(e))
            yield {self.status: f"⚠ **Cannot run:** {e}. Nothing was changed; fix the input and press Run again."}
            return
        number = history[-1].number + 1 if history else 1
        record = RunRecord(number, time.strftime("%H:%M:%S"), req, warning=context_warning(self.studio, req))
        if record.warning:
            gr.Warning(record.warning)
        live, events, stop = Live(record), queue.Queue(), threading.Event()
        worker = threading.Thread(
            target=execute, args=(self.studio.pipeline(generator, static), req, events.put, stop), daemon=True
        )
        worker.start()
        yield {self.tabs: gr.Tabs(selected="compare"), **self._live_updates(live, first=True)}
        try:
            last = time.monotonic()
            while not live.done:
                with contextlib.suppress(queue.Empty):
                    live.apply(events.get(timeout=YIELD_EVERY_S))
                if time.monotonic() - last >= YIELD_EVERY_S:
                    last = time.monotonic()
                    yield self._live_updates(live)
            export_perturbations(self.studio, record)
            history = [*history, record][-HISTORY_LIMIT:]
            yield self._record_updates(record, history, source, view, layer, module)
        finally:
            stop.set()

    def _live_updates(self, live: Live, first: bool = False) -> dict:
        out: dict = {self.status: status_markdown(live)}
        for mode, view in self.views.items():
            shown = mode in live.record.request.modes
            result = live.record.results.get(mode)
            if first:
                out[view.column] = gr.Column(visible=shown)
            if shown:
                out[view.answer] = result.answer if result else live.partial.get(mode, "")
                out[view.info] = live_markdown(live, mode)
        if first or "textmas" in live.record.results:
            out[self.messages] = messages_markdown(live.record.results.get("textmas"))
        return out

    def _record_updates(
        self, record: RunRecord, history: list[RunRecord], source: str, view: str, layer: int, module: str
    ) -> dict:
        results = record.results
        return {
            **self._live_updates(Live(record, done=True), first=True),
            **dict(zip(self._perturbation_outputs(), self.perturbation_view(record, source, view, layer, module))),
            self.chart_tokens: viz.tokens_figure(results), self.chart_time: viz.time_figure(results),
            self.chart_savings: viz.savings_figure(results), self.hidden_note: "", self.next_tokens: [],
            self.hidden_plot: viz.placeholder(f"Open this tab to embed the hidden states of run #{record.number}."),
            self.history: history, self.table: history_rows(history), self.current: record,
        }

    def perturbation_view(self, record: RunRecord | None, source: str, view: str, layer: int, module: str) -> list:
        """Every figure of the Perturbation tab for one source (TFlow or Static LoRA) of a record."""
        sources = [m for m in ("tflow", "static") if record is not None and m in record.results]
        if not sources:
            empty = viz.placeholder("Run TFlow (or Static LoRA) to see its perturbation.")
            return [gr.Radio(), empty, empty, empty, empty, empty,
                    "*Run TFlow (or Static LoRA) to see its perturbation.*", gr.DownloadButton(interactive=False),
                    gr.DownloadButton(interactive=False), *self.causal.view(self.studio, record, source)]
        source = source if source in sources else sources[0]
        pert = record.results[source].perturbation
        layer = min(int(layer or 0), pert.spec.num_layers - 1)
        module = module if module in pert.spec.modules else next(iter(pert.spec.modules))
        zip_path, raw_path = record.downloads[source]
        zero = (
            ""
            if float(measures.delta_norms(pert).max()) > 0
            else " **The perturbation is exactly zero (untrained generator).**"
        )
        readout = any(s.readout for s in (getattr(record.results.get(source), "sender_states", None) or ()))
        note = (f"Run #{record.number}, {viz.MODE_LABELS[source]}: {len(pert.senders)} sender(s) × rank {pert.rank}, "
                f"scaling s = α/r = {pert.scaling:g}.{zero} The PEFT adapter stacks the senders along the rank axis "
                f"(rank {pert.rank * len(pert.senders)}), so it reproduces the fused ΔW exactly.")
        return [gr.Radio(value=source), viz.perturbation_heatmap(pert, view, self.studio.weight_norms),
                viz.spectrum_figure(pert, layer, module), viz.sender_share_figure(pert),
                viz.layer_weights_figure(pert.layer_weights, readout),
                viz.fusion_weights_figure(pert.weights, pert.senders),
                note, gr.DownloadButton(value=zip_path, interactive=True),
                gr.DownloadButton(value=raw_path, interactive=True), *self.causal.view(self.studio, record, source)]

    def hidden_states(self, record: RunRecord | None) -> tuple:
        """The current run's sender hidden states, embedded when the Activations tab is opened (once per run)."""
        if record is None or "tflow" not in record.results:
            return viz.placeholder("Run TFlow to see the senders' hidden states."), "", []
        if record.hidden is None:
            senders = self.studio.senders_of(record.request.generator)
            states = record.results["tflow"].sender_states
            read = next_tokens(senders, states)
            cells = [" · ".join(f"{viz.clean_token(t)} {p:.2f}" for t, p in n.top) for n in read]
            rows = [[n.role, n.position, viz.clean_token(n.token), c] for n, c in zip(read, cells)]
            last = {n.role: c for n, c in zip(read, cells)}  # each sender's last position read
            fig, note = viz.hidden_states_figure(states, backbone=Path(senders.name).name)
            said = "; ".join(f"{role}: {c}" for role, c in last.items())
            record.hidden = (fig, f"{note}\n\n**Where the generator stops reading, each sender would say next:** "
                                  f"{said}", rows)
        return record.hidden

    def across_queries(self, generator: str, kind: str, colour_by: str, p0: str, p1: str, p2: str) -> tuple:
        """Embed the per-query perturbations of the example questions with UMAP."""
        try:
            features, batch = self.studio.query_features(generator, kind, make_roles([p0, p1, p2]))
        except ValueError as e:
            gr.Warning(str(e))
            return gr.Plot(), f"⚠ {e}"
        fig, note = viz.queries_figure(features, [e.task for e in batch], [e.answer for e in batch],
                                       [e.question for e in batch], colour_by)
        if not self.studio.generators[generator].trained:
            note = "⚠ Untrained generator: every perturbation is zero, so all queries coincide. " + note
        return fig, note

    def select_history(
        self, history: list[RunRecord], source: str, view: str, layer: int, module: str, evt: gr.SelectData
    ) -> dict:
        """Bring a past run back whole: every input (question, contexts, modes, checkpoints, generation settings,
        role prompts) and every result (answers, charts, perturbation, causal probes, activations)."""
        record = list(reversed(history))[evt.index[0]]
        req, st = record.request, record.request.settings
        updates = self._record_updates(record, history, source, view, layer, module)
        updates[self.status] = (
            f"Showing run #{record.number} from {record.started} again (from History).\n\n" + updates[self.status]
        )
        header, generator, static, _, column = self._checkpoint_updates(req.generator, req.static)
        prompts = [a.system_prompt for a in (*req.roles.senders, req.roles.receiver)]
        form = [req.question, *req.contexts, req.reference,
                gr.CheckboxGroup(choices=self._mode_choices(req.static), value=list(req.modes)), generator, static,
                st.max_new_tokens, st.sender_max_new_tokens, "sampling" if st.do_sample else "greedy", st.temperature,
                st.top_p, st.seed, *prompts]
        return {**dict(zip(self._form(), form)), self.header: header, self.views["static"].column: column,
                self.tabs: gr.Tabs(selected="compare"), **updates}

    def inspect(self, record: RunRecord | None, source: str) -> Iterator[list]:
        """The causal section's button: run its probes on the current run (each shown as soon as it is ready)."""
        yield from self.causal.inspect(self.studio, record, source)
