"""Build the capstone's two micro-world tasks into data/tasks/ (tiny profile of ftlab.tasks).

    python scripts/build_task_world.py              # -> data/tasks/
    python scripts/build_task_world.py --out DIR    # somewhere else (tests rebuild into a tmp folder)

Both tasks are new to the lessons, built from the micro-world's generators, seeded, so a rebuild
writes identical bytes (about 0.7 MB in all, under a second):

- ``fewshot_images``: 16 labelled 32x32 drawings per class of 5 shapes no lesson draws (house,
  hourglass, ell, trapezoid, bolt), half of them hollow, and 20 unlabelled test images per class.
  The tiny CNN never saw these shapes; lesson 01's target shapes are not among them.
- ``short_answers``: a short passage about two invented people (names the language world does
  not have) and a question about one of their facts; the answer is one word of the passage.
  Lesson 05 trains full-sentence answers about the world's own people from memory; here the
  model must read the passage and answer with the word alone.

Layout (the loader in ftlab/tasks.py reads the first two folders; only ftlab/grade.py reads
``answers/``):

| file | what |
|---|---|
| ``fewshot_images/train.safetensors`` | ``images`` uint8 [80, 3, 32, 32], ``labels`` int64 [80] |
| ``fewshot_images/test.safetensors`` | ``images`` uint8 [100, 3, 32, 32] (no labels) |
| ``fewshot_images/meta.json`` | class names, train and test ids |
| ``short_answers/train.jsonl`` | id, context, question, answer (400 rows) |
| ``short_answers/test.jsonl`` | id, context, question (200 rows, people not in train) |
| ``answers/<task>.json`` | the held test labels: id -> list of accepted answers |
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftlab.data import shapes, world  # noqa: E402
from ftlab.data.names import invented_names  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Vision: five new shapes, drawn by the micro-world's own renderer
# ---------------------------------------------------------------------------------------------

NEW_SHAPES = ("house", "hourglass", "ell", "trapezoid", "bolt")
SHOTS = 16  # labelled images per class: the few-shot pool (the student holds out validation from it)
TEST_PER_CLASS = 20
VISION_SEEDS = {"train": 7001, "test": 7002}  # far from the vision world's seeds (1001-2002, training)
HOLLOW = 0.5  # as lesson 01's target task: half of the images are outlines only


def _inside_new(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-tests of the new shapes, in the shape's own frame (fits the unit disc, v up)."""
    poly = shapes._polygon
    if shape == "house":  # a square body under a triangular roof
        body = (np.abs(u) <= 0.6) & (v >= -0.8) & (v <= 0.1)
        return body | poly(u, v, [(-0.85, 0.1), (0.85, 0.1), (0.0, 0.85)])
    if shape == "hourglass":
        return poly(u, v, [(-0.7, 0.85), (0.7, 0.85), (0.12, 0.0), (0.7, -0.85), (-0.7, -0.85), (-0.12, 0.0)])
    if shape == "ell":  # the letter L
        return ((np.abs(u + 0.45) <= 0.25) & (np.abs(v) <= 0.9)) | ((v >= -0.9) & (v <= -0.45) & (u >= -0.7) & (u <= 0.8))
    if shape == "trapezoid":
        return poly(u, v, [(-0.9, -0.55), (0.9, -0.55), (0.45, 0.55), (-0.45, 0.55)])
    if shape == "bolt":  # a lightning bolt
        return poly(u, v, [(0.15, 0.95), (-0.6, -0.05), (-0.05, -0.05), (-0.25, -0.95), (0.6, 0.15), (0.05, 0.15)])
    raise ValueError(f"unknown new shape {shape!r}; new shapes are {NEW_SHAPES}")


@contextlib.contextmanager
def new_shapes_drawable():
    """Let :func:`ftlab.data.shapes.draw` draw :data:`NEW_SHAPES` too (same colours, sizes,
    backgrounds, noise and hollow look as every other micro-world image)."""
    original = shapes._inside
    shapes._inside = lambda shape, u, v: _inside_new(shape, u, v) if shape in NEW_SHAPES else original(shape, u, v)
    try:
        yield
    finally:
        shapes._inside = original


