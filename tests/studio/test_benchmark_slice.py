"""A benchmark slice in the Studio, without a browser: items scored by their benchmark's scorer (HumanEval's tests
in the sandbox), Table-1 rows with intervals, downloads, cancelling, and the Ask tab's benchmark examples."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from studio_server import studio

from tflow import tasks
from tflow.studio import benchmark_run
from tflow.studio.benchmark_run import BenchmarkRecord, item_rows, remember, table_rows, to_csv, to_json, verdict_for
from tflow.studio.worker import GenerationSettings
from tflow.tasks.procedural import SHARED_TASKS


@pytest.fixture(scope="module")
def client() -> Client:
    return Client(studio().url, verbose=False)


def test_a_slice_through_the_api_fills_a_row_per_mode_and_every_items_verdicts(client: Client) -> None:
    progress, table, savings, items, json_file, csv_file = client.predict(
        "rg:chain_sum", 4, ["single", "tflow"], "relay", "none", api_name="/benchmark")
    assert "8 / 8 answers · done" in progress
    rows = {r[0]: r for r in table["data"]}
    assert set(rows) == {"single", "tflow"} and all(r[-1] == 4 for r in rows.values())
    assert "[" in rows["tflow"][1] and "TFlow against Single" in savings
    assert len(items["data"]) == 4 and all(v in ("✔", "✘") for row in items["data"] for v in row[3:])
    report = json.loads(Path(json_file["value"]).read_text())  # the download buttons' updates carry the files
    assert report["state"] == "done" and len(report["items"]) == 4 and set(report["summary"]) == {"single", "tflow"}
    assert Path(csv_file["value"]).read_text().startswith("task,mode,accuracy")


def test_a_bad_slice_is_refused_with_a_readable_message_and_the_app_serves_on(client: Client) -> None:
    progress, *_ = client.predict("rg:chain_sum", 2, [], "relay", "none", api_name="/benchmark")
    assert "Cannot run" in progress and "no mode is selected" in progress
    progress, *_ = client.predict("rg:chain_sum", 2, ["static"], "relay", "none", api_name="/benchmark")
    assert "Static LoRA needs a static adapter" in progress
    with pytest.raises(AppError, match="not in the list of choices"):  # the page offers only what it has data for
        client.predict("no-such-task", 4, ["single"], "relay", "none", api_name="/benchmark")
    assert client.predict(api_name="/health")["patched"] is False


def test_verdicts_come_from_the_benchmarks_scorer_and_code_runs_in_the_sandbox() -> None:
    he = tasks.examples("humaneval", "test", 1)
    remember(he)
    canonical = he[0].grading["prompt"] + he[0].answer
    assert verdict_for(he[0].question, f"```python\n{canonical}```") is True
    assert verdict_for(he[0].question, "```python\ndef has_close_elements(n, t):\n    return None\n```") is False
    assert verdict_for("a question nobody offered", "42") is None


def test_a_cancelled_slice_keeps_what_finished_for_its_table_and_downloads() -> None:
    items = tasks.examples("rg:chain_sum", "test", 3)
    record = BenchmarkRecord("rg:chain_sum", ("single",), "relay", "none", items, GenerationSettings())

    class Pipe:
        def run(self, question, mode, **kwargs):
            stop.set()  # the user cancels while the first answer is made
            return make_result(question)

    class FakeStudio:
        def pipeline(self, generator, static):
            return Pipe()

    stop = threading.Event()
    from tflow.results import RunResult, Usage

    def make_result(question: str) -> RunResult:
        return RunResult(mode="single", question=question, answer="\\boxed{0}", usage=Usage({}),
                         timings={"receiver": 0.1, "total": 0.1}, kv_cache_bytes=0, stop_reason="eos",
                         receiver_prompt_tokens=10)

    benchmark_run.run_items(FakeStudio(), record, lambda: None, stop)
    assert record.state == "cancelled" and record.finished == 1
    assert table_rows(record)[0][-1] == 1 and [r[3] for r in item_rows(record)] == ["✘", "…", "…"]
    assert json.loads(to_json(record))["state"] == "cancelled" and to_csv(record).count("\n") == 2


def test_the_ask_tabs_examples_include_benchmark_items() -> None:
    rows = benchmark_run.ask_examples()
    shared = [t for t in SHARED_TASKS for _ in range(2)]  # two items of each task of the shared-question setting
    assert [r["task"] for r in rows] == ["humaneval", "humaneval", *shared]
    assert verdict_for(rows[0]["question"], "no code") is False  # remembered: judged by HumanEval's tests


def test_the_shuffled_control_of_one_item_reads_another_query_of_its_task() -> None:
    """The causal section's 'senders from another query': the next example of the item's own task (a relay example
    with the same question and other private contexts counts as another query), else a test item of the
    generator's task."""
    from types import SimpleNamespace

    from tflow.studio.worker import other_query

    rows = [{"task": "relay", "question": "What is the key?", "contexts": ["The key is 1.", "The key is 1."],
             "answer": "1"},
            {"task": "note", "question": "Where does Ann live?", "contexts": ["Ann lives in Oslo.", ""],
             "answer": "Oslo"},
            {"task": "relay", "question": "What is the key?", "contexts": ["The key is 2.", "The key is 2."],
             "answer": "2"}]
    studio = SimpleNamespace(examples=rows, generators={"g": SimpleNamespace(task=SHARED_TASKS[0]),
                                                        "bare": SimpleNamespace(task=None)})
    got = other_query(studio, "What is the key?", ("The key is 2.", "The key is 2."), "g")
    assert (got.question, got.contexts) == ("What is the key?", ("The key is 1.", "The key is 1."))
    typed = other_query(studio, "Something typed", ("", ""), "g")  # not an example: the generator's own task
    assert typed.task == SHARED_TASKS[0] and typed.question != "Something typed"
    with pytest.raises(ValueError, match="no other query"):
        other_query(studio, "Where does Ann live?", ("Ann lives in Oslo.", ""), "g")
    with pytest.raises(ValueError, match="records no task"):
        other_query(studio, "Something typed", ("", ""), "bare")
