"""Render checkpoints/RESULTS.md from the evaluation JSON files that scripts/build_embedded.sh writes.

    python scripts/results_md.py   # reads checkpoints/results/*.json and checkpoints/**/card / meta files
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tflow.evaluate import format_table  # noqa: E402

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
            meta = json.loads(meta_file.read_text())
            meta = meta.get("meta", meta)
            lines.append(f"- {kind[:-1] if kind == 'generators' else 'static LoRA'} `{d.relative_to(ROOT)}`: task {meta['task']}, "
                         f"{meta['steps']} steps, seed {meta['seed']}, {meta['seconds'] / 60:.1f} wall-clock minutes, dev accuracy "
                         f"{100 * meta['dev_accuracy']:.0f}% ({meta['dev_set']}).")
    return lines


def main() -> None:
    out = ["# Embedded results", "",
           "Produced by `bash scripts/build_embedded.sh` (the evaluate step); every table below is "
           "`python -m tflow.evaluate` output on 300 held-out test queries, greedy decoding, seed 0, "
           "on a 2-core CPU. Regenerate this file with `python scripts/results_md.py`.", ""]
    for path in sorted((CKPT / "results").glob("*.json")):
        report = json.loads(path.read_text())
        cmd = report.get("command", "")
        out += [f"## {report['task']}", "", f"`{cmd}`" if cmd else "", "", format_table(report["task"], report["results"]), ""]
    out += ["## Reading the tables", "",
            "- relay / split: the facts sit only in the senders' contexts, so Single and the static LoRA cannot "
            "answer; shuffled conditions (another query's sender states) and one sender alone fail too, so the "
            "answer travels through the per-query perturbation.",
            "- arith: everyone reads the same question. Perturbed, the receiver works the problem out step by step "
            "instead of answering at once; the static LoRA and shuffled conditions do as well as TFlow, so this "
            "gain is a behaviour, not per-query information.",
            "- relay's training length was chosen with `scripts/relay_validation.py` (held-out fact values from "
            "other seeds, disjoint from these test queries), never on this table.", ""]
    out += provenance()
    (CKPT / "RESULTS.md").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
