"""The grid generator (ours, `arch = "grid"`): sender hidden states -> LoRA factors.

Pipeline of one sender's condition (docs/method.md, section "Pipeline per query"):
  (L+1, T, hidden) states --LayerAggregator--> (T, hidden) --input proj--> (T, d_model)
  parameter-token grid (layers x slots, learned layer + slot embeddings)
  --n_blocks x [layer-axis self-attn, within-layer self-attn, cross-attn to condition, MLP]-->
  output heads (one for A chunks, one zero-initialised for B chunks) --detokenize--> A, B.

A slot is one chunk of `chunk_size` values of one targeted module's flattened lora_A
(r x in) or lora_B (r columns of length out); with chunk_size >= r * fan a single token
carries a whole factor (the paper's "dim accumulation" packs several chunks per token
to the same end). The slot grid is the same for every layer. The B head starts at
exactly zero, so an untrained generator yields an exactly-zero perturbation.

Copy path (`copy = 1`, ours): each B column of a module that writes the receiver's residual
width (fan_out == hidden) also gets a gated attention read of the senders' full-width states
(their own layer mix, projected to the receiver's width). Through the d_model bottleneck and a
linear head a generator learns a lookup of the values it trained on; the copy path lets it move
a token's representation itself, so a value never seen in training can reach the receiver.
Its gate starts at zero, so an untrained generator still yields an exactly-zero perturbation.
The paper's own architecture, which loads the authors' checkpoint, is `release.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import SenderShape
from ..lora import Perturbation, TargetSpec
from .base import SHARED_HELP, Generator, LayerAggregator, check_config_types


@dataclass
class GeneratorConfig:
    """Hyper-parameters of the generator (docs/method.md lists the paper's values)."""

    rank: int = 4
    alpha: float = 8.0
    d_model: int = 96
    n_heads: int = 4
    n_blocks: int = 2
    mlp_ratio: int = 2
    chunk_size: int = 512  # values of a flattened factor produced by one parameter token
    output_scale: float = 1.0  # raw factors are multiplied by this (the release uses 0.01)
    fusion: str = "gate"  # "mean": fixed 1/S per sender; "gate": learned scalar gate (zero-init = mean)
    condition: str = (
        "question"  # the sender tokens read: "question" (the paper's), "message" or "prompt" (base.CONDITIONS)
    )
    copy: int = 0  # 1: B columns of residual-width modules also read the senders' states through attention
    readout: int = 0  # 1: the senders' states also carry their read-out (agents.sender_states), one more slice

    HELP = {
        **SHARED_HELP,  # not annotated: a class attribute, not a field
        "n_heads": "attention heads of the generator",
        "n_blocks": "generator blocks (layer-axis, within-layer and cross attention, MLP)",
        "mlp_ratio": "MLP width / d_model",
        "chunk_size": "values of a flattened LoRA factor written by one parameter token "
                      "(larger: fewer tokens, a wider head)",
        "output_scale": "raw factors are multiplied by this (the paper's release uses 0.01)",
        "fusion": "how senders' perturbations are fused: mean (1/S each) "
                  "or gate (a learned scalar per sender, starting at the mean)",
        "copy": "1: B columns of modules writing the residual width also copy attended sender states "
                "(lets unseen values through)",
        "readout": "1: the generator also reads each sender's read-out, the expected input embedding of its next "
                   "token (what it would say, in the receiver's embedding space when both share a base)",
    }

    def __post_init__(self) -> None:
        check_config_types(self)
        if min(self.rank, self.d_model, self.n_heads, self.n_blocks, self.mlp_ratio, self.chunk_size) < 1:
            raise ValueError("generator config: sizes must be positive")
        if self.d_model % self.n_heads:
            raise ValueError("generator config: d_model must be divisible by n_heads")
        for name in ("copy", "readout"):
            if getattr(self, name) not in (0, 1):
                raise ValueError(f"generator config: {name} must be 0 or 1, got {getattr(self, name)!r}")
        if self.fusion not in ("mean", "gate"):
            raise ValueError(f"generator config: fusion must be 'mean' or 'gate', got {self.fusion!r}")



class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        ctx = x if ctx is None else ctx
        n, t, d = x.shape
        q = self.q(x).view(n, t, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(n, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Layer-axis self-attention, within-layer self-attention, cross-attention, MLP."""

    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.RMSNorm(d) for _ in range(5))
        self.layer_attn, self.slot_attn, self.cross_attn = Attention(d, heads), Attention(d, heads), Attention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, layers, slots, d = x.shape
        h = self.norms[0](x).transpose(1, 2).reshape(n * slots, layers, d)
        x = x + self.layer_attn(h).view(n, slots, layers, d).transpose(1, 2)
        h = self.norms[1](x).reshape(n * layers, slots, d)
        x = x + self.slot_attn(h).view(n, layers, slots, d)
        h = self.norms[2](x).reshape(n, layers * slots, d)
        x = x + self.cross_attn(h, self.norms[3](cond), mask[:, None, None, :]).view(n, layers, slots, d)
        return x + self.mlp(self.norms[4](x))


class CopyPath(nn.Module):
    """Gated attention of each B column over the sender tokens, reading their full-width states."""

    def __init__(self, d: int, rank: int, sender: SenderShape, hidden: int, slices: int):
        super().__init__()
        self.rank = rank
        self.aggregator = LayerAggregator(slices)
        self.value = nn.Linear(sender.hidden_size, hidden, bias=False)
        if sender.hidden_size == hidden:  # same width: start by moving the states unchanged
            nn.init.eye_(self.value.weight)
        self.query, self.key = nn.Linear(d, rank * d), nn.Linear(d, d)
        self.gate = nn.Linear(d, rank)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def memory(self, states: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the columns attend over: keys (n, T, d) from the conditions (n, T, d) and values
        (n, T, hidden) from the sender states (n, L+1, T, H_sender)."""
        return self.key(cond), self.value(self.aggregator(states).to(self.value.weight.dtype))

    def forward(
        self, tokens: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """tokens: (n, layers, d) B-slot tokens; keys, mask, values: `memory`'s, (n, T) mask
        -> (n, layers, hidden, rank) columns to add to B."""
        n, layers, d = tokens.shape
        q = self.query(tokens).view(n, layers, self.rank, d)
        scores = torch.einsum("nlrd,ntd->nlrt", q, keys) / math.sqrt(d)
        attn = torch.softmax(scores.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)
        read = torch.einsum("nlrt,nth->nlhr", attn, values)
        return read * self.gate(tokens)[:, :, None, :]


@dataclass(frozen=True)
class _SlotLayout:
    """Where each module's A rows and B columns sit in the per-layer slot grid."""

    offsets: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # name -> (a0, a_chunks, b0, b_chunks)
    num_slots: int = 0

    @classmethod
    def build(cls, spec: TargetSpec, rank: int, chunk: int) -> _SlotLayout:
        offsets, pos = {}, 0
        for name, (fan_out, fan_in) in spec.modules.items():
            a_chunks, b_chunks = math.ceil(rank * fan_in / chunk), math.ceil(rank * fan_out / chunk)
            offsets[name] = (pos, a_chunks, pos + a_chunks, b_chunks)
            pos += a_chunks + b_chunks
        return cls(offsets, pos)


class ParameterGenerator(Generator):
    """Layer aggregator + hypernetwork transformer + optional fusion gate (the grid architecture)."""

    arch = "grid"
    config_class = GeneratorConfig

    def __init__(self, config: GeneratorConfig, spec: TargetSpec, backbone_name: str = "", meta: dict | None = None,
                 sender: SenderShape | None = None):
        super().__init__(config, spec, backbone_name, meta, sender)
        d = config.d_model
        self.layout = _SlotLayout.build(spec, config.rank, config.chunk_size)
        slices = self.sender.num_layers + 1 + config.readout  # the layers' states, then the read-out
        self.aggregator = LayerAggregator(slices)
        self.in_proj = nn.Sequential(nn.Linear(self.sender.hidden_size, d), nn.RMSNorm(d))
        self.layer_embed = nn.Parameter(torch.randn(spec.num_layers, d) * 0.02)
        self.slot_embed = nn.Parameter(torch.randn(self.layout.num_slots, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.mlp_ratio) for _ in range(config.n_blocks))
        self.out_norm = nn.RMSNorm(d)
        self.head_a = nn.Linear(d, config.chunk_size)
        self.head_b = nn.Linear(d, config.chunk_size)
        nn.init.zeros_(self.head_b.weight)
        nn.init.zeros_(self.head_b.bias)
        if config.fusion == "gate":  # zero-init: starts as the uniform mean
            self.gate = nn.Linear(d, 1)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        if config.copy:
            self.copy_path = CopyPath(d, config.rank, self.sender, spec.hidden_size, slices)

    def zero_head(self) -> nn.Linear:
        return self.head_b

    def forward(self, states: torch.Tensor, mask: torch.Tensor, senders: tuple[str, ...]) -> Perturbation:
        """states: (batch, S, L+1 (+1 with the read-out), T, hidden) padded along T; mask: (batch, S, T) bool."""
        bsz, s = states.shape[:2]
        param = next(self.parameters())
        states = states.to(param.device)
        cond = self.in_proj(self.aggregator(states).to(param.dtype))  # (b, S, T, d)
        cond, mask = cond.flatten(0, 1), mask.flatten(0, 1).to(param.device)
        x = (self.layer_embed[:, None, :] + self.slot_embed[None, :, :]).expand(bsz * s, -1, -1, -1)
        for block in self.blocks:
            x = block(x, cond, mask)
        x = self.out_norm(x)
        pooled = (cond * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        if self.config.fusion == "gate":
            weights = torch.softmax(self.gate(pooled).view(bsz, s).float(), dim=1)
        else:
            weights = torch.full((bsz, s), 1.0 / s, device=param.device)
        A, B = self._detokenize(x, bsz, s)
        if self.config.copy:
            keys, values = self.copy_path.memory(states.flatten(0, 1), cond)  # once for every module it writes
            for name, (fan_out, _) in self.spec.modules.items():
                if fan_out == self.spec.hidden_size:
                    b0 = self.layout.offsets[name][2]
                    read = self.copy_path(x[:, :, b0], keys, mask, values)  # (b*S, layers, hidden, r)
                    B[name] = B[name] + read.view_as(B[name]) * self.config.output_scale
        return self.perturbation(A, B, weights, senders)

    @property
    def param_tokens(self) -> int:
        return self.spec.num_layers * self.layout.num_slots

    def _detokenize(self, x: torch.Tensor, bsz: int, s: int) -> tuple[dict, dict]:
        r, c, scale = self.config.rank, self.config.chunk_size, self.config.output_scale
        layers = self.spec.num_layers
        A, B = {}, {}
        for name, (fan_out, fan_in) in self.spec.modules.items():
            a0, ac, b0, bc = self.layout.offsets[name]
            a = self.head_a(x[:, :, a0 : a0 + ac]).view(bsz, s, layers, ac * c)[..., : r * fan_in]
            b = self.head_b(x[:, :, b0 : b0 + bc]).view(bsz, s, layers, bc * c)[..., : r * fan_out]
            a, b = a.view(bsz, s, layers, r, fan_in), b.view(bsz, s, layers, r, fan_out)
            # 1/sqrt(fan_in) keeps A x at unit scale (unscaled A made training diverge).
            A[name] = a * (scale / math.sqrt(fan_in))
            B[name] = b.transpose(-1, -2) * scale
        return A, B
