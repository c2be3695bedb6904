"""The Studio on the real model (SmolLM2-135M-Instruct, fetched by name) in headless Chromium: a note
example through every mode with the senders' real TextMAS messages, the 30 x 7 perturbation heatmap,
the causal section, and screenshots (into TFLOW_STUDIO_SCREENSHOTS when set)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client
from studio_server import Studio, studio
from test_browser import Session, assert_no_error_toast, browse, dismiss_toasts, open_tab, shoot, wait_for_figure

from tflow import tasks
from tflow.studio.examples import build_examples

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def real_app() -> Studio:
    return studio(model="smollm2-135m-instruct")


@pytest.fixture(scope="module")
def real_session(real_app: Studio) -> Iterator[Session]:
    yield from browse(real_app)


def test_the_real_model_answers_a_note_through_weights_and_shows_every_view(
    real_app: Studio, real_session: Session, tmp_path: Path
) -> None:
    page = real_session.page
    header = page.locator("#studio-header").inner_text()
    assert "smollm2-135m-instruct" in header and "30 layers" in header and "hidden 576" in header, header
    note = next(e for e in build_examples() if e["task"] == "note")
    first = page.locator("#examples tbody tr").first
    # the real model's own task comes first (the table's cells fill in after the page loads: wait for them)
    page.wait_for_function(
        "q => (document.querySelector('#examples tbody tr')?.innerText || '').includes(q)", arg=note["question"]
    )
    first.click()
    page.wait_for_function("q => document.querySelector('#question textarea').value === q", arg=note["question"])
    shoot(page, tmp_path, "real-1-ask")
    real_session.run()
    tflow_answer = page.locator("#answer-tflow textarea").input_value()
    single_answer = page.locator("#answer-single textarea").input_value()
    assert not tasks.is_correct(single_answer, note["answer"]), (
        single_answer
    )  # the note is in no prompt the receiver sees
    api = Client(real_app.url, verbose=False).predict(
        question=note["question"],
        contexts=note["contexts"],
        reference=note["answer"],
        modes=["single", "tflow"],
        api_name="/ask",
    )
    assert api["results"]["tflow"]["answer"] == tflow_answer and api["results"]["single"]["answer"] == single_answer
    page.get_by_text("Senders' messages").click()
    page.wait_for_function("() => (document.querySelector('#textmas-messages')?.innerText || '').length > 20")
    shoot(page, tmp_path, "real-2-compare")

    open_tab(page, "Perturbation")
    wait_for_figure(page, "pert-heatmap", "Size of ΔW")
    heat = page.evaluate("() => document.querySelector('#pert-heatmap .js-plotly-plot').data[0]")
    z = heat["z"]  # plotly sends a numeric array as {dtype, bdata, shape}
    shape = tuple(int(n) for n in str(z["shape"]).split(",")) if isinstance(z, dict) else (len(z), len(z[0]))
    assert shape == (30, 7), shape  # layers x modules
    shoot(page, tmp_path, "real-3-perturbation")
    page.click("#causal-btn")
    for plot, title in (("causal-effects", "Effect of removing"), ("causal-sweep", "How much of the answer")):
        wait_for_figure(page, plot, title)
    page.wait_for_function("() => document.querySelector('#causal-status').innerText.includes('computed in')")
    sweep = page.evaluate("() => document.querySelector('#causal-sweep .js-plotly-plot').data[0]")
    assert sweep["customdata"][4] == tflow_answer
    # 210 cells: first-order removal effects from one backward pass, the 12 it ranks highest removed exactly
    assert "first-order estimates" in page.locator("#causal-status").inner_text()
    effects = page.evaluate("() => document.querySelector('#causal-effects .js-plotly-plot').layout.shapes.length")
    assert effects == 12
    dismiss_toasts(page)
    shoot(page, tmp_path, "real-4-causal")

    open_tab(page, "Activations")
    wait_for_figure(page, "hidden-plot", "hidden states on the tokens the generator reads")
    shoot(page, tmp_path, "real-5-activations")
    assert_no_error_toast(page)


def test_a_real_kb_example_runs_its_senders_on_the_real_specialist(real_session: Session, tmp_path: Path) -> None:
    page = real_session.page
    open_tab(page, "Ask")
    ex = tasks.examples("kb-words@4", "test", 4, 0)[
        0
    ]  # the Studio's first kb-words@4 example: group B, never trained on
    page.locator("#examples tbody tr", has_text=ex.question).first.click()
    page.wait_for_function("q => document.querySelector('#question textarea').value === q", arg=ex.question)
    header = page.locator("#studio-header").inner_text()
    assert "smollm2-kbw4" in header and header.count("hidden 576") == 2, header  # receiver and specialist senders
    real_session.run()
    page.get_by_text("Senders' messages").click()
    page.wait_for_function(
        "() => (document.querySelector('#textmas-messages')?.innerText || '').includes('smollm2-kbw4')"
    )
    shoot(page, tmp_path, "real-6-kb-compare")
    assert page.locator("#answer-tflow textarea").input_value().strip()
    open_tab(page, "Activations")
    wait_for_figure(page, "hidden-plot", "smollm2-kbw4")
    # the specialist's read-out where the generator stops reading (the answer header): the answer it would give
    page.wait_for_function(
        "() => (document.querySelector('#hidden-note')?.innerText || '').includes('each sender would say next')")
    said = page.locator("#hidden-note").inner_text()
    assert all(f"{role}: {ex.answer} " in said for role in ("Strategist", "Knowledge Extractor")), said
    shoot(page, tmp_path, "real-7-kb-activations")
    assert_no_error_toast(page)
