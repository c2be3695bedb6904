"""The free-form note test set: notes and questions in everyday words, for the note generator, never trained on."""
from __future__ import annotations

import pytest

from tflow import tasks
from tflow.tasks import suite
from tflow.tasks.notes import FREEFORM_SETS

SETS = pytest.mark.parametrize("name", sorted(FREEFORM_SETS))


@SETS
def test_each_free_form_set_holds_at_least_fifty_distinct_notes_each_stating_its_answer(name):
    rows = tasks.examples(name, "test", None)
    assert len(rows) >= 50
    assert len({r.question for r in rows}) == len(rows) and len({r.contexts[0] for r in rows}) == len(rows)
    for r in rows:
        assert r.contexts == (r.contexts[0], r.contexts[0]) and r.answer in r.contexts[0], r
        assert r.answer not in r.question, r  # the question alone does not give it away


@SETS
def test_a_free_form_answer_is_scored_right_in_a_sentence_and_wrong_with_another_notes_value(name):
    rows = tasks.examples(name, "test", None)
    assert all(tasks.grade(rows, [f"It is {r.answer}." for r in rows]))
    others = [rows[(i + 1) % len(rows)].answer for i in range(len(rows))]
    assert not any(tasks.grade(rows, [f"It is {o}." for o in others]))


@SETS
def test_a_free_form_set_is_never_trained_on_and_resolves_to_the_note_generator(name):
    with pytest.raises(ValueError, match="test set only"):
        tasks.examples(name, "train", 10)
    assert suite.covers("note", name) and suite.covers("note+note-split", name)
    assert not suite.covers("note-split", name)
    assert suite.budgets(name) == suite.budgets("note")
    trained = {e.contexts[0] for e in tasks.examples("note", "train", 2000)}
    assert not trained & {r.contexts[0] for r in tasks.examples(name, "test", None)}


def test_the_free_form_sets_share_no_note():
    sets = [{r.contexts[0] for r in tasks.examples(n, "test", None)} for n in sorted(FREEFORM_SETS)]
    assert sum(map(len, sets)) == len(set().union(*sets))
