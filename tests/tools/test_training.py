"""Training and evaluation CLIs: smoke runs on a tiny backbone (a few steps, never the
real training), resume, the static PEFT ablation, data-parallel accelerate, and the
shipped embedded checkpoints."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tflow import Pipeline, tasks
from tflow.generators import load_generator
from tflow.lora import infer_targets
from tflow.peft_io import load_peft_adapter
from tflow.tools.evaluate import format_table
from tflow.tools.evaluate import main as evaluate_main
from tflow.tools.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = ROOT / "checkpoints" / "tiny-qwen3"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_qwen3):
    backbone = make_qwen3(seed=11)
    out = tmp_path_factory.mktemp("tiny")
    backbone.model.generation_config.eos_token_id = backbone.tokenizer.eos_token_id
    backbone.model.generation_config.pad_token_id = backbone.tokenizer.pad_token_id
    backbone.model.save_pretrained(out)
    backbone.tokenizer.save_pretrained(out)
    return out


SMALL = ["--batch-size", "4", "--eval-size", "4", "--d-model", "32", "--chunk-size", "64", "--threads", "1"]


def test_generator_training_saves_a_loadable_checkpoint_and_resumes(model_dir, tmp_path):
    out = tmp_path / "gen"
    train_main(
        ["--task", "relay", "--model", str(model_dir), "--out", str(out), "--steps", "3", "--eval-every", "2", *SMALL]
    )
    meta = json.loads((out / "generator_config.json").read_text())["meta"]
    assert meta["task"] == "relay" and meta["steps"] == 3 and 0.0 <= meta["dev_accuracy"] <= 1.0
    assert [h["step"] for h in meta["history"]] == [2, 3]
    first = (out / "generator.safetensors").read_bytes()
    train_main(
        [
            "--task",
            "relay",
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--steps",
            "5",
            "--eval-every",
            "5",
            "--resume",
            *SMALL,
        ]
    )
    meta = json.loads((out / "generator_config.json").read_text())["meta"]
    assert meta["steps"] == 5 and (out / "generator.safetensors").read_bytes() != first
    pipe = Pipeline.from_pretrained(str(model_dir), generator=str(out))
    assert pipe.generator_trained  # training moved the zero-initialised B head
    assert pipe.run("What is the code?", "tflow", "The code is 12.", max_new_tokens=3).usage.total_tokens > 0


def test_init_fine_tunes_from_a_generator_trained_on_another_task(model_dir, tmp_path):
    base, tuned = tmp_path / "relay", tmp_path / "split"
    train_main(
        ["--task", "relay", "--model", str(model_dir), "--out", str(base), "--steps", "3", "--eval-every", "3", *SMALL]
    )
    train_main(["--task", "split", "--model", str(model_dir), "--out", str(tuned), "--steps", "1", "--eval-every", "1",
                "--lr", "1e-12", "--warmup", "0", "--init", str(base), *SMALL])
    before, after = load_file(str(base / "generator.safetensors")), load_file(str(tuned / "generator.safetensors"))
    assert float(before["head_b.weight"].abs().sum()) > 0  # trained, so starting from it is visible
    for name, t in before.items():
        torch.testing.assert_close(after[name], t, atol=1e-6, rtol=0)
    meta = json.loads((tuned / "generator_config.json").read_text())["meta"]
    assert meta["task"] == "split" and meta["config"]["init"] == str(base)


def test_init_adds_the_read_out_to_a_generator_trained_without_it_starting_at_the_mean_weight(model_dir, tmp_path):
    base, tuned = tmp_path / "plain", tmp_path / "readout"
    train_main(["--task", "relay", "--model", str(model_dir), "--out", str(base), "--steps", "1", "--eval-every", "1",
                "--copy", "1", *SMALL])
    train_main(["--task", "relay", "--model", str(model_dir), "--out", str(tuned), "--steps", "1", "--eval-every", "1",
                "--lr", "1e-12", "--warmup", "0", "--copy", "1", "--readout", "1", "--init", str(base), *SMALL])
    before, after = load_file(str(base / "generator.safetensors")), load_file(str(tuned / "generator.safetensors"))
    for name, t in before.items():
        if name.endswith("aggregator.logits"):
            torch.testing.assert_close(after[name], torch.cat([t, t.mean().reshape(1)]), atol=1e-6, rtol=0)
        else:
            torch.testing.assert_close(after[name], t, atol=1e-6, rtol=0)
    assert json.loads((tuned / "generator_config.json").read_text())["generator"]["readout"] == 1


def test_init_from_another_shape_or_nowhere_is_one_clear_error(model_dir, tmp_path, capsys):
    base = tmp_path / "relay"
    train_main(
        ["--task", "relay", "--model", str(model_dir), "--out", str(base), "--steps", "1", "--eval-every", "1", *SMALL]
    )
    wider = [a if a != "32" else "48" for a in SMALL]  # --d-model 48
    for init in (str(base), str(tmp_path / "nothing")):
        with pytest.raises(SystemExit) as e:
            train_main(
                [
                    "--task",
                    "relay",
                    "--model",
                    str(model_dir),
                    "--out",
                    str(tmp_path / "x"),
                    "--steps",
                    "1",
                    "--init",
                    init,
                    *wider,
                ]
            )
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: --init {init}")


def test_release_architecture_trains_on_any_backbone_with_its_own_size_flags(model_dir, tmp_path):
    out = tmp_path / "release"
    sizes = ["--d-model", "32", "--head-dim", "8", "--token-dim", "32", "--dim-accumulation", "2"]
    train_main(["--task", "relay", "--arch", "release", "--model", str(model_dir), "--out", str(out), "--steps", "2",
                "--eval-every", "2", "--batch-size", "4", "--eval-size", "4", "--threads", "1", *sizes])
    card = json.loads((out / "generator_config.json").read_text())
    assert (
        card["arch"] == "release"
        and card["generator"]["token_dim"] == 32
        and card["meta"]["config"]["arch"] == "release"
    )
    pipe = Pipeline.from_pretrained(str(model_dir), generator=str(out))
    assert type(pipe.generator).__name__ == "ReleaseGenerator" and pipe.generator_trained
    with pytest.raises(SystemExit):  # grid-only flags are not offered for the release architecture
        train_main(["--arch", "release", "--chunk-size", "64", "--steps", "0"])


def test_static_lora_training_writes_a_peft_adapter_usable_as_mode_static(model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "static"
    train_main(
        [
            "--task",
            "relay",
            "--static",
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--steps",
            "3",
            "--eval-every",
            "3",
            *SMALL,
        ]
    )
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out)  # PEFT itself reads it
    pipe = Pipeline.from_pretrained(str(model_dir), static_adapter=str(out))
    assert pipe.run("What is the pin?", "static", max_new_tokens=3).perturbation.senders == ("static",)
    adapter = load_peft_adapter(out, infer_targets(pipe.backbone.model))
    assert float(adapter.B["self_attn.q_proj"].abs().sum()) > 0


def test_a_specialist_adapter_learns_the_held_out_peoples_facts_and_serves_as_the_senders_backbone(
    model_dir, tmp_path, monkeypatch
):
    from tflow.tools import train as train_module

    drawn = []
    real_stream = tasks.stream
    monkeypatch.setattr(
        train_module.tasks, "stream", lambda *a, **k: (drawn.append(k.get("held_out")), real_stream(*a, **k))[1]
    )
    out = tmp_path / "specialist"
    train_main(["--task", "kb@3", "--static", "--knows", "--model", str(model_dir), "--out", str(out), "--steps", "2",
                "--eval-every", "2", *SMALL])
    assert drawn and all(drawn), "every training draw includes group B's facts"
    meta = json.loads((out / "training.json").read_text())
    assert meta["kind"] == "specialist" and meta["dev_set"].startswith("4 test-split")
    pipe = Pipeline.from_pretrained(str(model_dir), sender_model=str(out))
    assert pipe.sender_backbone is not pipe.backbone
    assert pipe.run("How old is Tovi?", "textmas", max_new_tokens=2).answer is not None


def test_knows_without_static_or_without_a_kb_task_is_one_clear_error(model_dir, tmp_path, capsys):
    for extra in (["--task", "kb"], ["--task", "relay", "--static"]):
        with pytest.raises(SystemExit) as e:
            train_main(
                [*extra, "--knows", "--model", str(model_dir), "--out", str(tmp_path / "x"), "--steps", "1", *SMALL]
            )
        assert e.value.code == 2
        assert "--knows trains a specialist adapter" in capsys.readouterr().err.strip().splitlines()[-1]


def test_accelerate_data_parallel_training_with_two_cpu_processes(model_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "tflow.tools.train",
        "--task",
        "split",
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--steps",
        "2",
        "--eval-every",
        "2",
        *SMALL,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "generator_config.json").read_text())["meta"]
    assert meta["processes"] == 2 and meta["steps"] == 2


def test_evaluate_writes_the_documented_json_and_csv(model_dir, tmp_path, capsys):
    gen = tmp_path / "gen"
    train_main(
        ["--task", "split", "--model", str(model_dir), "--out", str(gen), "--steps", "1", "--eval-every", "1", *SMALL]
    )
    out = tmp_path / "eval.json"
    evaluate_main(
        [
            "--task",
            "split",
            "--model",
            str(model_dir),
            "--generator",
            str(gen),
            "--modes",
            "single,textmas,tflow",
            "--limit",
            "3",
            "--shuffle-conditions",
            "--sender-ablation",
            "--json",
            str(out),
            "--threads",
            "1",
        ]
    )
    report = json.loads(out.read_text())
    assert report["task"] == "split"
    assert set(report["results"]) == {
        "single",
        "textmas",
        "tflow",
        "tflow_shuffled",
        "tflow_only_strategist",
        "tflow_only_knowledge_extractor",
    }
    for r in report["results"].values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["tokens_per_query"] > 0 and r["seconds_per_query"] > 0
    res = report["results"]  # the paper's accounting: TFlow counts its receiver only, the others every agent
    assert res["tflow"]["paper_tokens_per_query"] < res["tflow"]["tokens_per_query"]
    assert res["textmas"]["paper_tokens_per_query"] == res["textmas"]["tokens_per_query"]
    assert report["results"]["textmas"]["tokens_per_query"] > report["results"]["single"]["tokens_per_query"]
    assert out.with_suffix(".csv").read_text().startswith("task,mode,accuracy")
    assert "| tflow |" in capsys.readouterr().out and "paper tokens / query" in format_table("split", report["results"])
    # every mode's per-item verdicts, so that TFlow is compared with each on the same items
    assert all([i["id"] for i in r["items"]] == ["0", "1", "2"] for r in res.values())
    assert all(sum(i["correct"] for i in r["items"]) == round(3 * r["accuracy"]) for r in res.values())
    assert set(report["paired"]) == {f"tflow_vs_{m}" for m in res if m != "tflow"}
    assert report["dtype"] == "float32" and "dtype_why" not in report


def test_evaluate_runs_the_backbone_in_the_dtype_asked_for_and_says_so(model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    evaluate_main(["--task", "relay", "--model", str(model_dir), "--modes", "single", "--limit", "2", "--dtype", "bf16",
                   "--threads", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["dtype"] == "bfloat16" and report["results"]["single"]["n"] == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--task", "relay", "--model", str(model_dir), "--modes", "single", "--limit", "1",
                       "--dtype", "fp13"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "fp13" in err


@pytest.mark.skipif(
    not (ROOT / "checkpoints" / "generators" / "relay").is_dir(), reason="embedded checkpoints not built"
)
def test_embedded_backbone_and_relay_generator_answer_from_weights_alone():
    pipe = Pipeline.from_pretrained(
        str(EMBEDDED), generator=str(ROOT / "checkpoints" / "generators" / "relay"), device="cpu"
    )
    assert pipe.generator.meta["task"] == "relay"
    examples = tasks.examples("relay", "test", 20, seed=0)
    qs, ctx = [e.question for e in examples], [e.contexts for e in examples]
    tflow = pipe.run_batch(qs, "tflow", ctx, max_new_tokens=16)
    single = pipe.run_batch(qs, "single", ctx, max_new_tokens=16)
    assert sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(tflow, examples)) >= 17
    assert sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(single, examples)) <= 2
    assert all(torch.isfinite(r.perturbation.B["self_attn.q_proj"]).all() for r in tflow)
    assert load_generator(
        ROOT / "checkpoints" / "generators" / "relay", infer_targets(pipe.backbone.model)
    ).is_trained


@pytest.mark.skipif(
    not (ROOT / "checkpoints" / "generators" / "relay-release").is_dir(), reason="embedded checkpoints not built"
)
def test_embedded_release_architecture_relay_generator_answers_from_weights_alone():
    pipe = Pipeline.from_pretrained(
        str(EMBEDDED), generator=str(ROOT / "checkpoints" / "generators" / "relay-release"), device="cpu"
    )
    assert pipe.generator.provenance()["arch"] == "release" and pipe.generator.meta["task"] == "relay"
    examples = tasks.examples("relay", "test", 20, seed=0)
    tflow = pipe.run_batch([e.question for e in examples], "tflow", [e.contexts for e in examples], max_new_tokens=16)
    assert sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(tflow, examples)) >= 17


@pytest.mark.skipif(
    not (ROOT / "checkpoints" / "generators" / "arith").is_dir(), reason="embedded checkpoints not built"
)
def test_embedded_arith_generator_makes_the_receiver_work_the_problem_out():
    pipe = Pipeline.from_pretrained(
        str(EMBEDDED), generator=str(ROOT / "checkpoints" / "generators" / "arith"), device="cpu"
    )
    examples = tasks.examples("arith", "test", 20, seed=0)
    qs = [e.question for e in examples]
    tflow = pipe.run_batch(qs, "tflow", max_new_tokens=48)
    single = pipe.run_batch(qs, "single", max_new_tokens=48)
    assert sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(tflow, examples)) >= 15
    assert sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(single, examples)) <= 4
    assert all(" = " in r.answer for r in tflow) and not any(
        " = " in r.answer for r in single
    )  # a worked plan vs a bare number


def test_pretrain_makes_a_backbone_that_plain_transformers_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tflow.tools.pretrain import main as pretrain_main

    out = tmp_path / "backbone"
    pretrain_main(["--out", str(out), "--steps", "2", "--batch-size", "4", "--vocab-size", "300", "--hidden-size", "32",
                   "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1", "--head-dim", "16",
                   "--intermediate-size", "64", "--threads", "1"])
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "qwen3" and tok.chat_template and (out / "chat_template.jinja").is_file()
    card = json.loads((out / "card.json").read_text())
    assert card["stages"][-1]["config"]["steps"] == 2 and card["parameters"] == sum(
        p.numel() for p in model.parameters()
    )
    assert tok.decode(tok("Ünïcode ☃ never seen").input_ids) == "Ünïcode ☃ never seen"  # byte-level: no OOV


def _gsm8k(path: Path, n: int, bad_line: int | None = None) -> str:
    rows = [
        json.dumps(
            {
                "question": f"Tom has {i} pens and buys 2 more. How many pens?",
                "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}",
            }
        )
        for i in range(n)
    ]
    if bad_line is not None:
        rows[bad_line - 1] = json.dumps({"question": "   ", "answer": "#### 1"})
    path.write_text("\n".join(rows) + "\n")
    return f"jsonl:{path}"


def test_evaluate_uses_every_row_of_a_jsonl_file(model_dir, tmp_path):
    out = tmp_path / "gsm.json"
    evaluate_main(["--task", _gsm8k(tmp_path / "gsm8k_test.jsonl", 7), "--model", str(model_dir), "--modes", "single",
                   "--json", str(out), "--threads", "1"])
    report = json.loads(out.read_text())
    assert report["results"]["single"]["n"] == 7 and report["split"] == "whole file"


@pytest.mark.parametrize("tool", ["evaluate", "train"])
def test_a_bad_jsonl_row_fails_in_one_line_naming_it_before_any_model_loads(tool, tmp_path, capsys):
    task = _gsm8k(tmp_path / "gsm.jsonl", 5, bad_line=4)
    main = evaluate_main if tool == "evaluate" else train_main
    with pytest.raises(SystemExit) as e:
        main(
            ["--task", task, "--model", str(tmp_path / "no-such-model"), "--threads", "1"]
        )  # the data are checked first
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "line 4: empty question" in err and "Traceback" not in err


def test_training_refuses_a_configuration_that_cannot_fit_with_the_estimate(model_dir, tmp_path, capsys, monkeypatch):
    from tflow import lora
    monkeypatch.setattr(lora, "free_bytes", lambda device: 1000)
    with pytest.raises(SystemExit) as e:
        train_main(["--task", "relay", "--model", str(model_dir), "--out", str(tmp_path / "g"), "--steps", "1", *SMALL])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "Traceback" not in err
    err = err.splitlines()[-1]  # after the model-loading progress bar: the one error line
    assert (
        err.startswith("error: ")
        and "needs ~" in err
        and "receiver activations" in err
        and "--gradient-checkpointing" in err
    )


def test_training_reports_seconds_per_step_and_peak_memory(model_dir, tmp_path, capsys):
    train_main(
        [
            "--task",
            "relay",
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / "g"),
            "--steps",
            "2",
            "--eval-every",
            "2",
            *SMALL,
        ]
    )
    out = capsys.readouterr()
    assert "memory estimate: ~" in out.out
    last = json.loads(out.out.strip().splitlines()[-1])
    assert last["seconds_per_step"] > 0 and last["peak_memory_bytes"] > 0 and last["estimated_memory_bytes"] > 0


def test_gradient_checkpointing_gives_the_gradients_of_plain_backward(make_qwen3):
    from tflow.agents import Roles
    from tflow.generators import GeneratorConfig
    from tflow.tools.train import TrainConfig, _Objective

    batch = tasks.examples("relay", "train", 3, seed=2)
    grads = {}
    for ckpt in (False, True):
        backbone = make_qwen3(seed=31)  # a fresh model each: checkpointing is switched on in place
        cfg = TrainConfig(generator=GeneratorConfig(d_model=32, n_heads=2, chunk_size=32), gradient_checkpointing=ckpt)
        obj = _Objective(cfg, backbone, Roles())
        torch.nn.init.normal_(obj.module.head_b.weight, std=0.05)  # gradients reach every part of the generator
        with obj.loss(obj.module, batch) as loss:
            loss.backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in obj.module.named_parameters() if p.grad is not None}
        assert backbone.model.is_activation_checkpointing == ckpt and not backbone.model.training
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 10
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.skipif(not (ROOT / "checkpoints" / "generators" / "kb").is_dir(), reason="embedded checkpoints not built")
def test_embedded_kb_specialist_tells_the_receiver_facts_about_people_the_generator_never_saw():
    specialist = ROOT / "checkpoints" / "tiny-qwen3-kb"
    pipe = Pipeline.from_pretrained(str(EMBEDDED), generator=str(ROOT / "checkpoints" / "generators" / "kb"),
                                    sender_model=str(specialist), device="cpu")
    assert pipe.sender_backbone.hidden_size != pipe.backbone.hidden_size and pipe.generator.meta["task"] == "kb"
    examples = tasks.examples("kb", "test", 20, seed=0)  # group B: never in the generator's training
    qs = [e.question for e in examples]
    tflow = pipe.run_batch(qs, "tflow", max_new_tokens=tasks.ANSWER_TOKENS)
    single = pipe.run_batch(qs, "single", max_new_tokens=tasks.ANSWER_TOKENS)
    assert sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(tflow, examples)) >= 15
    assert sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(single, examples)) <= 2
    with pytest.raises(ValueError, match="wrong sender"):  # the receiver's own states are not the specialist's
        Pipeline.from_pretrained(str(EMBEDDED), generator=str(ROOT / "checkpoints" / "generators" / "kb"),
                                 sender_model=str(EMBEDDED), device="cpu")


def test_training_reads_benchmark_names_and_refuses_one_without_a_train_split(model_dir, tmp_path):
    fixtures = ROOT / "tests" / "fixtures" / "benchmarks"
    roomy = tmp_path / "model"  # the same weights with room for a worked solution and the benchmarks' budget
    shutil.copytree(model_dir, roomy)
    config = json.loads((roomy / "config.json").read_text())
    (roomy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    out = tmp_path / "gsm8k"
    train_main(["--task", "gsm8k", "--dataset-path", str(fixtures / "gsm8k"), "--model", str(roomy), "--out",
                str(out), "--steps", "1", "--eval-every", "1", "--batch-size", "2", "--eval-size", "2",
                "--threads", "1"])
    card = json.loads((out / "generator_config.json").read_text())
    assert card["meta"]["task"] == "gsm8k" and card["meta"]["dev_set"].startswith("2 ")
    failed = subprocess.run([sys.executable, "-m", "tflow.tools.train", "--task", "math", "--dataset-path",
                             str(fixtures / "math"), "--model", str(model_dir), "--steps", "1"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert failed.returncode == 2 and failed.stderr.strip().splitlines() == [
        "error: benchmark math has no train split: train on another task (e.g. gsm8k, rg:NAME)"]
