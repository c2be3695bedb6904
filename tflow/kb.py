"""The fictional knowledge base behind the `kb` task: invented people and their attributes.

A specialist backbone learns every fact in its weights (`python -m tflow.pretrain --knows kb`);
the receiver never sees them. The people are split by *entity*: facts about group A are the
only ones a generator or a static LoRA ever trains on; group B's are held out (the test split).
Attribute values come from closed sets shared by both groups (friends are the receiver's own
single-token names, ages and lucky numbers two-digit numbers), so answering a question about
a B person is reading the specialist's knowledge, not guessing a new word. Everyone sees the
same question; there is no private context.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

FRIENDS = ("Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon")
_ONSETS = "b d f g k l m n p r s t v z".split() + ["br", "dr", "kl", "tr", "sh"]
_VOWELS = "a e i o u".split()
_CODAS = ["", "", "", "n", "l", "r", "s", "k"]
ENTITIES, HELD_OUT_ENTITIES = 400, 100


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how it is asked, how the specialist states it, its closed value set."""

    name: str
    question: str  # format with {who}
    statement: str  # format with {who} and {value}
    values: tuple[str, ...]


ATTRIBUTES = (
    Attribute("friend", "Who is {who}'s friend?", "{who}'s friend is {value}.", FRIENDS),
    Attribute("age", "How old is {who}?", "{who} is {value} years old.", tuple(str(v) for v in range(20, 80))),
    Attribute("lucky", "What is {who}'s lucky number?", "{who}'s lucky number is {value}.", tuple(str(v) for v in range(10, 100))),
)


@dataclass(frozen=True)
class Fact:
    who: str
    attribute: Attribute
    value: str
    held_out: bool  # the person is in group B: never used to train a generator or a static LoRA

    @property
    def question(self) -> str:
        return self.attribute.question.format(who=self.who)

    @property
    def statement(self) -> str:
        return self.attribute.statement.format(who=self.who, value=self.value)


def _names(rng: random.Random, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)).title()
        if name not in names and name not in FRIENDS:
            names.append(name)
    return names


@cache
def facts(seed: int = 0) -> tuple[Fact, ...]:
    """Every fact of the knowledge base, person-major; the last HELD_OUT_ENTITIES people are group B."""
    rng = random.Random(f"kb/{seed}")
    people = _names(rng, ENTITIES)
    return tuple(
        Fact(who, attr, rng.choice(attr.values), i >= ENTITIES - HELD_OUT_ENTITIES)
        for i, who in enumerate(people) for attr in ATTRIBUTES
    )


def attribute_of(question: str) -> str | None:
    """The attribute a kb question asks about (its template's fixed start), or None for another question."""
    for attr in ATTRIBUTES:
        start, _, end = attr.question.partition("{who}")
        if question.startswith(start) and question.endswith(end):
            return attr.name
    return None
