"""The machinery behind every drill: results, the registry, answer parsing and the graders.

Lesson modules (``ftlab/drills/lessonNN.py``) describe their drills with :class:`Drill` and
:func:`register` them; ``ftlab.drills`` imports every such module, so ``all_drills()`` is the
whole course. Three kinds of grader are here:

- :func:`numeric`: a number within a relative tolerance, read from ``131072``, ``"131,072"``,
  ``"0.78%"``, ``"0,78%"`` or ``"84 GB"``, with hints for the typical wrong numbers;
- :func:`choice`: one letter, with a hint for each distractor;
- :func:`code`: the student's function, run on random inputs and compared with a reference
  (usually the library that does the job in practice: peft, bitsandbytes, trl), with hints
  for the typical bugs, under a time limit per call (:data:`TIME_LIMIT_S`).
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
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

# The written forms of a number that are read, after the sign, the unit and the % are taken off.
# A comma followed by exactly three digits is a thousands separator, as in the course's own
# "131,072" (English style; "1,234" is 1234, never 1.234). Any other single comma is a decimal
# comma ("0,78" is 0.78, "3,5" is 3.5), and so is a comma after dot-grouped thousands ("1.234,5").
# Anything else with a comma or a space inside ("1,2,3", "1.234.567", "12 34") is refused with the
# forms that are read: a guess there could grade a right answer wrong, or a wrong one right.
_GROUPED = (  # (form, its thousands separator)
    (re.compile(r"[1-9]\d{0,2}(,\d{3})+(\.\d*)?"), ","),    # 131,072  1,234.5
    (re.compile(r"[1-9]\d?(,\d{2})+,\d{3}(\.\d*)?"), ","),  # 1,31,072 (Indian grouping)
    (re.compile(r"\d{1,3}( \d{3})+([.,]\d*)?"), " "),         # 1 234  1 234,5  1 234.5 (SI)
    (re.compile(r"[1-9]\d{0,2}(\.\d{3})+,\d*"), "."),        # 1.234,5 (German, French)
    (re.compile(r"\d*,\d+"), None),                            # 0,78  3,5 (decimal comma)
)
_FORMS = "131072, 1.5, '131,072', '1 234', '0.78%', '0,78%' or '84 GB'"


def _plain_number(text: str) -> str | None:
    """``text`` without grouping and with a decimal point, or None when it is not a form we read."""
    if "," not in text and " " not in text:
        return text
    for form, thousands in _GROUPED:
        if form.fullmatch(text):
            if thousands:
                text = text.replace(thousands, "")
            return text.replace(",", ".")  # what is left of a comma is a decimal comma
    return None


def parse_number(value) -> float:
    """A number from ``131072``, ``"131,072"``, ``"0.78%"`` (-> 0.0078), ``"0,78%"`` (a decimal
    comma, -> 0.0078), ``"1 234"`` or ``"84 GB"`` (-> 84). Ambiguous or unknown forms raise
    :class:`AnswerError` with the forms that are read (see ``_GROUPED``)."""
    if isinstance(value, bool):
        raise AnswerError("a True/False is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor or numpy scalar
        return float(value.item())
    if isinstance(value, str):
        text = " ".join(value.replace("\u00a0", " ").replace("\u202f", " ").split())  # no-break spaces
        for unit in _UNITS:
            if text.lower().endswith(unit):
                text = text[: -len(unit)].strip()
                break
        scale = 1.0
        if text.endswith("%"):
            text, scale = text[:-1].strip(), 0.01
        sign = ""
        if text[:1] in ("+", "-"):
            sign, text = text[0], text[1:].strip()
        plain = _plain_number(text)
        try:
            if plain is None:
                raise ValueError(text)
            return float(sign + plain) * scale
        except ValueError:
            raise AnswerError(f"{value!r} is not a number we can read; write e.g. {_FORMS}") from None
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


# -- running the student's function under a time limit -------------------------------------------
#
# How the limit is kept, and why this way. A thread cannot be killed, so running the function in
# one and waiting would leave a never-ending function spinning; a subprocess cannot see the
# notebook's globals and closures (and may not be able to pickle them). Where the signal timer
# exists, in the main thread of a Unix process (Jupyter and Colab kernels run every cell there;
# pytest runs every test there), SIGALRM's handler raises _OutOfTime inside the student's
# function: it stops a `while True` and a `time.sleep` alike, and nothing else is disturbed.
# Elsewhere (Windows; a thread) the function runs in a daemon thread and the check stops waiting
# at the limit, then asks CPython to raise _OutOfTime in that thread, which ends a Python loop at
# its next step (a blocking C call such as sleep finishes first, then ends). Either way the check
# returns on time, and the timer and the handlers are put back as they were on every exit.
#
# Ctrl-C. A student's function that raises KeyboardInterrupt or SystemExit gets a failed result,
# but the kernel's interrupt (Ctrl-C, the stop button) must still stop a long check. While the
# function runs, SIGINT's handler is wrapped to note that the interrupt is real before raising
# it as before: a KeyboardInterrupt with that note is re-raised, one without it came from the
# student's code. In the thread fallback the two are apart already: the real interrupt reaches
# the main thread (which is waiting), the student's stays in the function's thread.

TIME_LIMIT_S = 5.0  # seconds per call; on the drills' tiny inputs a right answer takes milliseconds


class _OutOfTime(BaseException):
    """Raised inside the student's function at the limit. Not an Exception, so the function's own
    ``except Exception:`` does not swallow it."""


@dataclass
class _Call:
    """What one call of the student's function did."""
    value: object = None
    error: BaseException | None = None  # what it raised (SystemExit and KeyboardInterrupt included)
    timed_out: bool = False


