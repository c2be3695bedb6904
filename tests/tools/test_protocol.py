"""`--protocol paper` on a Qwen3 shape with random weights (CPU, fp32 and bf16): the thinking template is applied,
sampling is in effect with a seed per query, thinking is stripped before scoring, and the budgets hold."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from tflow import Pipeline, tasks
from tflow.agents import EXECUTOR, Backbone, build_prompt
from tflow.tasks import procedural
from tflow.tools.evaluate import _variant, evaluate
from tflow.tools.protocol import PROTOCOLS, get

# Qwen3's template in small: with thinking off it closes an empty thinking block for the model
QWEN3_TEMPLATE = (
    "{%- for m in messages -%}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false -%}<think>\n\n</think>\n\n{%- endif -%}"
    "{%- endif -%}"
)


def _random_qwen3(tokenizer, dtype: torch.dtype) -> Backbone:
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = QWEN3_TEMPLATE
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                      tie_word_embeddings=True)
    return Backbone(Qwen3ForCausalLM(cfg).to(dtype).eval(), tok, f"random qwen3 shape ({dtype})")


def test_the_papers_budgets_and_sampling_settings():
    paper = get("paper")
    assert paper.budgets("humaneval") == (2048, 1024) and paper.budgets("mmlu-redux") == (1024, 1024)
    s = paper.settings("gsm8k", seed=7)
    assert (s.do_sample, s.temperature, s.top_p, s.max_new_tokens, s.sender_max_new_tokens, s.seed) == (
        True, 0.6, 0.95, 2048, 1024, 7)
    assert not get("greedy").settings("gsm8k").do_sample and get("greedy").budgets("note") == tasks.budgets("note")
    with pytest.raises(ValueError, match="unknown protocol"):
        get("beam")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_papers_protocol_thinks_samples_strips_thinking_and_keeps_its_budgets(tokenizer, dtype):
    bb = _random_qwen3(tokenizer, dtype)
    decoded = lambda: bb.tokenizer.decode(build_prompt(bb, EXECUTOR, "What is 2 + 2?").input_ids)  # noqa: E731
    assert "<think>" in decoded(), "greedy: thinking off, the template closes an empty block"
    ran = PROTOCOLS["paper"].apply(bb)
    assert ran["thinking_applied"] and not ran["plain_prompts"] and "<think>" not in decoded()

    small = replace(PROTOCOLS["paper"], answer_tokens=12, message_tokens=8)  # the paper's 2048 is minutes on a CPU
    pipe = Pipeline(bb)
    items = procedural.examples("rg:chain_sum", "test", 2, seed=0)
    variants = {"single": _variant("single"), "textmas": _variant("textmas")}
    first = evaluate(pipe, items, variants, protocol=small, seed=0)
    assert first["single"]["generated_tokens"] <= 12
    assert first["textmas"]["generated_tokens"] <= 12 + 2 * 8  # the receiver's answer and both messages
    again = evaluate(pipe, items, {"single": variants["single"]}, protocol=small, seed=0)
    other = evaluate(pipe, items, {"single": variants["single"]}, protocol=small, seed=1)
    answers = lambda r: [e["answer"] for e in r["single"]["examples"]]  # noqa: E731
    assert answers(first) == answers(again), "a seed per query: the same seed samples the same answers"
    assert answers(first) != answers(other), "sampling is in effect"

    right = f"<think>maybe \\boxed{{-1}}</think>So \\boxed{{{items[0].answer}}}"
    assert tasks.grade(items[:1], [right]) == [True]
    assert tasks.grade(items[:1], [f"<think>\\boxed{{{items[0].answer}}}</think>\\boxed{{-1}}"]) == [False]


def test_a_model_without_a_chat_template_runs_with_the_plain_prompt_format(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    bb = Backbone(_random_qwen3(tokenizer, torch.float32).model, tok, "a base checkpoint")
    assert bb.plain_prompts and PROTOCOLS["greedy"].apply(bb)["plain_prompts"]
    text = bb.tokenizer.decode(build_prompt(bb, EXECUTOR, "What is 2 + 2?").input_ids)
    assert text.startswith("System: ") and "User: What is 2 + 2?" in text and text.endswith("Assistant:")
    assert Pipeline(bb).run("What is 2 + 2?", "single", max_new_tokens=3).usage.total_tokens > 0
