"""TFlow Studio: the Gradio Blocks UI (ask, compare, perturbation, activations, history).

One backbone is loaded once and shared by every pipeline (one per generator x static
adapter, built lazily). A run streams: a worker thread runs the chosen modes one after
another and posts `Event`s (stage, tokens, result, error) to a queue; the Gradio event
handler drains the queue and yields page updates. Bad input becomes a readable message
in the status line and the failing column; nothing the user typed is cleared.

Checkpoints are discovered under `<checkpoints>/generators/*` and `<checkpoints>/static/*`;
ones that do not fit the backbone are skipped with a visible note.
"""
from __future__ import annotations

import hashlib
import html
import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from . import tasks, viz
from .agents import Agent, GenerationSettings, Roles, clean_text, load_backbone
from .generator import GeneratorConfig, ParameterGenerator
from .lora import Perturbation, TargetSpec, infer_targets, is_patched
from .lru import LRUCache
from .modes import MODES, Pipeline, RunResult
from .peft_io import load_peft_adapter, peft_zip_bytes, save_raw

log = logging.getLogger("tflow.studio")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
NONE = "none"
DEFAULT_ROLES = Roles()
MAX_NEW_TOKENS = 32  # the page's default for the receiver and for each TextMAS sender message
HISTORY_LIMIT = 20
RUN_TIMEOUT_S = 120.0
YIELD_EVERY_S = 0.15
QUERIES_PER_TASK = 12
FEATURE_SETS = 32  # (generator, feature kind, roles) combinations kept for the across-queries view
MODE_CAPTIONS = {
    "single": "The receiver alone, from the question only.",
    "textmas": "Senders write text messages; the receiver reads the question plus the messages.",
    "tflow": "Senders only read (one prefill); their hidden states become a LoRA for the receiver, which sees just the question.",
    "static": "One fixed LoRA trained on the task, the same for every query (ablation).",
}
STAGE_SHORT = {"senders": "messages", "sender_pass": "sender pass", "generator": "generator", "receiver": "receiver"}
STAGE_TEXT = {("tflow", "senders"): "sender pass", ("tflow", "generator"): "parameter generator", ("textmas", "senders"): "senders write"}
STOP_REASONS = {"eos": "end of answer", "length": "token limit", "stopped": "stopped", "timeout": "time limit"}


# ----------------------------------------------------------------------------- checkpoints

@dataclass(frozen=True)
class StudioConfig:
    """Where the backbone and checkpoints are and how the server behaves."""

    model: str
    generator: str | None = None  # an extra generator directory, selected by default
    checkpoints: str = "checkpoints"  # discovered: <checkpoints>/generators/*, <checkpoints>/static/*
    device: str = "auto"
    concurrency: int = 1  # runs at once (the model is shared; more mostly splits the same compute)
    trust_remote_code: bool = False  # run a model repository's own Python code: only when the user asks
    max_queue: int = 16


@dataclass
class Checkpoint:
    """A generator or a static adapter loaded onto the backbone, with its training provenance."""

    key: str
    obj: ParameterGenerator | Perturbation
    task: str | None
    meta: dict
    path: str | None

    @property
    def trained(self) -> bool:
        return self.obj.is_trained if isinstance(self.obj, ParameterGenerator) else True

    def describe(self) -> str:
        """One line: what it was trained on, or the untrained warning."""
        if not self.trained:
            return "untrained generator: perturbation is zero"
        bits = [f"task {self.task}" if self.task else None,
                f"{self.meta['steps']} steps" if "steps" in self.meta else None,
                f"dev accuracy {100 * self.meta['dev_accuracy']:.0f}%" if "dev_accuracy" in self.meta else None]
        return "trained on " + ", ".join(b for b in bits if b) if any(bits) else "trained (no provenance recorded)"

    def label(self) -> str:
        return f"{self.key} · {self.describe()}"


def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# ----------------------------------------------------------------------------- the shared model

