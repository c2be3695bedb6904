"""The Benchmark tab: a slice of a task or benchmark through several modes, live.

Pick a task (what the loaded backbone has data for), a number of items and the modes; the run goes through the
queue, a progress bar and a Table-1 row per mode (accuracy with its 95% interval, tokens in both counts, seconds per
query, TFlow's savings) fill as items finish, every item is listed with each mode's verdict, and clicking one opens
it in Compare with its recorded answers. Cancel stops after the current answer; JSON and CSV downloads follow the
run. The task's own generator and static adapter run where it has them, else the ones picked in the Ask tab.
"""
from __future__ import annotations

import contextlib
import html
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from ..diagnostics import viz
from ..pipeline import MODES
from .benchmark_run import (
    MAX_ITEMS,
    BenchmarkRecord,
    available_tasks,
    item_rows,
    make_record,
    run_items,
    savings_markdown,
    table_rows,
    to_csv,
    to_json,
)
from .worker import DEFAULT_ROLES, HISTORY_LIMIT, RunRecord, RunRequest, export_perturbations

TABLE_HEADERS = ["mode", "accuracy % [95% interval]", "tokens / query", "paper tokens / query", "s / query", "n"]
CAPTION = ("**A benchmark slice, live.** The items of a task or benchmark run through each mode with the task's own "
           "generator and static adapter where it has them, else those picked in the Ask tab (greedy decoding, the "
           "task's budgets), scored as the field scores "
           "them: a final number, an equivalent expression (math-verify), a letter, or the benchmark's tests run in a "
           "sandbox. Click an item to open it in Compare.")
YIELD_EVERY_S = 0.5
RUNNING: dict[int, threading.Event] = {}  # slice key -> its stop flag (a page's State may hold a copy of the record)


def progress_html(record: BenchmarkRecord | None, note: str = "", state: str | None = None) -> str:
    if record is None:
        return f'<div class="bench-progress"><span>{html.escape(note or "No slice has run yet.")}</span></div>'
    state = state or record.state
    return (f'<div class="bench-progress" data-state="{state}"><progress value="{record.finished}" '
            f'max="{record.total}"></progress> <span>{record.finished} / {record.total} answers · {state} · '
            f'{html.escape(record.task)}, {len(record.items)} items</span></div>')


