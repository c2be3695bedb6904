"""Tasks: where every question, reference answer and answer checker comes from.

`suite` holds the built-in seeded tasks (relay, split, arith, note, note-split, kb, kb@N,
kb-words@N, jsonl:PATH) and the names every tool and the Studio use; `kb` and `notes` are the
worlds two of them draw from. Import the suite's names from here: `tasks.examples(...)`.
"""
from .suite import (
    ANSWER_TOKENS,
    REAL_MODEL_TASKS,
    SPECIALIST_TASKS,
    TASKS,
    Example,
    budgets,
    checkpoint_name,
    covers,
    examples,
    extract_answer,
    in_test_split,
    is_correct,
    is_held_out,
    is_specialist,
    kb_world,
    load_jsonl,
    parts,
    stream,
    swap_fact,
)

__all__ = [
    "ANSWER_TOKENS", "REAL_MODEL_TASKS", "SPECIALIST_TASKS", "TASKS", "Example", "budgets", "checkpoint_name", "covers",
    "examples", "extract_answer", "in_test_split", "is_correct", "is_held_out", "is_specialist", "kb_world",
    "load_jsonl", "parts", "stream", "swap_fact",
]
