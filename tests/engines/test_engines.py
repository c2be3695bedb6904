"""The engine choice without a vLLM server: hf stays the default and unchanged; an unreachable server is
one line in every tool and a note in the Studio, which keeps generating with hf."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tflow.agents import GenerationSettings
from tflow.engines import Decode, make_engine
from tflow.engines.hf import HFEngine
from tflow.engines.vllm import EngineUnavailable, VLLMEngine
from tflow.pipeline import Pipeline
from tflow.studio.cli import parse_args
from tflow.studio.registry import Studio, StudioConfig
from tflow.studio.render import header_html

ROOT = Path(__file__).resolve().parents[2]
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_hf_is_the_default_engine_and_every_result_says_which_engine_generated(qwen3):
    pipe = Pipeline(qwen3)
    assert isinstance(pipe.engine, HFEngine)
    assert {pipe.run("What is 2 + 2?", m).engine for m in ("single", "tflow")} == {"hf"}


@pytest.mark.parametrize(
    "args,says",
    [
        (
            ["tflow.tools.evaluate", "--task", "relay", "--limit", "1", "--engine", "vllm", "--vllm-url", DEAD],
            "unreachable",
        ),
        (["tflow.tools.evaluate", "--task", "relay", "--limit", "1", "--engine", "vllm"], "needs --vllm-url"),
        (["tflow.tools.evaluate", "--task", "relay", "--limit", "1", "--vllm-url", DEAD], "go with --engine vllm"),
        (["tflow.tools.bench", "--workload", "engines", "--engine", "hf,sglang"], "unknown engine"),
    ],
)
def test_engine_mistakes_and_an_unreachable_server_are_one_line_in_the_tools(args, says):
    done = _tool(*args)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[-1].startswith("error: ") and says in lines[-1], lines[-1]


def test_an_unreachable_server_raises_the_engines_own_error():
    with pytest.raises(EngineUnavailable, match="unreachable.*--engine hf"):
        make_engine("vllm", vllm_url=DEAD)


def test_the_studio_with_an_unreachable_server_says_so_in_the_header_and_generates_with_hf():
    studio = Studio(StudioConfig(model=str(ROOT / "checkpoints" / "tiny-qwen3"), checkpoints=str(ROOT / "checkpoints"),
                                 device="cpu", engine="vllm", vllm_url=DEAD))
    try:
        assert studio.engine.name == "hf"
        header = header_html(studio, studio.default_generator)
        assert "unreachable" in header and "generating with the hf engine instead" in header
        assert studio.pipeline("relay", "none").run("What is 2 + 2?", "single").engine == "hf"
    finally:
        studio.close()


@pytest.mark.parametrize("argv", [["--engine", "vllm"], ["--vllm-url", DEAD]])
def test_the_studio_refuses_engine_flags_that_do_not_go_together(argv):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2


@pytest.mark.parametrize("args,says", [
    (["--port", "0"], "--port must be"),
    (["--model", "no-such-model-anywhere.gguf"], "does not exist"),
])
def test_tflow_vllm_mistakes_are_one_line(args, says):
    from tflow.engines.vllm_server import env_ready

    if not env_ready("cpu") and "--port" not in args:
        pytest.skip("vLLM's environment is missing: the model is checked after it")
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    done = _tool("tflow.engines.vllm_server", *(args if "--port" in args else [*args, "--port", port]))
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[-1].startswith("error: ") and says in lines[-1], lines[-1]


def test_tflow_vllm_refuses_a_port_in_use_in_one_line():
    import socket

    from tflow.engines.vllm_server import check_port_free

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ValueError, match="choose another --port"):
            check_port_free("127.0.0.1", busy.getsockname()[1])


def test_a_server_that_goes_away_mid_session_is_a_message_in_the_studio_run(qwen3):
    import threading

    from tflow.agents import GenerationSettings, Roles
    from tflow.studio.worker import RunRequest, execute

    class Gone:
        name = "vllm"

        def describe(self) -> str:
            return "vllm (gone)"

        def generate(self, *args, **kwargs):
            raise EngineUnavailable(
                "the vLLM server at http://127.0.0.1:9 is unreachable (ConnectError); use --engine hf"
            )

    req = RunRequest("What is 2 + 2?", ("", ""), "", ("single", "tflow"), "none", "none", GenerationSettings(), Roles())
    events = []
    execute(Pipeline(qwen3, engine=Gone()), req, events.append, threading.Event())
    errors = {e.mode: e.payload for e in events if e.kind == "error"}
    assert set(errors) == {"single", "tflow"} and all(
        "unreachable" in m and "internal error" not in m for m in errors.values()
    )
    assert events[-1].kind == "done"


def test_adapters_left_on_the_server_count_only_per_request_ones(monkeypatch):
    """The zero adapter and a specialist's stay registered while the engine lives: what bench reports as left on the
    server is the per-request adapters only (0 once every request has finished; it once subtracted one it did not
    hold, reporting -1)."""
    from tflow.engines.vllm import VLLMEngine

    engine = VLLMEngine.__new__(VLLMEngine)  # no server: only the bookkeeping is under test
    monkeypatch.setattr(engine, "adapters", lambda: ["tflow-base-1a2b", "sender-x-3c4d", "tflow-9f8e"])
    assert engine.request_adapters() == ["tflow-9f8e"]
    monkeypatch.setattr(engine, "adapters", lambda: [])  # a perturbed-only workload never registers the zero adapter
    assert engine.request_adapters() == []


def _engine_on(handler) -> VLLMEngine:
    """A vLLM engine whose HTTP client answers with `handler` (no server, no adapter folder)."""
    engine = object.__new__(VLLMEngine)
    engine.url = "http://vllm.test"
    engine.client = httpx.Client(base_url=engine.url, transport=httpx.MockTransport(handler))
    return engine


def _stream(ids: list[int]) -> httpx.Response:
    lines = [f"data: {json.dumps({'choices': [{'token_ids': [t], 'finish_reason': None}]})}" for t in ids]
    lines += [f"data: {json.dumps({'choices': [{'token_ids': [], 'finish_reason': 'length'}]})}", "data: [DONE]"]
    return httpx.Response(200, text="\n\n".join(lines) + "\n\n")


def test_a_connection_reset_before_any_token_is_asked_again_once(qwen3):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:  # a kept-alive connection the server had just closed
            raise httpx.ReadError("Connection reset by peer", request=request)
        return _stream([5, 6, 7])

    job = Decode(prompts=[[1, 2, 3]], max_new_tokens=3, settings=GenerationSettings(max_new_tokens=3))
    got = _engine_on(handler)._complete(qwen3, job, 0, "m", time.perf_counter(), lambda text: None)
    assert calls == ["/v1/completions"] * 2 and got.token_ids == [5, 6, 7] and got.stop_reason == "length"


def test_a_server_that_keeps_resetting_is_unavailable_not_retried_forever(qwen3):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadError("Connection reset by peer", request=request)

    job = Decode(prompts=[[1, 2, 3]], max_new_tokens=3, settings=GenerationSettings(max_new_tokens=3))
    with pytest.raises(EngineUnavailable, match="unreachable.*--engine hf"):
        _engine_on(handler)._complete(qwen3, job, 0, "m", time.perf_counter(), lambda text: None)
    assert len(calls) == 2
