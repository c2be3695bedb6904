"""The release generator (`arch = "release"`): the paper's architecture, written from the
description of the authors' inference release (BWR-hhh/TFlow @7aef170; the fixture's
`fixture.json` in tests/fixtures/release-generator/), with the same tensor names, so their
checkpoint loads after `tflow-convert-release`.

One sender's condition c (T, hidden), the mix of its L+1 hidden states (raw, no RMS norm):
  E = norm_input(hidden_in(c))                                   (T, d_model)
  parameter tokens, per backbone layer n: every module's lora_A slots (modules sorted by
  name), then every lora_B slot; a slot is a (rank, token_dim) block of the flattened
  factor, carried by rank/da tokens that each hold da of its rank rows (da =
  dim_accumulation) as da pieces of d_model/da;
  X = norm_tokens(attention-pool(E; learned queries) + layer_pos[n] + hw_pos[slot, row])
  n_blocks x pre-RMSNorm residual [layer-axis attention (1-D rotary over n),
  within-layer attention (2-D rotary over (slot, token)), cross-attention to E, SiLU MLP]
  norm_final -> each token back into its da rank rows -> proj_out_A / proj_out_B
  -> (L, slots, rank, token_dim) -> factors = first numel values, times output_scale.
Fusion: fixed 1/S per sender (the release's 0.5 / 0.5). Unlike the release's batched path,
padded condition positions are masked out of the pooling and the cross-attention, so a
query's factors do not depend on its batch. proj_out_B starts at zero when trained here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import SenderShape
from ..lora import Perturbation, TargetSpec
from .base import SHARED_HELP, Generator, LayerAggregator, check_config_types


@dataclass
class ReleaseConfig:
    """Hyper-parameters; the defaults are those of the released Qwen3-4B generator."""

    rank: int = 4
    alpha: float = 8.0
    d_model: int = 1024
    head_dim: int = 128
    n_blocks: int = 2
    token_dim: int = 256  # = the output heads' width (the release's output_dim)
    dim_accumulation: int = 2  # rank rows packed per token
    ffn_ratio: int = 4
    output_scale: float = 0.01
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    condition: str = (
        "question"  # the sender tokens read: "question" (the paper's), "message" or "prompt" (base.CONDITIONS)
    )

    HELP = {**SHARED_HELP,  # not annotated: a class attribute, not a field
        "head_dim": "attention head width (a multiple of 4, divides d_model)",
        "n_blocks": "generator blocks", "token_dim": "width of the output heads (the release's output_dim)",
        "dim_accumulation": "rank rows packed per parameter token", "ffn_ratio": "MLP width / d_model",
        "output_scale": "raw factors are multiplied by this", "rope_theta": "rotary base of the generator's attention",
        "norm_eps": "RMSNorm epsilon",
    }

    def __post_init__(self) -> None:
        check_config_types(self)
        if (
            min(self.rank, self.d_model, self.head_dim, self.n_blocks, self.token_dim, self.dim_accumulation,
                self.ffn_ratio)
            < 1
        ):
            raise ValueError("generator config: sizes must be positive")
        if self.d_model % self.head_dim or self.head_dim % 4:
            raise ValueError(f"generator config: head_dim {self.head_dim} must divide d_model {self.d_model} and be a "
                             "multiple of 4 (2-D rotary rotates pairs in each half of a head)")
        if self.rank % self.dim_accumulation or self.d_model % self.dim_accumulation:
            raise ValueError(f"generator config: dim_accumulation {self.dim_accumulation} must divide rank {self.rank} "
                             f"and d_model {self.d_model}")


@dataclass(frozen=True)
class ReleaseLayout:
    """Per backbone layer: module -> (first slot, slots) of its lora_A and of its lora_B."""

    a_slots: dict[str, tuple[int, int]]
    b_slots: dict[str, tuple[int, int]]
    num_a: int  # lora_A slots per layer (they come first)
    seq_h: int  # slots per layer

    @classmethod
    def build(cls, spec: TargetSpec, token_dim: int) -> ReleaseLayout:
        a, b, pos = {}, {}, 0
        names = sorted(spec.modules)
        for side, fan in ((a, 1), (b, 0)):
            for name in names:
                n = math.ceil(spec.modules[name][fan] / token_dim)
                side[name], pos = (pos, n), pos + n
        return cls(a, b, sum(n for _, n in a.values()), pos)


def rotary(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim/2) for channel pairs (2i, 2i+1) at `positions` (n, axes): axis k
    rotates the k-th 1/axes of the head's channels, pair i by pos * theta^(-2i / axis_dim)."""
    axis_dim = head_dim // positions.shape[1]
    freqs = theta ** (-torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
    angles = torch.cat([positions[:, k, None].double() * freqs for k in range(positions.shape[1])], dim=1)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    cos, sin = (t.to(x.dtype) for t in rope)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class MultiHeadAttention(nn.Module):
    """Attention with rotary queries and keys; softmax scale 1/sqrt(head_dim)."""

    def __init__(self, d: int, head_dim: int):
        super().__init__()
        self.head_dim = head_dim
        self.W_q, self.W_k, self.W_v, self.W_o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, q_rope: tuple, ctx: torch.Tensor | None = None, k_rope: tuple | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        ctx, k_rope = (x, q_rope) if ctx is None else (ctx, k_rope)
        n, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, y.shape[1], -1, self.head_dim).transpose(1, 2)

        q, k = apply_rotary(heads(self.W_q(x)), q_rope), apply_rotary(heads(self.W_k(ctx)), k_rope)
        y = F.scaled_dot_product_attention(q, k, heads(self.W_v(ctx)), attn_mask=mask)
        return self.W_o(y.transpose(1, 2).reshape(n, t, d))