class Studio:
    """The loaded backbone, the checkpoints that fit it and the pipelines over them (shared by all sessions)."""

    def __init__(self, cfg: StudioConfig):
        self.cfg = cfg
        self.backbone = load_backbone(cfg.model, cfg.device, trust_remote_code=cfg.trust_remote_code)
        self.spec = infer_targets(self.backbone.model)
        self.notes: list[str] = []
        untrained = ParameterGenerator(GeneratorConfig(), self.spec, self.backbone.name).to(self.backbone.device).eval()
        self.generators = {NONE: Checkpoint(NONE, untrained, None, {}, None)}
        root = Path(cfg.checkpoints)
        explicit = [Path(cfg.generator)] if cfg.generator else []
        for path in explicit + _subdirs(root / "generators"):
            self._add(self.generators, path, self._load_generator)
        self.statics: dict[str, Checkpoint] = {}
        for path in _subdirs(root / "static"):
            self._add(self.statics, path, self._load_static)
        self.examples = json.loads((ASSETS / "examples.json").read_text())
        if cfg.generator:  # the one asked for (loaded right after "none"), or untrained when it failed to load
            self.default_generator = next((k for k, c in self.generators.items() if c.path == str(Path(cfg.generator))), NONE)
        else:
            trained = next((k for k, c in self.generators.items() if c.trained), NONE)
            self.default_generator = self.generator_for(self.examples[0]["task"]) or trained
        self.weight_norms = base_weight_norms(self.backbone.model, self.spec)
        self.downloads = Path(tempfile.mkdtemp(prefix="tflow-studio-"))
        self._pipelines: dict[tuple, Pipeline] = {}
        self._features: LRUCache[tuple, tuple[np.ndarray, list[tasks.Example]]] = LRUCache(FEATURE_SETS)
        self._lock = threading.Lock()

    def _add(self, into: dict[str, Checkpoint], path: Path, load: Callable[[Path], Checkpoint]) -> None:
        if any(c.path and Path(c.path).resolve() == path.resolve() for c in into.values()):
            return
        try:
            ck = load(path)
        except (ValueError, OSError) as e:
            self.notes.append(f"skipped {path}: {e}")
            log.warning("skipped %s: %s", path, e)
            return
        base, n = ck.key, 2
        while ck.key in into:
            ck.key, n = f"{base}-{n}", n + 1
        into[ck.key] = ck

    def _load_generator(self, path: Path) -> Checkpoint:
        gen = ParameterGenerator.from_pretrained(path, self.spec, self.backbone.name).to(self.backbone.device).eval()
        return Checkpoint(path.name, gen, gen.meta.get("task") or path.name, gen.meta, str(path))

    def _load_static(self, path: Path) -> Checkpoint:
        meta = _read_json(path / "training.json")
        return Checkpoint(path.name, load_peft_adapter(path, self.spec), meta.get("task") or path.name, meta, str(path))

    def static_for(self, task: str | None) -> str:
        """The static adapter trained on `task` ("none" when there is none)."""
        return next((k for k, c in self.statics.items() if task and c.task == task), NONE)

    def generator_for(self, task: str) -> str | None:
        return next((k for k, c in self.generators.items() if c.task == task and c.trained), None)

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
                self._pipelines[key] = Pipeline(self.backbone, self.generators[generator].obj, None, st)
            return self._pipelines[key]

    def query_features(self, generator: str, kind: str, roles: Roles) -> tuple[np.ndarray, list[tasks.Example]]:
        """Per-query perturbation vectors of a fixed set of test questions (every task), cached."""
        key = (generator, kind, roles)
        hit = self._features.get(key)
        if hit is not None:
            return hit
        batch = [ex for task in tasks.TASKS for ex in tasks.examples(task, "test", QUERIES_PER_TASK, seed=1)]
        pipe = self.pipeline(generator, NONE)
        pert = pipe.condition([e.question for e in batch], [list(e.contexts) for e in batch], roles).perturbation
        features = np.stack([viz.perturbation_features(pert, i, kind) for i in range(len(batch))])
        self._features.put(key, (features, batch))
        return features, batch

    def warm_up(self) -> None:
        """One tiny run per mode, so the first user's timings do not include lazy initialisation."""
        pipe = self.pipeline(self.default_generator, NONE)
        for mode in ("single", "tflow"):
            pipe.run("Warm-up.", mode, max_new_tokens=2, sender_max_new_tokens=2)
        pipe.clear_cache()

    def close(self) -> None:
        shutil.rmtree(self.downloads, ignore_errors=True)


def base_weight_norms(model: torch.nn.Module, spec: TargetSpec) -> np.ndarray:
    """(layers, modules) ||W||_F of the backbone's targeted weights, for the relative heatmap."""
    norms = [float(mod.weight.detach().float().norm()) for _, _, mod in spec.linears(model)]
    return np.array(norms).reshape(spec.num_layers, len(spec.modules))


def build_examples(per_task: int = 4, seed: int = 0) -> list[dict]:
    """The page's example questions: test-split examples of every built-in task."""
    order = ("split", "relay", "arith")
    return [{"task": ex.task, "question": ex.question, "contexts": list(ex.contexts), "answer": ex.answer}
            for task in order for ex in tasks.examples(task, "test", per_task, seed)]


def write_examples(path: Path = ASSETS / "examples.json") -> None:
    """Regenerate assets/examples.json from tflow.tasks."""
    path.write_text(json.dumps(build_examples(), indent=2) + "\n")


# ----------------------------------------------------------------------------- one run

@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs, validated."""

    question: str
    contexts: tuple[str, ...]
    reference: str
    modes: tuple[str, ...]
    generator: str
    static: str
    settings: GenerationSettings
    roles: Roles


def make_roles(prompts: list[str]) -> Roles:
    """The default roles with (possibly edited) system prompts: senders..., receiver last."""
    agents = [*DEFAULT_ROLES.senders, DEFAULT_ROLES.receiver]
    if len(prompts) != len(agents):
        raise ValueError(f"expected {len(agents)} role prompts, got {len(prompts)}")
    edited = [Agent(a.role, clean_text(p or "", f"{a.role} prompt")) for a, p in zip(agents, prompts)]
    return Roles(senders=tuple(edited[:-1]), receiver=edited[-1])


def make_request(studio: Studio, question: str, contexts: list[str], reference: str, modes: list[str], generator: str,
                 static: str, settings: GenerationSettings, roles: Roles) -> RunRequest:
    """Validate the inputs; ValueError with a readable message on bad input."""
    question = clean_text(question or "")
    modes = tuple(m for m in MODES if m in (modes or []))
    if not modes:
        raise ValueError("no mode is selected: tick at least one of Single, TextMAS, TFlow, Static LoRA")
    if "static" in modes and static == NONE:
        raise ValueError("Static LoRA needs a static adapter: pick one or untick Static LoRA")
    studio.pipeline(generator, static)  # validates both names
    ctx = tuple((c or "").strip() for c in contexts)
    if len(ctx) != len(roles.senders):
        raise ValueError(f"got {len(ctx)} private contexts for {len(roles.senders)} senders: give one per sender ('' for none)")
    for text, what in ((question, "question"), *((c, "private context") for c in ctx)):
        check_fits(studio, text, what)
    return RunRequest(question, ctx, (reference or "").strip(), modes, generator, static, settings, roles)


def check_fits(studio: Studio, text: str, what: str) -> None:
    """Refuse at once a text that alone exceeds the model's context (the pipeline checks whole prompts later)."""
    limit = studio.backbone.max_context
    if len(text) < limit:  # a token is at least one character
        return
    n = len(studio.backbone.tokenizer(text, add_special_tokens=False).input_ids)
    if n >= limit:
        raise ValueError(f"the {what} is {n:,} tokens ({len(text):,} characters) but the model's context is only "
                         f"{limit:,} tokens: shorten the {what}")


