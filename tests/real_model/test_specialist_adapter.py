"""A specialist shipped as a PEFT LoRA adapter on its base model: loaded alone (merged) or beside a
receiver of the same base (sharing its weights, the receiver untouched), and bad adapters in one line."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tflow import Pipeline
from tflow.agents import Backbone, load_backbone
from tflow.tools.train_memory import estimate

IDS = torch.tensor([[5, 17, 42, 8, 99, 3]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def adapter(qwen3: Backbone, tmp_path_factory) -> tuple[Path, Path, torch.Tensor]:
    """(base directory, adapter directory, the adapted model's logits) of a random LoRA on the tiny Qwen3."""
    root = tmp_path_factory.mktemp("specialist")
    base, out = root / "base", root / "adapter"
    qwen3.model.save_pretrained(base)
    qwen3.tokenizer.save_pretrained(base)
    torch.manual_seed(0)
    peft = get_peft_model(
        copy.deepcopy(qwen3.model),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )  # random A and B: a real change
    want = _logits(peft)
    peft.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(base)}))
    return base, out, want


def test_an_adapter_directory_loads_as_its_base_with_the_adapter_merged(adapter, qwen3):
    _, out, want = adapter
    alone = load_backbone(str(out), device="cpu")
    assert alone.name == str(out)
    torch.testing.assert_close(_logits(alone.model), want, atol=1e-5, rtol=1e-5)
    assert (want - _logits(qwen3.model)).abs().max() > 1e-3  # the adapter changes the model


def test_an_adapter_beside_its_base_shares_the_receivers_weights_and_leaves_it_unchanged(adapter):
    base, out, want = adapter
    receiver = load_backbone(str(base), device="cpu")
    plain = _logits(receiver.model)
    senders = load_backbone(str(out), device="cpu", share_with=receiver)
    torch.testing.assert_close(_logits(senders.model), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(receiver.model), plain, atol=0, rtol=0)  # the receiver never sees the adapter
    embed = senders.model.get_input_embeddings().weight
    assert embed.data_ptr() == receiver.model.get_input_embeddings().weight.data_ptr()  # no second copy of the base
    lora = sum(p.numel() * p.element_size() for n, p in senders.model.named_parameters() if "lora_" in n)
    est = estimate(
        receiver, Pipeline(receiver, sender_backbone=senders).generator, 2, 16, False, sender_backbone=senders
    )
    assert est.sender_weights == lora > 0  # what the senders add: the adapter alone
    pipe = Pipeline(receiver, sender_backbone=senders)
    assert (
        pipe.run("What is the code?", "tflow", ["The code is 47.", "The code is 47."], max_new_tokens=3).answer
        is not None
    )


def test_an_adapter_without_a_base_or_for_another_model_is_one_clear_error(adapter, tmp_path, make_qwen3):
    base, out, _ = adapter
    nameless = tmp_path / "nameless"
    nameless.mkdir()
    cfg = json.loads((out / "adapter_config.json").read_text())
    (nameless / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": ""}))
    with pytest.raises(ValueError, match="no base_model_name_or_path"):
        load_backbone(str(nameless), device="cpu")
    wider = make_qwen3(hidden=96)  # another base: the adapter's shapes do not fit it
    other = tmp_path / "other-base"
    wider.model.save_pretrained(other)
    wider.tokenizer.save_pretrained(other)
    misplaced = tmp_path / "misplaced"
    misplaced.mkdir()
    (misplaced / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(other)}))
    (misplaced / "adapter_model.safetensors").write_bytes((out / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not fit its base model"):
        load_backbone(str(misplaced), device="cpu")