def _alarm_available() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _call_with_alarm(fn, args, seconds: float) -> _Call:
    call, state = _Call(), {"active": True, "interrupted": False}

    def on_alarm(signum, frame):
        if state["active"]:
            call.timed_out = True
            raise _OutOfTime

    previous_int = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):  # the kernel's interrupt: note it, then do what was done before
        state["interrupted"] = True
        previous_int(signum, frame)

    previous_alarm = signal.signal(signal.SIGALRM, on_alarm)
    if callable(previous_int):  # SIG_IGN / SIG_DFL: a Ctrl-C raises nothing, so any KeyboardInterrupt is the student's
        signal.signal(signal.SIGINT, on_interrupt)
    started = time.monotonic()
    # The 0.25 s interval raises again should the function catch the first one with a bare except.
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    try:
        try:
            call.value = fn(*args)
        finally:
            state["active"] = False  # from here on the alarm raises nothing, in the handlers below too
    except _OutOfTime:
        pass
    except KeyboardInterrupt as err:
        if state["interrupted"]:
            raise
        call.error = err
    except BaseException as err:  # the student's error, SystemExit included: reported, never raised
        call.error = err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous_alarm is None else previous_alarm)
        if signal.getsignal(signal.SIGINT) is on_interrupt:
            signal.signal(signal.SIGINT, previous_int)
        if outer_delay:  # someone else's timer (pytest-timeout, say) was running: give it its time back
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_interval)
    return call


def _stop_thread(thread: threading.Thread) -> None:
    """Ask CPython to raise _OutOfTime in ``thread`` (where there is no such API, it runs on, a daemon)."""
    try:
        import ctypes

        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except (ImportError, AttributeError):
        return
    if thread.ident is not None and set_async_exc(ctypes.c_ulong(thread.ident), ctypes.py_object(_OutOfTime)) > 1:
        set_async_exc(ctypes.c_ulong(thread.ident), None)  # more than one thread touched: undo


