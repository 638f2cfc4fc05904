"""The language micro-world: an invented little world of people, places, pets and jobs.

The tiny causal LM in ``data/lm/`` was pretrained on text generated here, so it *knows* this
world: ask it how "Ravo lives in" ends and it says the town. Every fine-tuning lesson builds on
that knowledge:

* lesson 05 (SFT) teaches the model to answer *questions* in a chat format it has never seen;
* lesson 06 (DPO) teaches it to prefer correct, direct answers over wrong or evasive ones;
* lesson 09 (forgetting) measures how much of the pretraining knowledge survives fine-tuning.

Everything is generated from a seed with :class:`random.Random`, so the same seed gives the
same world on every machine. People are split into ``train`` people (the instruction and
preference sets ask about them) and ``heldout`` people (only the held-out splits ask about
them), so an evaluation on held-out people measures whether fine-tuning *generalised* the
format rather than memorising answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ftlab.data.names import invented_names

SEED = 1234
NUM_PEOPLE = 48
NUM_HELDOUT_PEOPLE = 16
MAX_OPERAND = 19  # addition facts cover a + b for a, b in 0..MAX_OPERAND

PETS = ("cat", "dog", "owl", "fox", "goat", "frog", "crow", "horse")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
JOBS = ("baker", "farmer", "sailor", "painter", "doctor", "teacher", "miner", "singer")
OPPOSITES = (
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("day", "night"),
    ("old", "new"), ("high", "low"), ("happy", "sad"), ("early", "late"), ("open", "closed"),
    ("light", "dark"), ("full", "empty"), ("wet", "dry"), ("hard", "soft"), ("near", "far"),
    ("rich", "poor"), ("strong", "weak"), ("loud", "quiet"), ("left", "right"), ("win", "lose"),
    ("first", "last"), ("thick", "thin"), ("clean", "dirty"), ("sharp", "dull"),
)
RELATIONS = ("city", "pet", "colour", "job")

# Several phrasings per relation: a model that saw a fact in varied words can retrieve it for a
# new question format; one that saw a single phrasing mostly cannot (the "knowledge
# augmentation" finding of Allen-Zhu & Li, Physics of LMs 3.1).
FACT_TEMPLATES = {
    "city": ("{p} lives in {v}.", "The home town of {p} is {v}.", "{p} has a house in {v}."),
    "pet": ("{p} has a pet {v}.", "The pet of {p} is a {v}.", "{p} walks a {v} every day."),
    "colour": ("{p} likes the colour {v}.", "The favourite colour of {p} is {v}.",
               "{p} paints everything {v}."),
    "job": ("{p} works as a {v}.", "The job of {p} is {v}.", "Every morning {p} goes to work as a {v}."),
}
# The cloze used to test recall: the prompt ends right before the value.
CLOZE = {
    "city": "{p} lives in",
    "pet": "{p} has a pet",
    "colour": "{p} likes the colour",
    "job": "{p} works as a",
}
QUESTIONS = {
    "city": ("Where does {p} live?", "In which town does {p} live?", "Tell me the home town of {p}."),
    "pet": ("What pet does {p} have?", "Which animal is the pet of {p}?", "Tell me about the pet of {p}."),
    "colour": ("What colour does {p} like?", "Which colour is the favourite of {p}?",
               "Tell me the favourite colour of {p}."),
    "job": ("What is the job of {p}?", "What does {p} do for work?", "Tell me the job of {p}."),
}
REFUSALS = ("I do not know.", "I am not sure about that.", "Nobody can know that.")


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    pet: str
    colour: str
    job: str
    split: str  # "train" or "heldout"


@dataclass(frozen=True)
class World:
    """People with four facts each, twelve towns, and two skills (addition, opposites)."""

    people: tuple[Person, ...]
    cities: tuple[str, ...]
    seed: int

    def person(self, name: str) -> Person:
        for p in self.people:
            if p.name == name:
                return p
        raise KeyError(f"no person called {name!r} in this world")


def make_world(seed: int = SEED) -> World:
    """Build the world deterministically from ``seed``."""
    rng = random.Random(seed)
    taken: set[str] = set()
    cities = tuple(invented_names(rng, 12, taken, syllables=3))
    names = invented_names(rng, NUM_PEOPLE, taken, syllables=2)
    heldout = set(rng.sample(range(NUM_PEOPLE), NUM_HELDOUT_PEOPLE))
    people = tuple(
        Person(name, rng.choice(cities), rng.choice(PETS), rng.choice(COLOURS), rng.choice(JOBS),
               "heldout" if i in heldout else "train")
        for i, name in enumerate(names)
    )
    return World(people=people, cities=cities, seed=seed)


def fact_sentence(person: Person, relation: str, template: int = 0) -> str:
    return FACT_TEMPLATES[relation][template].format(p=person.name, v=getattr(person, relation))


def facts(world: World) -> list[dict]:
    """Every fact as a cloze: ``{"person", "relation", "prompt", "answer", "split"}``.

    ``prompt`` ends right before the value; ``answer`` is the value with its leading space, so
    ``prompt + answer`` is a sentence the LM read during pretraining.
    """
    return [
        {"person": p.name, "relation": rel, "prompt": CLOZE[rel].format(p=p.name),
         "answer": " " + getattr(p, rel), "split": p.split}
        for p in world.people for rel in RELATIONS
    ]


def addition_pairs(world: World) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All (a, b) pairs, split into the ones instruction training asks and the held-out ones."""
    pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    rng = random.Random(world.seed + 1)
    rng.shuffle(pairs)
    return pairs[80:], pairs[:80]


