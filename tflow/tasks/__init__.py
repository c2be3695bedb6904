"""Tasks: where every question, reference answer and answer checker comes from.

`suite` holds the built-in seeded tasks (relay, split, arith, note, note-split, kb, kb@N, kb-words@N, jsonl:PATH)
and dispatches every task name the tools and the Studio use; `benchmarks` the paper's benchmarks by name (gsm8k,
math, mmlu-redux, humaneval, humaneval+, mbpp+, ...); `procedural` reasoning-gym's tasks (`rg:NAME`); `kb` and
`notes` the worlds two built-in tasks draw from; `grade` scores answers of any of them. Import the names from here:
`tasks.examples(...)`, `tasks.grade(...)`.
"""
from .example import Example
from .grade import grade, grade_one
from .suite import (
    ANSWER_TOKENS,
    REAL_MODEL_TASKS,
    SPECIALIST_TASKS,
    TASKS,
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
    "examples", "extract_answer", "grade", "grade_one", "in_test_split", "is_correct", "is_held_out", "is_specialist",
    "kb_world", "load_jsonl", "parts", "stream", "swap_fact",
]
