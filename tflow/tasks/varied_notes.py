"""`note-varied`: training notes whose values come from no fixed pool, stated the way people write notes.

The `note` task's values come from pools (3-digit codes, first names, cities, ...), so a generator trained on it can
answer by recognising a value it has seen; on notes written in everyday words it read the values of those pools and
missed most others (a 4-digit code, an invented name, a reference like `INV-5531`). Here every value is made up at
draw time (invented words from syllables, digit strings of any length, mixed codes, times, weekdays, dates), so the
only way to answer is to copy it from the senders; the statements vary in register (a text message, a reminder, a
correction "X, not Y" with a distractor of the same kind). A training task: mixed with `note`, it teaches the copy,
and the note tests (`note`, the free-form sets) stay untouched.
"""
from __future__ import annotations

import random
from collections.abc import Callable

ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p", "pl", "r", "s",
          "sh", "st", "t", "tr", "v", "w", "y", "z")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y")
CODAS = ("", "", "", "n", "r", "l", "s", "th", "x", "nd", "m", "k")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def word(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    """An invented word (lower case), e.g. `dravik`."""
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                   for _ in range(rng.randint(*syllables)))


def _name(rng: random.Random) -> str:
    return word(rng).capitalize()


def _place(rng: random.Random) -> str:
    return " ".join(word(rng, (1, 3)).capitalize() for _ in range(rng.randint(1, 2)))


def _digits(rng: random.Random) -> str:
    n = rng.choice((1, 2, 2, 3, 4, 4, 5, 6))
    return str(rng.randint(10 ** (n - 1) if n > 1 else 0, 10**n - 1))


def _code(rng: random.Random) -> str:
    letters = lambda k: "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(k))  # noqa: E731
    digits = lambda k: "".join(rng.choice("0123456789") for _ in range(k))  # noqa: E731
    return rng.choice((
        lambda: letters(1) + digits(rng.randint(1, 3)),
        lambda: letters(rng.randint(2, 3)) + "-" + digits(rng.randint(3, 5)),
        lambda: letters(2) + digits(rng.randint(3, 4)),
        lambda: "-".join(digits(1) for _ in range(rng.randint(3, 5))),
        lambda: "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(rng.randint(4, 6))),
        lambda: word(rng) + digits(rng.randint(1, 3)),
    ))()


def _time(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"{rng.randint(1, 12)} {rng.choice(('am', 'pm'))}"
    return f"{rng.randint(0, 23) if rng.random() < 0.4 else rng.randint(1, 12)}:{rng.randrange(0, 60, 5):02d}"


def _day(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(WEEKDAYS)
    d = rng.randint(1, 31)
    return f"{d}{'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"


def _amount(rng: random.Random) -> str:
    return str(rng.randint(1, 20)) if rng.random() < 0.5 else f"{rng.randint(1, 9)}.{rng.randint(1, 9)}"


KINDS: dict[str, Callable[[random.Random], str]] = {
    "name": _name, "place": _place, "thing": word, "number": _digits, "code": _code, "time": _time, "day": _day,
    "amount": _amount,
}

# (value kind, what the note is about, questions asking for it)
SUBJECTS = (
    ("code", "the wifi password", ("What is the wifi password?", "What's the password for the wifi?")),
    ("code", "the booking reference", ("What is the booking reference?", "Which booking reference do we have?")),
    ("code", "the parcel code", ("What is the parcel code?", "Which code do I need for the parcel?")),
    ("code", "the order number", ("What is the order number?", "Which order number is it?")),
    ("code", "our parking spot", ("Which parking spot is ours?", "Where did we park?")),
    ("number", "the alarm code", ("What is the alarm code?", "Which code turns off the alarm?")),
    ("number", "the phone extension", ("What is the phone extension?", "Which extension should I dial?")),
    ("number", "the ticket number", ("What is the ticket number?", "Which ticket number do we have?")),
    ("number", "the house number", ("What is the house number?", "Which house number is it?")),
    ("number", "the bus we take", ("Which bus do we take?", "What number is our bus?")),
    ("name", "the new colleague", ("What is the new colleague called?", "Who is the new colleague?")),
    ("name", "the dog's name", ("What is the dog's name?", "What is the dog called?")),
    ("name", "the person to ask for", ("Who should I ask for?", "Whom do I ask for?")),
    ("name", "the landlord", ("Who is the landlord?", "What is the landlord's name?")),
    ("name", "the babysitter", ("Who is the babysitter?", "What is the babysitter called?")),
    ("place", "the restaurant", ("Which restaurant is it?", "What is the restaurant called?")),
    ("place", "the meeting point", ("Where is the meeting point?", "Where do we meet?")),
    ("place", "the hotel", ("Which hotel are we staying at?", "What is the hotel called?")),
    ("place", "the town we stop in", ("Which town do we stop in?", "Where do we stop?")),
    ("thing", "the password hint", ("What is the password hint?", "What's the hint for the password?")),
    ("thing", "the paint shade", ("Which paint shade is it?", "What shade of paint do we use?")),
    ("thing", "the brand to buy", ("Which brand should I buy?", "What brand is it?")),
    ("thing", "the cake flavour", ("Which cake flavour is it?", "What flavour is the cake?")),
    ("time", "the pickup time", ("What time is the pickup?", "When is the pickup?")),
    ("time", "the start of the rehearsal", ("When does the rehearsal start?", "What time does rehearsal begin?")),
    ("time", "the call with the bank", ("What time is the call with the bank?", "When is the bank call?")),
    ("day", "the delivery day", ("Which day is the delivery?", "When is the delivery coming?")),
    ("day", "the appointment", ("When is the appointment?", "Which day is the appointment?")),
    ("day", "the bin collection", ("When is the bin collection?", "Which day are the bins collected?")),
    ("amount", "the dose", ("What is the dose?", "How much is the dose?")),
    ("amount", "the number of tickets we need", ("How many tickets do we need?", "How many tickets are needed?")),
    ("amount", "the hours the job takes", ("How many hours does the job take?", "How long is the job, in hours?")),
)

STATEMENTS = (
    "{S} is {v}.", "Heads up: {s} is {v}.", "{S}: {v}", "fyi {s} changed to {v}", "Remember, {s} is {v}!",
    "Note to self - {s} is {v}.", "Just so you know, {s} is now {v}, not {w}.", "{S} was {w}, but now it's {v}.",
    "ok so {s} is {v}, don't forget", "Quick reminder that {s} is {v}.", "It's {v} for {s}, not {w}.",
    "Sorry, typo earlier: {s} is {v}.",
)


def draw(rng: random.Random) -> tuple[str, str, str]:
    """(note, question, value): a made-up value of a subject's kind, stated in one of the registers."""
    kind, subject, questions = rng.choice(SUBJECTS)
    make = KINDS[kind]
    value = make(rng)
    other = next(w for w in iter(lambda: make(rng), None) if w != value)
    text = rng.choice(STATEMENTS).format(s=subject, S=subject[0].upper() + subject[1:], v=value, w=other)
    return text, rng.choice(questions), value
