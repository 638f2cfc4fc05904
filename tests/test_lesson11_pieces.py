"""Lesson 11's own pieces: its validation metric (teacher-forced exact match) is the greedy
generation's, its answer normalisation is the grader's, its clock and simulated disconnect do
what the text says, and the capstone keeps to the day's rules (ftlab gives only the tasks, the
grader and the set-up; the test answers are never read)."""

from __future__ import annotations

import ast
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lesson_cells import code_cells, lesson_path

from ftlab import grade
from ftlab.tasks import load_task

STEM = "11_competition_day"


def lesson_function(name: str, **namespace):
    """Compile only the ``def name`` (or ``class name``) of the lesson's cells and return it."""
    for source in code_cells(STEM):
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                module = ast.Module(body=[node], type_ignores=[])
                exec(compile(module, str(lesson_path(STEM)), "exec"), namespace)
                return namespace[name]
    raise AssertionError(f"{STEM} defines no {name}")


def test_teacher_forced_exact_shifts_by_one_and_ignores_masked_positions():
    metric = lesson_function("teacher_forced_exact")
    labels = np.array([[-100, -100, 7, 8, 2],     # answer 7 8 </s>
                       [-100, -100, 7, 8, 2],
                       [-100, -100, -100, 5, 2]])
    # the logit at position t predicts token t+1: the prediction row is the labels moved left by one
    predictions = np.array([[9, 7, 8, 2, 0],      # all three answer tokens right; position 0 is a prompt token
                            [9, 7, 3, 2, 0],      # the second answer token wrong
                            [4, 4, 5, 2, 0]])     # a wrong guess at a masked position does not count
    assert metric(SimpleNamespace(predictions=predictions, label_ids=labels)) == {"exact_match": pytest.approx(2 / 3)}
    # without the shift the same predictions would score nothing: the test can tell
    unshifted = SimpleNamespace(predictions=np.roll(predictions, 1, axis=1), label_ids=labels)
    assert metric(unshifted)["exact_match"] == 0.0


