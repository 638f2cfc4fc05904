"""The machinery behind every drill: results, the registry, answer parsing and the graders.

Lesson modules (``ftlab/drills/lessonNN.py``) describe their drills with :class:`Drill` and
:func:`register` them; ``ftlab.drills`` imports every such module, so ``all_drills()`` is the
whole course. Three kinds of grader are here:

- :func:`numeric`: a number within a relative tolerance, read from ``131072``, ``"131,072"``,
  ``"0.78%"`` or ``"84 GB"``, with hints for the typical wrong numbers;
- :func:`choice`: one letter, with a hint for each distractor;
- :func:`code`: the student's function, run on random inputs and compared with a reference
  (usually the library that does the job in practice: peft, bitsandbytes, trl), with hints
  for the typical bugs.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PASS, FAIL, BLANK = "pass", "fail", "not attempted"


class DrillNotPassed(AssertionError):
    """Raised in strict mode (``FTLAB_DRILLS=strict``) when a drill is not passed."""


class AnswerError(ValueError):
    """The answer has the wrong form; the message says what form is wanted."""


@dataclass(frozen=True)
class Result:
    drill_id: str
    status: str  # "pass", "fail" or "not attempted"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def __str__(self) -> str:
        mark = {PASS: "✅", FAIL: "❌", BLANK: "⬜"}[self.status]
        return f"{mark} {self.drill_id}: {self.status}. {self.message}"

    def _ipython_display_(self) -> None:
        """A check cell already printed the line; do not echo the result again."""


@dataclass(frozen=True)
class Drill:
    """One drill. ``grade(answer) -> (passed, text)``: praise on a pass, a hint on a fail."""

    id: str
    title: str
    lesson: str       # the notebook it lives in, e.g. "08_drills"
    difficulty: int   # 1, 2 or 3 marks
    kind: str         # "numeric", "choice" or "code"
    reference: object  # the reference answer; for a code drill, a reference function
    grade: Callable[[object], tuple[bool, str]]
    wrong: tuple = ()  # known-wrong answers: each must fail with a hint (tested)
    options: dict = field(default_factory=dict)  # choice drills: letter -> text
    prompt: str = ""   # one line saying what to answer, and in what form

    def __post_init__(self):
        if self.difficulty not in (1, 2, 3):
            raise ValueError(f"drill {self.id}: difficulty must be 1, 2 or 3 marks, not {self.difficulty}")
        if self.kind not in ("numeric", "choice", "code"):
            raise ValueError(f"drill {self.id}: kind must be numeric, choice or code, not {self.kind!r}")
        if not self.wrong:
            raise ValueError(f"drill {self.id}: give at least one known-wrong answer (tests check its hint)")

    @property
    def marks(self) -> str:
        return "★" * self.difficulty + "☆" * (3 - self.difficulty)


DRILLS: dict[str, Drill] = {}


def register(drill: Drill) -> Drill:
    """Add a drill to the course. Ids are unique and lower-case."""
    if drill.id != drill.id.lower():
        raise ValueError(f"drill ids are lower-case: {drill.id!r}")
    if drill.id in DRILLS and DRILLS[drill.id] is not drill:
        raise ValueError(f"drill id {drill.id!r} is registered twice")
    DRILLS[drill.id] = drill
    return drill


# -- answer parsing -------------------------------------------------------------------------

_UNITS = {"gb": 1.0, "gib": 1.0, "mb": 1.0, "bytes": 1.0, "params": 1.0, "bits": 1.0, "x": 1.0}


def parse_number(value) -> float:
    """A number from ``131072``, ``"131,072"``, ``"0.78%"`` (-> 0.0078) or ``"84 GB"`` (-> 84)."""
    if isinstance(value, bool):
        raise AnswerError("a True/False is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor or numpy scalar
        return float(value.item())
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        for unit in _UNITS:
            if text.lower().endswith(unit):
                text = text[: -len(unit)].strip()
                break
        scale = 1.0
        if text.endswith("%"):
            text, scale = text[:-1].strip(), 0.01
        try:
            return float(text) * scale
        except ValueError:
            raise AnswerError(f"{value!r} is not a number; write e.g. 131072, '131,072' or '0.78%'") from None
    raise AnswerError(f"expected a number or a numeric string, got {type(value).__name__}")


def close(value: float, target: float, rel: float) -> bool:
    return math.isfinite(value) and abs(value - target) <= rel * abs(target)


def is_blank(answer) -> bool:
    """None, ``...``, an empty string, or a tuple/list/dict of blanks count as not attempted."""
    if answer is None or answer is Ellipsis:
        return True
    if isinstance(answer, str) and not answer.strip():
        return True
    if isinstance(answer, (tuple, list, dict)):
        items = answer.values() if isinstance(answer, dict) else answer
        return not answer or all(is_blank(a) for a in items)
    return False


# -- graders ----------------------------------------------------------------------------------

def numeric(target: float, *, rel: float = 0.02, hints: Sequence[tuple[float, str]] = (),
            fallback: str, praise: str) -> Callable:
    """Pass within ``rel`` of ``target``; a known wrong number gets its own hint."""
    def grade(answer):
        if isinstance(answer, (tuple, list)):
            raise AnswerError("this drill wants a single number")
        value = parse_number(answer)
        if close(value, target, rel):
            return True, praise
        for wrong, text in hints:
            if close(value, wrong, rel):
                return False, text
        return False, fallback
    return grade


def choice(correct: str, hints: dict[str, str], praise: str) -> Callable:
    """One letter; each distractor has its own hint."""
    letters = sorted([*hints, correct])

    def grade(answer):
        if not isinstance(answer, str):
            raise AnswerError(f"answer with one letter from {letters}, as a string, e.g. 'a'")
        letter = answer.strip().lower().strip("()").rstrip(".")
        if letter == correct:
            return True, praise
        if letter not in hints:
            raise AnswerError(f"{answer!r} is not an option; pick one of {letters}")
        return False, hints[letter]
    return grade


def _describe_call_error(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"Your function raised {type(err).__name__}{where}: {err}"


def code(reference_impl: Callable, make_inputs: Callable, *, trials: int = 4, atol: float = 1e-5,
         rtol: float = 1e-4, hints: Sequence[tuple[Callable, str]] = (), praise: str,
         signature: str) -> Callable:
    """Run the student's function on ``trials`` random input sets and compare with ``reference_impl``.

    ``make_inputs(generator)`` returns a tuple of arguments (tensors are cloned before each call,
    so a function that edits its inputs in place cannot change the reference's). A hint is
    ``(buggy_impl, text)``: when the student's output matches a known bug, its text is the hint.
    """
    import torch

    def run(fn, args):
        return fn(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])

    def same(got, want) -> bool:
        if not isinstance(got, torch.Tensor):
            got = torch.as_tensor(got, dtype=want.dtype)
        return got.shape == want.shape and torch.allclose(got.to(want.dtype), want, atol=atol, rtol=rtol)

    def grade(answer):
        if not callable(answer):
            raise AnswerError(f"this drill wants a function {signature}; pass the function itself, "
                              "without calling it")
        for trial in range(trials):
            args = make_inputs(torch.Generator().manual_seed(1000 + trial))
            want = run(reference_impl, args)
            try:
                got = run(answer, args)
            except NotImplementedError:
                raise
            except Exception as err:  # the student's bug, reported, never a traceback
                return False, _describe_call_error(err)
            if got is None:
                return False, "Your function returned None; did you forget `return`?"
            if isinstance(got, torch.Tensor) and got.shape != want.shape:
                return False, (f"Your output has shape {tuple(got.shape)}; it should be "
                               f"{tuple(want.shape)} for these inputs.")
            try:
                ok = same(got, want)
            except (TypeError, ValueError, RuntimeError) as err:
                return False, f"Could not compare your output with the reference: {err}"
            if not ok:
                for buggy, text in hints:
                    try:
                        if same(got, run(buggy, args)):
                            return False, text
                    except (TypeError, ValueError, RuntimeError):
                        continue
                err = (torch.as_tensor(got, dtype=want.dtype) - want).abs().max().item()
                return False, (f"On random inputs (trial {trial + 1}) your output differs from the "
                               f"reference by up to {err:.3g}. Check the formula term by term.")
        return True, praise
    return grade


# -- the public API ---------------------------------------------------------------------------

def all_drills() -> list[str]:
    """Every drill id, in course order (by lesson, then as each lesson lists them)."""
    order = {d: i for i, d in enumerate(DRILLS)}
    return sorted(DRILLS, key=lambda d: (DRILLS[d].lesson[:2], order[d]))


def _drill(drill_id) -> Drill:
    key = drill_id.strip().lower() if isinstance(drill_id, str) else None
    if key not in DRILLS:
        raise KeyError(f"no drill {drill_id!r}; the drills are {', '.join(all_drills())}")
    return DRILLS[key]


def reference(drill_id: str):
    """The reference answer (for tests and the solution cells)."""
    return _drill(drill_id).reference


def describe(drill_id: str) -> str:
    """Title, difficulty marks, what to answer and, for choice drills, the options."""
    d = _drill(drill_id)
    lines = [f"{d.id.upper()} {d.marks} {d.title}"]
    if d.prompt:
        lines.append(f"  {d.prompt}")
    lines += [f"  ({k}) {v}" for k, v in d.options.items()]
    return "\n".join(lines)


def strict() -> bool:
    return os.environ.get("FTLAB_DRILLS", "").strip().lower() == "strict"


def grade(drill_id: str, answer) -> Result:
    """Like :func:`check`, but silent and never raising: for tests and dashboards."""
    try:
        drill = _drill(drill_id)
    except KeyError as err:
        return Result(str(drill_id), FAIL, err.args[0])
    if callable(answer) and drill.kind != "code":
        return Result(drill.id, FAIL, "This drill wants a value, not a function: call your function "
                                      "and pass what it returns.")
    if is_blank(answer):
        return Result(drill.id, BLANK, "Write your answer in place of the ... and run the cell again.")
    try:
        ok, text = drill.grade(answer)
    except NotImplementedError:
        return Result(drill.id, BLANK, "Your function still raises NotImplementedError: write its body.")
    except (AnswerError, TypeError, ValueError) as err:
        return Result(drill.id, FAIL, f"Could not read the answer: {err}")
    return Result(drill.id, PASS if ok else FAIL, text if ok else f"Hint: {text}")


def check(drill_id: str, answer) -> Result:
    """Grade ``answer`` for ``drill_id``; print and return the :class:`Result`.

    With ``FTLAB_DRILLS=strict`` anything but a pass raises :class:`DrillNotPassed`.
    """
    result = grade(drill_id, answer)
    print(result)
    if strict() and not result.passed:
        raise DrillNotPassed(str(result))
    return result


def scoreboard(namespace: dict, lesson: str | None = None) -> list[Result]:
    """Grade every ``answer_<id>`` in ``namespace`` (pass ``globals()``) and print one line each.

    With ``lesson`` (e.g. ``"08_drills"``), list every drill of that lesson, answered or not.
    Never raises, strict mode or not: it is a summary, the check cells do the grading.
    """
    ids = [d for d in all_drills() if (DRILLS[d].lesson == lesson if lesson else f"answer_{d}" in namespace)]
    results = [grade(d, namespace.get(f"answer_{d}")) for d in ids]
    marks = {PASS: "✅", FAIL: "❌", BLANK: "⬜"}
    for d, r in zip(ids, results):
        print(f"{marks[r.status]} {d:4} {DRILLS[d].marks}  {DRILLS[d].title:50.50}  {r.status}")
    done = sum(r.passed for r in results)
    print(f"{done} of {len(results)} passed")
    return results
