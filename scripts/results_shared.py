"""The shared-question sections of checkpoints/RESULTS.md (scripts/build_real.sh's candidates, shared-* steps): the
candidate tasks, the main table with its paired differences, the instance-level step and its fresh-seed replay.
Imported by scripts/results_md.py."""
from __future__ import annotations

import json
from pathlib import Path

CKPT = Path(__file__).resolve().parents[1] / "checkpoints"


def candidates() -> list[str]:
    """SmolLM2 alone on candidate procedural tasks (build_real.sh's candidates step): which leave room to rise."""
    paths = sorted((CKPT / "results" / "candidates").glob("*.json"))
    if not paths:
        return []
    rows = []
    for path in paths:
        report = json.loads(path.read_text())
        r = report["results"]["single"]
        lo, hi = r["accuracy_ci95"]
        rows.append(f"| {report['task']} | {100 * r['accuracy']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] | "
                    f"{r['generated_tokens']:.0f} | {r['seconds_per_query']:.2f} | {r['n']} |")
    return ["- candidates for the paper's shared-question setting on SmolLM2-135M-Instruct (`bash "
            "scripts/build_real.sh candidates`; Single, greedy, the Executor prompt, 50 test items of each "
            "reasoning-gym task, seed 0, batch 8; reports in `checkpoints/results/candidates/`): tasks with Single "
            "between about 10% and 60% leave room to rise without being hopeless.", "",
            "| task | Single % [95% interval] | tokens generated | s / query | n |",
            "| --- | ---: | ---: | ---: | ---: |", *rows, ""]


def by_terms(report: dict) -> list[str]:
    """A procedural task whose items record their number of terms (reasoning-gym's chain_sum): every mode's accuracy
    per count. Distinct items run out, so a long draw is mostly of the larger counts."""
    from tflow.tasks import examples  # draws the report's items again (seeded): reasoning-gym, no model

    if "chain_sum" not in report["task"]:
        return []
    items = examples(report["task"], "test", report["limit"], report["seed"])
    terms = [e.grading["entry"]["metadata"]["num_terms"] for e in items]
    counts = sorted(set(terms))
    cells = []
    for mode, r in report["results"].items():
        per = {k: [i["correct"] for i, t in zip(r["items"], terms) if t == k] for k in counts}
        cells.append(f"{mode} " + " / ".join(f"{100 * sum(v) / len(v):.0f}%" for v in per.values()))
    said = " and ".join(f"{terms.count(k)} with {k} terms" for k in counts)
    return [f"{report['task']}'s {len(items)} items: {said} (distinct items run out: the test split has few "
            f"two-term sums). Accuracy on each: " + ", ".join(cells) + ".", ""]


def shared() -> list[str]:
    """The paper's shared-question setting on SmolLM2 (build_real.sh's shared-evaluate and shared-textmas steps): every
    mode per task, and the paired differences that decide whether TFlow's gain is communication."""
    paths = [p for _, p in _shared_reports("smollm2-shared") if p.is_file()]
    if not paths:
        return []
    rows, pairs, splits = [], [], []
    for path in paths:
        report = json.loads(path.read_text())
        splits += by_terms(report)
        extra = path.with_name(path.stem + "-textmas.json")
        results = dict(report["results"])
        paired = dict(report.get("paired", {}))
        if extra.is_file():
            other = json.loads(extra.read_text())
            results["textmas"] = other["results"]["textmas"]
            n = other["results"]["textmas"]["n"]
            label = "tflow_vs_textmas" + (f" (first {n} items)" if n != report["results"]["tflow"]["n"] else "")
            paired[label] = other["paired"]["tflow_vs_textmas"]
        for mode, r in results.items():
            lo, hi = r["accuracy_ci95"]
            rows.append(f"| {report['task']} | {mode} | {100 * r['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                        f"{r['tokens_per_query']:.0f} | {r['paper_tokens_per_query']:.0f} | "
                        f"{r['seconds_per_query']:.2f} | {r['n']} |")
        pairs += [f"| {report['task']} | {name.replace('tflow_vs_', 'TFlow − ')} | {pair_cells(v)} |"
                  for name, v in paired.items()]
    return ["## The paper's shared-question setting on SmolLM2-135M-Instruct", "",
            "`bash scripts/build_real.sh shared shared-static shared-evaluate shared-textmas`: two frozen senders "
            "(Strategist, Knowledge Extractor) read the receiver's own question, no private context; one generator "
            "and one static LoRA (same targets, rank, data, steps) trained on both tasks mixed; 500 held-out items "
            "per task (seed 1), greedy. Tokens: every agent's processed tokens / the paper's count (TFlow's receiver "
            "only). tflow_shuffled: each item's senders read the next item; tflow_only_*: that sender's "
            "perturbation alone.", "",
            "| task | mode | accuracy % [95% interval] | tokens / query | paper tokens / query | s / query | n |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |", *rows, "",
            "Paired on the same items: the difference in points with its 95% paired bootstrap interval, McNemar's "
            "exact test, and the discordant items (TFlow right only / the other right only).", "",
            "| task | comparison | points [95% interval] | McNemar p | discordant |",
            "| --- | --- | ---: | ---: | ---: |", *pairs, "", *splits]


