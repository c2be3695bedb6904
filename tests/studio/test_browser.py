"""TFlow Studio in real headless Chromium: an example through every mode, the charts, the PEFT
download reproducing the TFlow answer, history restoring a whole run, bad input, the causal section
against the API, and a screenshot of every tab (into TFLOW_STUDIO_SCREENSHOTS when set, e.g. assets/screenshots)."""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from gradio_client import Client
from studio_server import Studio, studio
from studio_server import embedded_examples as build_examples

from tflow.agents import EXECUTOR
from tflow.studio.worker import MAX_NEW_TOKENS

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TFLOW_STUDIO_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TABS = ("Ask", "Compare", "Perturbation", "Activations", "History", "Benchmark")
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def app() -> Studio:
    return studio()


def browse(app: Studio) -> Iterator[Session]:
    """A headless Chromium page on the app, open until the generator is closed."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run tests/run.sh (it installs it) or set TFLOW_STUDIO_CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        page.wait_for_selector("#studio-header")
        yield Session(page)
        browser.close()


@pytest.fixture(scope="module")
def session(app: Studio) -> Iterator[Session]:
    yield from browse(app)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=re.compile(rf"· {name}$")).click()


def status(page) -> str:
    return page.locator("#run-status").inner_text()


@dataclass
class Session:
    """The browser page on the app and how many runs it has made (runs are numbered per page)."""

    page: Any
    runs: int = 0

    def run(self, refusal: str | None = None) -> str:
        """Press Run and wait until the status line reports this run done, or the expected refusal; return the
        status."""
        expect = f"Run #{self.runs + 1} done." if refusal is None else refusal
        self.page.click("#run-btn")
        self.page.wait_for_function(
            "expect => document.querySelector('#run-status').innerText.includes(expect)", arg=expect
        )
        self.runs += refusal is None
        return status(self.page)


def wait_for_figure(page, elem_id: str, title: str) -> None:
    """Wait until the plotly figure in #elem_id is drawn with `title` (not its placeholder)."""
    page.wait_for_function(
        "([id, title]) => { const el = document.querySelector('#' + id + ' .js-plotly-plot .main-svg');"
        " return el !== null && document.querySelector('#' + id).textContent.includes(title); }",
        arg=[elem_id, title],
    )


def assert_no_error_toast(page) -> None:
    """Gradio shows a failing event (a bug, not bad input) as an error pop-up."""
    errors = page.locator('[data-testid="toast-body"].error')
    assert not errors.count(), errors.first.inner_text()


def dismiss_toasts(page) -> None:
    """Close the pop-up messages so a screenshot shows the page under them."""
    assert_no_error_toast(page)
    for _ in range(10):
        close = page.locator('[data-testid="toast-close"]')
        if not close.count():
            return
        close.first.click()
        page.wait_for_timeout(300)


def shoot(page, tmp: Path, name: str) -> None:
    size = page.viewport_size  # a resize makes plotly lay out again figures drawn while their tab was hidden
    page.set_viewport_size({**size, "width": size["width"] + 1})
    page.set_viewport_size(size)
    page.wait_for_timeout(400)
    page.screenshot(path=str(Path(os.environ.get("TFLOW_STUDIO_SCREENSHOTS", tmp)) / f"{name}.png"), full_page=True)


def visible_modes(page) -> list[str]:
    return [m for m in ("single", "textmas", "tflow", "static") if page.locator(f"#col-{m}").is_visible()]


