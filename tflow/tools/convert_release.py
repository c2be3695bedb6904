r"""Convert the authors' released generator checkpoint (BWR-hhh/TFlow's `tflow_best.pt`) into a
release-architecture generator directory (safetensors + JSON) that `tflow.load_generator`,
`Pipeline.from_pretrained(MODEL, generator=OUT)` and `python app.py --generator OUT` load.

    python -m tflow.tools.convert_release tflow_best.pt --model Qwen/Qwen3-4B \
        --out checkpoints/generators/release-qwen3-4b

The checkpoint is a torch.save pickle. Before anything of it runs, the pickle is scanned with
pickletools (nothing executed) and refused unless every global it references is a plain
tensor-rebuilding one (`ALLOWED_GLOBALS`); only then is it read, by `torch.load` with
weights_only=True (whose own unpickler is an allow-list too). The
architecture (d_model, token and output width, rank, dim accumulation, blocks, layers, input
size) is inferred from tensor shapes and checked against MODEL, of which only the config is
read (the targeted linears come from a model built on the meta device: no weights, no memory).
What shapes cannot tell (head size, alpha, output scale, rotary base, norm eps) are options
whose defaults are the released generator's.
"""
from __future__ import annotations

import argparse
import hashlib
import pickletools
import re
import zipfile
from dataclasses import fields
from pathlib import Path

import torch

from ..errors import user_errors
from ..generators import ReleaseConfig, ReleaseGenerator
from ..generators.release import ReleaseLayout
from ..lora import TargetSpec, infer_targets