@dataclass
class Event:
    """What the worker reports: stage / tokens / result / error for a mode, or done."""

    kind: str
    mode: str = ""
    payload: Any = None


def execute(pipe: Pipeline, req: RunRequest, post: Callable[[Event], None], stop: threading.Event) -> None:
    """Run the request's modes one after another, posting events; never raises."""
    for mode in req.modes:
        post(Event("stage", mode, "start"))
        try:
            result = pipe.run(
                req.question, mode, sender_context=list(req.contexts), settings=req.settings, roles=req.roles,
                on_token=lambda texts, m=mode: post(Event("tokens", m, texts[0])),
                on_stage=lambda s, m=mode: post(Event("stage", m, s)), should_stop=stop.is_set,
            )
            post(Event("result", mode, result))
        except ValueError as e:
            post(Event("error", mode, str(e)))
        except Exception as e:  # a bug must not take the server down; the log keeps the traceback
            log.exception("mode %s failed", mode)
            post(Event("error", mode, f"internal error ({type(e).__name__}): {e}"))
    post(Event("done"))


@dataclass
class RunRecord:
    """One finished run: its request, per-mode results or errors, and the exported perturbations."""

    number: int
    started: str
    request: RunRequest
    results: dict[str, RunResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    downloads: dict[str, tuple[str, str]] = field(default_factory=dict)  # mode -> (peft zip, raw safetensors)
    warning: str = ""
    hidden: tuple | None = None  # (figure, note) of the senders' hidden states, built on first view


@dataclass
class Live:
    """A run in progress, as the page shows it."""

    record: RunRecord
    stage: dict[str, str] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)
    done: bool = False

    def apply(self, ev: Event) -> None:
        if ev.kind == "stage":
            self.stage[ev.mode] = ev.payload
        elif ev.kind == "tokens":
            self.partial[ev.mode] = ev.payload
        elif ev.kind == "result":
            self.record.results[ev.mode] = ev.payload
        elif ev.kind == "error":
            self.record.errors[ev.mode] = ev.payload
        elif ev.kind == "done":
            self.done = True


def export_perturbations(studio: Studio, record: RunRecord) -> None:
    """Write each perturbation of the record as a PEFT zip and a raw safetensors file."""
    for mode, result in record.results.items():
        if result.perturbation is None:
            continue
        pert = replace(result.perturbation, extra={**result.perturbation.extra, "backbone_name": studio.backbone.name})
        stem = studio.downloads / f"run{record.number}-{mode}"
        stem.mkdir(exist_ok=True)
        zip_path, raw_path = stem / f"tflow-{mode}-peft-adapter.zip", stem / f"tflow-{mode}-perturbation.safetensors"
        zip_path.write_bytes(peft_zip_bytes(pert))
        save_raw(pert, raw_path)
        record.downloads[mode] = (str(zip_path), str(raw_path))


# ----------------------------------------------------------------------------- text

def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fmt_ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if seconds >= 0.01 else f"{1000 * seconds:.1f} ms"


def verdict(answer: str, reference: str) -> str:
    if not reference:
        return '<span class="badge none">no reference answer to check against</span>'
    ok = tasks.is_correct(answer, reference)
    badge = '<span class="badge ok">✔ correct</span>' if ok else '<span class="badge bad">✘ wrong</span>'
    return f"{badge} reference: {html.escape(reference)}"


def result_markdown(r: RunResult, reference: str) -> str:
    """The verdict and the numbers under a mode's answer."""
    stages = " · ".join(f"{STAGE_SHORT[k]} {fmt_ms(v)}" for k, v in r.timings.items() if k in STAGE_SHORT)
    kv_total = viz.total_kv_bytes(r)
    kv_split = f"<br><small>receiver {fmt_bytes(r.kv_cache_bytes)}, senders {fmt_bytes(kv_total - r.kv_cache_bytes)}</small>" if kv_total != r.kv_cache_bytes else ""
    rows = [
        ("processed tokens", f"<b>{r.usage.total_tokens}</b><br><small>{r.usage.prompt_tokens} prompt + {r.usage.generated_tokens} generated</small>"),
        ("wall time", f"<b>{fmt_ms(r.timings['total'])}</b><br><small>{stages}</small>"),
        ("KV cache", f"<b>{fmt_bytes(kv_total)}</b>{kv_split}"),
        ("stopped by", STOP_REASONS.get(r.stop_reason, r.stop_reason)),
    ]
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'{verdict(r.answer, reference)}\n\n<table class="metrics">{table}</table>'


def live_markdown(live: Live, mode: str) -> str:
    """A mode's info box while the run is in progress."""
    rec = live.record
    if mode in rec.errors:
        return f"⚠ **Could not run:** {rec.errors[mode]}"
    if mode in rec.results:
        return result_markdown(rec.results[mode], rec.request.reference)
    stage = live.stage.get(mode)
    if stage is None:
        return "◌ waiting for the modes before it"
    if stage == "receiver":
        n = len(live.partial.get(mode, ""))
        return f"● receiver is generating… ({n} characters so far)"
    if stage == "senders":
        return "● sender pass (one batched prefill)…" if mode == "tflow" else "● senders are writing their messages…"
    if stage == "generator":
        return "● parameter generator: hidden states → LoRA factors…"
    return "● starting…"


