"""The vLLM engine: generation on a vLLM OpenAI-compatible server, one LoRA adapter per perturbed request.

A TFlow request's fused perturbation is exactly a LoRA adapter (rank senders x r; `peft_io.peft_state`
is exact). vLLM 0.32 takes adapters from disk only, so each one is written to a folder both this
process and the server read (tmpfs by default; a shared file system for a remote server), registered
under a fresh name, used by its request alone, then unregistered and deleted, also when the request
fails or is cancelled: adapters on disk and in the engine stay bounded by the requests in flight.

Isolation: on CPU, vLLM 0.32 runs a request *without* an adapter that shares a batch with adapter
requests with the adapter in the last LoRA slot (`lora_ops.py` indexes `lora_b_weights[-1]`). So no
request is ever sent without one: plain generations (Single, TextMAS) carry a registered all-zero
adapter, which adds exactly 0 to every output. A specialist sender that is a PEFT adapter of the
served model generates (TextMAS) through that adapter, registered once.

Token ids go in and come back (`return_token_ids`), and texts are decoded here with the backbone's
own tokenizer, so a greedy answer is comparable token for token with the hf engine's.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file

from .. import lora
from ..agents import Backbone, Generated, finished
from ..checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from ..peft_io import peft_state
from ..sources.adapter import base_of
from . import Decode

BASE_ADAPTER = "tflow-base"  # the all-zero adapter every plain request carries (see the module docstring)


def is_request_adapter(name: str) -> bool:
    """A per-request adapter's name (`tflow-<hex>`), not the zero adapter's (`tflow-base-<hex>`) or a specialist's."""
    return name.startswith("tflow-") and not name.startswith(BASE_ADAPTER)


class EngineUnavailable(OSError):
    """The server cannot be reached: one line for the user, and the hf engine keeps working."""


def default_adapter_root() -> Path:
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())) / "tflow-vllm-adapters"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path) -> None:
    """Adapter folders of processes that are gone (a crash or a kill skipped their cleanup)."""
    for d in root.glob("*-*"):
        pid = d.name.split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _write_adapter(folder: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / ADAPTER_WEIGHTS))
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config))


