"""The capstone's grader: score a submission file against the held test labels (lesson 11).

    python -m ftlab.grade --list                         # one task name per line
    python -m ftlab.grade TASK --template FILE           # a valid submission: every test id, one constant prediction
    python -m ftlab.grade TASK FILE                      # check FILE and print its score as the last line
    python -m ftlab.grade TASK FILE --profile tiny       # (the profile defaults to FTLAB_PROFILE's)

A submission is a CSV file: the header ``id,prediction``, then one row per test id, in any
order (the score depends on the ids, never on the order). A missing, duplicate or unknown id, an
empty or malformed file, a wrong header, a prediction that is not a class (images), an unknown
task or a file that is not there exits with status 2 and one line that names the problem and
the expected format; never a traceback.

Metrics (:data:`ftlab.tasks.METRICS`): accuracy for ``fewshot_images``; exact match after
:func:`normalize_answer` for ``short_answers`` (a question may have several accepted answers;
matching any one counts).

The template's constant prediction is the most frequent training label (ties: the first in
the class order) or the most frequent training answer (ties: the first seen): the floor a
real method must beat.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import string
import sys
from collections import Counter
from pathlib import Path

from ftlab.runtime import resolve_profile
from ftlab.tasks import SUBMISSION_HEADER, full_test_with_answers, get_task, load_task, task_names, tasks_path

EXPECTED = ("expected: a CSV file whose first line is 'id,prediction', then one line 'ID,PREDICTION' per test id "
            "(python -m ftlab.grade TASK --template FILE writes one)")


class SubmissionError(ValueError):
    """A submission file the grader cannot score; the message names the problem and the expected format."""


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation and the articles a/an/the removed, white space collapsed.

    ``"The  Owl."`` -> ``"owl"``. Both the prediction and every accepted answer go through it.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def held_answers(task: str, profile: str | None = None) -> dict[str, list[str]]:
    """``{test id: accepted answers}``: the labels only the grader reads.

    tiny: ``data/tasks/answers/<task>.json``; full: the hub dataset's held-out split, through
    :func:`ftlab.tasks.full_test_with_answers` (the task loader never returns them).
    """
    get_task(task)
    if resolve_profile(profile) == "tiny":
        return json.loads(tasks_path("answers", f"{task}.json").read_text())
    return full_test_with_answers(task)


def constant_prediction(task: str, profile: str | None = None) -> str:
    """The template's one prediction for every id: the most frequent label (or answer) in train."""
    train = load_task(task, profile)["train"]
    if get_task(task).kind == "vision":
        names = train.features["label"].names
        counts = Counter(train["label"])
        return names[max(range(len(names)), key=lambda k: (counts[k], -k))]
    counts = Counter(train["answer"])
    return max(counts, key=counts.get)  # ties: the first seen (dict order)


def write_template(task: str, path, profile: str | None = None) -> tuple[int, str]:
    """Write a valid submission to ``path``: every test id with :func:`constant_prediction`.

    Returns ``(rows, prediction)``. Its score is the floor: what predicting one constant earns.
    """
    prediction = constant_prediction(task, profile)
    ids = sorted(held_answers(task, profile))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(SUBMISSION_HEADER)
        writer.writerows([i, prediction] for i in ids)
    return len(ids), prediction