def status_markdown(live: Live) -> str:
    """The one-line progress / summary above the tabs."""
    rec = live.record
    parts = []
    for mode in rec.request.modes:
        name = viz.MODE_LABELS[mode]
        if mode in rec.errors:
            parts.append(f"{name} ⚠")
        elif mode in rec.results:
            parts.append(f"{name} ✓ {fmt_ms(rec.results[mode].timings['total'])}")
        elif mode in live.stage:
            parts.append(f"**{name}: {STAGE_TEXT.get((mode, live.stage[mode]), live.stage[mode])}…**")
        else:
            parts.append(f"{name} ·")
    head = f"**Run #{rec.number} done.**" if live.done else f"**Run #{rec.number} running:**"
    lines = [f"{head} " + " → ".join(parts)]
    lines += [f"⚠ **{viz.MODE_LABELS[m]}:** {e}" for m, e in rec.errors.items()]
    if rec.warning:
        lines.append(f"⚠ {rec.warning}")
    return "\n\n".join(lines)


def messages_markdown(r: RunResult | None) -> str:
    if r is None or not r.messages:
        return "*The senders' messages appear here after a TextMAS run.*"
    return "\n\n".join(f"**{role}:** {html.escape(msg) or '*(empty)*'}" for role, msg in r.messages.items())


def context_warning(studio: Studio, req: RunRequest) -> str:
    """Non-blocking: a private context that cannot reach the TFlow receiver."""
    if "tflow" in req.modes and any(req.contexts) and not studio.generators[req.generator].trained:
        return ("The selected generator is untrained, so its perturbation is zero: the senders' private context "
                "cannot reach the TFlow receiver. Pick a trained generator to see TFlow use the context.")
    return ""


def header_html(studio: Studio, generator: str) -> str:
    bb, ck = studio.backbone, studio.generators[generator]
    params = bb.num_parameters
    size = f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.2f} M"
    chips = [("backbone", Path(bb.name).name or bb.name), ("parameters", size), ("device", str(bb.device)),
             ("dtype", str(bb.dtype).removeprefix("torch.")), ("layers", str(bb.num_layers))]
    chip_html = "".join(f'<span class="chip"><b>{k}</b> {v}</span>' for k, v in chips)
    if ck.trained:
        gen = f'<span class="chip gen"><b>generator</b> {ck.key}: {ck.describe()}</span>'
    else:
        gen = '<span class="chip warn"><b>⚠ untrained generator: perturbation is zero</b> (TFlow answers like Single)</span>'
    notes = "".join(f'<div class="note">{html.escape(n)}</div>' for n in studio.notes)
    return (f'<div id="studio-header"><div class="title"><h1>TFlow Studio</h1>'
            f'<span class="tagline">agents that talk through weights, not words</span></div>'
            f'<div class="chips">{chip_html}{gen}</div>{notes}</div>')


# ----------------------------------------------------------------------------- the page

@dataclass
class ModeView:
    """One column of the Compare tab."""

    column: gr.Column
    answer: gr.Textbox
    info: gr.Markdown


