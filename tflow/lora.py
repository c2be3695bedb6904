"""Transient, fused, per-sample LoRA perturbations of a shared frozen model.

A `Perturbation` holds, for every targeted linear of every decoder layer, each sender's
factors A_i (r x in) and B_i (out x r) per sample, plus fusion weights w_i. While
`apply(model, perturbation)` is active, every targeted linear computes

    y = W x + sum_i w_i * (alpha / r) * B_i (A_i x)

The senders' factors are stacked along the rank axis (A_cat = [A_1; A_2], B_cat =
[w_1 s B_1, w_2 s B_2]) so that B_cat A_cat = sum_i w_i s B_i A_i exactly: A's and B's
are never summed separately (that would add cross terms).

Isolation design (why not a global forward patch like the released code): the
targeted `nn.Linear`s get an instance-level `forward` that reads the *active
perturbation from a `contextvars.ContextVar`*. Each thread (and each asyncio task)
has its own context, so two requests running at once in one process each see only
their own perturbation, and a request with none active computes the plain `W x`.
The patch is reference-counted under a lock: it is installed by the first active
request and removed by the last one, so once no request runs no trace is left
(the original `forward` attribute is restored). Weights are never written: the
base model is bit-identical afterwards by construction, also when generation raises.

Fast path: for a single sample whose factors need no gradient, the fused delta is merged
into a per-request copy of each targeted weight (`W + B_cat A_cat`), so decoding costs one
plain matmul per linear, when those copies fit in half the free memory (`should_merge`) and,
when the caller says how many decoding steps follow, when writing them costs less than those
steps would on the low-rank path (`merge_cost`); batches and training use the low-rank path
with per-sample factors.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import merge_cost


class OtherBackboneError(ValueError):
    """A checkpoint (generator or adapter) whose targets belong to another backbone: expected where
    several worlds share one checkpoints folder, unlike a broken file."""


@dataclass(frozen=True)
class TargetSpec:
    """Which linears of which backbone a perturbation targets (inferred from the model)."""

    layers_path: str  # dotted path of the decoder-layer ModuleList, e.g. "model.layers"
    num_layers: int
    hidden_size: int
    modules: dict[str, tuple[int, int]]  # name inside a layer -> (out_features, in_features)

    def module_name(self, layer: int, name: str) -> str:
        return f"{self.layers_path}.{layer}.{name}"

    def linears(self, model: nn.Module) -> Iterator[tuple[int, str, nn.Linear]]:
        """(layer, name inside the layer, module) of every targeted linear of `model`, layer-major."""
        layers = model.get_submodule(self.layers_path)
        for layer in range(self.num_layers):
            for name in self.modules:
                yield layer, name, layers[layer].get_submodule(name)


def _decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    n = model.config.num_hidden_layers
    for path, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return path, mod
    raise ValueError(f"could not find the {n} decoder layers of {type(model).__name__}")


def infer_targets(model: nn.Module) -> TargetSpec:
    """Every 2-D nn.Linear inside each decoder layer (q/k/v/o/gate/up/down for Qwen3, Llama)."""
    path, layers = _decoder_layers(model)
    shapes = [
        {
            name: tuple(m.weight.shape)
            for name, m in layer.named_modules()
            if isinstance(m, nn.Linear) and m.weight.dim() == 2
        }
        for layer in layers
    ]
    if not shapes[0]:
        raise ValueError(f"{type(model).__name__}: no nn.Linear inside the decoder layers")
    if any(s != shapes[0] for s in shapes):
        raise ValueError("decoder layers have different linear modules; TFlow needs a uniform layer stack")
    return TargetSpec(path, len(layers), model.config.hidden_size, shapes[0])


@dataclass
class Perturbation:
    """Per-sample, per-sender LoRA factors for every targeted linear.

    A[name]: (batch, senders, layers, r, in); B[name]: (batch, senders, layers, out, r);
    weights: (batch, senders) fusion weights; scaling = alpha / r.
    """

    spec: TargetSpec
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    weights: torch.Tensor
    scaling: float
    senders: tuple[str, ...]
    layer_weights: torch.Tensor | None = None  # the aggregator's softmax over L+1 layers
    extra: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.weights.shape[0]

    @property
    def rank(self) -> int:
        return next(iter(self.A.values())).shape[-2]

    @property
    def stacked_rank(self) -> int:
        """Every sender's factors stacked: the rank of the fused dW."""
        return self.weights.shape[1] * self.rank

    def sample(self, i: int) -> Perturbation:
        """The perturbation of sample i alone (batch of one)."""
        return replace(self, A={k: v[i : i + 1] for k, v in self.A.items()},
                       B={k: v[i : i + 1] for k, v in self.B.items()}, weights=self.weights[i : i + 1])

    def only(self, senders: Sequence[int]) -> Perturbation:
        """The same perturbation with every other sender's fusion weight set to zero."""
        keep = torch.zeros_like(self.weights)
        keep[:, list(senders)] = 1.0
        return replace(self, weights=self.weights * keep)

    def stacked_layers(self, name: str, transposed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's (A_cat (batch, layers, S*r, in), B_cat (batch, layers, out, S*r)) of one module,
        with w_i * alpha/r folded into B: a few ops per module name instead of a few per linear.
        transposed: (A_cat^T (batch, layers, in, S*r), B_cat^T (batch, layers, S*r, out)) instead, contiguous
        (the layout of x A^T B^T, written in one copy each)."""
        a = self.A[name]  # (b, S, L, r, in)
        b = self.B[name] * (self.weights[:, :, None, None, None] * self.scaling).to(
            self.B[name].dtype
        )  # (b, S, L, out, r)
        bsz, s, n, r, fan_in = a.shape
        if transposed:
            return (a.permute(0, 2, 4, 1, 3).reshape(bsz, n, fan_in, s * r).contiguous(),
                    b.permute(0, 2, 1, 4, 3).reshape(bsz, n, s * r, b.shape[3]).contiguous())
        return (a.permute(0, 2, 1, 3, 4).reshape(bsz, n, s * r, fan_in),
                b.permute(0, 2, 3, 1, 4).reshape(bsz, n, b.shape[3], s * r))

    def stacked(self, layer: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_cat (batch, S*r, in), B_cat (batch, out, S*r)) of one layer's module."""
        a, b = self.stacked_layers(name)
        return a[:, layer], b[:, layer]

    def delta(self, layer: int, name: str, sample: int = 0, sender: int | None = None) -> torch.Tensor:
        """Dense dW (out x in): fused over senders, or one sender's weighted share."""
        a = self.A[name][sample, :, layer].float()
        b = self.B[name][sample, :, layer].float()
        w = self.weights[sample].float() * self.scaling
        if sender is not None:
            return w[sender] * b[sender] @ a[sender]
        return torch.einsum("s,sor,sri->oi", w, b, a)


class _BufferPool:
    """Weight-sized buffers reused across requests for merged decoding. Writing W + B A into
    memory that is already mapped skips page-faulting in hundreds of MB per request. Idle
    buffers are kept up to one request's full set of copies (`reserve`, at least `keep_bytes`):
    with a fixed 1 GiB cap, the 28-layer Qwen3-0.6B shape in fp32 (1.76 GB of targeted weights)
    allocated 0.7 GB afresh per request, and a merge took 0.5-1.5 s instead of ~0.1 s on 2 cores."""

    def __init__(self, keep_bytes: int = 2**30):
        self.keep_bytes = keep_bytes
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._idle = 0
        self._lock = threading.Lock()

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        return tuple(t.shape), t.dtype, t.device

    def take(self, like: torch.Tensor) -> torch.Tensor:
        with self._lock:
            free = self._free.get(self._key(like))
            if free:
                buf = free.pop()
                self._idle -= buf.nbytes
                return buf
        return torch.empty_like(like)

    def reserve(self, nbytes: int) -> None:
        """Keep at least `nbytes` of idle buffers from now on (one request's merged copies)."""
        with self._lock:
            self.keep_bytes = max(self.keep_bytes, nbytes)

    def idle_bytes(self, device: torch.device) -> int:
        with self._lock:
            return sum(b.nbytes for bufs in self._free.values() for b in bufs if b.device == device)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._idle = 0

    def give(self, buffers: list[torch.Tensor]) -> None:
        with self._lock:
            for buf in buffers:
                if self._idle + buf.nbytes <= self.keep_bytes:
                    self._free.setdefault(self._key(buf), []).append(buf)
                    self._idle += buf.nbytes


_POOL = _BufferPool()


_MODULES: weakref.WeakKeyDictionary[nn.Module, dict[str, list[nn.Linear]]] = weakref.WeakKeyDictionary()


def _modules_by_name(model: nn.Module, spec: TargetSpec) -> dict[str, list[nn.Linear]]:
    """Each targeted module name's linears, layer by layer (looked up once per model: 210 `get_submodule`
    calls were a third of building a request's ops on SmolLM2)."""
    found = _MODULES.get(model)
    if found is None or len(found) != len(spec.modules) or any(len(v) != spec.num_layers for v in found.values()):
        found = {name: [] for name in spec.modules}
        for _, name, mod in spec.linears(model):
            found[name].append(mod)
        _MODULES[model] = found
    return found


# linears that read the same input tensor in the decoder layers of Llama, Qwen2/3, Mistral, Gemma (matched by their
# last name inside one parent): on the low-rank path they share one GEMM with their A factors side by side (7 -> 4
# first GEMMs per layer). Other names are not fused; a module whose input is another tensor just computes the product
SAME_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def _same_input_groups(names: Sequence[str]) -> list[list[str]]:
    """The targeted module names that read one input, grouped (2 or more per group, in `names`' order)."""
    groups = []
    for leaves in SAME_INPUT:
        by_parent: dict[str, list[str]] = {}
        for name in names:
            parent, _, leaf = name.rpartition(".")
            if leaf in leaves:
                by_parent.setdefault(parent, []).append(name)
        groups += [g for g in by_parent.values() if len(g) > 1]
    return groups


class _SharedProduct:
    """x A_cat^T of one layer's same-input linears, computed by the first of them and reused by the others while
    their input is the same tensor (same object, unchanged)."""

    def __init__(self, a_t: torch.Tensor):
        self.a_t = a_t  # (in, sum of the group's stacked ranks)
        self._x: torch.Tensor | None = None
        self._version = -1
        self._xa: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        version = -1 if x.is_inference() else x._version  # inference tensors keep no version counter
        if self._x is not x or self._version != version:
            self._x, self._version = x, version
            self._xa = x.reshape(-1, x.shape[-1]) @ self.a_t
        return self._xa


class _Active:
    """What one request applies: per targeted module, merged weight or stacked factors."""

    def __init__(self, model: nn.Module, p: Perturbation, merge: bool):
        self.ops: dict[nn.Module, tuple] = {}
        by_name = _modules_by_name(model, p.spec)
        shared = not merge and p.batch_size == 1  # one perturbation for every row: 2-D GEMMs on transposed copies
        factors = {}
        for name, mods in by_name.items():
            w = mods[0].weight
            # factors may live elsewhere (a static adapter read on the CPU, an fp32 generator)
            # shared: contiguous transposed factors (transposed views cost a 36-token prefill on SmolLM2 12 ms)
            a, b = (t.to(w.device, w.dtype) for t in p.stacked_layers(name, transposed=shared))
            if shared:
                a, b = a[0], b[0]
            factors[name] = (a, b)
            if merge:
                for mod, a_l, b_l in zip(mods, a[0].unbind(), b[0].unbind()):
                    # one fused pass: W + B A without materialising B A on its own
                    self.ops[mod] = ("merged", torch.addmm(mod.weight, b_l, a_l, out=_POOL.take(mod.weight)), None)
            elif shared:  # (unbind: one op for every layer's view; indexing layer by layer was 420 ops)
                self.ops.update((mod, ("shared", a_l, b_l)) for mod, a_l, b_l in zip(mods, a.unbind(), b.unbind()))
            else:
                self.ops.update((mod, ("lowrank", a_l, b_l))
                                for mod, a_l, b_l in zip(mods, a.unbind(1), b.unbind(1)))
        if not shared:
            return
        for group in _same_input_groups(list(by_name)):
            a_cat = torch.cat([factors[name][0] for name in group], dim=-1)  # (layers, in, sum of ranks)
            edges = [0]
            for name in group:
                edges.append(edges[-1] + factors[name][0].shape[-1])
            b_layers = {name: factors[name][1].unbind() for name in group}
            for layer, a_l in enumerate(a_cat.unbind()):
                product = _SharedProduct(a_l)
                for name, lo, hi in zip(group, edges, edges[1:]):
                    self.ops[by_name[name][layer]] = ("same-input", product, lo, hi, b_layers[name][layer])


_ACTIVE: contextvars.ContextVar[_Active | None] = contextvars.ContextVar("tflow_active_perturbation", default=None)
_LOCK = threading.Lock()
_MISSING = object()
# id(model) -> [active request count, {module: original instance-level forward or _MISSING}]
_INSTALLED: dict[int, list] = {}


def _patched_forward(module: nn.Linear, original):
    def forward(x: torch.Tensor) -> torch.Tensor:
        active = _ACTIVE.get()
        op = active.ops.get(module) if active is not None else None
        if op is None:
            return original(x)
        kind = op[0]
        if kind == "merged":
            return F.linear(x, op[1], module.bias)
        if kind == "same-input":
            _, product, lo, hi, b_t = op
            y = original(x)
            y.view(-1, y.shape[-1]).addmm_(product(x)[:, lo:hi], b_t)  # in place, as merge_cost.add_low_rank
            return y
        if kind == "shared":
            return merge_cost.add_low_rank(original(x), x, op[1], op[2])
        # per-sample factors: (b, t, in) @ (b, in, R) @ (b, R, out)
        return original(x) + (x @ op[1].transpose(-1, -2)) @ op[2].transpose(-1, -2)

    return forward


def _install(model: nn.Module, spec: TargetSpec) -> None:
    with _LOCK:
        entry = _INSTALLED.get(id(model))
        if entry is not None:
            entry[0] += 1
            return
        saved = {}
        for mods in _modules_by_name(model, spec).values():
            for mod in mods:
                saved[mod] = mod.__dict__.get("forward", _MISSING)
                # a plain instance attribute: nn.Module.__setattr__'s checks for parameters and submodules
                # were a fifth of a request's setup on SmolLM2 (210 linears)
                object.__setattr__(mod, "forward", _patched_forward(mod, mod.forward))
        _INSTALLED[id(model)] = [1, saved]


def _uninstall(model: nn.Module) -> None:
    with _LOCK:
        entry = _INSTALLED[id(model)]
        entry[0] -= 1
        if entry[0] > 0:
            return
        for mod, original in entry[1].items():
            if original is _MISSING:
                del mod.__dict__["forward"]
            else:
                object.__setattr__(mod, "forward", original)
        del _INSTALLED[id(model)]


def release_buffers() -> None:
    """Free the idle merge buffers (they are kept for the next request's merged decoding)."""
    _POOL.clear()


def is_patched(model: nn.Module) -> bool:
    """True while any request has a perturbation applied to `model`."""
    with _LOCK:
        return id(model) in _INSTALLED


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on `device`, or None when it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def merged_bytes(model: nn.Module, spec: TargetSpec) -> int:
    """Bytes one request's merged copies of the targeted weights take."""
    return sum(mod.weight.nbytes for _, _, mod in spec.linears(model))


def should_merge(model: nn.Module, perturbation: Perturbation) -> bool:
    """The "auto" rule: merge for a batch of one whose factors need no gradient (inference),
    when the per-request weight copies fit in half of the free memory; otherwise low rank
    (batches: per-sample factors; training: gradients flow through A and B)."""
    if perturbation.batch_size != 1:
        return False
    if any(t.requires_grad for t in (*perturbation.A.values(), *perturbation.B.values(), perturbation.weights)):
        return False
    device = next(model.parameters()).device
    free = free_bytes(device)
    # idle pooled buffers on this device are reused by the merge, so they count as free
    return free is None or merged_bytes(model, perturbation.spec) <= (free + _POOL.idle_bytes(device)) // 2


@contextlib.contextmanager
def _activated(active: _Active | None) -> Iterator[None]:
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def checkpoint_context() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """`context_fn` for non-reentrant `torch.utils.checkpoint`: the recomputation in backward sees
    the perturbation that was active in the forward. Backward can run on autograd's device
    threads, which do not see this thread's ContextVar; backward must still run inside `apply`
    (the patched forwards are installed only while a request is active)."""
    return contextlib.nullcontext(), _activated(_ACTIVE.get())


def random_perturbation(model: nn.Module, spec: TargetSpec, rank: int) -> Perturbation:
    """A random perturbation of one sample and stacked rank `rank`, on the model's device and dtype
    (what `merge_cost` times, and what scripts/decode_profile.py decodes with)."""
    w = next(model.parameters())
    like = {"device": w.device, "dtype": w.dtype}
    n = spec.num_layers
    return Perturbation(spec, {k: torch.randn(1, 1, n, rank, i, **like) * 0.01 for k, (_, i) in spec.modules.items()},
                        {k: torch.randn(1, 1, n, o, rank, **like) * 0.01 for k, (o, _) in spec.modules.items()},
                        torch.ones(1, 1, device=w.device), 1.0, ("probe",))


def will_merge(model: nn.Module, perturbation: Perturbation, merge: bool | str = "auto",
               steps: int | None = None) -> bool:
    """What `apply(model, perturbation, merge, steps)` decides: merged weight copies (True) or the low-rank path."""
    if merge != "auto":
        return bool(merge)
    rank = perturbation.stacked_rank
    return should_merge(model, perturbation) and (
        steps is None
        or merge_cost.measure(
            model, rank, lambda merged: apply(model, random_perturbation(model, perturbation.spec, rank), merged)
        ).merge_pays(steps)
    )


@contextlib.contextmanager
def apply(
    model: nn.Module, perturbation: Perturbation, merge: bool | str = "auto", steps: int | None = None
) -> Iterator[None]:
    """Apply `perturbation` to `model` for the current thread / task only, for the `with` body.

    merge="auto" (`should_merge`) merges dW into per-request weight copies for a single
    inference query when they fit and, given the forward `steps` that follow (prefill + tokens
    to decode), when the merge costs less than those steps on the low-rank path; otherwise the
    low-rank per-sample path is used.
    """
    merge = will_merge(model, perturbation, merge, steps)
    if _ACTIVE.get() is not None:
        raise RuntimeError("a perturbation is already active in this context; nesting is not supported")
    if merge:
        _POOL.reserve(merged_bytes(model, perturbation.spec))
    with torch.no_grad() if merge else contextlib.nullcontext():
        active = _Active(model, perturbation, bool(merge))
    _install(model, perturbation.spec)
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        _uninstall(model)
        _POOL.give([op[1] for op in active.ops.values() if op[0] == "merged"])
