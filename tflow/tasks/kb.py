"""The fictional knowledge base behind the `kb` task: invented people and their attributes.

A specialist backbone learns every fact in its weights (`python -m tflow.tools.pretrain --knows kb`);
the receiver never sees them. The people are split by *entity*: facts about group A are the
only ones a generator or a static LoRA ever trains on; group B's are held out (the test split).
Attribute values come from closed sets shared by both groups, so answering a question about
a B person is reading the specialist's knowledge, not guessing a new word. Everyone sees the
same question; there is no private context.

Two schemas: `kb` (friends are the receiver's own single-token names, ages and lucky numbers
two-digit numbers; the embedded world's) and `kb-words` (best friend, country, colour: 12 values
each, every one a single token of SmolLM2's vocabulary with or without a leading space, dealt
out evenly within each group; its questions are worded apart from kb's, so that a question
alone says which closed set its answer comes from: `closed_set`). A real LLM writes a number
digit by digit, so a sender that only reads the question holds a number's first digit but
mostly not its second (`scripts/kb_probe.py --condition prompt`); a one-token value is decided
before it is written.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

FRIENDS = ("Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon")
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"] + ["br", "dr", "kl", "tr", "sh"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "", "n", "l", "r", "s", "k"]
ENTITIES, HELD_OUT_ENTITIES = 400, 100
WORD_FRIENDS = ("Ann", "Bob", "Dan", "Jon", "Kim", "Max", "Paul", "Sam", "Tom", "Ben", "Jack", "Mary")
COUNTRIES = ("France", "Japan", "China", "India", "Brazil", "Canada", "Mexico", "Spain", "Italy", "Egypt", "Germany",
             "Russia")
COLOURS = ("red", "blue", "green", "black", "white", "brown", "gray", "purple", "orange", "yellow", "gold", "lime")


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
    Attribute("lucky", "What is {who}'s lucky number?", "{who}'s lucky number is {value}.",
              tuple(str(v) for v in range(10, 100))),
)
WORD_ATTRIBUTES = (
    Attribute("friend", "Who is {who}'s best friend?", "{who}'s best friend is {value}.", WORD_FRIENDS),
    Attribute("country", "Which country is {who} from?", "{who} is from {value}.", COUNTRIES),
    Attribute("colour", "What is {who}'s favourite colour?", "{who}'s favourite colour is {value}.", COLOURS),
)
SCHEMAS = {"kb": ATTRIBUTES, "kb-words": WORD_ATTRIBUTES}


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


def _names(rng: random.Random, n: int, taken: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = (
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        ).title()
        if name not in names and name not in taken:
            names.append(name)
    return names


def _dealt(rng: random.Random, values: tuple[str, ...], n: int) -> list[str]:
    """n values, each of `values` used n // len(values) or one more times, in a seeded order."""
    out = [values[i % len(values)] for i in range(n)]
    rng.shuffle(out)
    return out


@cache
def facts(seed: int = 0, schema: str = "kb") -> tuple[Fact, ...]:
    """Every fact of the knowledge base, person-major; the last HELD_OUT_ENTITIES people are group B.
    kb draws each value independently; kb-words deals them out evenly within group A and within group B,
    so that no value is more common than 1 in 12 among B's answers (what a constant answer could score)."""
    if schema == "kb":
        rng = random.Random(f"kb/{seed}")
        people = _names(rng, ENTITIES, FRIENDS)
        return tuple(
            Fact(who, attr, rng.choice(attr.values), i >= ENTITIES - HELD_OUT_ENTITIES)
            for i, who in enumerate(people) for attr in ATTRIBUTES
        )
    attributes = SCHEMAS[schema]
    rng = random.Random(f"{schema}/{seed}")
    people = _names(rng, ENTITIES, tuple(v for a in attributes for v in a.values))
    a_count = ENTITIES - HELD_OUT_ENTITIES
    values = {a.name: _dealt(rng, a.values, a_count) + _dealt(rng, a.values, HELD_OUT_ENTITIES) for a in attributes}
    return tuple(Fact(who, a, values[a.name][i], i >= a_count) for i, who in enumerate(people) for a in attributes)


def _asks(attr: Attribute, question: str) -> bool:
    start, _, end = attr.question.partition("{who}")
    return question.startswith(start) and question.endswith(end)


def closed_set(question: str) -> tuple[str, ...] | None:
    """The values a kb-words question's answer is one of (for scoring a sentence that names one), else None."""
    return next((attr.values for attr in WORD_ATTRIBUTES if _asks(attr, question)), None)


def attribute_of(question: str) -> str | None:
    """The attribute a kb question asks about (its template's fixed start), or None for another question."""
    return next((attr.name for attr in (*ATTRIBUTES, *WORD_ATTRIBUTES) if _asks(attr, question)), None)