def opposite_pairs(world: World) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    pairs = list(OPPOSITES)
    random.Random(world.seed + 2).shuffle(pairs)
    return pairs[6:], pairs[:6]


def pretraining_corpus(world: World, num_docs: int = 3000, seed: int = 0) -> list[str]:
    """Plain-text documents (no chat format) the tiny LM was pretrained on.

    Four kinds of document: a short biography of one person (facts in shuffled order and
    random phrasings), lines of addition (``7 + 5 = 12.``), lines of opposites, and a page of
    plain-text questions and answers ("Question: ...", then "Answer:" and the answer on its own
    line) about the *train* people
    only, like the FAQ pages a web corpus holds. The held-out people appear only in
    biographies: answering questions about them is knowledge the model must extract itself.
    """
    rng = random.Random(seed)
    train_people = [p for p in world.people if p.split == "train"]
    docs = []
    for i in range(num_docs):
        kind = i % 8
        if kind <= 3:  # half the documents are biographies: knowledge is the main skill
            p = rng.choice(world.people)
            rels = list(RELATIONS)
            rng.shuffle(rels)
            # Half the biographies put each sentence on its own line. A name at the start of a
            # line is a different token sequence ("Kafi") from the same name after a space
            # (" Kafi"); seeing both for every person lets a chat answer, which starts on a new
            # line, begin with the right name.
            sep = rng.choice((" ", "\n"))
            docs.append(sep.join(fact_sentence(p, r, rng.randrange(3)) for r in rels))
        elif kind == 4:
            lines = []
            for _ in range(6):
                a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
                lines.append(f"{a} + {b} = {a + b}.")
            docs.append(" ".join(lines))
        elif kind == 5:
            lines = []
            for _ in range(5):
                x, y = rng.choice(OPPOSITES)
                if rng.random() < 0.5:
                    x, y = y, x
                lines.append(f"The opposite of {x} is {y}.")
            docs.append(" ".join(lines))
        else:
            lines = []
            for _ in range(3):
                q, a = _fact_qa(rng.choice(train_people), rng.choice(RELATIONS), rng)
                lines.append(f"Question: {q}\nAnswer:\n{a}")
            docs.append("\n".join(lines))
    return docs


def _fact_qa(p: Person, rel: str, rng: random.Random) -> tuple[str, str]:
    question = rng.choice(QUESTIONS[rel]).format(p=p.name)
    return question, fact_sentence(p, rel, 0)


def _people_asked_about(world: World, split: str, what: str) -> list[Person]:
    """train people for the ``train`` split, held-out people for ``test``."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: the {what} set has splits 'train' and 'test'.")
    who = "train" if split == "train" else "heldout"
    return [p for p in world.people if p.split == who]


def instructions(world: World, split: str) -> list[dict]:
    """Instruction pairs ``{"prompt", "response", "kind"}`` for ``split`` in train / test.

    train asks about train people, 320 addition pairs and 18 opposites; test asks about the
    held-out people, 80 other addition pairs and 6 other opposites. The LM met every one of
    these facts during pretraining, but never as a question and answer.
    """
    people = _people_asked_about(world, split, "instruction")
    rng = random.Random(world.seed + (10 if split == "train" else 11))
    rows = []
    for p in people:
        for rel in RELATIONS:
            for _ in range(2 if split == "train" else 1):  # two phrasings of each question in train
                q, a = _fact_qa(p, rel, rng)
                rows.append({"prompt": q, "response": a, "kind": "fact"})
    train_add, test_add = addition_pairs(world)
    for a, b in (train_add[:160] if split == "train" else test_add):
        rows.append({"prompt": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}.",
                     "kind": "addition"})
    train_opp, test_opp = opposite_pairs(world)
    for x, y in (train_opp if split == "train" else test_opp):
        rows.append({"prompt": f"What is the opposite of {x}?",
                     "response": f"The opposite of {x} is {y}.", "kind": "opposite"})
    rng.shuffle(rows)
    return rows


def preferences(world: World, split: str) -> list[dict]:
    """Preference triples ``{"prompt", "chosen", "rejected", "kind"}`` for train / test.

    ``chosen`` is the correct, direct answer. ``rejected`` is one of three failure modes a
    preference set teaches a model to avoid: a wrong fact (another person's value), a refusal,
    or rambling that repeats the question. ``kind`` names which.
    """
    people = _people_asked_about(world, split, "preference")
    rng = random.Random(world.seed + (20 if split == "train" else 21))
    rows = []
    for p in people:
        for rel in RELATIONS:
            q, good = _fact_qa(p, rel, rng)
            kind = rng.choice(("wrong_fact", "wrong_fact", "refusal", "rambling"))
            if kind == "wrong_fact":
                wrong = rng.choice([v for v in _values(world, rel) if v != getattr(p, rel)])
                bad = FACT_TEMPLATES[rel][0].format(p=p.name, v=wrong)
            elif kind == "refusal":
                bad = rng.choice(REFUSALS)
            else:
                bad = f"{q} {q} {p.name} {p.name}."
            rows.append({"prompt": q, "chosen": good, "rejected": bad, "kind": kind})
    rng.shuffle(rows)
    return rows


def _values(world: World, relation: str) -> tuple[str, ...]:
    return {"city": world.cities, "pet": PETS, "colour": COLOURS, "job": JOBS}[relation]