class StudioUI:
    """Builds the Blocks and holds the component handles the event handlers update."""

    def __init__(self, studio: Studio):
        self.studio = studio

    # ---------------------------------------------------------------- build

    def build(self) -> gr.Blocks:
        s = self.studio
        with gr.Blocks(title="TFlow Studio", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
            self.history = gr.State([])
            self.current = gr.State(None)
            self.header = gr.HTML(header_html(s, s.default_generator))
            self.status = gr.Markdown("Pick an example or type a question, choose the modes, then press **Run**.", elem_id="run-status")
            with gr.Tabs(selected="ask") as self.tabs:
                with gr.Tab("1 · Ask", id="ask"):
                    self._ask_tab()
                with gr.Tab("2 · Compare", id="compare"):
                    self._compare_tab()
                with gr.Tab("3 · Perturbation", id="perturbation"):
                    self._perturbation_tab()
                with gr.Tab("4 · Activations", id="activations") as self.activations_tab:
                    self._activations_tab()
                with gr.Tab("5 · History", id="history"):
                    self._history_tab()
            self._wire()
        return demo

    def _ask_tab(self) -> None:
        s = self.studio
        with gr.Accordion("How TFlow works (pipeline diagram)", open=True, elem_id="diagram-box"):
            gr.HTML((ASSETS / "pipeline.svg").read_text(), elem_id="pipeline-diagram")
        rows = [[e["task"], e["question"], *[c or "—" for c in e["contexts"]], e["answer"]] for e in s.examples]
        self.examples = gr.Dataset(
            label="Examples from the built-in tasks' test split (click one; it also picks that task's checkpoints)",
            components=["textbox"] * len(rows[0]), samples=rows, type="index", elem_id="examples", samples_per_page=12,
            headers=["task", "question", *[f"{a.role} knows" for a in DEFAULT_ROLES.senders], "answer"],
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                self.question = gr.Textbox(label="Question (the receiver sees only this)", lines=2, max_lines=6, elem_id="question",
                                           placeholder="e.g. How many apples does Ann have now?")
                with gr.Row():
                    self.contexts = [
                        gr.Textbox(label=f"{a.role}'s private context (optional)", lines=2, max_lines=4, elem_id=f"ctx-{i}",
                                   info="Only this sender reads it; the receiver never sees it.")
                        for i, a in enumerate(DEFAULT_ROLES.senders)
                    ]
                self.reference = gr.Textbox(label="Reference answer (optional, to mark answers correct or wrong)", elem_id="reference")
            with gr.Column(scale=2):
                self.generator = gr.Dropdown([(c.label(), k) for k, c in s.generators.items()], value=s.default_generator,
                                             label="Parameter generator (TFlow)", elem_id="generator")
                default_static = s.static_for(s.generators[s.default_generator].task)
                self.static = gr.Dropdown([("none · no static adapter", NONE), *[(c.label(), k) for k, c in s.statics.items()]],
                                          value=default_static, label="Static LoRA adapter (ablation)", elem_id="static",
                                          visible=bool(s.statics))
                self.modes = gr.CheckboxGroup(self._mode_choices(default_static), value=self._mode_values(default_static),
                                              label="Modes to run", elem_id="modes", info="Picking checkpoints ticks every available mode.")
                with gr.Accordion("Generation settings", open=False):
                    self.max_new = gr.Slider(1, 256, value=MAX_NEW_TOKENS, step=1, label="Max new tokens (receiver)")
                    self.sender_max_new = gr.Slider(1, 256, value=MAX_NEW_TOKENS, step=1, label="Max new tokens per TextMAS sender message")
                    self.decoding = gr.Radio(["greedy", "sampling"], value="greedy", label="Decoding")
                    self.temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="Temperature (sampling only)")
                    self.top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (sampling only)")
                    self.seed = gr.Number(0, precision=0, label="Seed (sampling only)")
                with gr.Accordion("Role prompts (system prompts of the agents)", open=False):
                    gr.Markdown("The embedded backbone was pretrained with these exact prompts; edits change its behaviour.")
                    self.prompts = [gr.Textbox(a.system_prompt, label=f"{a.role}{' (receiver)' if a is DEFAULT_ROLES.receiver else ' (sender)'}")
                                    for a in (*DEFAULT_ROLES.senders, DEFAULT_ROLES.receiver)]
                self.run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")

    def _compare_tab(self) -> None:
        gr.Markdown("Each column answers the same question in one mode. **Processed tokens** count every token any agent "
                    "reads (prompt) or writes (generated); **KV cache** is the attention cache those tokens occupy.",
                    elem_classes="caption")
        self.views: dict[str, ModeView] = {}
        with gr.Row(equal_height=False):
            for mode in MODES:
                with gr.Column(visible=mode != "static" or bool(self.studio.statics), elem_id=f"col-{mode}", elem_classes="mode-col", min_width=230) as col:
                    gr.Markdown(f"### {viz.MODE_LABELS[mode]}\n{MODE_CAPTIONS[mode]}", elem_classes="mode-head")
                    answer = gr.Textbox(label="Answer", lines=2, interactive=False, elem_id=f"answer-{mode}")
                    info = gr.Markdown("", elem_id=f"info-{mode}")
                    if mode == "textmas":
                        with gr.Accordion("Senders' messages", open=False):
                            self.messages = gr.Markdown(messages_markdown(None), elem_id="textmas-messages")
                self.views[mode] = ModeView(col, answer, info)
        with gr.Row():
            self.chart_tokens = gr.Plot(viz.tokens_figure({}), elem_id="chart-tokens", show_label=False)
            self.chart_time = gr.Plot(viz.time_figure({}), elem_id="chart-time", show_label=False)
            self.chart_savings = gr.Plot(viz.savings_figure({}), elem_id="chart-savings", show_label=False)

    def _perturbation_tab(self) -> None:
        spec = self.studio.spec
        gr.Markdown("The perturbation TFlow generated for the current question: **ΔW = Σᵢ wᵢ·s·Bᵢ·Aᵢ** for every targeted "
                    "linear layer, applied to the receiver only while it answers. Download it to reuse it with PEFT.",
                    elem_classes="caption")
        with gr.Row(equal_height=True):
            self.source = gr.Radio([(viz.MODE_LABELS[m], m) for m in ("tflow", "static")], value="tflow", label="Perturbation of",
                                   elem_id="pert-source", info="Static LoRA: the fixed adapter, when the run included that mode.")
            self.download_peft = gr.DownloadButton("Download as PEFT adapter (.zip)", interactive=False, elem_id="download-peft")
            self.download_raw = gr.DownloadButton("Download raw factors (.safetensors)", interactive=False, elem_id="download-raw")
        self.pert_note = gr.Markdown("*Run TFlow (or Static LoRA) to see its perturbation.*", elem_classes="caption")
        empty = viz.placeholder("Run TFlow to see its perturbation.")
        with gr.Row(equal_height=False):
            with gr.Column():
                self.view = gr.Radio([("fused ΔW", "fused"), ("each sender", "senders"), ("relative to ‖W‖", "relative")],
                                     value="fused", label="Heatmap shows", elem_id="pert-view")
                self.heatmap = gr.Plot(empty, elem_id="pert-heatmap", show_label=False)
            with gr.Column():
                with gr.Row():
                    self.layer = gr.Dropdown(list(range(spec.num_layers)), value=0, label="Spectrum of layer")
                    self.module = gr.Dropdown(list(spec.modules), value=next(iter(spec.modules)), label="Spectrum of module")
                self.spectrum = gr.Plot(empty, elem_id="pert-spectrum", show_label=False)
        with gr.Row():
            self.share = gr.Plot(empty, elem_id="pert-share", show_label=False)
            self.layers = gr.Plot(empty, elem_id="pert-layers", show_label=False)
            self.fusion = gr.Plot(empty, elem_id="pert-fusion", show_label=False)

    def _activations_tab(self) -> None:
        gr.Markdown("**This question:** every sender's hidden state at every question token and every layer, embedded in 2-D "
                    "with UMAP. Hover a point to see its token.", elem_classes="caption")
        self.hidden_note = gr.Markdown("", elem_classes="caption")
        self.hidden_plot = gr.Plot(viz.placeholder("Run TFlow to see the senders' hidden states."), elem_id="hidden-plot", show_label=False)
        gr.Markdown(f"**Across queries:** the perturbation generated for each of {QUERIES_PER_TASK * len(tasks.TASKS)} test "
                    "questions (every task), one point per query. Scattered points mean the generator writes a different "
                    "LoRA for every query (instance-dependent); one tight blob would mean a fixed task adapter.",
                    elem_classes="caption")
        with gr.Row():
            self.features_kind = gr.Radio([("flattened ΔW (random sketch)", "sketch"), ("pooled ‖ΔW‖ per layer × module", "pooled")],
                                          value="sketch", label="Perturbation as a vector")
            self.colour_by = gr.Radio([("task", "task"), ("reference answer", "answer")], value="task", label="Colour by")
            self.queries_btn = gr.Button("Embed the example queries' perturbations", elem_id="queries-btn")
        self.queries_note = gr.Markdown("", elem_classes="caption")
        self.queries_plot = gr.Plot(viz.placeholder("Press the button to embed the per-query perturbations."), elem_id="queries-plot", show_label=False)

    def _history_tab(self) -> None:
        gr.Markdown("The runs made since this page was opened (newest first). Click a row to bring its results back.", elem_classes="caption")
        self.table = gr.Dataframe(headers=["#", "time", "question", "generator", "processed tokens", "answers"], value=[],
                                  interactive=False, wrap=True, elem_id="history-table",
                                  column_widths=["4%", "8%", "28%", "12%", "22%", "26%"])

    # ---------------------------------------------------------------- wiring

    def _wire(self) -> None:
        v = self.views
        inputs = [self.question, *self.contexts, self.reference, self.modes, self.generator, self.static, self.max_new,
                  self.sender_max_new, self.decoding, self.temperature, self.top_p, self.seed, *self.prompts,
                  self.history, self.source, self.view, self.layer, self.module]
        self.run_outputs = [self.status, self.tabs, *self._record_outputs()]
        self.run_btn.click(self.run, inputs, self.run_outputs, api_name="run", show_progress="hidden", concurrency_id="model")
        checkpoint_outputs = [self.header, self.generator, self.static, self.modes, v["static"].column]
        self.examples.click(self.load_example, [self.examples], [self.question, *self.contexts, self.reference, *checkpoint_outputs],
                            api_name="load_example", queue=False)
        self.generator.input(self.select_generator, [self.generator], checkpoint_outputs, api_name="select_generator",
                             queue=False)
        self.static.input(self.select_static, [self.generator, self.static], checkpoint_outputs, api_name="select_static",
                          queue=False)
        controls = [self.current, self.source, self.view, self.layer, self.module]
        for control, name in zip(controls[1:], ("source", "view", "layer", "module")):
            control.input(self.perturbation_view, controls, self._perturbation_outputs(), api_name=f"perturbation_{name}",
                          queue=False)
        q_inputs = [self.generator, self.features_kind, self.colour_by, *self.prompts]
        for trigger, name in ((self.queries_btn.click, "across_queries"), (self.features_kind.input, "across_queries_features"),
                              (self.colour_by.input, "across_queries_colour")):
            trigger(self.across_queries, q_inputs, [self.queries_plot, self.queries_note], api_name=name, concurrency_id="model")
        self.table.select(self.select_history, [self.history, self.source, self.view, self.layer, self.module],
                          [self.question, *self.contexts, self.reference, *self.run_outputs],
                          api_name="history_select", queue=False)
        self.activations_tab.select(self.hidden_states, [self.current], [self.hidden_plot, self.hidden_note], api_name="hidden_states",
                                    concurrency_id="model")
        gr.api(self.ask, api_name="ask", concurrency_id="model")
        gr.api(self.health, api_name="health", queue=False)

    def _perturbation_outputs(self) -> list:
        return [self.source, self.heatmap, self.spectrum, self.share, self.layers, self.fusion, self.pert_note,
                self.download_peft, self.download_raw]

    def _record_outputs(self) -> list:
        columns = [c for m in self.views.values() for c in (m.column, m.answer, m.info)]
        return [self.messages, *columns, *self._perturbation_outputs(), self.chart_tokens, self.chart_time, self.chart_savings,
                self.hidden_plot, self.hidden_note, self.history, self.table, self.current]

    # ---------------------------------------------------------------- checkpoints

    def _mode_choices(self, static: str) -> list[tuple[str, str]]:
        return [(viz.MODE_LABELS[m], m) for m in MODES if m != "static" or static != NONE]

    def _mode_values(self, static: str) -> list[str]:
        return [m for _, m in self._mode_choices(static)]

    def _checkpoint_updates(self, generator: str, static: str) -> list:
        """Header, both dropdowns and the modes (every available one ticked: the choices change with the
        static adapter, and the previous ticks are not read back, which could race with this update)."""
        return [header_html(self.studio, generator), gr.Dropdown(value=generator), gr.Dropdown(value=static),
                gr.CheckboxGroup(choices=self._mode_choices(static), value=self._mode_values(static)),
                gr.Column(visible=static != NONE)]

    def load_example(self, index: int) -> list:
        """Fill the inputs with an example and switch to its task's generator and static adapter."""
        ex = self.studio.examples[int(index)]
        generator = self.studio.generator_for(ex["task"]) or self.studio.default_generator
        static = self.studio.static_for(ex["task"])
        contexts = [c or "" for c in ex["contexts"]]
        return [ex["question"], *contexts, ex["answer"], *self._checkpoint_updates(generator, static)]

    def select_generator(self, generator: str) -> list:
        """A generator was picked: show its provenance and pair the static adapter of its task."""
        return self._checkpoint_updates(generator, self.studio.static_for(self.studio.generators[generator].task))

    def select_static(self, generator: str, static: str) -> list:
        return self._checkpoint_updates(generator, static)

    # ---------------------------------------------------------------- run

    def _request(self, question: str, contexts: list[str], reference: str, modes: list[str], generator: str, static: str,
                 max_new: float, sender_max_new: float, do_sample: bool, temperature: float, top_p: float, seed: float,
                 prompts: list[str]) -> RunRequest:
        settings = GenerationSettings(
            max_new_tokens=int(max_new), sender_max_new_tokens=int(sender_max_new), do_sample=do_sample,
            temperature=float(temperature), top_p=float(top_p), seed=int(seed or 0), timeout_s=RUN_TIMEOUT_S,
        )
        return make_request(self.studio, question, contexts, reference, modes, generator, static, settings, make_roles(prompts))

    def run(self, question: str, ctx0: str, ctx1: str, reference: str, modes: list[str], generator: str, static: str,
            max_new: float, sender_max_new: float, decoding: str, temperature: float, top_p: float, seed: float,
            p0: str, p1: str, p2: str, history: list[RunRecord], source: str, view: str, layer: int, module: str) -> Iterator[dict]:
        """Stream a run: status and columns while it runs, then every chart, the history and the downloads."""
        try:
            req = self._request(question, [ctx0, ctx1], reference, modes, generator, static, max_new, sender_max_new,
                                decoding == "sampling", temperature, top_p, seed, [p0, p1, p2])
        except ValueError as e:
            gr.Warning(str(e))
            yield {self.status: f"⚠ **Cannot run:** {e}. Nothing was changed; fix the input and press Run again."}
            return
        number = history[-1].number + 1 if history else 1
        record = RunRecord(number, time.strftime("%H:%M:%S"), req, warning=context_warning(self.studio, req))
        if record.warning:
            gr.Warning(record.warning)
        live, events, stop = Live(record), queue.Queue(), threading.Event()
        worker = threading.Thread(target=execute, args=(self.studio.pipeline(generator, static), req, events.put, stop), daemon=True)
        worker.start()
        yield {self.tabs: gr.Tabs(selected="compare"), **self._live_updates(live, first=True)}
        try:
            last = time.monotonic()
            while not live.done:
                try:
                    live.apply(events.get(timeout=YIELD_EVERY_S))
                except queue.Empty:
                    pass
                if time.monotonic() - last >= YIELD_EVERY_S:
                    last = time.monotonic()
                    yield self._live_updates(live)
            export_perturbations(self.studio, record)
            history = [*history, record][-HISTORY_LIMIT:]
            yield self._record_updates(record, history, source, view, layer, module)
        finally:
            stop.set()

    def _live_updates(self, live: Live, first: bool = False) -> dict:
        out: dict = {self.status: status_markdown(live)}
        for mode, view in self.views.items():
            shown = mode in live.record.request.modes
            result = live.record.results.get(mode)
            if first:
                out[view.column] = gr.Column(visible=shown)
            if shown:
                out[view.answer] = result.answer if result else live.partial.get(mode, "")
                out[view.info] = live_markdown(live, mode)
        if first or "textmas" in live.record.results:
            out[self.messages] = messages_markdown(live.record.results.get("textmas"))
        return out

    def _record_updates(self, record: RunRecord, history: list[RunRecord], source: str, view: str, layer: int, module: str) -> dict:
        results = record.results
        return {
            **self._live_updates(Live(record, done=True), first=True),
            **dict(zip(self._perturbation_outputs(), self.perturbation_view(record, source, view, layer, module))),
            self.chart_tokens: viz.tokens_figure(results), self.chart_time: viz.time_figure(results),
            self.chart_savings: viz.savings_figure(results), self.hidden_note: "",
            self.hidden_plot: viz.placeholder(f"Open this tab to embed the hidden states of run #{record.number}."),
            self.history: history, self.table: history_rows(history), self.current: record,
        }

    def perturbation_view(self, record: RunRecord | None, source: str, view: str, layer: int, module: str) -> list:
        """Every figure of the Perturbation tab for one source (TFlow or Static LoRA) of a record."""
        sources = [m for m in ("tflow", "static") if record is not None and m in record.results]
        if not sources:
            empty = viz.placeholder("Run TFlow (or Static LoRA) to see its perturbation.")
            return [gr.Radio(), empty, empty, empty, empty, empty, "*Run TFlow (or Static LoRA) to see its perturbation.*",
                    gr.DownloadButton(interactive=False), gr.DownloadButton(interactive=False)]
        source = source if source in sources else sources[0]
        pert = record.results[source].perturbation
        layer = min(int(layer or 0), pert.spec.num_layers - 1)
        module = module if module in pert.spec.modules else next(iter(pert.spec.modules))
        zip_path, raw_path = record.downloads[source]
        zero = "" if float(viz.delta_norms(pert).max()) > 0 else " **The perturbation is exactly zero (untrained generator).**"
        note = (f"Run #{record.number}, {viz.MODE_LABELS[source]}: {len(pert.senders)} sender(s) × rank {pert.rank}, "
                f"scaling s = α/r = {pert.scaling:g}.{zero} The PEFT adapter stacks the senders along the rank axis "
                f"(rank {pert.rank * len(pert.senders)}), so it reproduces the fused ΔW exactly.")
        return [
            gr.Radio(value=source),
            viz.perturbation_heatmap(pert, view, self.studio.weight_norms),
            viz.spectrum_figure(pert, layer, module),
            viz.sender_share_figure(pert),
            viz.layer_weights_figure(pert.layer_weights),
            viz.fusion_weights_figure(pert.weights, pert.senders),
            note,
            gr.DownloadButton(value=zip_path, interactive=True),
            gr.DownloadButton(value=raw_path, interactive=True),
        ]

    def hidden_states(self, record: RunRecord | None) -> tuple:
        """The current run's sender hidden states, embedded when the Activations tab is opened (once per run)."""
        if record is None or "tflow" not in record.results:
            return viz.placeholder("Run TFlow to see the senders' hidden states."), ""
        if record.hidden is None:
            record.hidden = viz.hidden_states_figure(record.results["tflow"].sender_states)
        return record.hidden

    def across_queries(self, generator: str, kind: str, colour_by: str, p0: str, p1: str, p2: str) -> tuple:
        """Embed the per-query perturbations of the example questions with UMAP."""
        try:
            features, batch = self.studio.query_features(generator, kind, make_roles([p0, p1, p2]))
        except ValueError as e:
            gr.Warning(str(e))
            return gr.Plot(), f"⚠ {e}"
        fig, note = viz.queries_figure(features, [e.task for e in batch], [e.answer for e in batch],
                                       [e.question for e in batch], colour_by)
        if not self.studio.generators[generator].trained:
            note = "⚠ Untrained generator: every perturbation is zero, so all queries coincide. " + note
        return fig, note

    def select_history(self, history: list[RunRecord], source: str, view: str, layer: int, module: str, evt: gr.SelectData) -> dict:
        """Bring a past run back: its inputs, answers, charts, perturbation and activations."""
        record = list(reversed(history))[evt.index[0]]
        req = record.request
        updates = self._record_updates(record, history, source, view, layer, module)
        updates[self.status] = f"Showing run #{record.number} from {record.started} again (from History).\n\n" + updates[self.status]
        return {self.question: req.question, **dict(zip(self.contexts, req.contexts)), self.reference: req.reference,
                self.tabs: gr.Tabs(selected="compare"), **updates}

    def health(self) -> dict:
        """Liveness and integrity: what is loaded, whether any perturbation is applied now, the weights' hash."""
        s = self.studio
        return {"status": "ok", "backbone": s.backbone.name, "device": str(s.backbone.device), "dtype": str(s.backbone.dtype),
                "generators": {k: c.describe() for k, c in s.generators.items()}, "static_adapters": list(s.statics),
                "patched": is_patched(s.backbone.model), "weights_sha256": weights_sha256(s.backbone.model)}

    def ask(self, question: str, contexts: list[str] | None = None, modes: list[str] | None = None,
            generator: str | None = None, static: str | None = None, reference: str = "", max_new_tokens: int = MAX_NEW_TOKENS,
            do_sample: bool = False, temperature: float = 1.0, seed: int = 0) -> dict:
        """Answer a question in several modes (default: all available) and return answers, tokens and timings per mode."""
        generator = generator or self.studio.default_generator
        static = static or self.studio.static_for(self.studio.generators.get(generator, self.studio.generators[NONE]).task)
        modes = modes or [m for _, m in self._mode_choices(static)]
        try:
            req = self._request(question, list(contexts or ["", ""]), reference, modes, generator, static, max_new_tokens,
                                max_new_tokens, do_sample, temperature, 1.0, seed, [a.system_prompt for a in (*DEFAULT_ROLES.senders, DEFAULT_ROLES.receiver)])
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from e
        live, stop = Live(RunRecord(0, "", req)), threading.Event()
        execute(self.studio.pipeline(generator, static), req, live.apply, stop)
        return {"generator": generator, "static": static, "warning": context_warning(self.studio, req),
                "errors": live.record.errors, "results": {m: result_summary(r, req.reference) for m, r in live.record.results.items()}}


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes: proves the shared backbone is left unchanged by runs."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def result_summary(r: RunResult, reference: str) -> dict:
    """A JSON-friendly summary of one mode's result."""
    return {
        "answer": r.answer,
        "correct": tasks.is_correct(r.answer, reference) if reference else None,
        "tokens": r.usage.total_tokens,
        "tokens_by_agent": {k: {"prompt": u.prompt_tokens, "generated": u.generated_tokens} for k, u in r.usage.by_agent.items()},
        "wall_s": r.timings["total"],
        "timings_s": r.timings,
        "kv_cache_bytes": viz.total_kv_bytes(r),
        "stop_reason": r.stop_reason,
        "messages": r.messages,
    }


def history_rows(history: list[RunRecord]) -> list[list]:
    """The History table, newest first."""
    rows = []
    for rec in reversed(history):
        answers = " · ".join(f"{viz.MODE_LABELS[m]}: {r.answer[:24]}" for m, r in rec.results.items())
        tokens = " · ".join(f"{viz.MODE_LABELS[m]} {r.usage.total_tokens}" for m, r in rec.results.items())
        rows.append([rec.number, rec.started, rec.request.question[:80], rec.request.generator, tokens,
                     answers or "; ".join(rec.errors.values())[:80]])
    return rows


def build_app(cfg: StudioConfig) -> tuple[gr.Blocks, Studio]:
    """Load the model and checkpoints and build the page (not launched)."""
    studio = Studio(cfg)
    studio.warm_up()
    demo = StudioUI(studio).build()
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.max_queue)
    return demo, studio


def theme() -> gr.themes.Base:
    """A calm theme with local fonts only (no requests to font CDNs)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="teal", neutral_hue="slate",
                          font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(cfg: StudioConfig, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Build and serve the app; UMAP's numba kernels compile in the background meanwhile."""
    threading.Thread(target=viz.warm_umap, name="warm-umap", daemon=True).start()
    demo, studio = build_app(cfg)
    try:
        demo.launch(server_name=host, server_port=port, share=False, show_error=False, theme=theme(),
                    css_paths=[ASSETS / "style.css"], allowed_paths=[str(studio.downloads)], footer_links=["api"])
    finally:
        studio.close()
