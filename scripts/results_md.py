"""Render checkpoints/RESULTS.md from the evaluation JSON files that scripts/build_embedded.sh writes.

    python scripts/results_md.py   # reads checkpoints/results/*.json and checkpoints/**/card / meta files
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from safetensors import safe_open


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tflow.evaluate import format_table  # noqa: E402
from tflow.generators import ARCHES  # noqa: E402
from tflow.train import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints"


def provenance() -> list[str]:
    card = json.loads((CKPT / "tiny-qwen3" / "card.json").read_text())
    lines = ["## Provenance", "",
             f"- backbone `checkpoints/tiny-qwen3`: {card['parameters']:,} parameters, pretrained from scratch in "
             f"{len(card['stages'])} stages, {sum(s['seconds'] for s in card['stages']) / 60:.0f} wall-clock minutes in all on 2 CPU cores "
             f"(stages and their data mixes in `card.json`)."]
    for kind in ("generators", "static"):
        for d in sorted((CKPT / kind).glob("*")):
            meta_file = d / ("generator_config.json" if kind == "generators" else "training.json")
            card = json.loads(meta_file.read_text())
            meta = card.get("meta", card)
            what = f"generator ({card.get('arch', 'grid')} architecture)" if kind == "generators" else "static LoRA"
            lines.append(f"- {what} `{d.relative_to(ROOT)}`: task {meta['task']}, "
                         f"{meta['steps']} steps, seed {meta['seed']}, {meta['seconds'] / 60:.1f} wall-clock minutes, dev accuracy "
                         f"{100 * meta['dev_accuracy']:.0f}% ({meta['dev_set']}).")
    return lines


def parameters(generator_dir: Path) -> int:
    with safe_open(str(generator_dir / "generator.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def train_command(card: dict) -> str:
    """The `python -m tflow.train` flags that differ from the defaults, read back from the checkpoint's record."""
    cfg, arch = card["meta"]["config"], card.get("arch", "grid")
    defaults, sizes = asdict(TrainConfig()), asdict(ARCHES[arch].config_class())
    flags = [f"--task {cfg['task']}"] + ([f"--arch {arch}"] if arch != "grid" else [])
    flags += [f"--{k.replace('_', '-')} {v}" for k, v in cfg.items() if k in defaults and k not in ("task", "arch", "out", "generator") and v != defaults[k]]
    flags += [f"--{k.replace('_', '-')} {v}" for k, v in cfg["generator"].items() if v != sizes[k]]
    return "python -m tflow.train " + " ".join(flags)


def architectures() -> list[str]:
    """Ours (grid) beside the paper's (release) on the tasks where both were trained and evaluated."""
    lines = []
    for path in sorted((CKPT / "results").glob("*-release.json")):
        task = path.stem.removesuffix("-release")
        ours = CKPT / "results" / f"{task}.json"
        if not ours.is_file():
            continue
        lines += [f"### {task}: the paper's generator architecture beside ours", "",
                  "| architecture | generator | parameters | steps | TFlow accuracy % | shuffled % | swapped fact followed % | trained with |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for report in (json.loads(ours.read_text()), json.loads(path.read_text())):
            gen = ROOT / report["generator"]
            card = json.loads((gen / "generator_config.json").read_text())
            r = report["results"]
            cells = [f"{100 * r[m]['accuracy']:.1f}" if m in r else "-" for m in ("tflow", "tflow_shuffled", "tflow_swapped_fact")]
            lines.append(f"| {card.get('arch', 'grid')} | `{report['generator']}` | {parameters(gen):,} | {card['meta']['steps']} | "
                         + " | ".join(cells) + f" | `{train_command(card)}` |")
        lines.append("")
    return lines


def main() -> None:
    out = ["# Embedded results", "",
           "Produced by `bash scripts/build_embedded.sh` (the evaluate step); every table below is "
           "`python -m tflow.evaluate` output on 300 held-out test queries, greedy decoding, seed 0, "
           "on a 2-core CPU. Regenerate this file with `python scripts/results_md.py`.", ""]
    for path in sorted((CKPT / "results").glob("*.json"), key=lambda p: p.stem):
        report = json.loads(path.read_text())
        cmd = report.get("command", "")
        out += [f"## {path.stem}", "", f"`{cmd}`" if cmd else "", "", format_table(report["task"], report["results"]), ""]
    out += architectures()
    out += ["## Reading the tables", "",
            "- relay / split: the facts sit only in the senders' contexts, so Single and the static LoRA cannot "
            "answer; shuffled conditions (another query's sender states) and one sender alone fail too, so the "
            "answer travels through the per-query perturbation.",
            "- arith: everyone reads the same question. Perturbed, the receiver works the problem out step by step "
            "instead of answering at once; the static LoRA and shuffled conditions do as well as TFlow, so this "
            "gain is a behaviour, not per-query information.",
            "- relay's training length was chosen with `scripts/relay_validation.py` (held-out fact values from "
            "other seeds, disjoint from these test queries), never on this table.",
            "- relay-release: the paper's generator architecture (`--arch release`) at about the size of ours, trained "
            "with the same steps, learning rate, batch and seed. Its table has the paper's accounting beside ours: "
            "'paper tokens' counts only TFlow's receiver (the senders' prefill is not counted), every agent elsewhere.", ""]
    out += provenance()
    (CKPT / "RESULTS.md").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