def _call_in_thread(fn, args, seconds: float) -> _Call:
    call = _Call()

    def target():
        try:
            call.value = fn(*args)
        except _OutOfTime:
            pass
        except BaseException as err:  # KeyboardInterrupt here can only be the student's own
            call.error = err

    thread = threading.Thread(target=target, name="ftlab-drill", daemon=True)
    thread.start()
    try:
        thread.join(seconds)
    except KeyboardInterrupt:  # the real Ctrl-C reaches the waiting main thread
        _stop_thread(thread)
        raise
    if thread.is_alive():
        call.timed_out = True
        _stop_thread(thread)
    return call


def _call_student(fn, args, seconds: float) -> _Call:
    """Call ``fn(*args)`` for at most ``seconds``; what it returned, raised, or that it ran out of time."""
    run = _call_with_alarm if _alarm_available() else _call_in_thread
    return run(fn, args, seconds)


def _describe_call_error(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (line {frames[-1].lineno})" if frames else ""
    if isinstance(err, SystemExit):
        return (f"Your function raised SystemExit{where}: sys.exit() or exit() stops the program. "
                "A drill's function returns its answer instead.")
    if isinstance(err, KeyboardInterrupt):
        return (f"Your function raised KeyboardInterrupt{where}. A drill's function returns its "
                "answer; it does not raise.")
    return f"Your function raised {type(err).__name__}{where}: {err}"


def code(reference_impl: Callable, make_inputs: Callable, *, trials: int = 4, atol: float = 1e-5,
         rtol: float = 1e-4, hints: Sequence[tuple[Callable, str]] = (), praise: str,
         signature: str, time_limit: float | None = None) -> Callable:
    """Run the student's function on ``trials`` random input sets and compare with ``reference_impl``.

    ``make_inputs(generator)`` returns a tuple of arguments (tensors are cloned before each call,
    so a function that edits its inputs in place cannot change the reference's). A hint is
    ``(buggy_impl, text)``: when the student's output matches a known bug, its text is the hint.
    Each call of the student's function gets ``time_limit`` seconds (default :data:`TIME_LIMIT_S`);
    one that runs longer fails with a message that it ran out of time.
    """
    import torch

    def cloned(args):
        return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]

    def run(fn, args):
        return fn(*cloned(args))

    def same(got, want) -> bool:
        if not isinstance(got, torch.Tensor):
            got = torch.as_tensor(got, dtype=want.dtype)
        return got.shape == want.shape and torch.allclose(got.to(want.dtype), want, atol=atol, rtol=rtol)

    def grade(answer):
        if not callable(answer):
            raise AnswerError(f"this drill wants a function {signature}; pass the function itself, "
                              "without calling it")
        limit = TIME_LIMIT_S if time_limit is None else time_limit
        for trial in range(trials):
            args = make_inputs(torch.Generator().manual_seed(1000 + trial))
            want = run(reference_impl, args)
            call = _call_student(answer, cloned(args), limit)
            if call.timed_out:
                return False, (f"Your function ran out of time: stopped after the limit of {limit:g} s "
                               f"per call (trial {trial + 1}). A right answer takes milliseconds here; "
                               "look for a loop that never ends or a sleep.")
            if isinstance(call.error, NotImplementedError):
                raise call.error
            if call.error is not None:  # the student's bug, reported, never a traceback
                return False, _describe_call_error(call.error)
            got = call.value
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


_MODES = {"": False, "strict": True}  # FTLAB_DRILLS: unset (report and carry on) or "strict"


def strict() -> bool:
    """Whether ``FTLAB_DRILLS=strict``. Any other value set is an error, so a typo (``stric``)
    never quietly grades in the lenient mode."""
    raw = os.environ.get("FTLAB_DRILLS", "")
    mode = raw.strip().lower()
    if mode not in _MODES:
        raise ValueError(f"FTLAB_DRILLS={raw!r} is not a drills mode. Set FTLAB_DRILLS=strict (anything "
                         "but a pass raises DrillNotPassed) or leave it unset (report and carry on).")
    return _MODES[mode]


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
    strict_mode = strict()  # first, so a mistyped FTLAB_DRILLS stops the first check
    result = grade(drill_id, answer)
    print(result)
    if strict_mode and not result.passed:
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