class BenchmarkTab:
    """Mixed into the page: the tab's components (`_benchmark_tab`) and its handlers (`_wire_benchmark`)."""

    def _benchmark_tab(self) -> None:
        choices = available_tasks(self.studio)
        gr.Markdown(CAPTION, elem_classes="caption")
        with gr.Row():
            self.bench_task = gr.Dropdown(choices, value=choices[0], label="Task or benchmark", elem_id="bench-task")
            self.bench_n = gr.Number(10, precision=0, minimum=1, maximum=MAX_ITEMS, label="Items", elem_id="bench-n")
            self.bench_modes = gr.CheckboxGroup([(viz.MODE_LABELS[m], m) for m in MODES],
                                                value=["single", "tflow"], label="Modes", elem_id="bench-modes")
        with gr.Row():
            self.bench_run = gr.Button("Run the slice", variant="primary", elem_id="bench-run")
            self.bench_stop = gr.Button("Cancel", elem_id="bench-stop")
        self.bench_progress = gr.HTML(progress_html(None), elem_id="bench-progress")
        self.bench_table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, elem_id="bench-table")
        self.bench_savings = gr.Markdown("", elem_id="bench-savings")
        self.bench_items = gr.Dataframe(headers=["#", "id", "question"], value=[], interactive=False, wrap=True,
                                        elem_id="bench-items", label="Items (click one to open it in Compare)")
        with gr.Row():
            self.bench_json = gr.DownloadButton("Download JSON", interactive=False, elem_id="bench-json")
            self.bench_csv = gr.DownloadButton("Download CSV", interactive=False, elem_id="bench-csv")
        self.bench_record = gr.State(None)

    def _wire_benchmark(self) -> None:
        outputs = [self.bench_progress, self.bench_table, self.bench_savings, self.bench_items, self.bench_json,
                   self.bench_csv, self.bench_record]
        self.bench_run.click(self.run_benchmark, [self.bench_task, self.bench_n, self.bench_modes,
                                                            self.generator, self.static], outputs,
                                       api_name="benchmark", concurrency_id="model", show_progress="hidden")
        self.bench_stop.click(self.cancel_benchmark, [self.bench_record], [self.bench_progress], queue=False,
                              api_name="benchmark_cancel")
        self.bench_items.select(self.open_benchmark_item,
                                [self.bench_record, self.history, self.source, self.view, self.layer, self.module],
                                self.run_outputs, api_name="benchmark_item", queue=False)

    def run_benchmark(self, task: str, n: float, modes: list[str], generator: str, static: str) -> Iterator[list]:
        try:
            record = make_record(self.studio, task, int(n or 0), modes, generator, static)
        except ValueError as e:
            gr.Warning(str(e))
            yield [progress_html(None, f"Cannot run: {e}"), *[gr.skip()] * 6]
            return
        posted, stop = queue.Queue(), threading.Event()
        RUNNING[record.key] = stop
        threading.Thread(target=run_items, args=(self.studio, record, lambda: posted.put(1), stop), daemon=True).start()
        try:
            last = 0.0
            while record.state == "running":
                with contextlib.suppress(queue.Empty):
                    posted.get(timeout=YIELD_EVERY_S)
                if time.monotonic() - last >= YIELD_EVERY_S:
                    last = time.monotonic()
                    yield self._bench_updates(record)
            yield self._bench_updates(record)
        finally:
            stop.set()  # the page went away: the worker stops after its current answer
            RUNNING.pop(record.key, None)

    def _bench_updates(self, record: BenchmarkRecord) -> list:
        stem = Path(self.studio.downloads) / f"benchmark-{record.task.replace(':', '_')}-{id(record)}"
        files = []
        for suffix, text in ((".json", to_json(record)), (".csv", to_csv(record))):
            Path(str(stem) + suffix).write_text(text)
            files.append(gr.DownloadButton(value=str(stem) + suffix, interactive=True))
        headers = ["#", "id", "question", *(viz.MODE_LABELS[m] for m in record.modes)]
        return [progress_html(record), {"headers": TABLE_HEADERS, "data": table_rows(record)}, savings_markdown(record),
                {"headers": headers, "data": item_rows(record)}, *files, record]

    def cancel_benchmark(self, record: BenchmarkRecord | None) -> str:
        """Stop the slice after its current answer; what finished stays in the table and the downloads."""
        stop = RUNNING.get(record.key) if record is not None else None
        if stop is None:
            return progress_html(record)
        stop.set()
        return progress_html(record, state="cancelling")

    def open_benchmark_item(self, record: BenchmarkRecord | None, history: list[RunRecord], source: str, view: str,
                            layer: int, module: str, evt: gr.SelectData) -> dict:
        """An item of the slice in Compare: its question and every mode's recorded answer and verdict."""
        i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if record is None or not 0 <= i < len(record.items) or i not in record.results:
            gr.Warning("That item has no answers yet.")
            return {}
        ex = record.items[i]
        request = RunRequest(ex.question, tuple(c or "" for c in ex.contexts), ex.answer, tuple(record.results[i]),
                             record.generator, record.static, record.settings, DEFAULT_ROLES)
        number = history[-1].number + 1 if history else 1
        item = RunRecord(number, time.strftime("%H:%M:%S"), request, results=dict(record.results[i]))
        export_perturbations(self.studio, item)  # the Perturbation tab's downloads, as after a run
        history = [*history, item][-HISTORY_LIMIT:]
        return {self.tabs: gr.Tabs(selected="compare"),
                **self._record_updates(item, history, source, view, layer, module)}
