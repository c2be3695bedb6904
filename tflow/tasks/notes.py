"""Natural-language relay for a real instruct receiver: the `note` task.

A sender holds a private note (a door code, a time, a room, a contact's name, a quantity, a
city, a colour); the receiver, who sees only the question, is asked about it. Both the values
and the phrasings are split between train and test: a test example states a held-out value
with a held-out fact template and asks with a held-out question template, so the test split
measures reading the sender, not recalling a template or a value seen in training.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from importlib.resources import files

# test sets only, never trained on: notes and questions in everyday words, each written before the note recipe it
# first judges trained and run once after it (its clean estimate): the second for note-varied, the third for the next
FREEFORM_SETS = {"note-freeform": "notes_freeform.jsonl", "note-freeform2": "notes_freeform2.jsonl",
                 "note-freeform3": "notes_freeform3.jsonl"}

# Open-class values come from large pools: with a few dozen names a generator learns to pick one of
# the names it was trained on and never says a held-out one (measured: 0/10 held-out names and
# 0/13 cities with 29 and 19 training values, against 98% on training values).
FIRST_NAMES = tuple("""
Aaron Abigail Adam Adrian Agnes Aiden Alan Albert Alex Alfred Alice Alma Amara Amber Amelia Amir Andrea Angela Anna
Anton Arthur Astrid Aurora Barbara Beatrice Ben Bianca Boris Brian Bruno Caleb Camila Carl Carla Carmen Caroline Cecilia
Charles Chiara Chloe Clara Colin Daniel Daria David Diana Dmitri Dora Edgar Edith Elena Elias Elif Eliza Emil Emma
Enzo Eric Erik Esther Eva Fatima Felix Fiona Frank Freya Gabriel Gemma George Gina Grace Greta Gustav Hannah Harold
Hector Helen Henry Hugo Ian Ida Igor Ines Ingrid Irene Isaac Ivan Jack Jacob Jana Jasmine Jonas Joseph Julia Karen
Karl Kate Kevin Klara Lars Laura Leah Leo Leon Lena Liam Lidia Linda Lucas Lucia Lukas Luna Magnus Maria Marco
Martin Matteo Maya Mia Milan Mira Nadia Nathan Nina Noah Nora Olga Oliver Olivia Omar Oscar Paula Pedro Peter Philip
Priya Quentin Rachel Rafael Rita Robert Rosa Ruth Samuel Sara Sebastian Simon Sofia Stella Stefan Susan Tara Teresa
Theo Thomas Tomas Umar Ursula Valentin Vera Victor Viktor Walter Wendy Xenia Yara Yusuf Zara Zoe""".split())
CITIES = tuple("""
Aberdeen Amsterdam Ankara Antwerp Athens Auckland Austin Baltimore Bangkok Barcelona Basel Beijing Belfast Belgrade
Bergen Berlin Bilbao Birmingham Bologna Bordeaux Boston Bratislava Bremen Brighton Brisbane Bristol Brussels Bucharest
Budapest Cairo Calgary Cardiff Chicago Cologne Copenhagen Cork Dallas Delhi Denver Dresden Dublin Dubai Edinburgh
Florence Frankfurt Geneva Genoa Ghent Glasgow Gothenburg Granada Graz Hamburg Hanoi Havana Helsinki Houston Istanbul
Jakarta Kiev Krakow Kyoto Lagos Leeds Leipzig Lille Lima Lisbon Liverpool London Lyon Madrid Malaga Manchester
Marseille Melbourne Miami Milan Montreal Moscow Mumbai Munich Nairobi Naples Nantes Nice Osaka Oslo Ottawa Oxford
Palermo Paris Perth Porto Prague Quebec Riga Rome Rotterdam Salzburg Santiago Seattle Seoul Seville Shanghai Sofia
Stockholm Stuttgart Sydney Tallinn Tokyo Toronto Toulouse Turin Utrecht Valencia Vancouver Venice Verona Vienna
Vilnius Warsaw Zagreb Zurich""".split())
COLOURS = tuple("""
red blue green yellow black white orange purple silver brown pink grey gold beige navy maroon teal olive cyan
magenta violet turquoise crimson ivory bronze copper lavender lime mint peach coral cream ruby amber indigo
scarlet tan khaki charcoal""".split())


@dataclass(frozen=True)
class Slot:
    """One kind of note: its values, and the (train, test) templates that state it and ask for it."""

    name: str
    values: tuple[str, ...]
    facts: tuple[tuple[str, ...], tuple[str, ...]]  # format with {v}
    questions: tuple[tuple[str, ...], tuple[str, ...]]


SLOTS = (
    Slot("code", tuple(str(v) for v in range(100, 1000)),
         (("The door code is {v}.", "Remember: the code for the door is {v}.", "The code to open the door is {v}.",
           "Door code: {v}."),
          ("The door opens with the code {v}.", "Note that the door's code is {v}.")),
         (("What is the door code?", "Which code opens the door?", "What code do I type at the door?"),
          ("Tell me the door code.", "What is the code for the door?"))),
    Slot("time", tuple(f"{h}:{m:02d}" for h in range(1, 13) for m in range(0, 60, 5)),
         (("The train leaves at {v}.", "Our train departs at {v}.", "Train departure: {v}.", "The train is at {v}."),
          ("The train will leave at {v}.", "Note: the train goes at {v}.")),
         (("When does the train leave?", "What time is the train?", "At what time does the train depart?"),
          ("Tell me when the train leaves.", "What time does our train go?"))),
    Slot("room", tuple(f"{c}{n}" for c in "ABCDEFGH" for n in range(1, 41)),
         (("The meeting is in room {v}.", "We meet in room {v}.", "Meeting room: {v}.",
           "The meeting takes place in room {v}."),
          ("The meeting will be held in room {v}.", "Note: meeting in room {v}.")),
         (("Which room is the meeting in?", "Where is the meeting?", "In which room do we meet?"),
          ("Tell me the meeting room.", "What room is the meeting in?"))),
    Slot("name", FIRST_NAMES,
         (("The contact person is {v}.", "Ask for {v} at the front desk.", "Our contact is {v}.", "Contact: {v}."),
          ("The person to ask for is {v}.", "Note: the contact's name is {v}.")),
         (("Who is the contact person?", "Whom should I ask for?", "What is the contact's name?"),
          ("Tell me the name of the contact.", "Who is our contact?"))),
    Slot("boxes", tuple(str(v) for v in range(2, 100)),
         (("{v} boxes arrived today.", "Today we received {v} boxes.", "Boxes delivered today: {v}.",
           "The delivery today was {v} boxes."),
          ("A delivery of {v} boxes came in today.", "Note: {v} boxes arrived today.")),
         (("How many boxes arrived today?", "How many boxes did we receive today?", "What was today's box count?"),
          ("Tell me how many boxes came today.", "How many boxes were delivered today?"))),
    Slot("city", CITIES,
         (("The conference is in {v}.", "This year's conference takes place in {v}.", "Conference city: {v}.",
           "We are going to {v} for the conference."),
          ("The conference will be held in {v}.", "Note: the conference city is {v}.")),
         (("Where is the conference?", "In which city is the conference?", "Which city hosts the conference?"),
          ("Tell me the conference city.", "What city is the conference in?"))),
    Slot("colour", COLOURS,
         (("The car is {v}.", "Look for a {v} car.", "Car colour: {v}.", "The rental car is {v}."),
          ("Our car will be the {v} one.", "Note: the car's colour is {v}.")),
         (("What colour is the car?", "Which colour is the car?", "What colour should I look for?"),
          ("Tell me the colour of the car.", "What is the car's colour?"))),
)


def is_held_out_value(slot: Slot, value: str) -> bool:
    """One value in five of each slot is reserved for the test split (by hash, so stable across versions)."""
    return int(hashlib.sha1(f"note/{slot.name}/{value}".encode()).hexdigest(), 16) % 5 == 0


def _draw_from(slot: Slot, rng: random.Random, test: bool) -> tuple[str, str, str]:
    value = rng.choice([v for v in slot.values if is_held_out_value(slot, v) == test])
    split = 1 if test else 0
    return rng.choice(slot.facts[split]).format(v=value), rng.choice(slot.questions[split]), value


def draw(rng: random.Random, test: bool) -> tuple[str, str, str]:
    """(fact, question, value) from the test split (held-out value and templates) or the train split."""
    return _draw_from(rng.choice(SLOTS), rng, test)


def draw_pair(rng: random.Random, test: bool) -> tuple[tuple[str, str], str, str]:
    """Two notes of different slots, one per sender, and one question asking for both:
    ((fact A, fact B), question, "value A and value B") from the test split or the train split."""
    a, b = (_draw_from(slot, rng, test) for slot in rng.sample(SLOTS, 2))
    return (a[0], b[0]), f"{a[1]} {b[1]}", f"{a[2]} {PAIR_JOIN} {b[2]}"


PAIR_JOIN = "and"  # a pair's answer: "418 and 7:45", in the order the question asks


def swap(fact: str, value: str, rng: random.Random) -> tuple[str, str]:
    """The same note stated with another value of its slot (from the same split): (fact, value)."""
    for slot in (s for s in SLOTS if value in s.values):
        for template in (*slot.facts[0], *slot.facts[1]):
            if template.format(v=value) == fact:
                held_out = is_held_out_value(slot, value)
                new = rng.choice([v for v in slot.values if v != value and is_held_out_value(slot, v) == held_out])
                return template.format(v=new), new
    raise ValueError(f"not a note fact: {fact!r}")


def freeform(name: str = "note-freeform") -> list[tuple[str, str, str]]:
    """(note, question, answer) of a free-form test set: notes a person might write (a text message, a reminder,
    a sticky note) and a question about each, written without looking at this module's templates, so that it measures
    whether a note generator reads what users write rather than what it was trained on."""
    text = (files(__package__) / "data" / FREEFORM_SETS[name]).read_text(encoding="utf-8")
    return [(r["note"], r["question"], r["answer"]) for r in map(json.loads, text.splitlines()) if r]

