"""The task suite: surface forms, disjoint seeded splits, answer extraction, JSONL loading."""
from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from tflow import tasks
from tflow.tasks import kb, notes


@pytest.mark.parametrize("task", tasks.TASKS + tasks.REAL_MODEL_TASKS)
def test_train_and_test_splits_are_disjoint_and_seeded(task):
    train = tasks.examples(task, "train", 400, seed=0)
    test = tasks.examples(task, "test", 100, seed=0)
    assert not {e.key for e in train} & {e.key for e in test}
    assert tasks.examples(task, "test", 100, seed=0) == test
    assert len({e.key for e in test}) == 100
    assert all(tasks.is_correct(e.target, e.answer) for e in train[:50])


def test_relay_has_the_documented_surface_form():
    for e in tasks.examples("relay", "test", 100):
        fact = e.contexts[0]
        m = re.fullmatch(r"The (code|key|pin) is (\d+)\.", fact)
        assert m, fact
        q = re.fullmatch(rf"What is the {m.group(1)}(?: (plus|minus) (\d))?\?", e.question)
        assert q, e.question
        value = int(m.group(2))
        want = (
            value
            if q.group(1) is None
            else value + int(q.group(2))
            if q.group(1) == "plus"
            else value - int(q.group(2))
        )
        assert e.answer == str(want)


def test_relay_values_ending_in_seven_never_reach_training():
    assert not any(e.contexts[0].endswith("7.") for e in tasks.examples("relay", "train", 1000))
    draw = tasks.stream("relay", seed=3)
    assert not any(draw().contexts[0].endswith("7.") for _ in range(500))
    assert any(e.contexts[0].endswith("7.") for e in tasks.examples("relay", "test", 300))


def test_split_gives_each_sender_one_fact_and_asks_the_total():
    e = tasks.examples("split", "test", 1)[0]
    a, b = (int(re.search(r"\d+", c).group()) for c in e.contexts)
    assert e.answer == str(a + b) and "How many" in e.question


def _note_parts(fact: str, question: str) -> tuple[notes.Slot, str, int, int]:
    """(slot, value, split of the fact's template, split of the question's template) of one note."""
    for slot in notes.SLOTS:
        for fact_split, templates in enumerate(slot.facts):
            for t in templates:
                m = re.fullmatch(re.escape(t).replace(re.escape("{v}"), "(.+)"), fact)
                if m and m.group(1) in slot.values and question in (*slot.questions[0], *slot.questions[1]):
                    return slot, m.group(1), fact_split, int(question in slot.questions[1])
    raise AssertionError(f"not a note: {fact!r} / {question!r}")


def _note_questions(ex: tasks.Example) -> list[str]:
    """The question of each note the example asks about (a note-split asks two, one after the other)."""
    if ex.task == "note":
        return [ex.question]
    first = next(
        q for slot in notes.SLOTS for q in (*slot.questions[0], *slot.questions[1]) if ex.question.startswith(q + " ")
    )
    return [first, ex.question[len(first) + 1:]]


@pytest.mark.parametrize("task", tasks.REAL_MODEL_TASKS)
def test_a_note_test_example_states_a_held_out_value_with_held_out_phrasings_and_training_never_does(task):
    for split, want in (("test", 1), ("train", 0)):
        for ex in tasks.examples(task, split, 200, seed=0):
            facts = [ex.contexts[0]] if task == "note" else list(ex.contexts)
            for fact, question in zip(facts, _note_questions(ex)):
                slot, value, fact_split, question_split = _note_parts(fact, question)
                assert (notes.is_held_out_value(slot, value), fact_split, question_split) == (bool(want), want, want), (
                    ex,
                    split,
                )
    draw = tasks.stream(task, seed=3)
    assert not any(draw().held_out for _ in range(300))


