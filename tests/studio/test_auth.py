"""TFlow Studio behind a login (TFLOW_STUDIO_AUTH, Gradio's own auth): without it a client gets no page, no API
answer and no download; with it (gradio_client, or the login page in Chromium) everything works as before."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError
from studio_server import Studio, studio
from studio_server import embedded_examples as build_examples

from tflow.studio.cli import AUTH_ENV

USER, PASSWORD = "ada", "correct-horse-Zq9"


@pytest.fixture(scope="module")
def secured() -> Studio:
    return studio(extra_env={AUTH_ENV: f"{USER}:{PASSWORD}"})


def relay_example() -> dict:
    return next(e for e in build_examples() if e["task"] == "relay")


def status_of(url: str, data: dict | None = None) -> int:
    """HTTP status of a GET (or a JSON POST) without any cookie."""
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def status_of_with_login(secured: Studio, url: str) -> int:
    """HTTP status of a GET with the session cookie that Gradio's /login hands out."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": USER, "password": PASSWORD}).encode()
    opener.open(secured.url + "login", data=form, timeout=30)
    with opener.open(url, timeout=30) as r:
        return r.status


def download_url(secured: Studio) -> str:
    """The URL of a PEFT adapter the app exported for a run made with the login."""
    client = Client(secured.url, auth=(USER, PASSWORD), verbose=False, download_files=False)
    ex = relay_example()
    outputs = client.submit(ex["question"], *ex["contexts"], ex["answer"], ["tflow"], api_name="/run").result(
        timeout=120
    )
    files = [o["value"]["url"] for o in outputs if isinstance(o, dict) and isinstance(o.get("value"), dict)
             and str(o["value"].get("url", "")).endswith(".zip")]  # the PEFT download button's update
    assert len(files) == 1, outputs
    assert status_of_with_login(secured, files[0]) == 200
    return files[0]


def test_without_the_login_a_client_gets_no_page_no_api_answer_and_no_download(secured: Studio) -> None:
    url = download_url(secured)
    assert status_of(url) in (401, 403), "a download was served without the login"
    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(secured.url, verbose=False)
    for path in ("config", "gradio_api/info", "gradio_api/openapi.json"):
        assert status_of(secured.url + path) == 401, path
    for api in ("ask", "health", "causal"):
        assert status_of(f"{secured.url}gradio_api/call/{api}", {"data": ["What is the key?"]}) == 401, api
    assert status_of(f"{secured.url}gradio_api/queue/join", {"data": [], "fn_index": 0, "session_hash": "x"}) == 401
    with urllib.request.urlopen(secured.url, timeout=30) as r:  # the page shell loads, but without the page's config
        shell = r.read().decode()
    assert "studio-header" not in shell and "run-btn" not in shell and relay_example()["question"] not in shell


def test_with_the_login_the_api_works_as_before(secured: Studio) -> None:
    client = Client(secured.url, auth=(USER, PASSWORD), verbose=False)
    ex = relay_example()
    generator = next(k for k, d in client.predict(api_name="/health")["generators"].items() if "task relay" in d)
    out = client.predict(question=ex["question"], contexts=ex["contexts"], reference=ex["answer"], generator=generator,
                         api_name="/ask")
    assert out["errors"] == {} and out["results"]["tflow"]["correct"]
    causal = client.predict(question=ex["question"], contexts=ex["contexts"], generator=generator, probes=["sweep"],
                            api_name="/causal")
    assert causal["sweep"]["answers"][4] == out["results"]["tflow"]["answer"]
    assert not client.predict(api_name="/health")["patched"]
    with pytest.raises((AuthenticationError, ValueError), match="Could not login"):
        Client(secured.url, auth=(USER, "wrong-password"), verbose=False)


def test_the_password_is_never_logged(secured: Studio) -> None:
    Client(secured.url, auth=(USER, PASSWORD), verbose=False)
    assert PASSWORD not in secured.log.read_text(errors="replace")


def log_in(page, password: str) -> None:
    """Fill Gradio's login page (a failed attempt clears both fields) and submit it."""
    page.locator('input[data-testid="textbox"]').fill(USER)
    page.locator('input[type="password"]').fill(password)
    page.get_by_role("button", name="Login").click()


@pytest.mark.browser
def test_in_chromium_the_login_page_comes_first_then_everything_works(secured: Studio, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright
    from test_browser import (
        CHROMIUM,
        CHROMIUM_ARGS,
        TIMEOUT_MS,
        Session,
        assert_no_error_toast,
        open_tab,
        shoot,
        wait_for_figure,
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(secured.url)
        page.get_by_role("button", name="Login").wait_for()
        assert not page.locator("#studio-header").count()
        shoot(page, tmp_path, "9-login")
        log_in(page, "not-the-password")
        page.get_by_text("Incorrect Credentials").wait_for()
        assert not page.locator("#studio-header").count()
        log_in(page, PASSWORD)
        page.wait_for_selector("#studio-header")

        examples = build_examples()
        page.locator("#examples tbody tr").nth(examples.index(relay_example())).click()
        page.wait_for_function("() => document.querySelector('#question textarea').value.length > 0")
        Session(page).run()
        assert page.locator("#answer-tflow textarea").input_value().strip()
        open_tab(page, "Perturbation")
        wait_for_figure(page, "pert-heatmap", "Size of ΔW")
        with page.expect_download() as download:
            page.click("#download-peft")
        saved = tmp_path / "adapter.zip"
        download.value.save_as(saved)
        assert zipfile.ZipFile(saved).namelist()
        assert status_of(download.value.url) in (401, 403), "the same download without the login cookie was served"
        page.click("#causal-btn")
        wait_for_figure(page, "causal-sweep", "How much of the answer")
        assert_no_error_toast(page)
        browser.close()
