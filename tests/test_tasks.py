"""ftlab.tasks: the capstone's two tasks, their data at both scales, and test labels kept out of it.

The tiny data is data/tasks/ (scripts/build_task_world.py); the full profile is checked on the
offline stand-ins of Beans and SQuAD (scripts/standins_tasks.py), in a child process with the
offline environment, like the other stand-in tests (marked ``standins``: `make rehearse` runs them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ftlab import tasks
from ftlab.data import shapes, world
from ftlab.grade import held_answers
from ftlab.tasks import load_task, task_card, task_names

ROOT = Path(__file__).resolve().parent.parent


def _build_script():
    spec = importlib.util.spec_from_file_location("build_task_world", ROOT / "scripts" / "build_task_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    return {name: load_task(name, "tiny") for name in task_names()}


def test_registry_names_two_tasks_one_per_kind():
    assert task_names() == ["fewshot_images", "short_answers"]
    assert [tasks.get_task(n).kind for n in task_names()] == ["vision", "language"]
    assert [tasks.get_task(n).metric for n in task_names()] == ["accuracy", "exact_match"]


def test_unknown_task_names_the_tasks():
    with pytest.raises(ValueError, match=r"unknown task 'vision': the tasks are fewshot_images, short_answers"):
        load_task("vision", "tiny")


@pytest.mark.parametrize("profile", ["tiny", "full"])
def test_task_card_says_data_metric_format_and_budget(profile):
    for name in task_names():
        card = task_card(name, profile)
        assert card.startswith(f"Task: {name} ({tasks.get_task(name).kind}, {profile} profile)")
        assert "header 'id,prediction'" in card and f"python -m ftlab.grade {name} FILE" in card
        assert ("Metric: accuracy" in card) == (name == "fewshot_images")
        assert ("Metric: exact match" in card) == (name == "short_answers")
        assert ("T4" in card) == (profile == "full")
        assert "Hold out your own validation rows from train" in card
    assert "AI-Lab-Makerere/beans" in task_card("fewshot_images", "full")
    assert "rajpurkar/squad" in task_card("short_answers", "full")


def test_tiny_images_are_few_shot_with_unlabelled_test(tiny):
    ds = tiny["fewshot_images"]
    assert list(ds) == ["train", "test"]  # no validation split: the student holds one out
    assert ds["train"].column_names == ["id", "image", "label"]
    assert ds["test"].column_names == ["id", "image"]
    classes = ds["train"].features["label"].names
    assert classes == ["house", "hourglass", "ell", "trapezoid", "bolt"]
    assert Counter(ds["train"]["label"]) == {k: tasks.SHOTS for k in range(5)}
    assert len(ds["test"]) == 100 and ds["test"][0]["image"].size == (32, 32)
    assert not set(classes) & set(shapes.SHAPES)  # no lesson draws these shapes


def test_tiny_questions_have_their_answer_in_the_passage(tiny):
    ds = tiny["short_answers"]
    assert ds["train"].column_names == ["id", "context", "question", "answer"]
    assert ds["test"].column_names == ["id", "context", "question"]
    assert (len(ds["train"]), len(ds["test"])) == (400, 200)
    held = held_answers("short_answers", "tiny")
    for split, answers in (("train", ds["train"]["answer"]), ("test", [held[i][0] for i in ds["test"]["id"]])):
        for row, answer in zip(ds[split], answers):
            (name,) = [w for w in re.findall(r"[A-Z][a-z]+", row["question"]) if w in row["context"]]
            sentences = [s for s in row["context"].split(".") if name in s]
            assert len(sentences) == 2, row  # two facts about each person in the passage
            stating = [s for s in sentences if answer in s.split()]
            assert len(stating) == 1, (split, row, answer)  # one sentence states the asked value


def test_no_test_id_or_label_reaches_the_loader(tiny):
    for name, ds in tiny.items():
        test_ids, train_ids = set(ds["test"]["id"]), set(ds["train"]["id"])
        assert len(test_ids) == len(ds["test"]) and len(train_ids) == len(ds["train"])  # unique
        assert not test_ids & train_ids
        assert not {"label", "labels", "answer", "answers"} & set(ds["test"].column_names)
        assert set(held_answers(name, "tiny")) == test_ids  # the grader holds exactly the test ids


def test_the_loader_never_opens_the_graders_labels(monkeypatch):
    opened = []
    real = tasks.tasks_path
    monkeypatch.setattr(tasks, "tasks_path", lambda *parts: opened.append(parts) or real(*parts))
    for name in task_names():
        load_task(name, "tiny")
    assert opened and not [p for p in opened if p[0] == "answers"]
    assert {p[0] for p in opened} == {"fewshot_images", "short_answers"}


def test_test_passages_are_about_people_train_never_names(tiny):
    ds = tiny["short_answers"]
    names = lambda rows: {w for r in rows for w in re.findall(r"\b[A-Z][a-z]+\b", r["context"])}  # noqa: E731
    train_people, test_people = names(ds["train"]), names(ds["test"])
    w = world.make_world()
    known = {p.name for p in w.people}
    towns = set(w.cities) | {"The", "Every"}
    assert not (train_people - towns) & (test_people - towns)
    assert not (train_people | test_people) & known  # none of the language world's people


def test_tiny_tasks_load_in_under_a_second():
    load_task("fewshot_images", "tiny")  # imports datasets and PIL
    start = time.perf_counter()
    for name in task_names():
        load_task(name, "tiny")
    assert time.perf_counter() - start < 1.0


def test_tiny_data_rebuilds_to_identical_bytes(tmp_path):
    sizes = _build_script().build(tmp_path)
    assert sum(sizes.values()) < 1_000_000
    for rel in sizes:
        assert (tmp_path / rel).read_bytes() == (ROOT / "data" / "tasks" / rel).read_bytes(), rel
    shipped = {p.relative_to(ROOT / "data" / "tasks").as_posix() for p in (ROOT / "data" / "tasks").rglob("*")
               if p.is_file()}
    assert shipped - set(sizes) == {"README.md"}


def test_missing_task_data_says_which_script_builds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "data_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python scripts/build_task_world.py"):
        load_task("short_answers", "tiny")


# --------------------------------------------------------------------------------------------
# The full profile, on the stand-ins
# --------------------------------------------------------------------------------------------

FULL_PROBE = r'''
import collections, json, subprocess, sys
from ftlab.tasks import load_task
from ftlab.grade import held_answers, score
r = {}
for name in ("fewshot_images", "short_answers"):
    ds = load_task(name, "full")
    held = held_answers(name, "full")
    r[name] = {"train": ds["train"].column_names, "test": ds["test"].column_names,
               "rows": [len(ds["train"]), len(ds["test"])],
               "test_ids_held": sorted(ds["test"]["id"]) == sorted(held),
               "overlap": len(set(ds["test"]["id"]) & set(ds["train"]["id"])),
               "max_accepted": max(len(a) for a in held.values())}
    if name == "fewshot_images":
        r[name]["per_class"] = sorted(collections.Counter(ds["train"]["label"]).values())
        r[name]["classes"] = ds["train"].features["label"].names
        r[name]["size"] = list(ds["test"][0]["image"].size)
    with open(name + ".csv", "w") as f:
        f.write("id,prediction\n" + "".join(f"{i},{a[0]}\n" for i, a in held.items()))
    r[name]["perfect"] = score(name, name + ".csv", "full")
print(json.dumps(r))
'''


@pytest.mark.standins
def test_full_profile_loads_the_standins_without_test_labels(tmp_path):
    out = tmp_path / "standins"
    built = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_standins.py"), "--out", str(out),
                            "--only", "tasks"], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    manifest = json.loads((out / "manifest.json").read_text())["standins"]
    assert {"AI-Lab-Makerere/beans", "rajpurkar/squad"} <= set(manifest)
    digest = lambda: {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
                      for p in sorted((out / "hf" / "datasets").rglob("*")) if p.is_file()}
    first = digest()
    again = subprocess.run(built.args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and digest() == first  # a rebuild writes the same bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update({"HF_HOME": str(out / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "FTLAB_PROFILE": "full", "OMP_NUM_THREADS": "1"})
    result = subprocess.run([sys.executable, "-c", FULL_PROBE], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    r = json.loads(result.stdout.splitlines()[-1])
    images, answers = r["fewshot_images"], r["short_answers"]
    # the same columns as the tiny profile's; the image path (it names the class) and labels are gone
    assert (images["train"], images["test"]) == (["id", "image", "label"], ["id", "image"])
    assert (answers["train"], answers["test"]) == (["id", "context", "question", "answer"],
                                                   ["id", "context", "question"])
    assert images["classes"] == ["angular_leaf_spot", "bean_rust", "healthy"]
    assert images["per_class"] == [tasks.SHOTS] * 3 and images["size"] == [500, 500]
    assert images["rows"] == [48, 24]  # test = the stand-in's validation + test splits
    assert answers["rows"] == [300, 150] and answers["max_accepted"] == 3
    for got in (images, answers):
        assert got["test_ids_held"] and got["overlap"] == 0 and got["perfect"] == 1.0