def test_open_class_note_slots_hold_enough_values_that_a_lookup_cannot_pass():
    """A few dozen names let a generator learn a lookup (0 of 33 held-out values read, in training's
    diagnostic); each open-class slot keeps well over a hundred training values, or 39 colours."""
    for slot in notes.SLOTS:
        train = [v for v in slot.values if not notes.is_held_out_value(slot, v)]
        held = [v for v in slot.values if notes.is_held_out_value(slot, v)]
        assert len(set(slot.values)) == len(slot.values) and held and train, slot.name
    sizes = {slot.name: len(slot.values) for slot in notes.SLOTS}
    assert sizes["name"] >= 150 and sizes["city"] >= 120 and sizes["colour"] >= 35, sizes


def test_note_split_gives_each_sender_one_note_and_asks_for_both():
    for ex in tasks.examples("note-split", "test", 50, seed=1):
        a, b = ex.contexts
        (slot_a, value_a, _, _), (slot_b, value_b, _, _) = (
            _note_parts(f, q) for f, q in zip(ex.contexts, _note_questions(ex))
        )
        assert slot_a != slot_b and ex.answer == f"{value_a} and {value_b}"
        assert ex.messages == {"Strategist": a, "Knowledge Extractor": b}
        assert tasks.is_correct(f"The first is {value_a}, the second {value_b}.", ex.answer)
        assert not tasks.is_correct(f"It is {value_a}.", ex.answer) and not tasks.is_correct(
            f"It is {value_b}.", ex.answer
        )


def test_a_mixture_trains_on_each_of_its_tasks_and_its_checkpoint_covers_them():
    mixed = tasks.examples("note+note-split", "train", 9, seed=0)
    assert [e.task for e in mixed] == ["note", "note-split"] * 4 + ["note"]
    draw = tasks.stream("note+note-split", seed=0)
    drawn = [draw().task for _ in range(200)]
    assert 60 < drawn.count("note") < 140 and set(drawn) == {"note", "note-split"}
    assert tasks.covers("note+note-split", "note-split") and tasks.covers("note+note-split", "note+note-split")
    assert not tasks.covers("note+note-split", "relay") and tasks.covers("relay", "relay")
    assert tasks.budgets("note+note-split") == (
        max(tasks.budgets("note")[0], tasks.budgets("note-split")[0]),
        tasks.budgets("note")[1],
    )
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        tasks.examples("note+nope", "train", 4)


def test_swapped_fact_changes_the_answer_accordingly():
    rng = random.Random(0)
    for e in tasks.examples("relay", "test", 50):
        s = tasks.swap_fact(e, rng)
        assert s.question == e.question and s.contexts != e.contexts
        delta = int(s.contexts[0].split()[-1].rstrip(".")) - int(e.contexts[0].split()[-1].rstrip("."))
        assert int(s.answer) - int(e.answer) == delta


@pytest.mark.parametrize("text, want", [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
    ("so the answer is \\boxed{1,234}", "1234"),
    ("47 + 5 = 52", "52"),
    ("The result is 12.0", "12"),
    ("no number here", None),
])
def test_answer_extraction(text, want):
    assert tasks.extract_answer(text) == want


