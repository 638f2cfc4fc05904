"""ftlab.grade: the capstone's grader, as a function and as ``python -m ftlab.grade``.

Every malformed case exits 2 with one line naming the problem and the expected format, never a
traceback. Starting Python and importing torch takes seconds here, so the command line runs in
a few real subprocesses: --list, --template and scoring each get their own, and the malformed
cases run one after another in one child that executes the module as ``python -m`` does
(``runpy.run_module(..., run_name="__main__")``) and reports each case's exit status and output.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab import grade
from ftlab.grade import SubmissionError, constant_prediction, held_answers, normalize_answer, score
from ftlab.tasks import load_task

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("fewshot_images", "short_answers")
ENV = {**os.environ, "FTLAB_PROFILE": "tiny", "OMP_NUM_THREADS": "1"}


def write(path: Path, rows, header=("id", "prediction")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def perfect_rows(task: str) -> list[list[str]]:
    return [[i, accepted[0]] for i, accepted in held_answers(task, "tiny").items()]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftlab.grade", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------------------------
# The metric
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The  Owl.", "owl"), ("an owl", "owl"), ("Dufinan!", "dufinan"), ("  A, B;  c ", "b c"),
    ("the theatre", "theatre"), ("Denver Broncos", "denver broncos"), ("", ""),
])
def test_normalize_answer_is_squads(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_counts_any_accepted_answer_after_normalisation(tmp_path, monkeypatch):
    answers = {"a": ["Denver Broncos", "Broncos"], "b": ["1,000"], "c": ["owl"], "d": ["cat"]}
    monkeypatch.setattr(grade, "held_answers", lambda task, profile=None: answers)
    path = write(tmp_path / "s.csv", [["a", "the broncos"], ["b", "1000"], ["c", "An Owl."], ["d", "dog"]])
    assert score("short_answers", path, "tiny") == 0.75


# --------------------------------------------------------------------------------------------
# Scores of known submissions
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_perfect_submission_scores_one_and_row_order_does_not_matter(task, tmp_path):
    rows = perfect_rows(task)
    assert score(task, write(tmp_path / "p.csv", rows), "tiny") == 1.0
    random.Random(0).shuffle(rows)
    assert score(task, write(tmp_path / "shuffled.csv", rows), "tiny") == 1.0


@pytest.mark.parametrize("task", TASKS)
def test_score_is_the_fraction_right_whatever_the_order(task, tmp_path):
    rows = perfect_rows(task)
    wrong = "no such answer" if task == "short_answers" else None
    for row in rows[: len(rows) // 4]:  # spoil a quarter of the rows
        if wrong is None:
            classes = load_task(task, "tiny")["train"].features["label"].names
            row[1] = next(c for c in classes if c != row[1])
        else:
            row[1] = wrong
    expected = 1 - (len(rows) // 4) / len(rows)
    first = score(task, write(tmp_path / "a.csv", rows), "tiny")
    random.Random(1).shuffle(rows)
    assert first == score(task, write(tmp_path / "b.csv", rows), "tiny") == pytest.approx(expected)


@pytest.mark.parametrize("task", TASKS)
def test_template_scores_exactly_the_constant_prediction_floor(task, tmp_path):
    n, prediction = grade.write_template(task, tmp_path / "t.csv", "tiny")
    answers = held_answers(task, "tiny")
    assert n == len(answers) == len(load_task(task, "tiny")["test"])
    floor = sum(normalize_answer(prediction) in {normalize_answer(a) for a in acc} for acc in answers.values()) / n
    assert score(task, tmp_path / "t.csv", "tiny") == pytest.approx(floor)
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "prediction"] and {r[1] for r in rows[1:]} == {prediction}
    assert sorted(r[0] for r in rows[1:]) == sorted(load_task(task, "tiny")["test"]["id"])


def test_floors_of_the_tiny_tasks():
    """The numbers data/tasks/README.md quotes: 1 in 5 classes; the most common train word."""
    assert constant_prediction("fewshot_images", "tiny") == "house"  # the classes tie: the first
    answers = held_answers("fewshot_images", "tiny")
    assert sum(a == ["house"] for a in answers.values()) / len(answers) == 0.2
    word = constant_prediction("short_answers", "tiny")
    train_answers = list(load_task("short_answers", "tiny")["train"]["answer"])
    assert train_answers.count(word) == max(map(train_answers.count, set(train_answers)))


def test_a_class_index_counts_as_its_name(tmp_path):
    classes = load_task("fewshot_images", "tiny")["train"].features["label"].names
    rows = [[i, str(classes.index(a[0]))] for i, a in held_answers("fewshot_images", "tiny").items()]
    assert score("fewshot_images", write(tmp_path / "idx.csv", rows), "tiny") == 1.0


def test_a_quoted_prediction_may_hold_a_comma_or_a_newline(tmp_path):
    rows = perfect_rows("short_answers")
    rows[0][1] += "\nand more, on a second line"  # wrong, but one row: the next ids still count
    rows[1][1] = f"{rows[1][1]},"  # right: the comma is punctuation
    rows.append(["zz1", "x"])  # an unknown id after them is still found on its own line
    path = write(tmp_path / "q.csv", rows)
    with pytest.raises(SubmissionError, match=r"'zz1'"):
        score("short_answers", path, "tiny")
    assert score("short_answers", write(tmp_path / "ok.csv", rows[:-1]), "tiny") == 1 - 1 / len(rows[:-1])
    bad = write(tmp_path / "three.csv", rows[:-1] + [["zz2", "a", "b"]])
    with pytest.raises(SubmissionError, match=rf"line {len(rows) + 2}: 3 fields"):  # header + rows + 1 split line
        score("short_answers", bad, "tiny")


def test_a_bom_and_a_trailing_blank_line_are_fine(tmp_path):
    rows = perfect_rows("short_answers")
    text = "id,prediction\n" + "".join(f"{i},{p}\n" for i, p in rows) + "\n"
    path = tmp_path / "bom.csv"
    path.write_text("\ufeff" + text, encoding="utf-8")
    assert score("short_answers", path, "tiny") == 1.0


# --------------------------------------------------------------------------------------------
# Malformed submissions: the function names the problem
# --------------------------------------------------------------------------------------------

def _malformed_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the message must hold), for the short_answers task."""
    rows = perfect_rows("short_answers")
    cases = {
        "missing id": (write(tmp_path / "missing.csv", rows[1:]), f"{rows[0][0]!r}"),
        "duplicate id": (write(tmp_path / "dup.csv", rows + [rows[5]]), f"duplicate id {rows[5][0]!r}"),
        "unknown id": (write(tmp_path / "unknown.csv", rows + [["zz999", "owl"]]), "'zz999'"),
        "empty file": (tmp_path / "empty.csv", "is empty"),
        "header only": (write(tmp_path / "header.csv", []), "no rows"),
        "malformed row": (write(tmp_path / "three.csv", rows[:3] + [[rows[3][0], "a", "b"]] + rows[4:]),
                          "line 5: 3 fields"),
        "empty id": (write(tmp_path / "noid.csv", rows + [["", "owl"]]), "the id is empty"),
        "wrong header": (write(tmp_path / "hdr.csv", rows, header=("id", "answer")), "line 1: the header is 'id,answer'"),
        "no header": (write(tmp_path / "nohdr.csv", rows, header=None), "line 1: the header is"),
        "not utf-8": (tmp_path / "latin.csv", "not UTF-8"),
        "does not exist": (tmp_path / "nowhere.csv", "does not exist"),
        "a folder": (tmp_path, "is not a file"),
    }
    (tmp_path / "empty.csv").write_text("\n  \n")
    (tmp_path / "latin.csv").write_bytes(b"id,prediction\nt0000,caf\xe9\n")
    return cases