class FeedForward(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class ReleaseBlock(nn.Module):
    """Layer-axis attention, within-layer attention, cross-attention to the condition, MLP."""

    def __init__(self, cfg: ReleaseConfig):
        super().__init__()
        d = cfg.d_model
        self.self_attn_n, self.self_attn_hw, self.self_attn_cross = (
            MultiHeadAttention(d, cfg.head_dim) for _ in range(3)
        )
        self.feed_forward = FeedForward(d, cfg.ffn_ratio * d)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.RMSNorm(d, eps=cfg.norm_eps) for _ in range(4))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, ropes: dict) -> torch.Tensor:
        n, layers, tokens, d = x.shape
        h = self.norm1(x).transpose(1, 2).reshape(n * tokens, layers, d)
        x = x + self.self_attn_n(h, ropes["layer"]).view(n, tokens, layers, d).transpose(1, 2)
        h = self.norm2(x).reshape(n * layers, tokens, d)
        x = x + self.self_attn_hw(h, ropes["slot"]).view(n, layers, tokens, d)
        h = self.norm3(x).reshape(n, layers * tokens, d)
        x = x + self.self_attn_cross(h, ropes["query"], memory, ropes["key"], mask[:, None, None, :]).view(
            n, layers, tokens, d
        )
        return x + self.feed_forward(self.norm4(x))


