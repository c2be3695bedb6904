"""The benchmark CLI runs end to end and reports the documented ratios (a smoke run with tiny
lengths; performance itself is read from the benchmark's output, never asserted on timings)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tflow.tools.bench import main

ROOT = Path(__file__).resolve().parents[2]


def test_shape_workload_reports_ratios_and_equal_receiver_prefill(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(
        [
            "--workload",
            "shape",
            "--model",
            str(ROOT / "checkpoints" / "tiny-qwen3"),
            "--layers",
            "1",
            "-M",
            "6",
            "-R",
            "4",
            "--question-tokens",
            "8",
            "--queries",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["host"]["threads"] == 1 and report["host"]["cpu_count"] >= 1  # where the numbers were measured
    ratios = report["ratios"]
    assert {
        "tflow_over_textmas_time",
        "tflow_over_textmas_tokens",
        "tflow_over_single_time",
        "per_token_overhead",
    } <= set(ratios)
    modes = report["shape"]["modes"]
    assert modes["textmas"]["generated_tokens"] == 2 * 6 + 4 and modes["tflow"]["generated_tokens"] == 4  # EOS ignored
    assert ratios["tflow_receiver_prefill_equals_single"] is True
    assert modes["textmas"]["receiver_prefill_tokens"] > modes["single"]["receiver_prefill_tokens"]
    assert set(modes["tflow"]["stages_median"]) == {"sender_pass", "generator", "receiver", "total"}
    # each TextMAS message reaches the receiver as exactly M tokens (words that re-tokenise to themselves)
    assert (
        ratios["textmas_messages_reach_receiver_exactly"] is True
        and ratios["textmas_message_tokens_in_receiver_prompt"] == 2 * 6
    )
    config = report["shape"]["config"]
    assert config["shape"] == "qwen3-0.6b" and config["vocab"] == 151_936 and config["hidden"] == 1024
    bw = report["shape"]["bandwidth"]
    assert bw["weight_bytes_per_token"] > 151_936 * 1024 * 4  # the full LM head is read every token
    assert all(bw[m]["s_per_token"] > 0 and bw[m]["bytes_per_s"] > 0 for m in ("single", "textmas", "tflow"))
    for m in ("single", "textmas", "tflow"):  # the decoding steps alone: the prefill (and any merge) left out
        r = bw[m]
        assert r["decode_s_per_token"] > 0 and r["decode_bytes_per_s"] == pytest.approx(
            (bw["weight_bytes_per_token"] + r["kv_bytes_per_token"]) / r["decode_s_per_token"])
        assert r["decode_fraction_of_copy_bandwidth"] == pytest.approx(r["decode_bytes_per_s"] / bw["copy_bytes_per_s"])
    assert len(modes["tflow"]["seconds"]) == 1 and ratios["slowest_tflow_over_single_median"] > 0
    # the paper's accounting: TFlow's receiver alone (its prompt is Single's), TextMAS every agent
    assert modes["tflow"]["paper_tokens"] == modes["single"]["paper_tokens"] < modes["tflow"]["processed_tokens"]
    assert modes["textmas"]["paper_tokens"] == modes["textmas"]["processed_tokens"]
    assert ratios["tflow_over_textmas_paper_tokens"] < ratios["tflow_over_textmas_tokens"]
    out = capsys.readouterr()
    assert "ratios:" in out.out and "paper tokens" in out.out and "distance to the memory-bandwidth limit" in out.out
    assert "counted" in out.err  # per-query progress


def test_cached_role_prefixes_cut_only_the_tokens_tflow_senders_process(tmp_path):
    reports = {}
    for flag in ([], ["--no-prefix-cache"]):
        out = tmp_path / f"bench{len(flag)}.json"
        main(
            [
                "--workload",
                "shape",
                "--model",
                str(ROOT / "checkpoints" / "tiny-qwen3"),
                "--layers",
                "1",
                "-M",
                "4",
                "-R",
                "2",
                "--question-tokens",
                "8",
                "--queries",
                "1",
                "--threads",
                "1",
                "--json",
                str(out),
                *flag,
            ]
        )
        reports[bool(flag)] = json.loads(out.read_text())["shape"]
    cached, uncached = reports[False]["modes"], reports[True]["modes"]
    assert cached["tflow"]["processed_tokens"] < uncached["tflow"]["processed_tokens"]
    for mode in ("single", "textmas"):
        assert cached[mode]["processed_tokens"] == uncached[mode]["processed_tokens"]
    credited = reports[False]["ratios"]["tflow_over_textmas_tokens_if_textmas_cached_prefixes"]
    assert reports[False]["ratios"]["tflow_over_textmas_tokens"] < credited < 1


def test_message_length_sweep_reports_one_block_per_length_with_the_floor(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    main(
        [
            "--workload",
            "shape",
            "--model",
            str(ROOT / "checkpoints" / "tiny-qwen3"),
            "--layers",
            "1",
            "-M",
            "3,9",
            "-R",
            "2",
            "--question-tokens",
            "8",
            "--queries",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    sweep = report["shape_by_message_tokens"]
    assert list(sweep) == ["3", "9"] and report["shape"] == sweep["3"]
    for m, block in sweep.items():
        assert block["modes"]["textmas"]["generated_tokens"] == 2 * int(m) + 2
        r = block["ratios"]
        single, textmas = block["modes"]["single"]["seconds_median"], block["modes"]["textmas"]["seconds_median"]
        assert r["floor_tflow_over_textmas_time"] == single / textmas and r["tflow_over_its_limit"] > 0
    assert "ratios by senders' message length" in capsys.readouterr().out


def test_bad_message_length_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["--workload", "shape", "-M", "256,x"])
    assert "positive integers separated by commas" in capsys.readouterr().err


def test_percentiles_lie_between_the_median_and_the_maximum_for_any_sample_size():
    from tflow.tools.stats import percentile

    assert percentile([12.2, 21.4], 0.9) == 21.4  # two queries: the p90 is the slower one, never below the median
    assert percentile([3.0], 0.9) == 3.0
    assert percentile(list(range(1, 11)), 0.9) == 9 and percentile(list(range(1, 11)), 0.5) == 5
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_a_bad_shape_or_count_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--workload", "shape", "--queries", "0"])
    assert e.value.code == 2 and capsys.readouterr().err.strip().startswith("error: --queries")


def test_senders_of_another_shape_advise_a_smaller_receiver(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(
        [
            "--workload",
            "shape",
            "--model",
            str(ROOT / "checkpoints" / "tiny-qwen3"),
            "--shape",
            "qwen3-0.6b",
            "--sender-shape",
            "qwen3-4b",
            "--layers",
            "1",
            "--dtype",
            "bf16",
            "-M",
            "5",
            "-R",
            "3",
            "--question-tokens",
            "8",
            "--queries",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    block = json.loads(out.read_text())["shape"]
    config, senders = block["config"], block["config"]["senders"]
    assert (config["hidden"], config["layers"]) == (1024, 1) and (senders["hidden"], senders["layers"]) == (2560, 1)
    assert senders["parameters"] > config["parameters"] and "qwen3-4b" in senders["model"]
    assert block["ratios"]["tflow_receiver_prefill_equals_single"] is True
    assert block["ratios"]["textmas_messages_reach_receiver_exactly"] is True
    assert "senders: random qwen3-4b shape" in capsys.readouterr().out


def test_sender_layers_without_a_sender_shape_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--workload", "shape", "--sender-layers", "2"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == "error: --sender-layers needs --sender-shape"


def test_the_tasks_workload_knows_every_task_a_generator_was_trained_on_for_its_receiver(tmp_path):
    from tflow.tools import catalog

    for name, task in (("relay", "relay"), ("kb", "kb@3")):  # kb@3: a fresh knowledge base, not a built-in task name
        card = json.loads((ROOT / "checkpoints" / "generators" / name / "generator_config.json").read_text())
        card["meta"]["task"] = task
        (tmp_path / "generators" / name).mkdir(parents=True)
        (tmp_path / "generators" / name / "generator_config.json").write_text(json.dumps(card))
    assert catalog.tasks_for("tiny", tmp_path) == ["relay", "kb@3"]
    assert catalog.tasks_for("smollm2-135m-instruct", tmp_path) == []


def test_the_tasks_workload_runs_only_the_tasks_and_modes_asked_for_at_a_fixed_answer_length(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(
        [
            "--workload",
            "tasks",
            "--tasks",
            "kb",
            "--modes",
            "single,tflow",
            "--task-answer-tokens",
            "2",
            "--queries",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    block = json.loads(out.read_text())["tasks"]
    assert (
        list(block) == ["kb"] and block["kb"]["config"]["senders"] == "checkpoints/tiny-qwen3-kb"
    )  # the one it records
    assert list(block["kb"]["modes"]) == ["single", "tflow"] and not any("textmas" in k for k in block["kb"]["ratios"])
    # both modes decode exactly 2 tokens (EOS ignored): TFlow over its limit is exact, not estimated
    assert [block["kb"]["modes"][m]["receiver_generated_tokens"] for m in ("single", "tflow")] == [2, 2]
    assert block["kb"]["ratios"]["tflow_over_its_limit"] > 0 and block["kb"]["config"]["fixed_answer"]
    assert "textmas" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--workload", "tasks", "--tasks", "kb,kb@9"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: no shipped generator for tiny was trained on kb@9: choose among relay, split, arith, kb")


def _one_layer_shape_report(tmp_path: Path, *argv: str) -> dict:
    """The JSON report of the shape workload on one layer of the embedded model, M = 3, one counted query."""
    out = tmp_path / "bench.json"
    main(["--workload", "shape", "--model", str(ROOT / "checkpoints" / "tiny-qwen3"), "--layers", "1", "-M", "3",
          *argv, "--question-tokens", "8", "--queries", "1", "--warmup", "1", "--threads", "1", "--json", str(out)])
    return json.loads(out.read_text())


def test_answer_lengths_and_repeats_give_tflow_over_its_limit_min_median_max(tmp_path, capsys):
    report = _one_layer_shape_report(tmp_path, "-R", "2,5", "--repeats", "2")
    limits = report["tflow_over_its_limit"]
    assert list(limits) == ["M=3,R=2", "M=3,R=5"]
    for v in limits.values():
        assert len(v["runs"]) == 2 and v["min"] <= v["median"] <= v["max"] and v["min"] > 0
    runs = report["shape_runs"]
    assert [(r["R"], r["run"]) for r in runs] == [(2, 1), (2, 2), (5, 1), (5, 2)]
    assert [r["modes"]["tflow"]["generated_tokens"] for r in runs] == [2, 2, 5, 5]  # EOS ignored
    assert [r["ratios"]["tflow_over_its_limit"] for r in runs] == limits["M=3,R=2"]["runs"] + limits["M=3,R=5"]["runs"]
    assert report["shape"] == {k: v for k, v in runs[0].items() if k not in ("M", "R", "run")}
    assert "TFlow over its own limit" in capsys.readouterr().out


def test_single_and_tflow_alone_measure_tflow_over_its_limit_without_running_textmas(tmp_path, capsys):
    report = _one_layer_shape_report(tmp_path, "-R", "2", "--modes", "tflow,single")
    assert list(report["shape"]["modes"]) == ["single", "tflow"]
    # how many counted TFlow queries decoded on merged weights (Single applies nothing)
    assert report["shape"]["modes"]["single"]["merged_queries"] == 0
    assert 0 <= report["shape"]["modes"]["tflow"]["merged_queries"] <= 1
    ratios = report["ratios"]
    assert ratios["tflow_over_its_limit"] > 0 and ratios["tflow_over_single_time"] > 0
    assert not any("textmas" in k for k in ratios)
    assert "textmas:" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--modes", "single,textmas"], "--modes must name single and tflow"),
    (["--modes", "single,tflow,chat"], "--modes must name single and tflow"),
    (["--modes", "single,tflow", "-M", "3,5"], "--modes must include textmas"),
])
def test_modes_without_what_the_report_needs_are_one_line_and_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--workload", "shape", *argv])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and says in err


@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0")])
def test_the_tools_ask_torch_for_huge_pages_before_it_loads_unless_the_user_said_otherwise(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if given is not None:
        env["THP_MEM_ALLOC_ENABLE"] = given
    code = "import os, sys, tflow.tools; print(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.stdout.split() == [expected, "False"]  # set while torch is not loaded yet: its allocator reads it once