def _shared_reports(prefix: str) -> list[tuple[str, Path]]:
    """Each shared-question task with its report `<prefix>-<task's short name>.json` (which may not exist yet)."""
    from tflow.tasks.procedural import SHARED_TASKS

    return [(t, CKPT / "results" / f"{prefix}-{t.split(':')[1]}.json") for t in SHARED_TASKS]


def _row(label: str, r: dict) -> str:
    lo, hi = r["accuracy_ci95"]
    return (f"| {label} | {100 * r['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {r['tokens_per_query']:.0f} | "
            f"{r['seconds_per_query']:.2f} | {r['n']} |")


def _pair(label: str, a: dict, b: dict) -> str:
    """Mode run `a` against run `b` on the same items (matched by item id): the paired difference."""
    return f"| {label} | {paired_cells(a, b)} |"


def paired_cells(a: dict, b: dict) -> str:
    """The cells of mode run `a` against mode run `b` on the same items, matched by item id."""
    from tflow.tools.stats import paired

    theirs = {i["id"]: i["correct"] for i in b["items"]}
    return pair_cells(paired([i["correct"] for i in a["items"]], [theirs[i["id"]] for i in a["items"]]))


def pair_cells(v: dict) -> str:
    """A paired comparison's table cells: points [95% interval] | McNemar p | discordant items."""
    lo, hi = (100 * x for x in v["difference_ci95"])
    return f"{100 * v['difference']:+.1f} [{lo:+.1f}, {hi:+.1f}] | {v['mcnemar_p']:.2g} | {v['a_only']} / {v['b_only']}"


MODE_TABLE = ["| mode | accuracy % [95% interval] | tokens / query | s / query | n |",
              "| --- | ---: | ---: | ---: | ---: |"]
PAIR_TABLE = ["| comparison | points [95% interval] | McNemar p | discordant |", "| --- | ---: | ---: | ---: |"]


def instance_step() -> list[str]:
    """The shared-question setting's step towards a per-query perturbation (build_real.sh's shared-copy and
    shared-copy-evaluate steps): the copy-path generator against the first one, on the table's items."""
    out = []
    for (task, before), (_, after) in zip(_shared_reports("smollm2-shared"), _shared_reports("smollm2-shared-copy")):
        if not (before.is_file() and after.is_file()):
            continue
        b, a = (json.loads(p.read_text())["results"] for p in (before, after))
        out += [f"{task} (seed 1, the table's items):", "", *MODE_TABLE,
                _row("Single", b["single"]), _row("TFlow, first generator", b["tflow"]),
                _row("TFlow, copy path", a["tflow"]), _row("static LoRA", a["static"]),
                _row("copy path, shuffled senders", a["tflow_shuffled"]), "", *PAIR_TABLE,
                _pair("copy path − first generator", a["tflow"], b["tflow"]),
                _pair("copy path − Single", a["tflow"], b["single"]),
                _pair("copy path − static LoRA", a["tflow"], a["static"]),
                _pair("copy path − shuffled senders", a["tflow"], a["tflow_shuffled"]), ""]
    if not out:
        return []
    return ["## The shared-question setting: one step towards a per-query perturbation", "",
            "`bash scripts/build_real.sh shared-copy shared-copy-evaluate`: the shipped generator's recipe with the "
            "copy path (`--copy 1`), everything else unchanged, on the same 500 items per task; Single and the first "
            "generator are the table's runs (greedy: the same answers), paired by item.", "", *out]


def replay() -> list[str]:
    """The step's recipe replayed once, unchanged, on a fresh seed (build_real.sh's shared-copy-replay step); where the
    task's test split is small, the items the development seed also drew are set apart."""
    from tflow.tasks import examples  # draws the items again (seeded): reasoning-gym, no model

    out = []
    for task, path in _shared_reports("smollm2-shared-replay"):
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        r = report["results"]
        seen = {e.question for e in examples(task, "test", 500, 1)}
        fresh = [e.question not in seen for e in examples(task, "test", report["limit"], report["seed"])]
        out += [f"{task} (seed {report['seed']}; {sum(fresh)} of its {len(fresh)} items are not among seed 1's):", "",
                *MODE_TABLE, *(_row(mode, r[mode]) for mode in r), "", *PAIR_TABLE,
                *(_pair(f"TFlow − {mode}", r["tflow"], r[mode]) for mode in r if mode != "tflow"), ""]
        if not all(fresh):
            new = {mode: {"items": [i for i, f in zip(x["items"], fresh) if f]} for mode, x in r.items()}
            cells = [f"{mode} {100 * sum(i['correct'] for i in x['items']) / sum(fresh):.1f}%"
                     for mode, x in new.items()]
            out += [f"On the {sum(fresh)} items seed 1 did not draw: " + ", ".join(cells) + ".", "", *PAIR_TABLE,
                    *(_pair(f"TFlow − {mode}", new["tflow"], new[mode]) for mode in new if mode != "tflow"), ""]
    if not out:
        return []
    return ["## The shared-question step, replayed on a fresh seed", "",
            "`bash scripts/build_real.sh shared-copy-replay`: the copy-path generator and the static LoRA, unchanged, "
            "on 500 test items per task of seed 2, which no development run looked at; run once, reported as it came.",
            "", *out]
