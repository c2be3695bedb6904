"""One TFlow Studio process per test session, shared by the API and browser tests.

Both test modules call `studio()`; the first call starts `python app.py` on a free port
and waits until it serves, later calls with the same extra arguments and environment get the same
process, and every process is stopped when the test session's interpreter exits. By default the app runs on the embedded
checkpoints; TFLOW_STUDIO_MODEL / TFLOW_STUDIO_CHECKPOINTS point it elsewhere.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 240


@dataclass
class Studio:
    """A running app: where it serves, what it loaded and its log."""

    url: str
    model: str
    checkpoints: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


_RUNNING: dict[tuple[str, ...], Studio] = {}


def embedded_examples() -> list[dict]:
    """The examples the embedded world's page shows (no real-model task), in the page's order."""
    from tflow.studio.examples import build_examples
    from tflow.tasks import REAL_MODEL_TASKS

    return [e for e in build_examples() if e["task"] not in REAL_MODEL_TASKS]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def studio(
    extra_args: list[str] | None = None, extra_env: dict[str, str] | None = None, model: str | None = None
) -> Studio:
    """The app process for this model (default: the embedded one) and these extra `app.py` arguments and environment
    variables, started on first use; raises
    with the app's log if it cannot start. A login (TFLOW_STUDIO_AUTH) makes /config answer 401: that counts as
    serving."""
    key = (model or "", *(extra_args or ()), *sorted((extra_env or {}).items()))
    if key in _RUNNING and _RUNNING[key].process.poll() is None:
        return _RUNNING[key]
    packaged = model is not None  # a packaged model's name (resolved by the app itself)
    model = model or os.environ.get("TFLOW_STUDIO_MODEL", str(ROOT / "checkpoints" / "tiny-qwen3"))
    checkpoints = os.environ.get("TFLOW_STUDIO_CHECKPOINTS", str(ROOT / "checkpoints"))
    if not packaged and not Path(model).is_dir():
        raise RuntimeError(f"backbone {model} is missing: build the embedded checkpoints or set TFLOW_STUDIO_MODEL")
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="tflow-studio-test-")) / "app.log"
    env = {k: v for k, v in os.environ.items() if k != "TFLOW_STUDIO_AUTH"}  # a login only where a test asks for one
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            **(extra_env or {}),
        }
    )
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--model", model, "--checkpoints", checkpoints, "--device", "cpu",
             "--host", "127.0.0.1", "--port", str(port),
             # fp32 unless a test asks: the app's default (a probe of this CPU) would make the answers machine-dependent
             *(() if "--dtype" in (extra_args or ()) else ("--dtype", "fp32")), *(extra_args or ())],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    running = Studio(f"http://127.0.0.1:{port}/", model, checkpoints, process, log)
    atexit.register(running.stop)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}:\n{running.log_tail()}")
        try:
            with urllib.request.urlopen(running.url + "config", timeout=2) as r:
                serving = r.status == 200
        except urllib.error.HTTPError as e:
            serving = e.code == 401
        except OSError:
            serving = False
        if serving:
            _RUNNING[key] = running
            return running
        time.sleep(0.5)
    running.stop()
    raise RuntimeError(f"the app did not serve within {STARTUP_TIMEOUT_S} s:\n{running.log_tail()}")
