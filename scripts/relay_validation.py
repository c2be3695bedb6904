"""Pick the relay generator's training length on a validation set, never on the test queries.

Relay fact values ending in 7 never occur in training, so the test's held-out values test
generalisation, and the train-split dev set cannot see it. The validation set here is 150
held-out-value questions from other seeds that are not among the 300 test queries that
`python -m tflow.tools.evaluate --task relay --seed 0` scores.

    python scripts/relay_validation.py runs/gen-relay-350 runs/gen-relay-500 checkpoints/generators/relay
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tflow import tasks  # noqa: E402
from tflow.pipeline import Pipeline  # noqa: E402


def validation_set(size: int = 150, test_limit: int = 300) -> list[tasks.Example]:
    test_keys = {e.key for e in tasks.examples("relay", "test", test_limit, seed=0)}
    out, seen = [], set()
    for seed in range(1, 6):
        for e in tasks.examples("relay", "test", test_limit, seed=seed):
            if tasks.is_held_out(e) and e.key not in test_keys and e.key not in seen:
                seen.add(e.key)
                out.append(e)
    return out[:size]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("generators", nargs="+")
    p.add_argument("--model", default="checkpoints/tiny-qwen3")
    a = p.parse_args()
    val = validation_set()
    for gen in a.generators:
        pipe = Pipeline.from_pretrained(a.model, gen, device="cpu")
        results = pipe.run_batch(
            [e.question for e in val], "tflow", [e.contexts for e in val], max_new_tokens=tasks.ANSWER_TOKENS
        )
        acc = sum(tasks.is_correct(r.answer, e.answer) for r, e in zip(results, val)) / len(val)
        print(f"{gen}: {acc:.1%} of {len(val)} held-out-value validation questions")


if __name__ == "__main__":
    main()
