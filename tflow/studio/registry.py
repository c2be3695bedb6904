"""The Studio's shared state: the backbone, the checkpoints that fit it and the pipelines over them.

One backbone (the receiver) is loaded once and shared by every pipeline (one per generator x
static adapter, built lazily); an optional sender backbone (a specialist, `sender_model`) is
loaded once beside it. Checkpoints are discovered under `<checkpoints>/generators/*` and
`<checkpoints>/static/*`; a generator runs its senders on the backbone its checkpoint records
(the receiver, or the specialist); ones that fit neither are skipped with a visible note.
Nothing here imports gradio.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import tasks
from ..agents import Backbone, Roles, load_backbone
from ..checkpoints import SenderShape, read_record
from ..diagnostics import measures
from ..engines import engine_or_hf
from ..generators import Generator, GeneratorConfig, GeneratorMismatchError, ParameterGenerator
from ..lora import OtherBackboneError, Perturbation, TargetSpec
from ..lru import LRUCache
from ..peft_io import load_peft_adapter
from ..pipeline import Pipeline, load_generator_for, load_recorded_sender
from ..tasks.procedural import is_procedural
from ..tools import catalog
from .examples import page_examples

log = logging.getLogger("tflow.studio")

NONE = "none"
QUERIES_PER_TASK = 12
FEATURE_SETS = 32  # (generator, feature kind, roles) combinations kept for the across-queries view


@dataclass(frozen=True)
class StudioConfig:
    """Where the backbone and checkpoints are and how the server behaves."""

    model: str
    fallback_model: str | None = None  # loaded, with a note in the header, when `model` cannot be (fetched or read)
    fallback_sender_model: str | None = None  # the fallback world's specialist
    generator: str | None = None
    sender_model: str | None = None  # a specialist backbone for the generators whose checkpoints record it
    load_specialists: bool = True  # without sender_model: load the specialist each generator records (else skip it)
    checkpoints: str = "checkpoints"  # discovered: <checkpoints>/generators/*, <checkpoints>/static/*
    device: str = "auto"
    dtype: str | None = None  # the backbone's: bf16 on CUDA, fp16 on MPS, fp32 on CPU unless given
    concurrency: int = 1  # runs at once (the model is shared; more mostly splits the same compute)
    trust_remote_code: bool = False  # run a model repository's own Python code: only when the user asks
    max_queue: int = 16
    engine: str = "hf"  # what generates every agent's text (tflow.engines)
    vllm_url: str | None = None  # engine vllm: the server
    vllm_adapter_dir: str | None = None  # engine vllm: where per-request adapters are written for it
    benchmarks_dir: str | None = None  # local copies of benchmarks, DIR/<name>/test.jsonl (the Benchmark tab)


@dataclass
class Checkpoint:
    """A generator or a static adapter loaded onto the backbone, with its training provenance."""

    key: str
    obj: Generator | Perturbation
    task: str | None
    meta: dict
    path: str | None
    sender: Backbone | None = None  # the senders' own backbone (None: they run on the receiver)

    @property
    def trained(self) -> bool:
        return self.obj.is_trained if isinstance(self.obj, Generator) else True

    def describe(self) -> str:
        """One line: the architecture, what it was trained on or converted from, or the untrained warning."""
        if not self.trained:
            return "untrained generator: perturbation is zero"
        gen = self.obj if isinstance(self.obj, Generator) else None
        arch = f"{gen.arch} architecture, {gen.num_parameters:,} parameters · " if gen else ""
        source = self.meta.get("converted_from")
        if source:  # an imported release checkpoint: where it came from
            seen = f", {source['samples_seen']:,} samples seen" if source.get("samples_seen") else ""
            return f"{arch}converted from {source['file']} (sha256 {source['sha256'][:12]}…{seen})"
        bits = [f"task {self.task}" if self.task else None,
                f"{self.meta['steps']} steps" if "steps" in self.meta else None,
                f"dev accuracy {100 * self.meta['dev_accuracy']:.0f}%" if "dev_accuracy" in self.meta else None]
        trained = "trained on " + ", ".join(b for b in bits if b) if any(bits) else "trained (no provenance recorded)"
        return arch + trained

    def label(self) -> str:
        return f"{self.key} · {self.describe()}"


def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []


class Studio:
    """The loaded backbone, the checkpoints that fit it and the pipelines over them (shared by all sessions)."""

    def __init__(self, cfg: StudioConfig):
        self.cfg = cfg
        self.notes: list[str] = []
        model, sender_model = cfg.model, cfg.sender_model
        try:
            self.backbone = load_backbone(model, cfg.device, cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        except ValueError as e:
            if not cfg.fallback_model:
                raise
            log.warning("%s; starting on %s instead", e, cfg.fallback_model)
            self.notes.append(
                f"{model} could not be loaded ({e}); this is the embedded fallback world ({cfg.fallback_model})"
            )
            model, sender_model = cfg.fallback_model, cfg.fallback_sender_model
            self.backbone = load_backbone(model, cfg.device, cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        self.spec = self.backbone.targets
        self.engine, note = engine_or_hf(cfg.engine, cfg.vllm_url, cfg.vllm_adapter_dir, self.backbone.name)
        self.notes += [note] if note else []
        self.sender_backbone = None
        if sender_model and sender_model != model:
            self.sender_backbone = load_backbone(sender_model, self.backbone.device, self.backbone.dtype,
                                                 trust_remote_code=cfg.trust_remote_code, share_with=self.backbone)
        self._other_backbones: list[str] = []
        self._specialists: dict[str, Backbone] = {}  # generators' recorded sender backbones, by name
        untrained = ParameterGenerator(GeneratorConfig(), self.spec, self.backbone.name).to(self.backbone.device).eval()
        self.generators = {NONE: Checkpoint(NONE, untrained, None, {}, None)}
        root = Path(cfg.checkpoints)
        explicit = [Path(cfg.generator)] if cfg.generator else []
        for path in explicit + _subdirs(root / "generators"):
            self._add(self.generators, path, self._load_generator)
        trained_tasks = {c.task for c in self.generators.values() if c.trained and c.task}
        self.preferred = self._preferred(trained_tasks, root)
        self.statics: dict[str, Checkpoint] = {}
        for path in _subdirs(root / "static"):
            self._add(self.statics, path, self._load_static)
        if self._other_backbones:
            self.notes.append(f"{len(self._other_backbones)} checkpoints trained for other backbones are not offered: "
                              + ", ".join(self._other_backbones))
        # the examples of the tasks this backbone has trained generators for (none: the embedded world's built-in tasks)
        every = page_examples(trained_tasks)
        own = [e for e in every if self.generator_for(e["task"])]
        self.examples = own or [e for e in every if e["task"] in tasks.TASKS]
        if cfg.generator:  # the one asked for (loaded right after "none"), or untrained when it failed to load
            asked = str(Path(cfg.generator))
            self.default_generator = next((k for k, c in self.generators.items() if c.path == asked), NONE)
        else:
            trained = next((k for k, c in self.generators.items() if c.trained), NONE)
            self.default_generator = self.generator_for(self.examples[0]["task"]) or trained
        self.weight_norms = base_weight_norms(self.backbone.model, self.spec)
        self.downloads = Path(tempfile.mkdtemp(prefix="tflow-studio-"))
        self._pipelines: dict[tuple, Pipeline] = {}
        self._features: LRUCache[tuple, tuple[np.ndarray, list[tasks.Example]]] = LRUCache(FEATURE_SETS)
        self._lock = threading.Lock()

    def _preferred(self, trained_tasks: set[str], root: Path) -> dict[str, str]:
        """Each task's preferred generator (tools.catalog.preferred_all); a malformed file is a note, not a stop."""
        parts = {p for t in trained_tasks for p in tasks.parts(t)}
        try:
            return {t: name for t, name in sorted(catalog.preferred_all(root).items()) if t in parts}
        except ValueError as e:
            self.notes.append(str(e))
            return {}

    def _add(self, into: dict[str, Checkpoint], path: Path, load: Callable[[Path], Checkpoint]) -> None:
        if any(c.path and Path(c.path).resolve() == path.resolve() for c in into.values()):
            return
        try:
            ck = load(path)
        except (ValueError, OSError) as e:
            # expected with several worlds in one folder: one line for all of them
            if isinstance(e, OtherBackboneError):
                self._other_backbones.append(f"{path.parent.name}/{path.name}")
                return
            self.notes.append(f"skipped {path}: {e}")
            log.warning("skipped %s: %s", path, e)
            return
        base, n = ck.key, 2
        while ck.key in into:
            ck.key, n = f"{base}-{n}", n + 1
        into[ck.key] = ck

    def _load_generator(self, path: Path) -> Checkpoint:
        gen, sender = load_generator_for(path, self.backbone, specialist=self._specialist)
        return Checkpoint(path.name, gen, gen.meta.get("task") or path.name, gen.meta, str(path), sender)

    def _specialist(self, wanted: SenderShape) -> Backbone:
        """The specialist a generator records: the one given with --sender-model, else loaded once and shared by
        its generators."""
        if self.sender_backbone is not None:
            return self.sender_backbone
        if not self.cfg.load_specialists:
            raise GeneratorMismatchError(f"its senders run on {wanted.describe()}: start the Studio with "
                                         f"--sender-model {wanted.name}")
        if wanted.name not in self._specialists:
            self._specialists[wanted.name] = load_recorded_sender(wanted, self.backbone, self.cfg.trust_remote_code)
        return self._specialists[wanted.name]

    def _load_static(self, path: Path) -> Checkpoint:
        record = read_record(path, static=True)
        meta = record.meta if record else {}
        return Checkpoint(path.name, load_peft_adapter(path, self.spec), meta.get("task") or path.name, meta, str(path))

    def static_for(self, task: str | None) -> str:
        """The static adapter trained on `task` ("none" when there is none)."""
        return next((k for k, c in self.statics.items() if task and c.task and tasks.covers(c.task, task)), NONE)

    def senders_of(self, generator: str) -> Backbone:
        """The backbone `generator`'s senders run on: its specialist, or the receiver."""
        return self.generators[generator].sender or self.backbone

    def generator_for(self, task: str) -> str | None:
        """The loaded generator a task's examples run with: the one the checkpoints' preferred.json names for it
        (as `evaluate` defaults to), else the first that covers it."""
        fits = [k for k, c in self.generators.items() if c.task and tasks.covers(c.task, task) and c.trained]
        first = self.preferred.get(task)
        return next((k for k in fits if first and Path(self.generators[k].path or "").name == first), None) \
            or next(iter(fits), None)

    def pipeline(self, generator: str, static: str) -> Pipeline:
        """The pipeline of one generator x static adapter pair, on the shared backbone."""
        if generator not in self.generators:
            raise ValueError(f"unknown generator {generator!r}: choose one of {', '.join(self.generators)}")
        if static != NONE and static not in self.statics:
            raise ValueError(f"unknown static adapter {static!r}: choose one of {', '.join([NONE, *self.statics])}")
        with self._lock:
            key = (generator, static)
            if key not in self._pipelines:
                st = self.statics[static].obj if static != NONE else None
                ck = self.generators[generator]
                self._pipelines[key] = Pipeline(self.backbone, ck.obj, None, st, sender_backbone=ck.sender,
                                                engine=self.engine)
            return self._pipelines[key]

    def query_features(self, generator: str, kind: str, roles: Roles) -> tuple[np.ndarray, list[tasks.Example]]:
        """Per-query perturbation vectors of a fixed set of test questions (every task), cached."""
        key = (generator, kind, roles)
        hit = self._features.get(key)
        if hit is not None:
            return hit
        own = self.query_tasks(generator)
        per_task = QUERIES_PER_TASK * len(tasks.TASKS) // len(own)
        batch = [ex for task in own for ex in tasks.examples(task, "test", per_task, seed=1)]
        pipe = self.pipeline(generator, NONE)
        pert = pipe.condition([e.question for e in batch], [list(e.contexts) for e in batch], roles).perturbation
        features = np.stack([measures.perturbation_features(pert, i, kind) for i in range(len(batch))])
        self._features.put(key, (features, batch))
        return features, batch

    def query_tasks(self, generator: str) -> tuple[str, ...]:
        """The tasks whose test questions the across-queries view embeds: a specialist's, a real model's or a
        procedural task's generator, its own task(s); else the embedded world's built-in tasks."""
        task = self.generators[generator].task
        own = task is not None and any(t in tasks.REAL_MODEL_TASKS or tasks.is_specialist(t) or is_procedural(t)
                                       for t in tasks.parts(task))
        return tuple(tasks.parts(task)) if own else tasks.TASKS

    def warm_up(self) -> None:
        """One tiny run per mode, so the first user's timings do not include lazy initialisation."""
        pipe = self.pipeline(self.default_generator, NONE)
        for mode in ("single", "tflow"):
            pipe.run("Warm-up.", mode, max_new_tokens=2, sender_max_new_tokens=2)
        pipe.clear_cache()

    def close(self) -> None:
        shutil.rmtree(self.downloads, ignore_errors=True)
        if hasattr(self.engine, "close"):
            self.engine.close()


def base_weight_norms(model: torch.nn.Module, spec: TargetSpec) -> np.ndarray:
    """(layers, modules) ||W||_F of the backbone's targeted weights, for the relative heatmap."""
    norms = [float(mod.weight.detach().float().norm()) for _, _, mod in spec.linears(model)]
    return np.array(norms).reshape(spec.num_layers, len(spec.modules))


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes: proves the shared backbone is left unchanged by runs."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()