def peft_answer(model_dir: str, adapter_zip: Path, question: str, max_new_tokens: int) -> str:
    """Greedy answer of the backbone + the downloaded adapter, loaded by PEFT itself."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tflow.agents import EXECUTOR, Backbone, GenerationSettings, build_prompt, generate

    torch.set_num_threads(1)
    adapter = adapter_zip.with_suffix("")
    with zipfile.ZipFile(adapter_zip) as zf:
        assert sorted(zf.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
        zf.extractall(adapter)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), str(adapter)
    )
    backbone = Backbone(model, tokenizer, model_dir)
    prompt = build_prompt(backbone, EXECUTOR, question).input_ids
    return generate(backbone, [prompt], max_new_tokens, GenerationSettings(max_new_tokens=max_new_tokens))[0].text


def change_every_input(page) -> None:
    """Edit the question, a context, the modes, a generation setting and a role prompt (without running)."""
    open_tab(page, "Ask")
    page.fill("#question textarea", "Something else entirely?")
    page.fill("#ctx-0 textarea", "Another context.")
    page.locator("#modes").get_by_label("TextMAS").uncheck()
    page.get_by_text("Generation settings").click()
    page.fill("#max-new input[type=number]", "7")
    page.locator("#max-new input[type=number]").press("Enter")
    page.get_by_text("Role prompts (system prompts of the agents)").click()
    page.locator("#prompt-2 textarea").fill("An edited receiver prompt.")
    page.wait_for_timeout(300)


def test_example_through_every_mode(app: Studio, session: Session, tmp_path: Path) -> None:
    page = session.page
    shoot(page, tmp_path, "0-ask-empty")
    page.locator("#examples tbody tr").first.click()
    page.wait_for_function("() => document.querySelector('#question textarea').value.length > 0")
    question = page.locator("#question textarea").input_value()
    assert page.locator("#ctx-0 textarea").input_value(), "the example filled no private context"
    shoot(page, tmp_path, "1-ask")

    session.run()
    modes = visible_modes(page)
    assert {"single", "textmas", "tflow"} <= set(modes)
    if any(Path(app.checkpoints, "static").glob("*/adapter_config.json")):
        assert "static" in modes, "a static adapter exists but Static LoRA did not run"
    for mode in modes:
        assert page.locator(f"#answer-{mode} textarea").input_value().strip(), f"{mode} shows no answer"
        assert "processed tokens" in page.locator(f"#info-{mode}").inner_text()
    for chart, title in (("chart-tokens", "Processed tokens per mode"), ("chart-time", "Wall time per mode"),
                         ("chart-savings", "TFlow's savings")):
        wait_for_figure(page, chart, title)
    shoot(page, tmp_path, "2-compare")

    open_tab(page, "Perturbation")
    for plot, title in (
        ("pert-heatmap", "Size of ΔW"),
        ("pert-spectrum", "Singular values"),
        ("pert-share", "share, per layer"),
        ("pert-layers", "Layer aggregator"),
        ("pert-fusion", "Fusion weights"),
    ):
        wait_for_figure(page, plot, title)
    shoot(page, tmp_path, "3-perturbation")
    with page.expect_download() as download:
        page.click("#download-peft")
    adapter_zip = tmp_path / "tflow-peft-adapter.zip"
    download.value.save_as(adapter_zip)
    tflow_answer = page.locator("#answer-tflow textarea").input_value()
    assert peft_answer(app.model, adapter_zip, question, max_new_tokens=MAX_NEW_TOKENS) == tflow_answer

    open_tab(page, "Activations")
    wait_for_figure(page, "hidden-plot", "hidden states on the tokens the generator reads")
    # the read-out table: every sender's top 3 next tokens at each position it was read at
    page.wait_for_selector('#next-tokens [data-testid="cell-0-3"]', timeout=TIMEOUT_MS)
    first_row = [page.locator(f'#next-tokens [data-testid="cell-0-{c}"]').inner_text() for c in range(4)]
    assert first_row[0] in ("Strategist", "Knowledge Extractor") and first_row[1] == "0", first_row
    assert first_row[3].count(" · ") == 2, first_row
    assert "each sender would say next:** " not in page.locator("#hidden-note").inner_text()  # rendered, not raw
    assert "each sender would say next: Strategist: " in page.locator("#hidden-note").inner_text()
    page.click("#queries-btn")
    wait_for_figure(page, "queries-plot", "One point per query")
    page.wait_for_function("() => document.body.innerText.includes('Relative spread')")
    shoot(page, tmp_path, "4-activations")

    contexts = [page.locator(f"#ctx-{i} textarea").input_value() for i in range(2)]
    change_every_input(page)
    open_tab(page, "History")
    page.locator('#history-table [data-testid="cell-0-2"]').click()
    page.wait_for_function("() => document.querySelector('#run-status').innerText.includes('again (from History)')")
    assert page.locator("#answer-tflow textarea").input_value() == tflow_answer
    open_tab(page, "Ask")
    assert page.locator("#question textarea").input_value() == question
    assert [page.locator(f"#ctx-{i} textarea").input_value() for i in range(2)] == contexts
    assert page.locator("#modes").get_by_label("TextMAS").is_checked()
    assert page.locator("#max-new input[type=number]").input_value() == str(MAX_NEW_TOKENS)
    assert page.locator("#prompt-2 textarea").input_value() == EXECUTOR.system_prompt
    open_tab(page, "History")
    shoot(page, tmp_path, "5-history")
    assert_no_error_toast(page)


def test_bad_input_is_explained_and_the_app_keeps_serving(session: Session, tmp_path: Path) -> None:
    page = session.page
    open_tab(page, "Ask")
    page.fill("#ctx-0 textarea", "The code is 47.")
    page.fill("#question textarea", "")
    assert "Cannot run" in session.run(refusal="the question is empty")
    assert page.locator("#ctx-0 textarea").input_value() == "The code is 47.", "the user's context was lost"

    huge = "x " * 50_000
    page.fill("#question textarea", huge)
    text = session.run(refusal="shorten the question")
    assert "Cannot run" in text and "the model's context is only" in text, text
    open_tab(page, "Ask")
    assert page.locator("#question textarea").input_value() == huge, "the user's question was lost"
    shoot(page, tmp_path, "6-too-long")

    page.locator("#generator input").click()
    page.get_by_role("option", name=re.compile(r"^none")).click()
    page.wait_for_function(
        "() => document.querySelector('#studio-header').innerText.includes('untrained generator: perturbation is zero')"
    )
    page.fill("#question textarea", "What is the code plus 5?")
    page.locator("#reference").get_by_role("textbox").fill("52")
    text = session.run()
    assert "generator is untrained" in text and "cannot reach the TFlow receiver" in text, text
    dismiss_toasts(page)
    shoot(page, tmp_path, "7-untrained-generator")

    open_tab(page, "Ask")
    page.locator("#examples tbody tr").nth(1).click()
    page.wait_for_function("() => !document.querySelector('#studio-header').innerText.includes('untrained generator')")
    text = session.run()
    assert "⚠" not in text, text
    assert page.locator("#answer-tflow textarea").input_value().strip()
    assert_no_error_toast(page)


def test_causal_section_on_a_relay_example_shows_the_probes_and_matches_the_api(
    app: Studio, session: Session, tmp_path: Path
) -> None:
    page = session.page
    open_tab(page, "Ask")
    examples = build_examples()
    index = next(i for i, e in enumerate(examples) if e["task"] == "relay")
    ex = examples[index]
    page.locator("#examples tbody tr").nth(index).click()
    page.wait_for_function("q => document.querySelector('#question textarea').value === q", arg=ex["question"])
    session.run()
    tflow_answer = page.locator("#answer-tflow textarea").input_value()
    open_tab(page, "Perturbation")
    page.click("#causal-btn")
    for plot, title in (("causal-norms", "Size of ΔW"), ("causal-effects", "Effect of removing"),
                        ("causal-sweep", "How much of the answer"), ("causal-kl", "Where in the answer"),
                        ("causal-senders", "Which sender")):
        wait_for_figure(page, plot, title)
    page.wait_for_function("() => document.querySelector('#causal-status').innerText.includes('computed in') && "
                           "!document.querySelector('#causal-status').innerText.includes('●')")  # every probe done
    note = page.locator("#causal-status").inner_text()
    data = "id => document.querySelector('#' + id + ' .js-plotly-plot').data[0]"
    effects, sweep, kl = (page.evaluate(data, name) for name in ("causal-effects", "causal-sweep", "causal-kl"))
    answers = sweep["customdata"]
    assert sweep["x"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert answers[4] == tflow_answer, "greedy decoding at scale 1 is the TFlow answer"
    assert answers[0] != tflow_answer and "Removing all of ΔW (scale 0) changes the greedy answer" in note
    page.wait_for_function(
        "texts => texts.every(t => document.querySelector('#causal-sweep-table').innerText.includes(t))",
        arg=["1.75", *answers],
    )
    dismiss_toasts(page)
    shoot(page, tmp_path, "8-causal")

    client = Client(app.url, verbose=False)
    generator = next(k for k, d in client.predict(api_name="/health")["generators"].items() if "task relay" in d)
    api = client.predict(question=ex["question"], contexts=ex["contexts"], generator=generator, api_name="/causal")
    assert api["answer"] == tflow_answer
    assert sum(effects["z"], []) == pytest.approx(sum(api["ablation"]["cells"], []), rel=1e-9)
    assert sweep["y"] == pytest.approx(api["sweep"]["logprob"], rel=1e-9) and answers == api["sweep"]["answers"]
    assert kl["y"] == pytest.approx(api["token_kl"]["kl"], rel=1e-9)
    rho = api["ablation"]["spearman"]
    assert (f"ρ = {rho:+.2f}" if rho is not None else "undefined") in note
    other = api["other_query"]  # the shuffled control for this item: another relay example's senders
    relay = [[e["question"], e["contexts"]] for e in examples if e["task"] == "relay"]
    assert [other["other_question"], other["other_contexts"]] in relay
    assert [other["other_question"], other["other_contexts"]] != [ex["question"], ex["contexts"]]
    assert other["logprob"] == pytest.approx(api["senders"]["all"], abs=1e-4)
    assert "Senders from another query" in note and other["other_answer"] in note
    seconds = {p: api[p]["seconds"] for p in ("ablation", "sweep", "token_kl", "senders")}
    assert max(seconds.values()) < 2.0, seconds
    assert_no_error_toast(page)


def test_a_kb_example_runs_its_senders_on_the_specialist(session: Session, tmp_path: Path) -> None:
    page = session.page
    open_tab(page, "Ask")
    examples = build_examples()
    index = next(i for i, e in enumerate(examples) if e["task"] == "kb")
    page.locator("#examples tbody tr").nth(index).click()
    page.wait_for_function(
        "q => document.querySelector('#question textarea').value === q", arg=examples[index]["question"]
    )
    header = page.locator("#studio-header").inner_text()
    assert "receiver" in header and "tiny-qwen3-kb" in header and "hidden 160" in header, header
    session.run()
    page.get_by_text("Senders' messages").click()
    page.wait_for_function(
        "() => (document.querySelector('#textmas-messages')?.innerText || '').includes('tiny-qwen3-kb')"
    )
    messages = page.locator("#textmas-messages").inner_text()
    assert messages.count("(tiny-qwen3-kb)") == 2, messages
    shoot(page, tmp_path, "10-kb-compare")
    assert page.locator("#answer-tflow textarea").input_value().strip()
    open_tab(page, "Activations")
    wait_for_figure(page, "hidden-plot", "(tiny-qwen3-kb, hidden 160)")
    page.click("#queries-btn")
    wait_for_figure(page, "queries-plot", "One point per query")
    shoot(page, tmp_path, "11-kb-activations")
    assert_no_error_toast(page)


def test_a_benchmark_slice_runs_live_and_opens_an_item_in_compare(session: Session, tmp_path: Path) -> None:
    """Ten items of a task through two modes: the progress bar and the table fill, every item gets a verdict per
    mode, and a click on an item opens it in Compare with its recorded answers."""
    page = session.page
    open_tab(page, "Benchmark")
    assert page.locator("#bench-task input").input_value(), "no task to pick"
    modes = page.locator("#bench-modes")
    for label, wanted in (("Single", True), ("TextMAS", False), ("TFlow", True), ("Static LoRA", False)):
        box = modes.get_by_label(label)
        if box.is_checked() != wanted:
            box.click()
    page.fill("#bench-n input[type=number]", "10")
    page.locator("#bench-n input[type=number]").press("Enter")
    page.click("#bench-run")
    page.wait_for_function("() => document.querySelector('#bench-progress progress') !== null")
    page.wait_for_function("() => document.querySelector('#bench-progress').innerText.includes('20 / 20 answers')")
    assert "done" in page.locator("#bench-progress").inner_text()
    assert page.locator("#bench-progress progress").get_attribute("value") == "20"
    table = page.locator("#bench-table").inner_text()
    assert "single" in table and "tflow" in table and "[" in table, table
    cell = lambda r, c: page.locator(f'#bench-items [data-testid="cell-{r}-{c}"]')  # noqa: E731
    assert cell(9, 0).inner_text().strip() == "10" and not cell(10, 0).count(), "ten items listed"
    assert all(cell(r, c).inner_text().strip() in ("✔", "✘") for r in range(10) for c in (3, 4))
    assert "TFlow against Single" in page.locator("#bench-savings").inner_text()
    dismiss_toasts(page)
    shoot(page, tmp_path, "12-benchmark")

    question = cell(0, 2).inner_text().strip()
    cell(0, 2).click()
    page.wait_for_function("() => (document.querySelector('#answer-tflow textarea')?.value || '').length > 0")
    # the tab switch and the columns' visibility land a frame after the answers' text: wait, never sample once
    page.locator("#col-tflow").wait_for(state="visible", timeout=10_000)
    page.locator("#col-single").wait_for(state="visible", timeout=10_000)
    assert "processed tokens" in page.locator("#info-tflow").inner_text()
    assert len(question) > 10
    dismiss_toasts(page)
    shoot(page, tmp_path, "13-benchmark-item-compare")