def test_each_malformed_file_raises_a_message_naming_it(tmp_path):
    for name, (path, phrase) in _malformed_files(tmp_path).items():
        with pytest.raises(SubmissionError) as err:
            score("short_answers", path, "tiny")
        assert phrase in str(err.value), (name, str(err.value))
        assert "id,prediction" in str(err.value), (name, str(err.value))


def test_a_prediction_that_is_no_class_is_refused(tmp_path):
    rows = perfect_rows("fewshot_images")
    rows[0][1] = "hexagon"  # a lesson's shape, not this task's
    with pytest.raises(SubmissionError, match=r"predicts 'hexagon', which is not a class: predict one of house"):
        score("fewshot_images", write(tmp_path / "s.csv", rows), "tiny")
    rows[0][1] = "5"  # one past the last index
    with pytest.raises(SubmissionError, match=r"index 0-4"):
        score("fewshot_images", write(tmp_path / "s.csv", rows), "tiny")


# --------------------------------------------------------------------------------------------
# The command line, in real subprocesses
# --------------------------------------------------------------------------------------------

def test_cli_list_prints_one_task_per_line(tmp_path):
    result = run_cli("--list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == list(TASKS)


def test_cli_template_then_score_prints_the_floor_last(tmp_path):
    made = run_cli("fewshot_images", "--template", "sub.csv", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "wrote sub.csv: 100 test ids" in made.stdout and "'house'" in made.stdout
    scored = run_cli("fewshot_images", "sub.csv", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.splitlines()[-1] == "0.2000"
    assert "Traceback" not in made.stderr + scored.stderr


def test_cli_scores_a_perfect_shuffled_submission_one(tmp_path):
    rows = perfect_rows("short_answers")
    random.Random(2).shuffle(rows)
    write(tmp_path / "best.csv", rows)
    result = run_cli("short_answers", "best.csv", "--profile", "tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1.0000"
    assert result.stdout.splitlines()[-2] == "short_answers (tiny): exact_match over 200 test ids"


DRIVER = r'''
import contextlib, io, json, runpy, sys, traceback
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    sys.argv = ["ftlab.grade", *argv]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            runpy.run_module("ftlab.grade", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = "raised"
    out[name] = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
print(json.dumps(out))
'''


def test_cli_exits_2_with_one_clear_line_for_every_malformed_case(tmp_path):
    files = _malformed_files(tmp_path)
    cases = {name: ["short_answers", str(path)] for name, (path, _) in files.items()}
    phrases = {name: phrase for name, (_, phrase) in files.items()}
    bad_class = write(tmp_path / "class.csv", [[i, "circle"] for i in held_answers("fewshot_images", "tiny")])
    cases["not a class"], phrases["not a class"] = ["fewshot_images", str(bad_class)], "which is not a class"
    cases["unknown task"], phrases["unknown task"] = ["no_such_task", str(bad_class)], "unknown task 'no_such_task'"
    cases["no task"], phrases["no task"] = [], "name a task"
    cases["no file"], phrases["no file"] = ["short_answers"], "name the submission FILE"
    cases["file and template"] = ["short_answers", str(bad_class), "--template", str(tmp_path / "t.csv")]
    phrases["file and template"] = "not both"
    cases["unwritable template"] = ["short_answers", "--template", str(tmp_path / "no" / "dir" / "t.csv")]
    phrases["unwritable template"] = "No such file or directory"
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    for name, got in report.items():
        message = got["stderr"].strip().splitlines()
        assert got["code"] == 2, (name, got)
        assert "Traceback" not in got["stderr"] + got["stdout"], (name, got)
        assert phrases[name] in message[-1], (name, message)
        assert message[-1].startswith("error: "), (name, message)
    assert set(report) == set(cases)
