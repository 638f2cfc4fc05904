"""Offline stand-ins of the capstone's two full-profile datasets (``ftlab.tasks``), for ``make rehearse``.

Part ``tasks`` of ``scripts/build_standins.py``. Each is written where ``datasets`` looks when
offline (the prepared Arrow cache, ``$HF_HOME/datasets/ORG___NAME/<config>/0.0.0/<commit>/``;
:func:`standins_vision.write_datasets_cache` explains the layout), with the real repo id,
config name, splits, columns and feature types, and a few generated rows:

| stand-in | real | stand-in rows |
|---|---|---|
| ``AI-Lab-Makerere/beans`` (config ``default``): ``image_file_path`` str, ``image`` (500x500 JPEG), ``labels`` ClassLabel(3) | 1,034 / 133 / 128, MIT | 60 / 12 / 12 (20 / 4 / 4 per class), drawn pictures whose colours lean to their class |
| ``rajpurkar/squad`` (config ``plain_text``): ``id``, ``title``, ``context``, ``question`` str, ``answers`` {text, answer_start} lists | 87,599 / 10,570, CC BY-SA 4.0 | 300 / 150 generated paragraphs of about SQuAD's length (120 words), the answer a span; validation rows carry 3 accepted answers as SQuAD's do |

Weights of nothing, quality of nothing: the rehearsal proves the capstone's code path (loading,
columns, the grader's ids and labels), not a score.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 4242

BEANS_REPO, BEANS_CONFIG = "AI-Lab-Makerere/beans", "default"
BEANS_CLASSES = ["angular_leaf_spot", "bean_rust", "healthy"]
BEANS_PER_CLASS = {"train": 20, "validation": 4, "test": 4}  # train >= ftlab.tasks.SHOTS per class
BEANS_REAL = {"train": 1034, "validation": 133, "test": 128}
SQUAD_REPO, SQUAD_CONFIG = "rajpurkar/squad", "plain_text"
SQUAD_ROWS = {"train": 300, "validation": 150}
SQUAD_REAL = {"train": 87_599, "validation": 10_570}


def _standins_vision():
    """scripts/standins_vision.py (its datasets-cache writer and picture drawer), imported by path."""
    if "standins_vision" in sys.modules:
        return sys.modules["standins_vision"]
    spec = importlib.util.spec_from_file_location("standins_vision", HERE / "standins_vision.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["standins_vision"] = module
    spec.loader.exec_module(module)
    return module


def build_beans(out: Path) -> dict:
    from datasets import ClassLabel, Features, Image, Value

    sv = _standins_vision()
    features = Features({"image_file_path": Value("string"), "image": Image(),
                         "labels": ClassLabel(names=BEANS_CLASSES)})
    rng = random.Random(SEED)
    splits = {}
    for split, per_class in BEANS_PER_CLASS.items():
        labels = [k for k in range(len(BEANS_CLASSES)) for _ in range(per_class)]
        rng.shuffle(labels)
        images, paths = [], []
        for i, y in enumerate(labels):
            buf = io.BytesIO()  # drawn small, shown at the real 500x500 (as a phone photo's JPEG)
            sv.draw_image(rng, y, len(BEANS_CLASSES), 64).resize((500, 500)).save(buf, format="JPEG", quality=85)
            images.append({"bytes": buf.getvalue(), "path": None})
            name = BEANS_CLASSES[y]
            paths.append(f"/stand-in/{split}/{name}/{name}_{split}.{i}.jpg")  # the real paths name the class too
        splits[split] = {"image_file_path": paths, "image": images, "labels": labels}
    folder = sv.write_datasets_cache(out, BEANS_REPO, BEANS_CONFIG, features, splits)
    return {"kind": "hub dataset (datasets cache)", "class": "datasets.DatasetDict",
            "path": str(folder.relative_to(out)), "config": BEANS_CONFIG,
            "columns": {"image_file_path": "string", "image": "Image (500x500 JPEG)", "labels": "ClassLabel(3)"},
            "real": {"rows": BEANS_REAL}, "standin": {"rows": {k: v * 3 for k, v in BEANS_PER_CLASS.items()}},
            "shrunk": True}


FIRST = ["Ada", "Bruno", "Chen", "Dara", "Elif", "Femi", "Gita", "Hana", "Ivo", "Juno", "Kofi", "Lena"]
LAST = ["Moreau", "Okafor", "Tanaka", "Silva", "Novak", "Haddad", "Larsen", "Petrov", "Reyes", "Quinn"]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tallinn", "Perth", "Accra", "Bergen", "Cusco", "Dakar"]
FIELDS = ["chemistry", "architecture", "astronomy", "music", "botany", "linguistics", "geology", "medicine"]
FILLER = [
    "The work drew attention from scholars across several countries and was widely discussed.",
    "Later historians have debated how much of this account can be confirmed from written records.",
    "During the following decades the region changed considerably as new roads and schools were built.",
    "Several of these early writings were translated into other languages and printed in large numbers.",
    "Critics at the time disagreed about the importance of the project, but its influence grew steadily.",
    "The archive that holds these documents was opened to the public after a long restoration.",
    "Many of the original buildings were destroyed by fire, and only a few drawings survive today.",
    "Modern surveys suggest that the population of the area doubled in less than a generation.",
]


def _squad_row(rng: random.Random, split: str, i: int) -> dict:
    person = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    facts = {"city": rng.choice(CITIES), "year": str(rng.randint(1801, 1990)), "field": rng.choice(FIELDS),
             "count": str(rng.randint(2, 40))}
    sentences = [f"{person} was born in {facts['city']} in {facts['year']}.",
                 f"{person} is best known for work in {facts['field']}.",
                 f"Over a long career, {person} published {facts['count']} books."]
    filler = rng.sample(FILLER, 5)
    context = " ".join(sentences[:1] + filler[:2] + sentences[1:2] + filler[2:4] + sentences[2:] + filler[4:])
    kind = rng.choice(list(facts))
    question = {"city": f"In which city was {person} born?", "year": f"In what year was {person} born?",
                "field": f"What field is {person} best known for?", "count": f"How many books did {person} publish?"}[kind]
    answer = facts[kind]
    start = context.index(answer, context.index(person))
    texts, starts = [answer], [start]
    if split == "validation":  # SQuAD's validation rows carry several annotators' answers
        longer = {"city": answer, "year": answer, "field": answer, "count": f"{answer} books"}[kind]
        texts, starts = [answer, longer, answer], [start, start, start]
    row_id = hashlib.sha1(f"{split}-{i}".encode()).hexdigest()[:24]  # SQuAD's ids: 24 hex digits
    return {"id": row_id, "title": person.replace(" ", "_"), "context": context, "question": question,
            "answers": {"text": texts, "answer_start": starts}}


def build_squad(out: Path) -> dict:
    from datasets import Features, Sequence, Value

    sv = _standins_vision()
    features = Features({"id": Value("string"), "title": Value("string"), "context": Value("string"),
                         "question": Value("string"),
                         "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")})})
    rng = random.Random(SEED + 1)
    splits = {}
    for split, n in SQUAD_ROWS.items():
        rows = [_squad_row(rng, split, i) for i in range(n)]
        splits[split] = {col: [r[col] for r in rows] for col in features}
    folder = sv.write_datasets_cache(out, SQUAD_REPO, SQUAD_CONFIG, features, splits)
    return {"kind": "hub dataset (datasets cache)", "class": "datasets.DatasetDict",
            "path": str(folder.relative_to(out)), "config": SQUAD_CONFIG,
            "columns": {"id": "string", "title": "string", "context": "string", "question": "string",
                        "answers": "{text: list[string], answer_start: list[int32]}"},
            "real": {"rows": SQUAD_REAL}, "standin": {"rows": dict(SQUAD_ROWS)}, "shrunk": True}


BUILDERS = {BEANS_REPO: build_beans, SQUAD_REPO: build_squad}


def build(out: Path) -> dict:
    """Build both stand-ins under ``out`` (``out/hf`` is HF_HOME); return ``{repo id: manifest entry}``."""
    out = Path(out)
    manifest = {}
    for name, builder in BUILDERS.items():
        start = time.perf_counter()
        entry = builder(out)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        manifest[name] = entry
    return manifest


if __name__ == "__main__":  # pragma: no cover - the driver is scripts/build_standins.py
    raise SystemExit("Run scripts/build_standins.py --only tasks (it calls build() and writes env.sh and the manifest).")
