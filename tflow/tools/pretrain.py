"""Make the embedded backbone: a byte-level BPE tokenizer and a tiny Qwen3 pretrained from
scratch on role-prompted versions of the tasks.

    python -m tflow.tools.pretrain --out checkpoints/tiny-qwen3 --steps 3000

The data mix teaches each role its job, in exactly the prompt format the pipeline uses:
sender messages (TextMAS), the receiver reading senders' messages, the receiver with the
facts shown in its own context, and (arith only) the receiver answering alone. The
receiver never sees a relay / split question without its facts, so Single cannot answer
them: the facts must arrive through messages or through weights. Seeded; output is a
standard `save_pretrained` directory plus `card.json` (data mix, seed, steps, time, loss).

The kb specialist (`--task-mix kb:1.0 --knows kb`, another shape) learns every fact of the
knowledge base, group B's too; its extra kinds (bare, glued, sender_glued, split_glued) put the
answer right after the question so that the question's own states, which a generator reads,
hold it (`scripts/build_embedded.sh`, step specialist).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import Qwen3Config, Qwen3ForCausalLM

from .. import tasks
from ..agents import EXECUTOR, Backbone, Roles, build_prompt, load_backbone, pad_with_labels
from ..errors import user_errors
from .flags import add_config_flags
from .schedule import cosine_lr
from .tokenizer import build_tokenizer


@dataclass
class PretrainConfig:
    out: str = "checkpoints/tiny-qwen3"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    vocab_size: int = 768
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_positions: int = 512
    task_mix: str = "arith:0.35,relay:0.2,split:0.2,drill:0.25"
    kind_mix: str = "sender:0.4,with_messages:0.3,alone:0.3"
    threads: int = 2
    init: str = ""  # continue from this backbone directory (keeps its tokenizer)
    knows: str = ""  # comma-separated finite tasks (kb) whose held-out facts this backbone learns too: a specialist

    HELP = {  # not annotated: a class attribute, not a field
        "out": "output directory of the backbone (safetensors + tokenizer)",
        "steps": "optimizer steps",
        "batch_size": "sequences per step",
        "lr": "peak learning rate (AdamW)",
        "warmup": "linear warm-up steps",
        "weight_decay": "AdamW weight decay",
        "seed": "seed of the data and initialisation",
        "vocab_size": "tokenizer vocabulary size",
        "hidden_size": "the model's hidden size",
        "num_layers": "decoder layers",
        "num_heads": "attention heads",
        "num_kv_heads": "key/value heads (grouped-query attention)",
        "head_dim": "attention head width",
        "intermediate_size": "MLP width",
        "max_positions": "longest sequence (rotary positions)",
        "task_mix": "TASK:WEIGHT,... the tasks the pretraining sequences come from",
        "kind_mix": "KIND:WEIGHT,... sequence kinds: sender, with_messages, alone (and bare: a fact alone)",
        "threads": "CPU threads for torch",
        "init": "continue from this backbone directory (keeps its tokenizer)",
        "knows": "comma-separated finite tasks (kb) whose held-out facts this backbone learns too: a specialist",
    }


def _mix(spec: str) -> tuple[list[str], list[float]]:
    names, weights = zip(*((k, float(v)) for k, v in (p.split(":") for p in spec.split(","))))
    return list(names), list(weights)


def drill(backbone: Backbone, rng: random.Random) -> tuple[list[int], int]:
    """A bare arithmetic line in the Strategist's plan format ("73 + 67 = 140."): short and
    cheap, it teaches the one skill every task needs; loss only on the result."""
    a, b = rng.randint(0, 199), rng.randint(1, 99)
    if rng.random() < 0.5:
        prompt, result = f"{a} + {b} =", a + b
    else:
        a = max(a, b)
        prompt, result = f"{a} - {b} =", a - b
    tok = backbone.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    return ids + tok(f" {result}.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id], len(ids)


def training_sequence(backbone: Backbone, ex: tasks.Example, rng: random.Random, kinds: tuple[list[str], list[float]],
                      roles: Roles | None = None) -> tuple[list[int], int]:
    """One role-prompted (prompt, target) pair from `ex`, of a kind drawn from `kinds`
    (names, weights): returns (ids, prompt length)."""
    roles = roles or Roles()
    kind = rng.choices(*kinds)[0]
    tok = backbone.tokenizer
    if kind in ("bare", "glued"):  # the question then its answer, no template; glued: no space, so the question's
        # last token predicts the answer's first token and the question's own states must hold it
        ids = tok(ex.question, add_special_tokens=False)["input_ids"]
        answer = ex.answer if kind == "glued" else f" {ex.answer}"
        return ids + tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], len(ids)
    if kind in ("sender_glued", "split_glued"):  # a sender's prompt cut after the question, then the answer: the
        # states the generator reads (the question span in the sender's role) must hold the answer. split_glued:
        # the second sender's answer is written last character first, so its question states lead with the
        # units digit of a number (the first sender's with the tens digit)
        j = rng.randrange(len(roles.senders))
        prompt = build_prompt(backbone, roles.senders[j], ex.question)
        ids = prompt.input_ids[: prompt.question_span[1]]
        answer = ex.answer[::-1] if kind == "split_glued" and j % 2 else ex.answer
        return ids + tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], len(ids)
    if kind == "sender":
        j = rng.randrange(len(roles.senders))
        agent = roles.senders[j]
        prompt = build_prompt(backbone, agent, ex.question, ex.contexts[j])
        target = ex.messages[agent.role]
    elif kind == "with_messages":
        prompt = build_prompt(backbone, EXECUTOR, ex.question, None, ex.messages)
        target = ex.target
    else:  # facts in the receiver's own context; arith has none, so this is Single
        facts = "\n".join(dict.fromkeys(c for c in ex.contexts if c)) or None
        prompt = build_prompt(backbone, EXECUTOR, ex.question, facts)
        # told nothing, the receiver answers at once: working things out is what it learns from others
        target = ex.target if facts else ex.answer
    ids = prompt.input_ids + tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return ids, len(prompt.input_ids)


def _corpus(cfg: PretrainConfig) -> list[str]:
    roles = Roles()
    texts = [a.system_prompt for a in (*roles.senders, roles.receiver)]
    mix = _mix(cfg.task_mix)[0]
    # a specialist's knowledge base only where it is in the mix: the receiver's tokenizer never saw one
    for name in (*tasks.TASKS, *(n for n in mix if tasks.is_specialist(n))):
        pool = ([*tasks.examples(name, "train", None), *tasks.examples(name, "test", None)] if tasks.is_specialist(name)
                else tasks.examples(name, "train", 1500, cfg.seed))
        for ex in pool:
            texts += [ex.question, ex.answer, *(c for c in ex.contexts if c), *ex.messages.values()]
            texts.append("\n".join(f"{r}: {m}" for r, m in ex.messages.items()))
    return texts


def _fresh(cfg: PretrainConfig):
    tokenizer = build_tokenizer(_corpus(cfg), cfg.vocab_size)
    model_cfg = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(model_cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def pretrain(cfg: PretrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    if cfg.init:
        init = load_backbone(cfg.init, device="cpu")
        tokenizer, model = init.tokenizer, init.model
    else:
        tokenizer, model = _fresh(cfg)
    backbone = Backbone(model, tokenizer, "tiny-qwen3")
    model.train().requires_grad_(True)
    names, weights = _mix(cfg.task_mix)
    kinds = _mix(cfg.kind_mix)
    knows = set(filter(None, cfg.knows.split(",")))
    draws = {n: tasks.stream(n, cfg.seed, held_out=n in knows) for n in names if n != "drill"}

    def sequence() -> tuple[list[int], int]:
        name = rng.choices(names, weights)[0]
        return drill(backbone, rng) if name == "drill" else training_sequence(backbone, draws[name](), rng, kinds)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    start, ema, losses = time.time(), None, []
    bar = tqdm(range(cfg.steps), desc="pretrain", mininterval=5)
    for step in bar:
        rows = [sequence() for _ in range(cfg.batch_size)]
        ids, mask, labels = pad_with_labels(rows, tokenizer.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.steps, cfg.warmup, cfg.lr, floor=0.05)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{ema:.4f}")
    model.eval()
    out = Path(cfg.out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    history = json.loads((Path(cfg.init) / "card.json").read_text()).get("stages", []) if cfg.init else []
    card = {"what": "tiny Qwen3 pretrained from scratch on role-prompted TFlow tasks (python -m tflow.tools.pretrain)",
            "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.time() - start, 1), "final_loss_ema": round(ema, 5),
            "final_loss_last100": round(sum(losses[-100:]) / len(losses[-100:]), 5),
            "data_mix": {"tasks": dict(zip(names, weights)), "kinds": dict(zip(*kinds))}}
    card["stages"] = history + [
        {k: card[k] for k in ("config", "seconds", "final_loss_ema", "final_loss_last100", "data_mix")}
    ]
    (out / "card.json").write_text(json.dumps(card, indent=2))
    return card


@user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_flags(parser, PretrainConfig())
    card = pretrain(PretrainConfig(**vars(parser.parse_args(argv))))
    print(json.dumps({k: card[k] for k in ("parameters", "seconds", "final_loss_ema")}))


if __name__ == "__main__":
    main()
