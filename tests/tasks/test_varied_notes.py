"""note-varied: training notes whose values are made up at draw time (no pool to recognise), in everyday registers."""
from __future__ import annotations

import random

from tflow import tasks
from tflow.tasks import notes, suite, varied_notes


def test_every_varied_note_states_its_made_up_value_and_the_question_does_not():
    rows = tasks.examples("note-varied", "train", 400)
    for r in rows:
        assert r.answer in r.contexts[0] and r.answer not in r.question, r
        assert tasks.grade([r], [f"It is {r.answer}."]) == [True], r
    kinds = {k for k, _, _ in varied_notes.SUBJECTS}
    assert kinds == set(varied_notes.KINDS)
    # open-class values: almost none of the words is one the note task's pools hold
    pools = {v for slot in notes.SLOTS for v in slot.values}
    words = [r.answer for r in rows if r.answer.isalpha() and r.answer not in varied_notes.WEEKDAYS]
    assert len(words) > 50 and sum(w in pools for w in words) <= len(words) // 50


def test_a_correction_note_holds_a_distractor_of_the_same_kind_that_is_never_the_answer():
    rng = random.Random(0)
    corrections = [d for d in (varied_notes.draw(rng) for _ in range(2000)) if ", not " in d[0] or " was " in d[0]]
    assert len(corrections) > 200
    for note, _, value in corrections:
        other = note.split(", not ")[-1].rstrip(".") if ", not " in note else note.split(" was ")[1].split(",")[0]
        assert other != value


def test_note_varied_trains_in_a_mixture_with_note_whose_generator_answers_the_note_test_sets():
    draw = tasks.stream("note+note-varied", seed=0)
    assert {draw().task for _ in range(200)} == {"note", "note-varied"}
    assert suite.covers("note+note-varied", "note") and suite.covers("note+note-varied", "note-freeform2")
    assert suite.budgets("note+note-varied") == suite.budgets("note")
