"""scripts/decode_profile.py: decoding steps per path (plain, low rank, merged) side by side, and its bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "decode_profile.py"


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--model", str(ROOT / "checkpoints" / "tiny-qwen3"),
                           "--threads", "1", *argv], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_each_path_reports_its_step_beside_the_first_and_the_first_stays_at_the_top(tmp_path):
    out = tmp_path / "decode.json"
    done = _run("--tokens", "4", "--repeats", "1", "--paths", "plain,lowrank,merged", "--rank", "2", "--top", "3",
                "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert list(report["paths"]) == ["plain", "lowrank", "merged"]
    for path, row in report["paths"].items():
        assert row["step_s"] > 0 and row["prefill_s"] > 0 and row["bytes_per_s"] > 0
        assert len(row["profile"]["top_ops"]) == 3 and row.get("rank") == (None if path == "plain" else 2)
    # the single-path report's top-level fields are the first path's (earlier JSON reads the same)
    assert report["step_s"] == report["paths"]["plain"]["step_s"] and "profile" in report
    assert "x plain)" in done.stdout  # each later path's step over the first's


@pytest.mark.parametrize("argv, says", [
    (["--paths", "plain,fused"], "--paths: distinct names from plain, lowrank, merged"),
    (["--paths", "plain,plain"], "--paths: distinct names from plain, lowrank, merged"),
    (["--tokens", "1"], "--tokens must be at least 2"),
    (["--shape", "qwen3-9b"], "unknown shape 'qwen3-9b'"),
])
def test_bad_paths_counts_or_shapes_are_one_line_and_exit_2(argv, says):
    done = _run(*argv)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