class VLLMEngine:
    name = "vllm"

    def __init__(self, url: str, adapter_root: str | Path | None = None, timeout_s: float = 600.0):
        """url: the server (http://host:port); adapter_root: where adapters are written for the server to
        read (default: /dev/shm, which only a server on this machine sees; give a shared folder otherwise)."""
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=5.0),
                                   limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self.model = self._served_model()
        root = Path(adapter_root) if adapter_root else default_adapter_root()
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        self.folder = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir()
        self._registered: dict[str, str] = {}  # long-lived adapters: key -> name on the server
        self._lock = threading.Lock()
        self.adapter_seconds: deque[tuple[float, float]] = deque(maxlen=4096)  # per request: (register, unregister)
        atexit.register(self.close)  # a tool that ends without closing leaves nothing behind either

    def describe(self) -> str:
        return f"vllm ({self.url}, serving {self.model})"

    # ------------------------------------------------------------------ server API

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            r = self.client.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise EngineUnavailable(f"the vLLM server at {self.url} is unreachable ({type(e).__name__}: {e}); "
                                    f"start one with `tflow-vllm --model MODEL` or use --engine hf") from e
        if r.status_code >= 400:
            raise ValueError(f"the vLLM server at {self.url} refused {path}: {_error_text(r)}")
        return r

    def _served_model(self) -> str:
        models = self._request("GET", "/v1/models").json().get("data", [])
        base = [m["id"] for m in models if not m.get("parent")]
        if not base:
            raise ValueError(f"the vLLM server at {self.url} serves no model")
        return base[0]

    def adapters(self) -> list[str]:
        """The LoRA adapters the server holds now (their names)."""
        return [m["id"] for m in self._request("GET", "/v1/models").json().get("data", []) if m.get("parent")]

    def request_adapters(self) -> list[str]:
        """The per-request adapters the server holds now (`tflow-<hex>`, whichever engine registered them): not the
        long-lived ones (the zero adapter, a specialist's), which stay registered while their engine lives. None once
        every request has finished."""
        return [a for a in self.adapters() if is_request_adapter(a)]

    def adapter_folders(self) -> list[Path]:
        """This engine's adapter folders on disk now."""
        return sorted(self.folder.iterdir()) if self.folder.exists() else []

    def _load(self, name: str, path: Path | str) -> None:
        self._request("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})

    def _unload(self, name: str) -> None:
        # a restarted server holds no adapters; an unknown name is already gone
        with contextlib.suppress(EngineUnavailable, ValueError):
            self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    def close(self) -> None:
        """Unregister the long-lived adapters and remove this engine's folder (again: nothing to do)."""
        if self.client.is_closed:
            return
        for name in self._registered.values():
            self._unload(name)
        self._registered.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.client.close()

    # ------------------------------------------------------------------ adapters

    def _long_lived(self, key: str, make: Callable[[Path], None]) -> str:
        """An adapter registered once per engine and server (the zero adapter, a specialist), re-registered
        when the server no longer has it (it restarted)."""
        with self._lock:
            name = self._registered.get(key)
            if name is not None and name in self.adapters():
                return name
            name = f"{key}-{uuid.uuid4().hex[:8]}"
            folder = self.folder / name
            make(folder)
            self._load(name, folder)
            self._registered[key] = name
            return name

    def _base_adapter(self, backbone: Backbone) -> str:
        spec = backbone.targets
        # rank 1, every factor zero, in the layout every TFlow adapter is exported in (peft_state)
        zero = lora.Perturbation(
            spec,
            A={m: torch.zeros(1, 1, spec.num_layers, 1, fan_in) for m, (_, fan_in) in spec.modules.items()},
            B={m: torch.zeros(1, 1, spec.num_layers, fan_out, 1) for m, (fan_out, _) in spec.modules.items()},
            weights=torch.ones(1, 1),
            scaling=1.0,
            senders=("none",),
            extra={"backbone_name": backbone.name},
        )
        return self._long_lived(BASE_ADAPTER, lambda folder: _write_adapter(folder, *peft_state(zero)))

    def _specialist_adapter(self, path: str) -> str:
        folder = Path(path).resolve()
        key = "sender-" + hashlib.sha256(str(folder).encode()).hexdigest()[:10]
        return self._long_lived(key, lambda f: shutil.copytree(folder, f))

    def _adapter_for(self, backbone: Backbone) -> str:
        """The adapter a plain generation on `backbone` carries: the zero one on the served model, its own
        for a PEFT adapter of the served model (a specialist sender)."""
        if backbone.name == self.model:
            return self._base_adapter(backbone)
        if base_of(backbone.name) == self.model:
            return self._specialist_adapter(backbone.name)
        raise ValueError(f"the vLLM server serves {self.model}; {backbone.name} is neither that model nor a LoRA "
                         f"adapter of it: start the server with that model, or use --engine hf")

    # ------------------------------------------------------------------ generation

    def generate(self, backbone: Backbone, job: Decode) -> list[Generated]:
        started = time.perf_counter() if job.started is None else job.started
        perturbation = job.perturbation
        if perturbation is None:
            plain = self._adapter_for(backbone)
        elif backbone.name != self.model:
            raise ValueError(f"perturbations apply to the served model {self.model}, not to {backbone.name}")
        texts = [""] * len(job.prompts)
        shown = threading.Lock()

        def show(i: int, text: str) -> None:
            if job.on_text is not None:
                with shown:
                    texts[i] = text
                    job.on_text(list(texts))

        def one(i: int) -> Generated:
            if perturbation is None:
                return self._complete(backbone, job, i, plain, started, lambda t: show(i, t))
            sample = 0 if perturbation.batch_size == 1 else i  # a static adapter: one for every prompt
            name = f"tflow-{uuid.uuid4().hex}"
            folder = self.folder / name
            t0 = time.perf_counter()
            try:
                _write_adapter(folder, *peft_state(perturbation, sample))
                self._load(name, folder)
                registered = time.perf_counter() - t0
                try:
                    return self._complete(backbone, job, i, name, started, lambda t: show(i, t))
                finally:
                    t1 = time.perf_counter()
                    self._unload(name)
                    self.adapter_seconds.append((registered, time.perf_counter() - t1))
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        if len(job.prompts) == 1:
            return [one(0)]
        with ThreadPoolExecutor(max_workers=len(job.prompts)) as pool:
            return list(pool.map(one, range(len(job.prompts))))

    def _complete(self, backbone: Backbone, job: Decode, i: int, adapter: str, started: float,
                  on_text: Callable[[str], None]) -> Generated:
        """Prompt i of `job` with `adapter`, streamed: on_text after each chunk; a stop or timeout closes it."""
        prompt, settings, should_stop = job.prompts[i], job.settings, job.should_stop
        body: dict = {"model": adapter, "prompt": list(prompt), "max_tokens": job.max_new_tokens, "stream": True,
                      "return_token_ids": True, "skip_special_tokens": True}
        if settings.do_sample:
            body.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
        else:
            body["temperature"] = 0.0
        if settings.ignore_eos:
            body["ignore_eos"] = True
        if settings.allowed_tokens:
            body["allowed_token_ids"] = list(settings.allowed_tokens)
        deadline = time.monotonic() + settings.timeout_s if settings.timeout_s else None
        ids: list[int] = []
        finish, first_at, reason = None, None, None
        tok = backbone.tokenizer
        for attempt in range(2):
            try:
                with self.client.stream("POST", "/v1/completions", json=body) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise ValueError(f"the vLLM server at {self.url} refused the completion: {_error_text(r)}")
                    for line in r.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        for choice in json.loads(line[6:]).get("choices", []):
                            ids += choice.get("token_ids") or []
                            finish = choice.get("finish_reason") or finish
                        if ids and first_at is None:
                            first_at = time.perf_counter()
                        on_text(tok.decode(ids, skip_special_tokens=True))
                        if should_stop is not None and should_stop():
                            reason = "stopped"  # leaving the stream closes the connection: the server aborts it
                            break
                        if deadline is not None and time.monotonic() > deadline:
                            reason = "timeout"
                            break
                break
            except httpx.TransportError as e:
                # a kept-alive connection the server had just closed resets before any token: asking again on a
                # fresh one is safe (nothing was generated for this request); a reset mid-answer is not retried
                if attempt == 0 and not ids and isinstance(e, (httpx.ReadError, httpx.RemoteProtocolError)):
                    continue
                raise EngineUnavailable(f"the vLLM server at {self.url} is unreachable ({type(e).__name__}: {e}); "
                                        f"use --engine hf") from e
        eos = set(backbone.eos_token_ids)
        if reason is None:
            reason = "eos" if finish == "stop" and not settings.ignore_eos else "length"
            if reason == "eos" and (not ids or ids[-1] not in eos):
                ids.append(backbone.eos_token_ids[0])  # the hf engine keeps the end token: count it the same
        return finished(backbone, len(prompt), ids, reason, (first_at or time.perf_counter()) - started)


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
    except (json.JSONDecodeError, AttributeError):
        message = None
    return " ".join(str(message or r.text or r.status_code).split())[:300]
