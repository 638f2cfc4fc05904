"""The capstone's tasks: data for a competition day, at both scales (lesson 11).

Two tasks, neither seen in lessons 00-10. Each has a task card (:func:`task_card`) and a loader
(:func:`load_task`) that returns a ``datasets.DatasetDict`` with two splits:

- ``train``: inputs and labels. There is **no validation split**: holding one out of ``train``
  is part of the day (``ds["train"].train_test_split(test_size=0.25, seed=0,
  stratify_by_column="label")`` for the images);
- ``test``: ids and inputs only. Its labels are held by the grader (``python -m ftlab.grade``),
  which reads them from where this loader never looks.

| task | kind | tiny (micro-world, CPU) | full (hub, one T4) | metric |
|---|---|---|---|---|
| ``fewshot_images`` | vision | 5 new shapes, 16 labelled images per class; 100 test images | Beans leaf diseases (``AI-Lab-Makerere/beans``, MIT), 16 per class; 261 test images | accuracy |
| ``short_answers`` | language | a passage about two invented people, a question, a one-word answer; 400 train, 200 test | SQuAD 1.1 (``rajpurkar/squad``, CC BY-SA 4.0); 1,000 test questions | exact match |

Both profiles return the same columns and types, so the notebook's code after its config cell
is the same at both scales:

- ``fewshot_images``: ``id`` (str), ``image`` (a PIL image; 32x32 tiny, 500x500 full), ``label``
  (``ClassLabel``: ``ds["train"].features["label"].names`` are the class names) in train only;
- ``short_answers``: ``id``, ``context``, ``question`` (str), ``answer`` (str) in train only.

A submission is a CSV file with the header ``id,prediction`` and one row per test id (any order):
for images the class name (or its index), for questions the answer text.
The micro-world's files are built by ``scripts/build_task_world.py`` into ``data/tasks/``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ftlab.runtime import data_dir, resolve_profile

SUBMISSION_HEADER = ("id", "prediction")
SHOTS = 16  # labelled training images per class, both profiles: a few-shot task


@dataclass(frozen=True)
class Task:
    """One task: what it is, how it is scored, what a day on it may spend."""

    name: str
    kind: str  # "vision" or "language"
    metric: str  # "accuracy" or "exact_match"
    summary: str  # one line: the task in words
    data: dict  # profile -> what the data is
    budget: dict  # profile -> time and hardware
    prediction: str  # what the prediction column holds


TASKS = {
    "fewshot_images": Task(
        name="fewshot_images", kind="vision", metric="accuracy",
        summary="Classify images of classes a pretrained backbone never saw, from 16 labelled images per class.",
        data={
            "tiny": "32x32 drawings of 5 shapes no lesson uses (house, hourglass, ell, trapezoid, bolt), "
                    "half of them hollow, on textured backgrounds: 16 labelled per class (80) and 100 test "
                    "images (20 per class). The tiny CNN and CLIP of data/vision never saw these shapes.",
            "full": "Beans (AI-Lab-Makerere/beans, MIT licence): 500x500 phone photos of bean leaves, 3 "
                    "classes (angular_leaf_spot, bean_rust, healthy). 16 labelled per class drawn from its "
                    "train split (seed 0), and 261 test images (its validation and test splits).",
        },
        budget={"tiny": "any CPU, 5 minutes",
                "full": "one Colab T4 (16 GB), 60 minutes from the first cell to the checked submission"},
        prediction="the class name, or its index in features['label'].names",
    ),
    "short_answers": Task(
        name="short_answers", kind="language", metric="exact_match",
        summary="Read a passage and answer a question about it with a short span of the passage.",
        data={
            "tiny": "A passage of four sentences about two invented people the language world does not have "
                    "(their town, pet, colour or job) and a question about one of those facts; the answer is "
                    "one word of the passage. 400 train rows; 200 test rows about other people. Lesson 05 "
                    "trained full-sentence answers from memory; this task wants the word, read from the passage.",
            "full": "SQuAD 1.1 (rajpurkar/squad, CC BY-SA 4.0): Wikipedia paragraphs and crowd-written "
                    "questions whose answer is a span of the paragraph. All 87,599 train rows (use what the "
                    "budget allows); 1,000 test questions drawn from its validation split (seed 0), whose "
                    "articles are not in train. A question has up to 5 accepted answers.",
        },
        budget={"tiny": "any CPU, 5 minutes (the micro-world's tiny Llama, data/lm)",
                "full": "one Colab T4 (16 GB), 60 minutes: a ~1B causal LM (TinyLlama) with LoRA or QLoRA"},
        prediction="the answer text (quote it if it holds a comma: any CSV writer does)",
    ),
}

METRICS = {
    "accuracy": "accuracy: the fraction of test ids whose predicted class is the true one",
    "exact_match": ("exact match: the fraction of test ids whose prediction equals an accepted answer after "
                    "normalisation (lower case; punctuation and the articles a, an, the removed; runs of "
                    "white space made one space), as SQuAD's official script scores"),
}


def task_names() -> list[str]:
    """The names of the tasks, in the order ``python -m ftlab.grade --list`` prints them."""
    return list(TASKS)


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``, or a ValueError that lists the tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: the tasks are {', '.join(TASKS)} "
                         "(python -m ftlab.grade --list prints them).")
    return TASKS[name]


def task_card(name: str, profile: str | None = None) -> str:
    """The task card as text: what the data is, the metric, the submission format, the budget."""
    task, prof = get_task(name), resolve_profile(profile)
    return "\n".join([
        f"Task: {task.name} ({task.kind}, {prof} profile)",
        f"  {task.summary}",
        f"Data: {task.data[prof]}",
        "Splits: train (with labels) and test (ids and inputs only). Hold out your own validation rows from train.",
        f"Metric: {METRICS[task.metric]}.",
        f"Submission: a CSV file with the header '{','.join(SUBMISSION_HEADER)}' and one row per test id, "
        f"in any order; prediction = {task.prediction}.",
        f"Check it: python -m ftlab.grade {task.name} FILE  (prints the score as its last line).",
        f"Budget: {task.budget[prof]}.",
    ])


def load_task(name: str, profile: str | None = None):
    """The task's data: a ``datasets.DatasetDict`` with ``train`` (labelled) and ``test`` (no labels).

    Columns are listed in this module's docstring; they are the same at both scales. tiny reads
    ``data/tasks/`` (built by ``scripts/build_task_world.py``); full downloads the hub dataset
    once (``datasets``' cache) and keeps its test labels out of what it returns.
    """
    from datasets import DatasetDict

    task, prof = get_task(name), resolve_profile(profile)
    if prof == "tiny":
        train, test = (_tiny_images() if task.kind == "vision" else _tiny_answers())
    else:
        full = _beans if task.kind == "vision" else _squad
        train, test = full("train"), full("test")
        test = test.remove_columns([c for c in test.column_names if c not in _TEST_COLUMNS[task.kind]])
    return DatasetDict({"train": train, "test": test})


_TEST_COLUMNS = {"vision": ("id", "image"), "language": ("id", "context", "question")}


# --------------------------------------------------------------------------------------------
# tiny: the micro-world's task files (data/tasks/)
# --------------------------------------------------------------------------------------------

def tasks_path(*parts: str):
    """``data/tasks/<parts>`` (in a wheel: ``ftlab/_data/tasks``), or a FileNotFoundError saying how to build it."""
    path = data_dir().joinpath("tasks", *parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the capstone's micro-world tasks are built by "
                                "python scripts/build_task_world.py (into data/tasks/).")
    return path


def _image_features(classes):
    from datasets import ClassLabel, Features, Image, Value

    return Features({"id": Value("string"), "image": Image(), "label": ClassLabel(names=list(classes))})


def _pil(images) -> list:
    from PIL import Image

    return [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]


def _tiny_images():
    from datasets import Dataset
    from safetensors.torch import load_file

    meta = json.loads(tasks_path("fewshot_images", "meta.json").read_text())
    features = _image_features(meta["classes"])
    train = load_file(tasks_path("fewshot_images", "train.safetensors"))
    test = load_file(tasks_path("fewshot_images", "test.safetensors"))
    train_ds = Dataset.from_dict({"id": meta["train_ids"], "image": _pil(train["images"]),
                                  "label": train["labels"].tolist()}, features=features)
    test_features = features.copy()
    del test_features["label"]
    test_ds = Dataset.from_dict({"id": meta["test_ids"], "image": _pil(test["images"])}, features=test_features)
    return train_ds, test_ds


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tiny_answers():
    from datasets import Dataset

    columns = ("id", "context", "question", "answer")
    train = [{k: r[k] for k in columns} for r in _read_jsonl(tasks_path("short_answers", "train.jsonl"))]
    test = [{k: r[k] for k in columns[:3]} for r in _read_jsonl(tasks_path("short_answers", "test.jsonl"))]
    return Dataset.from_list(train), Dataset.from_list(test)


# --------------------------------------------------------------------------------------------
# full: public hub datasets. Both return (train, test WITH its labels): load_task drops the
# label columns of test; only ftlab.grade reads them, through full_test_with_answers.
# --------------------------------------------------------------------------------------------

FULL_VISION = "AI-Lab-Makerere/beans"
FULL_LANGUAGE = "rajpurkar/squad"
FULL_LANGUAGE_TEST_ROWS = 1000


def _beans(part: str):
    """``train``: 16 labelled images per class from Beans' train split (seed 0); ``test``: its
    validation and test splits, 261 images, labels still in (``load_task`` drops them)."""
    from datasets import concatenate_datasets, load_dataset

    ds = load_dataset(FULL_VISION)
    features = _image_features(ds["train"].features["labels"].names)

    def tidy(split, prefix: str):
        split = split.rename_column("labels", "label").remove_columns("image_file_path")  # the path names the class
        split = split.add_column("id", [f"{prefix}{i:04d}" for i in range(len(split))])
        return split.select_columns(["id", "image", "label"]).cast(features)

    if part == "test":
        return tidy(concatenate_datasets([ds["validation"], ds["test"]]), "test")
    labels = list(ds["train"]["labels"])
    picked, count = [], Counter()
    for i in np.random.default_rng(0).permutation(len(labels)).tolist():  # a seeded order, first SHOTS per class
        if count[labels[i]] < SHOTS:
            picked.append(i)
            count[labels[i]] += 1
    return tidy(ds["train"].select(sorted(picked)), "img")


def _squad(part: str):
    """``train``: SQuAD's train split, its first accepted answer as ``answer``; ``test``: 1,000
    seeded questions of its validation split with every accepted answer (``accepted``)."""
    from datasets import load_dataset

    if part == "train":
        train = load_dataset(FULL_LANGUAGE, split="train")
        train = train.map(lambda ex: {"answer": ex["answers"]["text"][0]}, remove_columns=["title", "answers"])
        return train.select_columns(["id", "context", "question", "answer"])
    val = load_dataset(FULL_LANGUAGE, split="validation").shuffle(seed=0)
    val = val.select(range(min(FULL_LANGUAGE_TEST_ROWS, len(val))))
    test = val.map(lambda ex: {"accepted": list(ex["answers"]["text"])}, remove_columns=["title", "answers"])
    return test.select_columns(["id", "context", "question", "accepted"])


def full_test_with_answers(name: str) -> dict[str, list[str]]:
    """The grader's side of the full profile: ``{test id: accepted answers}`` from the hub dataset.

    Not for a solution: the loader never returns these, and a notebook that reads them has
    trained on the test set.
    """
    task = get_task(name)
    if task.kind == "vision":
        test = _beans("test")
        names = test.features["label"].names
        return {i: [names[y]] for i, y in zip(test["id"], test["label"])}
    test = _squad("test")
    return {i: list(a) for i, a in zip(test["id"], test["accepted"])}