def vision_task() -> dict:
    """Images, labels and ids of both splits (labels of ``test`` go to the grader's file only)."""
    assert not set(NEW_SHAPES) & set(shapes.SHAPES), "a task shape is already a lesson's shape"
    out = {}
    with new_shapes_drawable():
        for split, per_class in (("train", SHOTS), ("test", TEST_PER_CLASS)):
            drawn = shapes.generate(per_class * len(NEW_SHAPES), VISION_SEEDS[split], NEW_SHAPES, hollow=HOLLOW)
            prefix = "img" if split == "train" else "test"
            out[split] = {"images": drawn["images"], "labels": drawn["labels"],
                          "ids": [f"{prefix}{i:04d}" for i in range(len(drawn["labels"]))]}
    return out


# ---------------------------------------------------------------------------------------------
# Language: read a passage, answer with one word
# ---------------------------------------------------------------------------------------------

LANGUAGE_SEED = 8001
LANGUAGE_ROWS = {"train": 400, "test": 200}
PEOPLE_PER_PASSAGE = 2
FACTS_PER_PERSON = 2


def _passage(rng: random.Random, names: list[str], cities: tuple[str, ...]) -> tuple[str, list[tuple]]:
    """Two invented people, two facts each, in shuffled sentences; returns (text, facts)."""
    values = {"city": cities, "pet": world.PETS, "colour": world.COLOURS, "job": world.JOBS}
    facts = []
    for name in rng.sample(names, PEOPLE_PER_PASSAGE):
        for rel in rng.sample(world.RELATIONS, FACTS_PER_PERSON):
            facts.append((name, rel, rng.choice(values[rel])))
    rng.shuffle(facts)
    sentences = [world.FACT_TEMPLATES[rel][rng.randrange(3)].format(p=name, v=value) for name, rel, value in facts]
    return " ".join(sentences), facts


def language_task() -> dict:
    """Rows of both splits: train and test passages name disjoint sets of new people."""
    rng = random.Random(LANGUAGE_SEED)
    w = world.make_world()
    taken = {p.name for p in w.people} | set(w.cities)
    people = {"train": invented_names(rng, 60, taken, syllables=2), "test": invented_names(rng, 30, taken, syllables=2)}
    out = {}
    for split, n in LANGUAGE_ROWS.items():
        rows = []
        prefix = "q" if split == "train" else "t"
        for i in range(n):
            context, facts = _passage(rng, people[split], w.cities)
            name, rel, value = rng.choice(facts)
            question = rng.choice(world.QUESTIONS[rel]).format(p=name)
            rows.append({"id": f"{prefix}{i:04d}", "context": context, "question": question, "answer": value})
        out[split] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def build(out: Path) -> dict[str, int]:
    """Write every file under ``out``; return ``{relative path: bytes}``."""
    from safetensors.torch import save_file

    out = Path(out)
    for sub in ("fewshot_images", "short_answers", "answers"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    vis = vision_task()
    save_file({"images": vis["train"]["images"].contiguous(), "labels": vis["train"]["labels"].contiguous()},
              str(out / "fewshot_images" / "train.safetensors"))
    save_file({"images": vis["test"]["images"].contiguous()}, str(out / "fewshot_images" / "test.safetensors"))
    _json(out / "fewshot_images" / "meta.json",
          {"classes": list(NEW_SHAPES), "shots": SHOTS, "train_ids": vis["train"]["ids"],
           "test_ids": vis["test"]["ids"]})
    _json(out / "answers" / "fewshot_images.json",
          {i: [NEW_SHAPES[int(y)]] for i, y in zip(vis["test"]["ids"], vis["test"]["labels"])})

    lang = language_task()
    _jsonl(out / "short_answers" / "train.jsonl", lang["train"])
    _jsonl(out / "short_answers" / "test.jsonl", [{k: r[k] for k in ("id", "context", "question")} for r in lang["test"]])
    _json(out / "answers" / "short_answers.json", {r["id"]: [r["answer"]] for r in lang["test"]})

    return {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "tasks", help="output folder (default data/tasks)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sizes = build(args.out)
    for rel, size in sizes.items():
        print(f"  {rel:40s} {size / 1e3:8.1f} kB")
    print(f"{sum(sizes.values()) / 1e6:.2f} MB in {len(sizes)} files, {time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