STORAGES = ("Float", "BFloat16", "Half", "Double", "Long", "Int", "Short", "Char", "Byte", "Bool")
ALLOWED_GLOBALS = frozenset({("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                             *(("torch", f"{kind}Storage") for kind in STORAGES)})
FIXED = ("head_dim", "alpha", "output_scale", "rope_theta", "norm_eps")  # not readable from tensor shapes
RELEASE = "https://github.com/BWR-hhh/TFlow"
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_PUSH_OPS = _STRING_OPS | {"GET", "BINGET", "LONG_BINGET"}


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle references something other than plain tensor rebuilding."""


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) the pickle would import, found by reading its opcodes without running
    them. STACK_GLOBAL takes its two names from the stack: they must be the two strings pushed
    (or fetched from the memo) right before it, else the pickle is refused as unreadable."""
    found, memo, pushed = [], {}, []
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.append(tuple(arg.split(" ", 1)))
            elif name == "STACK_GLOBAL":
                if len(pushed) < 2 or not all(isinstance(v, str) for v in pushed[-2:]):
                    raise UnsafeCheckpointError("a STACK_GLOBAL whose names are not plain strings")
                found.append((pushed[-2], pushed[-1]))
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise UnsafeCheckpointError(f"opcode {name} (a global from the copyreg extension registry)")
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
            elif name in _PUSH_OPS:
                pushed.append(arg if name in _STRING_OPS else memo.get(arg))
            else:
                pushed.append(None)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # pickletools raises ValueError and others on malformed data
        raise UnsafeCheckpointError(f"unreadable pickle ({e})") from e
    return found


def scan_checkpoint(path: Path) -> list[str]:
    """The globals of a torch.save zip archive's pickle, all allowed; else `UnsafeCheckpointError`."""
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n.endswith(".pkl")]
            if len(pickles) != 1 or not pickles[0].endswith("/data.pkl"):
                raise UnsafeCheckpointError(f"expected one <name>/data.pkl in the archive, found {pickles}")
            data = zf.read(pickles[0])
    except zipfile.BadZipFile as e:
        raise UnsafeCheckpointError(f"{path} is not a torch.save zip archive ({e})") from e
    found = pickle_globals(data)
    refused = sorted({f"{m}.{n}" for m, n in found if (m, n) not in ALLOWED_GLOBALS})
    if refused:
        raise UnsafeCheckpointError(f"{path} refused: its pickle references {', '.join(refused)}, "
                                    "not only plain tensor-rebuilding globals; nothing of it was run")
    return sorted({f"{m}.{n}" for m, n in found})


def read_checkpoint(path: str | Path) -> dict:
    """Scan, then load the tensors (weights_only=True); the release's dict layout is checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    scan_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # the one pickle read: scanned above
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... on bad archives
        raise ValueError(f"{path}: reading the tensors (weights only) failed ({str(e).splitlines()[0]})") from e
    pg, agg = (ckpt.get(k) if isinstance(ckpt, dict) else None for k in ("parameter_generator", "pg_layer_aggregator"))
    if not isinstance(pg, dict) or not isinstance(agg, dict) or not all(
            isinstance(v, torch.Tensor) for v in (*pg.values(), *agg.values())):
        raise ValueError(f"{path}: not a TFlow release checkpoint (needs 'parameter_generator' and "
                         "'pg_layer_aggregator' state dicts of tensors)")
    return ckpt


def target_spec(model: str) -> TargetSpec:
    """The targeted linears of MODEL from its config alone (a model built on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model)
        with torch.device("meta"):
            built = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"could not read the config of model {model!r} ({str(e).splitlines()[0]})") from e
    return infer_targets(built)


def _shape(pg: dict, key: str, dims: int) -> tuple[int, ...]:
    if key not in pg:
        raise ValueError(f"checkpoint has no tensor {key!r}: not a release parameter generator")
    if pg[key].dim() != dims:
        raise ValueError(f"checkpoint tensor {key} has shape {tuple(pg[key].shape)}, expected {dims} dimensions")
    return tuple(pg[key].shape)


def infer_config(pg: dict[str, torch.Tensor], agg: dict[str, torch.Tensor], spec: TargetSpec, **fixed) -> ReleaseConfig:
    """The release config the tensors imply, checked against `spec` (MODEL's targets)."""
    d_model, input_dim = _shape(pg, "hidden_in.weight", 2)
    layers, piece = _shape(pg, "model.layer_pos.weight", 2)
    token_dim = _shape(pg, "model.proj_out_A.weight", 2)[0]
    ffn = _shape(pg, "model.blocks.0.feed_forward.fc1.weight", 2)[0]
    blocks = len({m.group(1) for k in pg if (m := re.match(r"model\.blocks\.(\d+)\.", k))})
    problems = []
    if input_dim != spec.hidden_size:
        problems.append(f"input size {input_dim} (hidden_in.weight) but the model's hidden size is {spec.hidden_size}")
    if layers != spec.num_layers:
        problems.append(f"{layers} backbone layers (model.layer_pos.weight) but the model has {spec.num_layers}")
    n_states = agg["layer_weights"].numel()
    if n_states != spec.num_layers + 1:
        problems.append(f"layer aggregator over {n_states} hidden states but the model has {spec.num_layers + 1}")
    if problems:
        raise ValueError("checkpoint does not fit the model: " + "; ".join(problems))
    if d_model % piece or ffn % d_model:
        raise ValueError(f"inconsistent shapes: d_model {d_model}, slot embedding {piece}, MLP hidden {ffn}")
    layout = ReleaseLayout.build(spec, token_dim)
    rows = _shape(pg, "model.hw_pos.weight", 2)[0]
    if rows % layout.seq_h:
        raise ValueError(f"checkpoint's model.hw_pos.weight has {rows} rows, not a multiple of the {layout.seq_h} "
                         f"slots per layer that the model's linears {sorted(spec.modules)} need at token width "
                         f"{token_dim}: it was made for other target modules or shapes")
    da, rank = d_model // piece, rows // layout.seq_h
    queries = _shape(pg, "model.cond_token_query", 2)[0]
    if queries * da != layers * layout.seq_h * rank:
        raise ValueError(
            f"checkpoint's model.cond_token_query has {queries} rows, expected "
            f"{layers} layers x {layout.seq_h} slots x rank {rank} / {da} = {layers * layout.seq_h * rank // da}"
        )
    try:
        return ReleaseConfig(rank=rank, d_model=d_model, n_blocks=blocks, token_dim=token_dim, dim_accumulation=da,
                             ffn_ratio=ffn // d_model, **fixed)
    except ValueError as e:  # most likely the head size, which no tensor shape tells
        raise ValueError(f"{e}; the checkpoint does not store {', '.join(FIXED)}: set them (e.g. --head-dim)") from e


def convert(checkpoint: str | Path, model: str, out: str | Path | None = None, **fixed) -> ReleaseGenerator:
    """Read, check and (when `out` is given) save a release checkpoint as our release generator.
    fixed: ReleaseConfig fields that shapes cannot tell (FIXED); default: the released values."""
    unknown = set(fixed) - set(FIXED)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; choose from {', '.join(FIXED)}")
    checkpoint = Path(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    pg, agg = dict(ckpt["parameter_generator"]), ckpt["pg_layer_aggregator"]
    missing = [k for k in ("layer_weights", "log_temperature") if k not in agg]
    if missing:
        raise ValueError(f"{checkpoint}: the layer aggregator has no {', '.join(missing)}")
    flags = dict(ckpt.get("pg_config_flags") or {})
    if (
        flags.get("use_cond_proj")
        or not flags.get("use_cond_tokens", True)
        or flags.get("cond_tokens_mode", "replace") != "replace"
    ):
        raise ValueError(f"unsupported release generator flags {flags}: only conditioning tokens in 'replace' mode "
                         "without cond_proj (the released configuration) are implemented")
    spec = target_spec(model)
    config = infer_config(pg, agg, spec, **fixed)
    dropped = sorted(k for k in pg if k.startswith("model.cond_proj."))  # the switched-off branch
    state = {k: v for k, v in pg.items() if k not in dropped}
    state.update({"aggregator.logits": agg["layer_weights"], "aggregator.log_temperature": agg["log_temperature"]})
    dtypes = {v.dtype for v in state.values()}
    samples = ckpt.get("samples_seen")
    meta = {
        "converted_from": {"file": checkpoint.name, "sha256": _sha256(checkpoint),
                           "samples_seen": int(samples) if isinstance(samples, int) else None, "release": RELEASE,
                           "pg_config_flags": flags, "source_dtype": str(next(iter(dtypes))).removeprefix("torch."),
                           "dropped_tensors": dropped, "assumed": {k: getattr(config, k) for k in FIXED}}
    }
    gen = ReleaseGenerator(config, spec, model, meta)
    try:
        gen.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"{checkpoint}: tensors do not match the inferred architecture ({str(e).splitlines()[0].strip()})"
        ) from e
    if len(dtypes) == 1:
        gen.to(next(iter(dtypes)))  # saved as they came (bf16 for the released one: half the size of fp32)
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        gen.save_pretrained(out)
    return gen.float()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@user_errors
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="the release's torch.save checkpoint (e.g. tflow_best.pt)")
    p.add_argument(
        "--model", required=True, help="the backbone it was trained for: a directory or a cached hub name (config only)"
    )
    p.add_argument("--out", required=True, help="output directory (generator_config.json + generator.safetensors)")
    defaults = ReleaseConfig()
    for f in fields(ReleaseConfig):
        if f.name in FIXED:
            p.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=type(getattr(defaults, f.name)),
                default=getattr(defaults, f.name),
                help=f"not readable from the tensors; default: the released generator's {getattr(defaults, f.name)}",
            )
    a = p.parse_args(argv)
    gen = convert(a.checkpoint, a.model, a.out, **{k: getattr(a, k) for k in FIXED})
    c = gen.config
    print(
        f"wrote {a.out}: release generator, {gen.num_parameters:,} parameters, d_model {c.d_model}, {c.n_blocks} "
        f"blocks, rank {c.rank}, token width {c.token_dim}, dim accumulation {c.dim_accumulation}, "
        f"{gen.meta['converted_from']['samples_seen']} samples seen"
    )


if __name__ == "__main__":
    main()