def test_teacher_forced_exact_matches_greedy_generation_on_the_tiny_lm():
    """Label rows with the model's own greedy answer (then the metric must say 1) or with a
    different answer (0): the metric and generation agree row by row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlab.runtime import data_path

    metric = lesson_function("teacher_forced_exact")
    tok = AutoTokenizer.from_pretrained(str(data_path("lm")))
    model = AutoModelForCausalLM.from_pretrained(str(data_path("lm"))).eval()
    rows = load_task("short_answers", "tiny")["train"].select(range(4))
    ids, labels = [], []
    for k, row in enumerate(rows):
        p = tok(f"{row['context']}\nQuestion: {row['question']}\nAnswer:")["input_ids"]
        gen = model.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        said = gen[0, len(p):].tolist()
        said = said[:said.index(tok.eos_token_id) + 1] if tok.eos_token_id in said else said
        answer = said if k % 2 == 0 else [t + 1 for t in said]  # odd rows: a label greedy decoding does not write
        ids.append(p + answer)
        labels.append([-100] * len(p) + answer)
    width = max(map(len, ids))
    batch = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
    label_ids = np.array([y + [-100] * (width - len(y)) for y in labels])
    with torch.no_grad():
        guess = model(batch).logits.argmax(-1).numpy()
    per_row = [metric(SimpleNamespace(predictions=guess[i:i + 1], label_ids=label_ids[i:i + 1]))["exact_match"]
               for i in range(len(ids))]
    assert per_row == [1.0, 0.0, 1.0, 0.0]


def test_the_lessons_normalisation_is_the_graders():
    normalize = lesson_function("normalize", string=__import__("string"))
    texts = ["The Cat", "  an  apple. ", "Genusar!", "a", "Rock-and-roll, the band", "THE END", "x  y\tz"]
    assert [normalize(t) for t in texts] == [grade.normalize_answer(t) for t in texts]
    assert normalize("The Cat.") == "cat"


def test_the_clock_reports_each_lap_and_says_when_the_budget_is_spent(capsys, monkeypatch):
    now = [100.0]
    fake_time = SimpleNamespace(perf_counter=lambda: now[0])
    clock_class = lesson_function("Clock", time=fake_time)
    clock = clock_class("task", budget_min=1.0)
    now[0] = 130.0
    assert clock.lap("first") == pytest.approx(30.0)
    now[0] = 175.0
    assert clock.lap("second") == pytest.approx(-15.0)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[clock task] first: 30.0 s; 0.5 of 1 min left"
    assert "second: 45.0 s" in out[1] and "OVER BUDGET" in out[1]
    assert clock.laps == {"first": pytest.approx(30.0), "second": pytest.approx(45.0)} and clock.used_s == 75.0


def test_the_disconnect_stops_training_at_its_step_and_not_before():
    from transformers import TrainerCallback

    disconnect = lesson_function("Disconnect", TrainerCallback=TrainerCallback)(at_step=3)
    control = SimpleNamespace(should_training_stop=False)
    for step in (1, 2):
        disconnect.on_step_end(None, SimpleNamespace(global_step=step), control)
        assert not control.should_training_stop
    disconnect.on_step_end(None, SimpleNamespace(global_step=3), control)
    assert control.should_training_stop


ALLOWED = {"ftlab.runtime", "ftlab.tasks", "ftlab.grade", "ftlab.drills"}


def test_the_capstone_takes_from_ftlab_only_the_tasks_the_grader_and_the_set_up():
    """What a competitor has on Colab does the work; ftlab.models appears only as the tiny
    profile's stand-in for torchvision's ResNet-50, in the branch that the full profile skips."""
    source = "\n".join(code_cells(STEM))
    imported = set(re.findall(r"^\s*from (ftlab[\w.]*) import", source, re.M))
    imported |= set(re.findall(r"^\s*import (ftlab[\w.]*)", source, re.M))
    assert imported - ALLOWED == {"ftlab.models"}
    (branch,) = [c for c in code_cells(STEM) if "from ftlab.models import" in c]
    tiny_part = branch[branch.index('else:  # the micro-world'):]
    assert "from ftlab.models import load_vision_backbone" in tiny_part
    assert "resnet50(weights=ResNet50_Weights.DEFAULT)" in branch
    assert "from ftlab.grade import main as grader" in source  # the command line itself, not its insides


def test_the_capstone_never_reads_the_held_test_answers():
    source = "\n".join(code_cells(STEM))
    for forbidden in ("held_answers", "full_test_with_answers", "answers/", "tasks_path", "accepted"):
        assert forbidden not in source, f"the capstone must not read the grader's answers ({forbidden!r})"


def test_the_lessons_grade_scores_a_file_and_stops_on_one_the_grader_refuses(tmp_path, capsys):
    import contextlib
    import io

    namespace = dict(grader=grade.main, profile=lambda: "tiny", io=io, contextlib=contextlib)
    run_grader = lesson_function("run_grader", **namespace)
    score = lesson_function("grade", run_grader=run_grader)
    template = tmp_path / "floor.csv"
    run_grader("short_answers", "--template", str(template))
    assert score("short_answers", str(template)) == pytest.approx(grade.score("short_answers", template, "tiny"))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,answer\nx,1\n")
    with pytest.raises(RuntimeError, match="the grader refused: error: .*header"):
        score("short_answers", str(bad))


def test_the_classifier_keeps_frozen_batchnorm_statistics_and_trains_the_rest():
    import torch.nn as nn
    import torch.nn.functional as F

    from ftlab.models import load_vision_backbone

    classifier_class = lesson_function("Classifier", nn=nn, F=F)
    net = load_vision_backbone("tiny")
    net.fc = nn.Identity()
    for name, p in net.named_parameters():
        p.requires_grad = name.startswith(("layer4",))
    model = classifier_class(net, nn.Linear(128, 5)).train()
    frozen_bn = [m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d) and not n.startswith("layer4")]
    trained_bn = [m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d) and n.startswith("layer4")]
    assert frozen_bn and trained_bn
    assert not any(m.training for m in frozen_bn) and all(m.training for m in trained_bn)
    before = net.bn1.running_mean.clone()
    out = model(torch.randn(8, 3, 32, 32) * 3 + 1, torch.zeros(8, dtype=torch.long))
    assert torch.equal(net.bn1.running_mean, before)  # a training batch left the frozen statistics alone
    assert out["loss"].ndim == 0 and out["logits"].shape == (8, 5)
