"""What every generator architecture shares: the interface, the layer aggregator, batching of
conditions, config validation and the safetensors + JSON checkpoint writer.

A generator maps the senders' hidden states to a `Perturbation`:

    gen(states, mask, senders) -> Perturbation
    states: (batch, S, L+1, T, hidden) padded along T; mask: (batch, S, T) bool, True = real token

Padded condition positions must not change any factor (a query's perturbation does not depend
on its batch). The senders may run on another backbone than the receiver (`SenderShape`): the
layer aggregator then spans the sender's L+1 states and the input projection its hidden size,
while the factors still target the receiver's linears (`spec`). Each architecture registers itself under a name
(`arch`); `checkpoint.py` reads the JSON's "arch" and builds the right class.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, fields
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ..checkpoints import GENERATOR_CONFIG, GENERATOR_WEIGHTS, SenderShape
from ..lora import OtherBackboneError, Perturbation, TargetSpec


class GeneratorMismatchError(ValueError):
    """A generator checkpoint does not fit the backbone it is loaded onto."""


class ReceiverMismatchError(GeneratorMismatchError, OtherBackboneError):
    """A generator checkpoint trained for another receiver backbone."""


CONDITIONS = ("question", "message", "prompt")  # the sender tokens a generator may read (agents.Prompt.span)

# help for the fields every architecture's config has (each config's HELP adds its own)
SHARED_HELP = {
    "rank": "LoRA rank r of each sender's factors",
    "alpha": "LoRA alpha (the factors' product is scaled by alpha / r)",
    "d_model": "width of the generator's parameter tokens",
    "condition": "the senders' tokens the generator reads: question (the paper's), "
    "message (private context + question) "
    "or prompt (the message and the chat template's answer header: where a sender would start to answer)",
}


def check_config_types(config) -> None:
    """Every field of a (string-annotated) dataclass config has its declared scalar type."""
    for f in fields(config):
        v = getattr(config, f.name)
        want = {"int": int, "float": (int, float), "str": str}[f.type]
        if isinstance(v, bool) or not isinstance(v, want):
            raise ValueError(f"generator config: {f.name} must be {f.type}, got {v!r}")
    if getattr(config, "condition", "question") not in CONDITIONS:
        raise ValueError(
            f"generator config: condition must be one of {', '.join(CONDITIONS)}, got {config.condition!r}"
        )


def stack_conditions(states: list[torch.Tensor], senders: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(query, sender) (L+1, T_i, H) states -> padded (batch, S, L+1, T, H) and a (batch, S, T) mask."""
    width = max(h.shape[1] for h in states)
    padded = states[0].new_zeros((len(states), states[0].shape[0], width, states[0].shape[2]))
    mask = torch.zeros((len(states), width), dtype=torch.bool, device=padded.device)
    for i, h in enumerate(states):
        padded[i, :, : h.shape[1]] = h
        mask[i, : h.shape[1]] = True
    batch = len(states) // senders
    return padded.view(batch, senders, *padded.shape[1:]), mask.view(batch, senders, width)


class LayerAggregator(nn.Module):
    """Learnable softmax (with temperature) over the L+1 hidden-state layers.

    normalise: RMS-normalise each layer first (ours: the weights then compare layers, not
    their very different scales); the release mixes the raw states and clamps the temperature
    at `min_temperature`."""

    def __init__(self, num_states: int, normalise: bool = True, min_temperature: float = 0.0):
        super().__init__()
        self.normalise, self.min_temperature = normalise, min_temperature
        self.logits = nn.Parameter(torch.zeros(num_states))
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits / self.log_temperature.exp().clamp(min=self.min_temperature), dim=0)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(..., L+1, T, H) -> (..., T, H) in fp32, whatever the dtype of the states or of the
        generator (bf16 states lose precision in a sum of squares and in the mix)."""
        states = states.float()
        if self.normalise:
            states = F.rms_norm(states, (states.shape[-1],))
        return torch.einsum("l,...lth->...th", self.weights().float(), states)


class Generator(nn.Module, ABC):
    """Base of the generator architectures: checkpoints, provenance, the trained flag.

    Subclasses set `arch` and `config_class`, build their modules from (config, spec) and
    implement `forward` and `zero_head` (the output head that starts at zero, so that an
    untrained generator yields an exactly-zero perturbation)."""

    arch: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config, spec: TargetSpec, backbone_name: str = "", meta: dict | None = None,
                 sender: SenderShape | None = None):
        """spec / backbone_name: the receiver, whose linears the factors target; sender: the
        senders' backbone (default: the receiver itself, as in the paper)."""
        super().__init__()
        self.config, self.spec, self.backbone_name = config, spec, backbone_name
        self.sender = sender or SenderShape(backbone_name, spec.hidden_size, spec.num_layers)
        self.meta = dict(meta or {})  # training provenance (task, steps, seed, accuracy) or conversion provenance

    @abstractmethod
    def forward(self, states: torch.Tensor, mask: torch.Tensor, senders: tuple[str, ...]) -> Perturbation:
        """states: (batch, S, L+1, T, hidden) padded along T; mask: (batch, S, T) bool."""

    @abstractmethod
    def zero_head(self) -> nn.Linear:
        """The output head that starts at exactly zero (non-zero once trained)."""

    @property
    @abstractmethod
    def param_tokens(self) -> int:
        """Parameter tokens the transformer runs over per sender condition (all layers)."""

    @property
    def reads_readout(self) -> bool:
        """Whether its senders' states carry their read-out slice (`agents.sender_states(readout=True)`)."""
        return bool(getattr(self.config, "readout", 0))

    @property
    def is_trained(self) -> bool:
        head = self.zero_head()
        return bool(head.weight.abs().sum() > 0 or head.bias.abs().sum() > 0)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def provenance(self) -> dict:
        """What a header shows: the architecture, its size and where the weights came from
        (`converted_from` for an imported release checkpoint, else the training record)."""
        keep = ("task", "steps", "seed", "dev_accuracy", "converted_from")
        return {"arch": self.arch, "parameters": self.num_parameters, "trained": self.is_trained,
                **{k: self.meta[k] for k in keep if k in self.meta}}

    def perturbation(self, A: dict, B: dict, weights: torch.Tensor, senders: tuple[str, ...]) -> Perturbation:
        return Perturbation(spec=self.spec, A=A, B=B, weights=weights, scaling=self.config.alpha / self.config.rank,
                            senders=tuple(senders), layer_weights=self.aggregator.weights(),
                            extra={"backbone_name": self.backbone_name})

    # ----- checkpoints: safetensors + JSON (read back by checkpoint.load_generator) -----

    def backbone_card(self) -> dict:
        return {"name": self.backbone_name, "hidden_size": self.spec.hidden_size, "num_layers": self.spec.num_layers,
                "layers_path": self.spec.layers_path, "targets": {k: list(v) for k, v in self.spec.modules.items()},
                "sender": asdict(self.sender)}

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        card = {"arch": self.arch, "generator": asdict(self.config), "backbone": self.backbone_card(),
                "meta": self.meta}
        (directory / GENERATOR_CONFIG).write_text(json.dumps(card, indent=2))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(directory / GENERATOR_WEIGHTS)
        )
