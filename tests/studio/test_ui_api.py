"""TFlow Studio through its API (gradio_client), and the examples asset.

The app process is shared with the browser test (tests/studio/studio_server.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client
from studio_server import ROOT, studio

from tflow import tasks
from tflow.studio.examples import ASSETS, build_examples
from tflow.studio.registry import Studio, StudioConfig
from tflow.studio.render import header_html

ACTIONS = {"/run", "/ask", "/load_example", "/select_generator", "/select_static", "/perturbation_source",
           "/perturbation_view", "/perturbation_layer", "/perturbation_module", "/across_queries",
           "/across_queries_features", "/across_queries_colour", "/history_select", "/hidden_states", "/health",
           "/benchmark", "/benchmark_cancel", "/benchmark_item"}


def test_examples_asset_is_generated_from_the_test_split() -> None:
    shipped = json.loads((ASSETS / "examples.json").read_text())
    assert shipped == build_examples()
    assert {e["task"] for e in shipped} == {*tasks.REAL_MODEL_TASKS, *tasks.TASKS, *tasks.SPECIALIST_TASKS}
    for e in shipped:
        test_split = tasks.examples(e["task"], "test", 4, seed=0)
        assert any(ex.question == e["question"] and ex.answer == e["answer"] for ex in test_split)


@pytest.fixture(scope="module")
def client() -> Client:
    return Client(studio().url, verbose=False)


def split_example() -> dict:
    return next(e for e in build_examples() if e["task"] == "split")


def test_every_action_has_an_api_name(client: Client) -> None:
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert named >= ACTIONS, ACTIONS - named


def test_ask_runs_every_mode_with_full_accounting(client: Client) -> None:
    ex = split_example()
    before = client.predict(api_name="/health")
    out = client.predict(question=ex["question"], contexts=ex["contexts"], reference=ex["answer"], api_name="/ask")
    after = client.predict(api_name="/health")
    assert before["weights_sha256"] == after["weights_sha256"] and not after["patched"], "a run changed the backbone"
    assert out["errors"] == {}
    results = out["results"]
    assert {"single", "textmas", "tflow"} <= set(results)
    assert ("static" in results) == (out["static"] != "none")
    for mode, r in results.items():
        assert isinstance(r["answer"], str) and isinstance(r["correct"], bool), mode
        assert r["tokens"] == sum(u["prompt"] + u["generated"] for u in r["tokens_by_agent"].values()), mode
        assert r["wall_s"] > 0 and r["kv_cache_bytes"] > 0, mode
    senders = {"Strategist", "Knowledge Extractor"}
    assert senders <= set(results["tflow"]["tokens_by_agent"])
    assert all(results["tflow"]["tokens_by_agent"][s]["generated"] == 0 for s in senders), (
        "TFlow senders must not generate"
    )
    assert set(results["textmas"]["messages"]) == senders
    assert {"sender_pass", "generator", "receiver"} <= set(results["tflow"]["timings_s"])
    # the paper's accounting beside ours: TFlow counts its receiver only, the text modes every agent
    receiver = results["tflow"]["tokens_by_agent"]["Executor"]
    assert results["tflow"]["paper_tokens"] == receiver["prompt"] + receiver["generated"] < results["tflow"]["tokens"]
    assert results["textmas"]["paper_tokens"] == results["textmas"]["tokens"]


def test_bad_input_is_a_readable_error_and_the_app_keeps_serving(client: Client) -> None:
    for kwargs, message in [
        ({"question": "   "}, "the question is empty"),
        ({"question": "x " * 50_000}, "shorten the question"),
        ({"question": "What is the key?", "generator": "no-such-generator"}, "unknown generator"),
        ({"question": "What is the key?", "modes": ["static"], "static": "none"}, "needs a static adapter"),
        ({"question": "What is the key?", "max_new_tokens": 0}, "max_new_tokens must be an integer"),
        ({"question": "What is the key?", "contexts": ["a", "b", "c"]}, "3 private contexts for 2 senders"),
    ]:
        with pytest.raises(Exception, match=message):
            client.predict(**kwargs, api_name="/ask")
    out = client.predict(question="What is the key?", modes=["single"], api_name="/ask")
    assert out["results"]["single"]["tokens"] > 0


def test_a_context_without_a_trained_generator_is_flagged(client: Client) -> None:
    out = client.predict(question="What is the code plus 5?", contexts=["The code is 47.", "The code is 47."],
                         generator="none", modes=["tflow"], api_name="/ask")
    assert "generator is untrained" in out["warning"]
    assert out["results"]["tflow"]["tokens"] > 0


def test_the_ui_run_endpoint_streams_to_a_finished_run(client: Client) -> None:
    ex = split_example()
    job = client.submit(
        ex["question"],
        *ex["contexts"],
        ex["answer"],
        ["single", "tflow"],
        "none",
        "none",
        8,
        8,
        "greedy",
        1.0,
        1.0,
        0,
        "You are the Strategist. Say how to approach the problem.",
        "You are the Knowledge Extractor. State the facts the problem needs.",
        "You are the Executor. Solve the problem and give the final answer.",
        "tflow",
        "fused",
        0,
        "self_attn.q_proj",
        api_name="/run",
    )
    final = job.result(timeout=120)
    status = final[0]
    assert "Run #1 done." in status and "Single ✓" in status and "TFlow ✓" in status


def test_a_client_that_disconnects_mid_stream_leaves_the_model_clean(client: Client) -> None:
    import time

    ex = split_example()
    reference = client.predict(question=ex["question"], contexts=ex["contexts"], modes=["tflow"], api_name="/ask")
    before = client.predict(api_name="/health")
    job = client.submit(ex["question"], *ex["contexts"], ex["answer"], ["textmas", "tflow"], api_name="/run")
    deadline = time.monotonic() + 60
    while not job.outputs() and time.monotonic() < deadline:  # the run has started streaming
        time.sleep(0.05)
    job.cancel()
    time.sleep(1.0)
    after = client.predict(api_name="/health")
    assert after["weights_sha256"] == before["weights_sha256"] and not after["patched"]
    again = client.predict(question=ex["question"], contexts=ex["contexts"], modes=["tflow"], api_name="/ask")
    assert again["results"]["tflow"]["answer"] == reference["results"]["tflow"]["answer"]


def kb_example() -> dict:
    return next(e for e in build_examples() if e["task"] == "kb")


def test_a_kb_question_runs_its_senders_on_the_specialist_backbone(client: Client) -> None:
    health = client.predict(api_name="/health")
    assert Path(health["sender_backbones"]["kb"]).name == "tiny-qwen3-kb"
    assert Path(health["sender_backbones"]["relay"]) == Path(health["backbone"]), (
        "same-backbone generators keep one model"
    )
    ex = kb_example()
    out = client.predict(
        question=ex["question"],
        reference=ex["answer"],
        generator="kb",
        modes=["single", "textmas", "tflow"],
        api_name="/ask",
    )
    assert out["errors"] == {} and out["static"] == "kb"
    for mode in ("textmas", "tflow"):
        agents = out["results"][mode]["tokens_by_agent"]
        senders = [a for role, a in agents.items() if role != "Executor"]
        assert {Path(a["backbone"]).name for a in senders} == {"tiny-qwen3-kb"}, mode
        assert Path(agents["Executor"]["backbone"]).name == "tiny-qwen3"
        assert senders[0]["parameters"] != agents["Executor"]["parameters"], "per-agent parameters of two backbones"
    # the specialist states the fact in its messages; the plain receiver does not know it
    assert all(ex["answer"] in m for m in out["results"]["textmas"]["messages"].values())
    assert not out["results"]["single"]["correct"]


def test_a_generator_runs_on_the_specialist_it_records_unless_told_to_load_none() -> None:
    studio = Studio(StudioConfig(model=str(ROOT / "checkpoints" / "tiny-qwen3"), checkpoints=str(ROOT / "checkpoints"),
                                 device="cpu"))
    try:
        assert (
            studio.senders_of("kb").name == "checkpoints/tiny-qwen3-kb"
            and studio.senders_of("relay") is studio.backbone
        )
        assert {e["task"] for e in studio.examples} >= {"kb", "relay"}
    finally:
        studio.close()


def test_without_the_specialist_its_generator_is_skipped_with_a_note_and_its_examples_hidden() -> None:
    studio = Studio(StudioConfig(model=str(ROOT / "checkpoints" / "tiny-qwen3"), checkpoints=str(ROOT / "checkpoints"),
                                 device="cpu", load_specialists=False))  # tflow-studio --sender-model none
    try:
        assert "kb" not in studio.generators and "relay" in studio.generators
        assert any("kb" in n and "--sender-model" in n for n in studio.notes), studio.notes
        assert studio.examples and all(e["task"] in tasks.TASKS for e in studio.examples)
        assert "the receiver, role-prompted" in header_html(studio, "relay")
    finally:
        studio.close()


def test_a_model_that_cannot_be_loaded_falls_back_to_the_embedded_world_with_a_note_in_the_header(tmp_path) -> None:
    studio = Studio(StudioConfig(model=str(tmp_path / "unreachable.gguf"), fallback_model="tiny",
                                 fallback_sender_model=str(ROOT / "checkpoints" / "tiny-qwen3-kb"),
                                 checkpoints=str(ROOT / "checkpoints"), device="cpu"))
    try:
        assert studio.backbone.name == "checkpoints/tiny-qwen3" and "kb" in studio.generators
        header = header_html(studio, studio.default_generator)
        assert "unreachable.gguf could not be loaded" in header and "embedded fallback world" in header
        assert not any(n.startswith("skipped") for n in studio.notes), (
            studio.notes
        )  # the real model's checkpoints: one line
        assert all(e["task"] not in tasks.REAL_MODEL_TASKS for e in studio.examples)
    finally:
        studio.close()