def _gsm_file(path, n: int = 200):
    rows = [{"question": f"Q{i}: what is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return f"jsonl:{path}"


def test_a_jsonl_file_is_a_split_used_whole(tmp_path):
    task = _gsm_file(tmp_path / "gsm.jsonl", 3)
    for split in ("test", "train"):  # the file the user gives is the split: every row, in file order
        rows = tasks.examples(task, split, None)
        assert [e.answer for e in rows] == ["1", "2", "3"]
    assert len(tasks.examples(task, "test", 2)) == 2
    draw = tasks.stream(task, seed=0)
    assert {draw().answer for _ in range(60)} == {"1", "2", "3"}  # training samples every row


def test_hash_split_of_one_jsonl_file_is_disjoint_and_explicit(tmp_path):
    task = _gsm_file(tmp_path / "gsm.jsonl")
    test = tasks.examples(task, "test", None, hash_split=True)
    train = tasks.examples(task, "train", None, hash_split=True)
    assert len(test) + len(train) == 200 and test and not {e.key for e in test} & {e.key for e in train}
    assert all(e.answer == str(int(e.question.split()[3]) + 1) for e in test)


def test_bad_jsonl_rows_are_named_by_line_before_anything_runs_or_skipped_on_request(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "what is 1 + 1?", "answer": "#### 2"}\n{"question": "", "answer": "#### 3"}\n'
                    '\n{"question": "no answer key"}\nnot json\n')
    with pytest.raises(ValueError) as e:
        tasks.examples(f"jsonl:{path}", "test", None)
    msg = str(e.value)
    assert (
        "3 bad row(s)" in msg
        and "line 2: empty question" in msg
        and "line 4: no 'answer' key" in msg
        and "line 5: not JSON" in msg
    )
    assert "\n" not in msg
    rows, skipped = tasks.load_jsonl(str(path), skip_bad_rows=True)
    assert [e.answer for e in rows] == ["2"] and skipped == 3


def test_bad_task_inputs_are_readable_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        tasks.examples("poetry", "test", 3)
    with pytest.raises(ValueError, match="no such JSONL"):
        tasks.examples(f"jsonl:{tmp_path / 'missing.jsonl'}", "test", 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "answer": "no final answer"}\n')
    with pytest.raises(ValueError, match="no final answer"):
        tasks.examples(f"jsonl:{bad}", "train", 3)


def test_kb_splits_by_person_and_both_groups_share_the_value_sets():
    people = {held: {f.who for f in kb.facts() if f.held_out == held} for held in (False, True)}
    assert not people[False] & people[True] and len(people[True]) == kb.HELD_OUT_ENTITIES
    train, test = tasks.examples("kb", "train", None), tasks.examples("kb", "test", None)
    assert len(test) == 300 and not {e.question for e in train} & {e.question for e in test}
    seen = {(f.attribute.name, f.value) for f in kb.facts() if not f.held_out}
    new = [f for f in kb.facts() if f.held_out and (f.attribute.name, f.value) not in seen]
    assert len(new) <= 1  # B's answers are A's answers (one lucky number occurs only in B): reading, not new words
    draw = tasks.stream("kb", seed=1)
    b_questions = {e.question for e in test}
    assert not any(draw().question in b_questions for _ in range(500))
    everything = tasks.stream("kb", seed=1, held_out=True)
    assert any(everything().question in b_questions for _ in range(500))
    assert (
        tasks.is_correct("Bob", "Bob") and tasks.is_correct("It is Bob.", "Bob") and not tasks.is_correct("Ann", "Bob")
    )


def test_kb_at_n_is_a_fresh_knowledge_base_of_the_same_sizes_and_kb_is_unchanged():
    shipped, fresh = tasks.examples("kb", "test", None), tasks.examples("kb@1", "test", None)
    assert tasks.kb_world("kb") == ("kb", 0) and tasks.kb_world("kb@1") == ("kb", 1) and tasks.kb_world("relay") is None
    assert [e.question for e in shipped] == [e.question for e in tasks.examples("kb@0", "test", None)]
    assert shipped[0].task == "kb" and fresh[0].task == "kb@1"
    assert len(fresh) == len(shipped) == 300 and len(tasks.examples("kb@1", "train", None)) == 900
    assert [(e.question, e.answer) for e in fresh] != [(e.question, e.answer) for e in shipped]
    assert not {e.question for e in fresh} & {e.question for e in tasks.examples("kb@1", "train", None)}
    with pytest.raises(ValueError, match="kb@N"):
        tasks.examples("kb@one", "test", 3)


def test_kb_words_deals_every_value_evenly_within_each_group_and_asks_its_own_questions():
    facts = kb.facts(4, "kb-words")
    people = {held: {f.who for f in facts if f.held_out == held} for held in (False, True)}
    assert not people[False] & people[True] and len(people[True]) == kb.HELD_OUT_ENTITIES
    values = {v for a in kb.WORD_ATTRIBUTES for v in a.values}
    assert not (people[False] | people[True]) & values  # no invented person is called like an answer
    for attr in kb.WORD_ATTRIBUTES:
        for held, size in ((False, kb.ENTITIES - kb.HELD_OUT_ENTITIES), (True, kb.HELD_OUT_ENTITIES)):
            counts = Counter(f.value for f in facts if f.attribute == attr and f.held_out == held)
            assert set(counts) == set(attr.values) and max(counts.values()) - min(counts.values()) <= 1
            assert max(counts.values()) <= -(-size // len(attr.values)) and sum(counts.values()) == size
    test = tasks.examples("kb-words@4", "test", None)
    assert len(test) == 300 and tasks.kb_world("kb-words@4") == ("kb-words", 4) and tasks.is_specialist("kb-words@4")
    assert {kb.attribute_of(e.question) for e in test} == {"friend", "country", "colour"}
    assert [e.answer for e in test] != [e.answer for e in tasks.examples("kb-words@5", "test", None)]
    with pytest.raises(ValueError, match="kb-words@N"):
        tasks.examples("kb-words@x", "test", 3)


def test_a_kb_words_answer_is_right_when_it_names_the_reference_and_no_other_value_of_its_set():
    q = "Who is Shofen's best friend?"
    assert kb.closed_set(q) == kb.WORD_FRIENDS and kb.closed_set("Who is Neva's friend?") is None
    assert tasks.is_correct("Jack is Shofen's best friend.", "Jack", q) and tasks.is_correct("jack", "Jack", q)
    assert not tasks.is_correct("Jack or Mary?", "Jack", q) and not tasks.is_correct("Jacky", "Jack", q)
    assert tasks.is_correct("It is Japan, I think.", "Japan", "Which country is Vekel from?")
    assert not tasks.is_correct(
        "Bob is Neva's friend.", "Bob", "Who is Neva's friend?"
    )  # kb's rule is unchanged: the last word


def test_split_glued_sequences_give_the_second_sender_the_answer_last_character_first(qwen3):
    from tflow.tools.pretrain import training_sequence

    ex = next(e for e in tasks.examples("kb", "train", None) if e.answer.isdigit() and e.answer[0] != e.answer[1])
    tok, seen = qwen3.tokenizer, set()
    for seed in range(20):
        ids, prompt_len = training_sequence(qwen3, ex, random.Random(seed), (["split_glued"], [1.0]))
        seen.add(tok.decode(ids[prompt_len:-1]))
        assert tok.decode(ids[:prompt_len]).endswith(ex.question)  # cut right after the question
    assert seen == {ex.answer, ex.answer[::-1]}


def test_every_kb_question_names_its_attribute_and_evaluation_splits_accuracy_by_it():
    from types import SimpleNamespace

    from tflow.tools.evaluate import _by_attribute

    rows = tasks.examples("kb@2", "test", None)
    assert {kb.attribute_of(e.question) for e in rows} == {a.name for a in kb.ATTRIBUTES}
    assert kb.attribute_of("What is 2 + 2?") is None
    results = [(SimpleNamespace(question=e.question), e.answer) for e in rows[:30]]
    correct = [kb.attribute_of(e.question) == "friend" for e in rows[:30]]
    split = _by_attribute(results, correct)["by_attribute"]
    assert split["friend"]["accuracy"] == 1.0 and all(v["accuracy"] == 0.0 for k, v in split.items() if k != "friend")
    assert sum(v["n"] for v in split.values()) == 30
    assert _by_attribute([(SimpleNamespace(question="What is 2 + 2?"), "4")], [True]) == {}
