"""GGUF -> a plain Hugging Face directory (safetensors + tokenizer), once per file.

transformers reads GGUF (with the `gguf` package) and dequantizes it, but the model it returns
refuses `save_pretrained` (it keeps the GGUF `quantization_config`): the model is rebuilt from
that config without it and given the dequantized state dict. The directory is written beside
its final place and renamed into it, so an interrupted conversion leaves nothing half-written.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

DONE = "tflow_source.json"


def is_converted(directory: Path) -> bool:
    return (directory / DONE).is_file()


def convert(file: Path, target: Path, say: Callable[[str], None], source: dict) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as e:
        raise ValueError("reading a GGUF file needs the gguf package: pip install gguf") from e
    say(f"dequantizing {file.name} into {target} (once)")
    t0 = time.perf_counter()
    folder, name = str(file.parent), file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # transformers raises ValueError / KeyError / RuntimeError / gguf's own errors here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"transformers cannot read {file.name} as a causal LM from GGUF: {first}") from e
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    config.architectures = [type(loaded).__name__]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    (tmp / DONE).write_text(json.dumps({**source, "gguf_file": name, "parameters": params}, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    say(f"cached {params:,} parameters in {time.perf_counter() - t0:.0f} s")