class ReleaseTransformer(nn.Module):
    """The release's `model`: condition tokens, parameter tokens, blocks, output heads."""

    def __init__(self, cfg: ReleaseConfig, layout: ReleaseLayout, layers: int):
        super().__init__()
        d, da, r = cfg.d_model, cfg.dim_accumulation, cfg.rank
        self.cfg, self.layout, self.layers = cfg, layout, layers
        self.tokens_per_layer = layout.seq_h * r // da
        self.norm_input, self.norm_tokens, self.norm_final = (nn.RMSNorm(d, eps=cfg.norm_eps) for _ in range(3))
        self.cond_token_proj = nn.Linear(d, d, bias=False)
        self.cond_token_query = nn.Parameter(torch.randn(layers * self.tokens_per_layer, d))
        self.hw_pos = nn.Embedding(layout.seq_h * r, d // da)
        self.layer_pos = nn.Embedding(layers, d // da)
        self.blocks = nn.ModuleList(ReleaseBlock(cfg) for _ in range(cfg.n_blocks))
        self.proj_out_A, self.proj_out_B = nn.Linear(d // da, cfg.token_dim), nn.Linear(d // da, cfg.token_dim)

    def ropes(self, cond_len: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        per_token = self.cfg.rank // self.cfg.dim_accumulation
        n, p = torch.arange(self.layers), torch.arange(self.tokens_per_layer)
        t = torch.arange(cond_len) + max(self.layout.seq_h, per_token)
        grid = torch.stack(torch.meshgrid(n, p, indexing="ij"), -1).flatten(0, 1)
        positions = {"layer": n[:, None], "slot": torch.stack((p // per_token, p % per_token), -1),
                     "query": grid, "key": torch.stack((t, t), -1)}
        device = self.cond_token_query.device
        return {
            k: tuple(c.to(device) for c in rotary(v, self.cfg.head_dim, self.cfg.rope_theta))
            for k, v in positions.items()
        }

    def forward(self, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """cond (N, T, d_model) after hidden_in, mask (N, T) -> tokens (N, L, slots, rank, token_dim)."""
        cfg, n = self.cfg, cond.shape[0]
        memory = self.norm_input(cond)
        keys = self.cond_token_proj(memory)[:, None]
        query = self.cond_token_query.expand(n, 1, -1, -1)
        pooled = F.scaled_dot_product_attention(query, keys, keys, attn_mask=mask[:, None, None, :])  # scale 1/sqrt(d)
        slots = self.hw_pos.weight.view(self.layout.seq_h, cfg.rank, -1)[None] + self.layer_pos.weight[:, None, None]
        x = pooled.view(n, self.layers, self.tokens_per_layer, -1) + slots.reshape(
            self.layers, self.tokens_per_layer, -1
        )
        x = self.norm_tokens(x)
        ropes = self.ropes(cond.shape[1])
        for block in self.blocks:
            x = block(x, memory, mask, ropes)
        rows = self.norm_final(x).view(n, self.layers, self.layout.seq_h, cfg.rank, -1)
        a = self.proj_out_A(rows[:, :, : self.layout.num_a])
        return torch.cat((a, self.proj_out_B(rows[:, :, self.layout.num_a :])), dim=2)


class ReleaseGenerator(Generator):
    """Layer aggregator (raw states, temperature clamped at 0.01) + the release transformer."""

    arch = "release"
    config_class = ReleaseConfig

    def __init__(self, config: ReleaseConfig, spec: TargetSpec, backbone_name: str = "", meta: dict | None = None,
                 sender: SenderShape | None = None):
        super().__init__(config, spec, backbone_name, meta, sender)
        self.layout = ReleaseLayout.build(spec, config.token_dim)
        self.aggregator = LayerAggregator(self.sender.num_layers + 1, normalise=False, min_temperature=0.01)
        self.hidden_in = nn.Linear(self.sender.hidden_size, config.d_model)
        self.model = ReleaseTransformer(config, self.layout, spec.num_layers)
        nn.init.zeros_(self.model.proj_out_B.weight)
        nn.init.zeros_(self.model.proj_out_B.bias)

    def zero_head(self) -> nn.Linear:
        return self.model.proj_out_B

    @property
    def param_tokens(self) -> int:
        return self.spec.num_layers * self.model.tokens_per_layer

    def generator_tokens(self, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, T, hidden) aggregated conditions -> raw tokens (N, L, slots, rank, token_dim), before the output
        scale."""
        return self.model(self.hidden_in(cond), mask)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, senders: tuple[str, ...]) -> Perturbation:
        """states: (batch, S, L+1, T, hidden) padded along T; mask: (batch, S, T) bool."""
        bsz, s = states.shape[:2]
        param = self.hidden_in.weight
        cond = self.aggregator(states.to(param.device)).to(param.dtype).flatten(0, 1)
        tokens = self.generator_tokens(cond, mask.flatten(0, 1).to(param.device))
        A, B = self._detokenize(tokens, bsz, s)
        return self.perturbation(A, B, torch.full((bsz, s), 1.0 / s, device=param.device), senders)

    def _detokenize(self, tokens: torch.Tensor, bsz: int, s: int) -> tuple[dict, dict]:
        r, layers, scale = self.config.rank, self.spec.num_layers, self.config.output_scale
        A, B = {}, {}
        for name, (fan_out, fan_in) in self.spec.modules.items():
            for into, (first, count), shape in ((A, self.layout.a_slots[name], (r, fan_in)),
                                                (B, self.layout.b_slots[name], (fan_out, r))):
                flat = tokens[:, :, first : first + count].reshape(bsz, s, layers, -1)[..., : shape[0] * shape[1]]
                into[name] = flat.reshape(bsz, s, layers, *shape) * scale
        return A, B