def read_submission(path) -> dict[str, str]:
    """``{id: prediction}`` from a submission file, or a :class:`SubmissionError` naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"{path} does not exist; {EXPECTED}.")
    if not path.is_file():
        raise SubmissionError(f"{path} is not a file; {EXPECTED}.")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Excel's CSV) is fine
    except UnicodeDecodeError:
        raise SubmissionError(f"{path} is not UTF-8 text; {EXPECTED}.") from None
    if not text.strip():
        raise SubmissionError(f"{path} is empty; {EXPECTED}.")
    reader = csv.reader(io.StringIO(text, newline=""))  # a quoted prediction may hold a comma or a newline
    rows = []  # (line where the row starts, fields)
    try:
        line = 1
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as err:
        raise SubmissionError(f"{path} line {reader.line_num}: not valid CSV ({err}); {EXPECTED}.") from None
    header = [cell.strip() for cell in rows[0][1]]
    if header != list(SUBMISSION_HEADER):
        raise SubmissionError(f"{path} line 1: the header is {','.join(rows[0][1])!r}, not 'id,prediction'; "
                              f"{EXPECTED}.")
    predictions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, row in rows[1:]:
        if not row or all(not cell.strip() for cell in row):
            continue  # a blank line (e.g. the last newline) is not a row
        if len(row) != 2:
            raise SubmissionError(f"{path} line {line}: {len(row)} fields ({','.join(row)!r}), not 2; each row is "
                                  "'ID,PREDICTION' (quote a prediction that holds a comma); " + EXPECTED + ".")
        row_id, prediction = row[0].strip(), row[1]
        if not row_id:
            raise SubmissionError(f"{path} line {line}: the id is empty; {EXPECTED}.")
        if row_id in predictions:
            raise SubmissionError(f"{path} line {line}: duplicate id {row_id!r} (first on line {first_line[row_id]}); "
                                  f"each test id appears exactly once; {EXPECTED}.")
        predictions[row_id], first_line[row_id] = prediction, line
    if not predictions:
        raise SubmissionError(f"{path} has a header but no rows; {EXPECTED}.")
    return predictions


def _examples(ids, n: int = 3) -> str:
    ids = sorted(ids)
    return ", ".join(repr(i) for i in ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def score(task: str, path, profile: str | None = None) -> float:
    """The submission's score on ``task``: accuracy or exact match, a float in [0, 1].

    Raises :class:`SubmissionError` (with the problem and the expected format) for a file the
    grader cannot score. Row order never matters: the predictions are matched by id.
    """
    return _score(task, path, profile)[0]


def _score(task: str, path, profile: str | None) -> tuple[float, int]:
    """(score, number of test ids)."""
    spec = get_task(task)
    answers = held_answers(task, profile)
    predictions = read_submission(path)
    unknown = set(predictions) - set(answers)
    if unknown:
        raise SubmissionError(f"{path}: {len(unknown)} id(s) are not test ids of {task}: {_examples(unknown)}; "
                              f"the test ids are the 'id' column of load_task({task!r})['test']; {EXPECTED}.")
    missing = set(answers) - set(predictions)
    if missing:
        raise SubmissionError(f"{path}: {len(missing)} of the {len(answers)} test ids of {task} are missing: "
                              f"{_examples(missing)}; predict every id of load_task({task!r})['test']; {EXPECTED}.")
    if spec.kind == "vision":
        classes = load_task(task, profile)["train"].features["label"].names
        hits = 0
        for row_id, raw in predictions.items():
            label = _class_name(raw.strip(), classes, path, row_id)
            hits += label == answers[row_id][0]
        return hits / len(answers), len(answers)
    hits = sum(normalize_answer(predictions[i]) in {normalize_answer(a) for a in accepted}
               for i, accepted in answers.items())
    return hits / len(answers), len(answers)


def _class_name(prediction: str, classes: list[str], path, row_id: str) -> str:
    if prediction in classes:
        return prediction
    if prediction.isdigit() and int(prediction) < len(classes):
        return classes[int(prediction)]
    raise SubmissionError(f"{path}: id {row_id!r} predicts {prediction!r}, which is not a class: predict one of "
                          f"{', '.join(classes)} (or its index 0-{len(classes) - 1}).")


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ftlab.grade", description="Score a capstone submission (a CSV file 'id,prediction').",
        epilog="Exit status: 0 scored (or listed, or template written); 2 a problem with the task or the file.")
    parser.add_argument("--list", action="store_true", help="print the task names, one per line")
    parser.add_argument("task", nargs="?", help="the task's name (see --list)")
    parser.add_argument("file", nargs="?", help="the submission file to score")
    parser.add_argument("--template", metavar="FILE", help="write a valid submission (a constant prediction) to FILE")
    parser.add_argument("--profile", choices=("tiny", "full"), help="the data's scale (default: FTLAB_PROFILE)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(task_names()))
        return 0
    if args.task is None:
        parser.print_usage(sys.stderr)
        print("error: name a task (python -m ftlab.grade --list) and a submission FILE, or --template FILE.",
              file=sys.stderr)
        return 2
    try:
        get_task(args.task)
        profile = resolve_profile(args.profile)
        if args.template:
            if args.file:
                raise SubmissionError("give either a FILE to score or --template FILE to write, not both.")
            rows, prediction = write_template(args.task, args.template, profile)
            print(f"wrote {args.template}: {rows} test ids of {args.task} ({profile}), every one predicting "
                  f"{prediction!r} (the floor a method must beat)")
            return 0
        if not args.file:
            raise SubmissionError(f"name the submission FILE to score (python -m ftlab.grade {args.task} FILE), "
                                  f"or write one with --template FILE.")
        value, n = _score(args.task, args.file, profile)
    except (SubmissionError, ValueError, OSError) as err:  # OSError: FileNotFoundError, an unwritable path
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a student never gets a traceback, even from a grader bug
        print(f"error: the grader failed ({type(err).__name__}: {err}); the submission was not scored.",
              file=sys.stderr)
        return 1
    print(f"{args.task} ({profile}): {get_task(args.task).metric} over {n} test ids")
    print(f"{value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
