"""The Studio's results as text: the status line, each mode's metrics, the header, the history rows and
the JSON summary of a result. Pure functions of the worker's records; nothing here imports gradio.
"""
from __future__ import annotations

import html
from pathlib import Path

from .. import tasks, viz
from ..agents import Backbone
from ..modes import RunResult
from .registry import Studio
from .worker import Live, RunRecord

STAGE_SHORT = {"senders": "messages", "sender_pass": "sender pass", "generator": "generator", "receiver": "receiver"}
STAGE_TEXT = {("tflow", "senders"): "sender pass", ("tflow", "generator"): "parameter generator", ("textmas", "senders"): "senders write"}
STOP_REASONS = {"eos": "end of answer", "length": "token limit", "stopped": "stopped", "timeout": "time limit"}


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


# The release's accounting, to set numbers beside the paper's Table 1: it does not count TFlow's senders.
PAPER_COUNT = {"tflow": "as the paper counts: receiver only, senders' prefill not counted"}


def result_markdown(r: RunResult, reference: str) -> str:
    """The verdict and the numbers under a mode's answer."""
    stages = " · ".join(f"{STAGE_SHORT[k]} {fmt_ms(v)}" for k, v in r.timings.items() if k in STAGE_SHORT)
    kv_total = viz.total_kv_bytes(r)
    kv_split = f"<br><small>receiver {fmt_bytes(r.kv_cache_bytes)}, senders {fmt_bytes(kv_total - r.kv_cache_bytes)}</small>" if kv_total != r.kv_cache_bytes else ""
    rows = [
        ("processed tokens", f"<b>{r.usage.total_tokens}</b><br><small>{r.usage.prompt_tokens} prompt + {r.usage.generated_tokens} generated</small>"),
        ("paper's count", f"<b>{r.paper_tokens}</b><br><small>{PAPER_COUNT.get(r.mode, 'every agent')}</small>"),
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
    agents = r.usage.by_agent
    mixed = len({u.backbone for u in agents.values()}) > 1  # senders on their own backbone: say which wrote each

    def who(role: str) -> str:
        return f" ({html.escape(Path(agents[role].backbone).name)})" if mixed and role in agents else ""

    return "\n\n".join(f"**{role}**{who(role)}: {html.escape(msg) or '*(empty)*'}" for role, msg in r.messages.items())


def _backbone_label(bb: Backbone) -> str:
    params = bb.num_parameters
    size = f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.2f} M"
    return f"{Path(bb.name).name or bb.name} ({size} parameters, {bb.num_layers} layers, hidden {bb.hidden_size})"


def header_html(studio: Studio, generator: str) -> str:
    """The Studio's title and chips: the receiver, the senders' backbone of `generator`, device, precision, the generator."""
    bb, ck = studio.backbone, studio.generators[generator]
    senders = studio.senders_of(generator)
    chips = [("receiver", _backbone_label(bb)), ("senders", "the receiver, role-prompted" if senders is bb else _backbone_label(senders)),
             ("device", str(bb.device)), ("dtype", str(bb.dtype).removeprefix("torch."))]
    chip_html = "".join(f'<span class="chip"><b>{k}</b> {html.escape(v)}</span>' for k, v in chips)
    if ck.trained:
        gen = f'<span class="chip gen"><b>generator</b> {ck.key}: {ck.describe()}</span>'
    else:
        gen = '<span class="chip warn"><b>⚠ untrained generator: perturbation is zero</b> (TFlow answers like Single)</span>'
    notes = "".join(f'<div class="note">{html.escape(n)}</div>' for n in studio.notes)
    return (f'<div id="studio-header"><div class="title"><h1>TFlow Studio</h1>'
            f'<span class="tagline">agents that talk through weights, not words</span></div>'
            f'<div class="chips">{chip_html}{gen}</div>{notes}</div>')


def result_summary(r: RunResult, reference: str) -> dict:
    """A JSON-friendly summary of one mode's result."""
    return {
        "answer": r.answer,
        "correct": tasks.is_correct(r.answer, reference) if reference else None,
        "tokens": r.usage.total_tokens,
        "paper_tokens": r.paper_tokens,  # the release's accounting (TFlow: the receiver only)
        "tokens_by_agent": {k: {"prompt": u.prompt_tokens, "generated": u.generated_tokens, "backbone": u.backbone,
                                "parameters": u.parameters, "kv_cache_bytes": u.kv_cache_bytes} for k, u in r.usage.by_agent.items()},
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

