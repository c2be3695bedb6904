"""A backbone that is a PEFT LoRA adapter on a base model: a specialist fine-tune shipped as its adapter only.

A directory with PEFT's `adapter_config.json` (its `base_model_name_or_path` names the base as any
`--model` does: a packaged name, a GGUF file, `tiny`, a directory) loads as that base with the
adapter. Beside a receiver of the same base (`share_with`), the senders' model is a module tree of
its own over the receiver's very weight tensors with the adapter's LoRA layers injected: no second
copy of the base weights, and the receiver's forward never sees the adapter (its modules are other
objects). Alone, the adapter is merged into the base (plain matmuls).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from ..checkpoints import ADAPTER_CONFIG
from ..errors import first_line


def base_of(name_or_path: str) -> str | None:
    """The base model an adapter directory names, or None when `name_or_path` is not an adapter directory."""
    cfg = Path(name_or_path) / ADAPTER_CONFIG
    if not cfg.is_file():
        return None
    try:
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{cfg}: unreadable adapter config ({e})") from e
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"{cfg}: no base_model_name_or_path: the adapter does not say which model it adapts")
    return base


def attach(model: nn.Module, path: str, shared_weights: bool) -> nn.Module:
    """`model` with the adapter at `path`: on a copy of its module tree that shares its parameters
    (shared_weights: `model` itself is left as it was), else merged into `model`'s own weights."""
    from peft import PeftModel  # imported here: loading a plain backbone does not need peft

    if shared_weights:
        # deepcopy with every parameter pre-seeded in the memo: new modules, the same Parameter objects
        model = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
    try:
        peft = PeftModel.from_pretrained(model, path, is_trainable=False)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise ValueError(f"adapter {path} does not fit its base model: {first_line(e)}") from e
    return peft.base_model.model if shared_weights else peft.merge_and_unload()
