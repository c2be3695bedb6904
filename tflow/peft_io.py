"""Perturbations <-> PEFT LoRA adapters and raw safetensors files.

Export is exact for several senders: the senders' A's are stacked along the rank axis
and w_i * alpha / r is folded into their B's, so the adapter has rank S*r and
lora_alpha = S*r (PEFT's scale is 1) and PEFT computes sum_i w_i s B_i A_i x.
Import reads a PEFT adapter directory (our static-LoRA ablation) into a one-sender
`Perturbation`, so it is applied through the same isolated transient mechanism
instead of PEFT's in-place module injection into the shared model.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file

from .checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from .lora import OtherBackboneError, Perturbation, TargetSpec

_PREFIX = "base_model.model."


def target_regex(spec: TargetSpec) -> str:
    names = "|".join(re.escape(n) for n in spec.modules)
    return rf"^{re.escape(spec.layers_path)}\.\d+\.({names})$"


def peft_state(p: Perturbation, sample: int = 0) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config, tensors) of the fused perturbation of `sample` in PEFT's layout."""
    one = p.sample(sample)
    tensors = {}
    for name in p.spec.modules:
        a, b = one.stacked_layers(name)  # every layer at once: (1, layers, S*r, in), (1, layers, out, S*r)
        a, b = a[0].float().cpu(), b[0].float().cpu()
        for layer in range(p.spec.num_layers):
            key = _PREFIX + p.spec.module_name(layer, name)
            tensors[f"{key}.lora_A.weight"] = a[layer].contiguous()
            tensors[f"{key}.lora_B.weight"] = b[layer].contiguous()
    r_total = p.rank * len(p.senders)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r_total, "lora_alpha": r_total, "lora_dropout": 0.0,
              "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "target_modules": target_regex(p.spec),
              "base_model_name_or_path": p.extra.get("backbone_name", "")}
    return config, tensors


def peft_zip_bytes(p: Perturbation, sample: int = 0) -> bytes:
    """A zip of adapter_config.json + adapter_model.safetensors, loadable by PeftModel."""
    config, tensors = peft_state(p, sample)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(ADAPTER_CONFIG, json.dumps(config, indent=2))
        zf.writestr(ADAPTER_WEIGHTS, save(tensors))
    return buf.getvalue()


def save_raw(p: Perturbation, path: str | Path, sample: int = 0) -> None:
    """Every sender's own factors + fusion weights + aggregator weights, unfused."""
    one = p.sample(sample)
    tensors = {"fusion_weights": one.weights[0].float().cpu()}
    if p.layer_weights is not None:
        tensors["layer_weights"] = p.layer_weights.float().cpu()
    for name in p.spec.modules:
        for i, sender in enumerate(p.senders):
            tensors[f"{sender}/{name}/A"] = one.A[name][0, i].float().contiguous().cpu()  # (L, r, in)
            tensors[f"{sender}/{name}/B"] = one.B[name][0, i].float().contiguous().cpu()  # (L, out, r)
    meta = {"scaling": str(p.scaling), "senders": json.dumps(list(p.senders)), "layers_path": p.spec.layers_path}
    save_file(tensors, str(path), metadata=meta)


def load_peft_adapter(directory: str | Path, spec: TargetSpec) -> Perturbation:
    """Read a PEFT LoRA adapter directory as a one-sender perturbation of `spec`'s targets."""
    directory = Path(directory)
    cfg_path, w_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise ValueError(f"{directory} is not a PEFT adapter (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    try:
        cfg = json.loads(cfg_path.read_text())
        r, alpha = cfg["r"], cfg["lora_alpha"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 1 or not isinstance(alpha, (int, float)):
            raise TypeError("r must be a positive integer and lora_alpha a number")
        scaling = alpha / (r ** 0.5 if cfg.get("use_rslora") else r)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_path}: invalid adapter config ({e})") from e
    try:
        state = load_file(str(w_path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{w_path}: unreadable safetensors file ({e})") from e
    L = spec.num_layers
    A = {n: torch.zeros(1, 1, L, r, fin) for n, (fout, fin) in spec.modules.items()}
    B = {n: torch.zeros(1, 1, L, fout, r) for n, (fout, fin) in spec.modules.items()}
    pattern = re.compile(rf"^{re.escape(_PREFIX + spec.layers_path)}\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")
    for key, t in state.items():
        m = pattern.match(key)
        if not m or m.group(2) not in spec.modules or int(m.group(1)) >= L:
            raise OtherBackboneError(f"{w_path}: tensor {key!r} does not belong to this backbone's targets")
        layer, name, which = int(m.group(1)), m.group(2), m.group(3)
        dest = (A if which == "A" else B)[name][0, 0, layer]
        if t.shape != dest.shape:
            raise OtherBackboneError(f"{w_path}: {key} has shape {tuple(t.shape)}, expected {tuple(dest.shape)}")
        dest.copy_(t)
    return Perturbation(spec, A, B, torch.ones(1, 1), float(scaling), ("static",), extra={"source": str(directory)})
