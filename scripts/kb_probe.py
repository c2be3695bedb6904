r"""Linear probe: do the specialist's question-span states (as a sender) encode the kb answer?

    python scripts/kb_probe.py [--model checkpoints/tiny-qwen3-kb] [--task kb] [--every 1] \
        [--json checkpoints/tiny-qwen3-kb/probe.json]
    python scripts/kb_probe.py --model checkpoints/specialists/smollm2-kb2 --task kb@2 \
        --condition prompt --layers 20,25,28,30

For every layer (embedding output = 0), the Strategist's hidden state on the question's last token
(and, beside it, the mean over the question's tokens) feeds one logistic regression per attribute and
answer character (the friend's name; each digit of a number), fitted on group A's questions and scored
on group B's (people it never saw): a question counts when every character of its answer is right. Run before training
a generator: if the states do not carry the answer, no generator can read it out of them. `--condition prompt` probes
the states a `--condition prompt` generator reads, whose last token is the chat template's answer header (where the
specialist answers from), and reports each answer character's accuracy per attribute beside the whole answer's.
For kb-words (one-token values) it also reads the last layer's last-token state through the specialist's own output
head, fitted on nothing: the value of the question's closed set with the highest logit (`head` in the report).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tflow import tasks  # noqa: E402
from tflow.agents import STRATEGIST, load_backbone, sender_prompts, sender_states  # noqa: E402
from tflow.tasks import kb  # noqa: E402


def pooled_states(
    backbone, questions: list[str], batch: int = 64, condition: str = "question"
) -> dict[str, torch.Tensor]:
    """{"last", "mean"}: (n, L+1, hidden), the condition span's last token's states and the mean over its tokens."""
    out: dict[str, list] = {"last": [], "mean": []}
    for i in range(0, len(questions), batch):
        qs = questions[i : i + batch]
        states, _ = sender_states(backbone, sender_prompts(backbone, [STRATEGIST], qs, [[None]] * len(qs)), condition)
        out["last"] += [s.float()[:, -1] for s in states]
        out["mean"] += [s.float().mean(1) for s in states]
    return {k: torch.stack(v) for k, v in out.items()}


def probe_parts(x_train, answers_train: list[str], x_test, answers_test: list[str]) -> list[list[bool]]:
    """Per answer character (words: the whole word), per question of the test set: predicted right?"""
    parts = (lambda a: [a]) if not answers_train[0].isdigit() else list
    out = []
    for k in range(len(parts(answers_train[0]))):
        clf = LogisticRegression(max_iter=3000, C=10.0).fit(x_train, [parts(a)[k] for a in answers_train])
        out.append([p == parts(a)[k] for p, a in zip(clf.predict(x_test), answers_test)])
    return out


def probe(x_train, answers_train: list[str], x_test, answers_test: list[str]) -> list[bool]:
    """Per question of the test set: is every answer character predicted right? (words: the whole word)"""
    return [all(ok) for ok in zip(*probe_parts(x_train, answers_train, x_test, answers_test))]


def head_readout(backbone, states: torch.Tensor, questions: list[str], answers: list[str]) -> dict[str, float]:
    """Per attribute: how often the specialist's own output head, applied to the final (normed) state, ranks the
    right value first among its closed set (each value one token, as the specialist writes it after the header)."""
    head = backbone.model.get_output_embeddings()
    with torch.no_grad():
        logits = head(states.to(head.weight.dtype)).float()
    token = {
        v: backbone.tokenizer.encode(v, add_special_tokens=False)[0] for attr in kb.WORD_ATTRIBUTES for v in attr.values
    }
    right: dict[str, list[bool]] = {}
    for row, q, a in zip(logits, questions, answers):
        values = kb.closed_set(q)
        right.setdefault(kb.attribute_of(q), []).append(values[int(row[[token[v] for v in values]].argmax())] == a)
    return {k: sum(v) / len(v) for k, v in right.items()}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="checkpoints/tiny-qwen3-kb", help="the specialist: a backbone or a PEFT adapter directory"
    )
    p.add_argument("--task", default="kb", help="its knowledge base: kb, kb@N or kb-words@N")
    p.add_argument("--every", type=int, default=1, help="probe every Nth layer (and the last)")
    p.add_argument("--layers", default=None, help="a comma list of layers to probe instead of --every")
    p.add_argument(
        "--condition",
        choices=("question", "prompt"),
        default="question",
        help="the states probed: the question's (the paper's condition) or up to the answer header "
             "(--condition prompt)",
    )
    p.add_argument("--json", default=None, help="write the report here")
    a = p.parse_args()
    torch.set_num_threads(1)
    backbone = load_backbone(a.model, device="cpu")
    split = {name: tasks.examples(a.task, name, None) for name in ("train", "test")}
    feats = {
        name: pooled_states(backbone, [e.question for e in rows], condition=a.condition) for name, rows in split.items()
    }
    report = {"model": a.model, "task": a.task, "condition": a.condition, "fit": "group A questions",
              "scored": f"group B questions ({len(split['test'])})", "accuracy": {}, "by_part": {}}
    layers = ([int(x) for x in a.layers.split(",")] if a.layers
              else sorted({*range(0, backbone.num_layers + 1, a.every), backbone.num_layers}))
    for pool in ("last", "mean"):
        for layer in layers:
            right, parts = 0, {}
            for attr in kb.SCHEMAS[tasks.kb_world(a.task)[0]]:
                pick = {
                    n: [i for i, e in enumerate(rows) if kb.attribute_of(e.question) == attr.name]
                    for n, rows in split.items()
                }
                by_part = probe_parts(*(arg for n in ("train", "test") for arg in (
                    feats[n][pool][pick[n], layer].numpy(), [split[n][i].answer for i in pick[n]])))
                right += sum(all(ok) for ok in zip(*by_part))
                parts[attr.name] = [sum(ok) / len(ok) for ok in by_part]
            report["accuracy"][f"{pool}/layer{layer}"] = right / len(split["test"])
            report["by_part"][f"{pool}/layer{layer}"] = parts
            detail = "; ".join(f"{k} " + "/".join(f"{100 * x:.0f}" for x in v) for k, v in parts.items())
            print(
                f"{pool} token{'s' if pool == 'mean' else ''}, layer {layer}: probe accuracy on B "
                f"{100 * right / len(split['test']):.1f}% (per answer character, %: {detail})"
            )
    if tasks.kb_world(a.task)[0] == "kb-words":
        rows = split["test"]
        head = head_readout(backbone, feats["test"]["last"][:, backbone.num_layers],
                            [e.question for e in rows], [e.answer for e in rows])
        report["head"] = head
        print(
            f"the specialist's own head, last token, layer {backbone.num_layers} (no fit): on B "
            f"{100 * sum(head.values()) / len(head):.1f}% ("
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in head.items())
            + ")"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
