"""Every drill: the reference passes, a blank is not attempted, each known-wrong answer fails with a hint."""

from __future__ import annotations

import ast
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ftlab import drills
from ftlab.drills import _core, lesson08

ALL = drills.all_drills()


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch):
    monkeypatch.delenv("FTLAB_DRILLS", raising=False)


def test_the_course_has_the_seed_drills_and_ids_are_unique_lower_case():
    assert {"d1", "d2", "d3", "d4", "d5"} <= set(ALL)
    assert len(ALL) == len(set(ALL)) and all(i == i.lower() for i in ALL)


@pytest.mark.parametrize("drill_id", ALL)
def test_reference_passes(drill_id):
    result = drills.check(drill_id, drills.reference(drill_id))
    assert result.status == "pass", result.message


@pytest.mark.parametrize("drill_id", ALL)
@pytest.mark.parametrize("blank", [None, ..., "", (None, ...)])
def test_blank_is_not_attempted(drill_id, blank):
    assert drills.check(drill_id, blank).status == "not attempted"


@pytest.mark.parametrize("drill_id", [d for d in ALL if drills.DRILLS[d].kind == "code"])
def test_an_unimplemented_function_is_not_attempted(drill_id):
    def student(*args):
        raise NotImplementedError

    assert drills.check(drill_id, student).status == "not attempted"


@pytest.mark.parametrize("drill_id", ALL)
def test_every_known_wrong_answer_fails_with_a_hint(drill_id):
    drill = drills.DRILLS[drill_id]
    assert drill.wrong, "each drill lists at least one known-wrong answer"
    for wrong in drill.wrong:
        result = drills.check(drill_id, wrong)
        assert result.status == "fail", (wrong, result)
        assert result.message.startswith("Hint:") and len(result.message) > 20
        assert "Could not read" not in result.message, "a known-wrong answer should get a real hint"


def test_numeric_answers_accept_percent_strings_and_commas():
    assert drills.check("d1", ("131,072", "0.78%")).passed
    assert drills.check("d1", (131072, 0.0078)).passed
    assert not drills.check("d1", (131072, 0.78)).passed  # a percent written as a fraction
    assert drills.check("d2", ("112 GB", 3.5)).passed      # fp32 master weights are fair too
    assert "100x" in drills.check("d1", (131072, 0.000078)).message
    assert drills.check("08d", "4.5 bits").passed
    assert drills.check("08c", torch.tensor(32768)).passed  # a 0-d tensor is a number


def test_bad_input_gets_a_clear_message_not_a_traceback(capsys):
    r = drills.check("d99", 1)
    assert r.status == "fail" and "d1" in r.message and "08a" in r.message
    r = drills.check(42, 1)
    assert r.status == "fail" and "no drill" in r.message
    r = drills.check("d1", 131072)
    assert r.status == "fail" and "pair" in r.message
    r = drills.check("d4", "z")
    assert r.status == "fail" and "not an option" in r.message
    r = drills.check("d4", 3)
    assert r.status == "fail" and "letter" in r.message
    r = drills.check("08c", "lots")
    assert r.status == "fail" and "not a number" in r.message
    r = drills.check("08c", lambda: 32768)
    assert r.status == "fail" and "not a function" in r.message
    r = drills.check("08a", 3.0)
    assert r.status == "fail" and "lora_forward(x, W, A, B, scale)" in r.message
    assert " D1" not in capsys.readouterr().err


def test_code_drills_report_the_students_bug_plainly():
    r = drills.check("08a", lambda x, W, A, B, s: None)
    assert r.status == "fail" and "return" in r.message
    r = drills.check("08a", lambda x, W, A, B, s: (x @ W.T)[..., :3])
    assert r.status == "fail" and "shape" in r.message
    r = drills.check("08a", lambda x, W, A, B, s: 1 / 0)
    assert r.status == "fail" and "ZeroDivisionError" in r.message
    r = drills.check("08b", lambda pc, pr, rc, rr, b: torch.zeros(()))
    assert r.status == "fail" and "differs from the reference" in r.message


def test_code_drill_does_not_let_the_student_edit_the_reference_inputs():
    def sneaky(x, W, A, B, s):  # edits its inputs in place, then answers right
        out = lesson08.lora_forward_solution(x, W, A, B, s)
        W.zero_()
        return out

    assert drills.check("08a", sneaky).passed


def test_lora_solution_equals_peft_and_dpo_solution_equals_formula():
    gen = torch.Generator().manual_seed(0)
    args = lesson08._lora_inputs(gen)
    torch.testing.assert_close(lesson08.lora_forward_solution(*args), lesson08._peft_lora_forward(*args))
    args = lesson08._dpo_inputs(gen)
    torch.testing.assert_close(lesson08.dpo_loss_solution(*args), lesson08._dpo_formula(*args))


def test_strict_mode_raises_on_anything_but_a_pass(monkeypatch):
    monkeypatch.setenv("FTLAB_DRILLS", "strict")
    with pytest.raises(drills.DrillNotPassed):
        drills.check("d1", ...)
    with pytest.raises(drills.DrillNotPassed):
        drills.check("d1", drills.DRILLS["d1"].wrong[0])
    with pytest.raises(drills.DrillNotPassed):
        drills.check("nope", 1)
    assert drills.check("d1", drills.reference("d1")).passed


def test_each_drill_has_difficulty_marks_a_prompt_and_choice_drills_list_options():
    for drill_id in ALL:
        d = drills.DRILLS[drill_id]
        assert d.difficulty in (1, 2, 3) and d.marks.count("★") == d.difficulty
        assert d.prompt, f"{drill_id} says what to answer"
        if d.kind == "choice":
            assert d.reference in d.options and len(d.options) >= 3
        assert drill_id.upper() in drills.describe(drill_id)


def test_a_drill_must_come_with_a_wrong_answer_and_valid_marks():
    with pytest.raises(ValueError, match="known-wrong"):
        drills.Drill("zz", "t", "99_x", 1, "numeric", 1, lambda a: (True, ""))
    with pytest.raises(ValueError, match="difficulty"):
        drills.Drill("zz", "t", "99_x", 4, "numeric", 1, lambda a: (True, ""), wrong=(2,))
    with pytest.raises(ValueError, match="twice"):
        drills.register(drills.Drill("d1", "t", "99_x", 1, "numeric", 1, lambda a: (True, ""), wrong=(2,)))


# -- a code drill cannot hang, and the student's function cannot stop the check -------------------

def _bounded_spin(seconds=20.0):
    """A student's function that loops for ``seconds`` (the old grader waited it out; never forever,
    so this test fails rather than hangs on a grader without a limit)."""
    def student(*args):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return torch.zeros(())
    return student


def _bounded_sleep(*args):
    time.sleep(20)
    return torch.zeros(())


def _swallows_the_first_stop(*args):  # a bare except around the loop, then another loop
    try:
        _bounded_spin()()
    except:  # noqa: E722
        pass
    return _bounded_sleep()


def _returns_none_when_stopped(*args):  # gets the time message, not "did you forget return?"
    try:
        time.sleep(20)
    except:  # noqa: E722
        return None
    return torch.zeros(())


def _grade_or_fail(drill_id, fn):
    """Grade, turning anything that escapes (SystemExit, KeyboardInterrupt) into a test failure
    instead of a stopped test run."""
    try:
        return drills.check(drill_id, fn)
    except BaseException as err:  # noqa: BLE001
        pytest.fail(f"{type(err).__name__} escaped check(): {err!r}")


def test_a_code_drill_stops_a_function_that_never_returns_within_a_few_seconds():
    drills.check("08b", drills.reference("08b"))  # the reference's imports are not the student's time
    started = time.monotonic()
    result = drills.check("08b", _bounded_spin())
    elapsed = time.monotonic() - started
    assert result.status == "fail" and "ran out of time" in result.message, result.message
    assert "limit of 5 s per call" in result.message and _core.TIME_LIMIT_S == 5
    assert 5 <= elapsed < 7, f"stopped after {elapsed:.1f} s"


@pytest.mark.parametrize("student", [_bounded_sleep, _swallows_the_first_stop, _returns_none_when_stopped],
                         ids=["sleep", "bare-except-then-sleep", "bare-except-return-none"])
def test_a_code_drill_stops_sleeps_and_functions_that_catch_the_stop(monkeypatch, student):
    monkeypatch.setattr(_core, "TIME_LIMIT_S", 1.0)
    drills.check("08b", drills.reference("08b"))
    started = time.monotonic()
    result = _grade_or_fail("08b", student)
    elapsed = time.monotonic() - started
    assert result.status == "fail" and "ran out of time" in result.message, result.message
    assert "limit of 1 s" in result.message and 1 <= elapsed < 2.5, f"stopped after {elapsed:.1f} s"


_UNIX_SIGNALS = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="SIGALRM and SIGINT as on Unix")


@_UNIX_SIGNALS
def test_the_time_limit_leaves_signals_and_timers_as_it_found_them(monkeypatch):
    monkeypatch.setattr(_core, "TIME_LIMIT_S", 0.3)
    fired = []
    outer = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    signal.setitimer(signal.ITIMER_REAL, 60.0)  # someone else's timer (pytest-timeout, say)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        for attempt in range(2):  # re-running the cell works the same
            assert "ran out of time" in drills.check("08b", _bounded_spin()).message
            assert drills.check("08b", lambda *a: 1 / 0).status == "fail"  # an error, then a pass
            assert drills.check("08b", drills.reference("08b")).passed
            delay, interval = signal.getitimer(signal.ITIMER_REAL)
            assert 50 < delay <= 60 and interval == 0, "the outer timer got its remaining time back"
            assert signal.getsignal(signal.SIGINT) is sigint
        time.sleep(0.4)  # our limit's interval (0.25 s) would have fired by now, were it left on
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer)


def test_without_the_signal_timer_the_check_stops_waiting_and_ends_the_loop(monkeypatch):
    """In a thread (or on Windows) there is no SIGALRM: the check returns at the limit anyway, and
    the student's Python loop is ended in its thread, not left spinning."""
    monkeypatch.setattr(_core, "TIME_LIMIT_S", 0.5)
    ticks = []

    def spin(*args):
        end = time.monotonic() + 20
        while time.monotonic() < end:
            ticks.append(1)
        return torch.zeros(())

    box = {}
    worker = threading.Thread(target=lambda: box.update(result=drills.grade("08b", spin),
                                                        alarm=_core._alarm_available()))
    started = time.monotonic()
    worker.start()
    worker.join(30)
    assert box["alarm"] is False
    assert time.monotonic() - started < 3 and "ran out of time" in box["result"].message, box["result"]
    time.sleep(0.3)
    n = len(ticks)
    time.sleep(0.3)
    assert len(ticks) == n, "the student's loop still runs after the check returned"


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize("exit_call, name", [(lambda: sys.exit(0), "SystemExit"), (lambda: exit(1), "SystemExit"),
                                             (_raise_keyboard_interrupt, "KeyboardInterrupt")],
                         ids=["sys.exit", "exit", "KeyboardInterrupt"])
@pytest.mark.parametrize("use_alarm", [True, False], ids=["alarm", "thread"])
def test_system_exit_and_keyboard_interrupt_from_the_students_function_fail_the_drill(
        monkeypatch, exit_call, name, use_alarm):
    monkeypatch.setattr(_core, "_alarm_available", lambda: use_alarm)
    result = _grade_or_fail("08b", lambda *a: exit_call())
    assert result.status == "fail" and name in result.message and "return" in result.message, result
    monkeypatch.setenv("FTLAB_DRILLS", "strict")
    with pytest.raises(drills.DrillNotPassed, match=name):
        drills.check("08b", lambda *a: exit_call())


@_UNIX_SIGNALS
def test_a_real_ctrl_c_still_stops_a_check_the_students_keyboard_interrupt_does_not():
    """The kernel's interrupt is SIGINT: it must stop the check, not become the student's failure."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a Jupyter kernel's handler
    try:
        _ctrl_c_stops_the_check()
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_stops_the_check():
    sigint = signal.getsignal(signal.SIGINT)
    assert _grade_or_fail("08b", lambda *a: _raise_keyboard_interrupt()).status == "fail"

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)  # as the stop button does, while the function runs
        # Busy, not time.sleep: the kernel may hand a process-wide signal to any of the process's
        # threads (other tests leave some), and a main thread asleep in a system call would then
        # only see it when the sleep ends. Running bytecode, it sees it at once.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass
        return torch.zeros(())

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        drills.check("08b", interrupted)
    assert time.monotonic() - started < 2
    assert signal.getsignal(signal.SIGINT) is sigint


# -- FTLAB_DRILLS, answers in other number formats, one home for IGNORE_INDEX ----------------------

@pytest.mark.parametrize("value, is_strict", [("strict", True), (" STRICT ", True), ("", False)])
def test_ftlab_drills_reads_its_known_values(monkeypatch, value, is_strict):
    monkeypatch.setenv("FTLAB_DRILLS", value)
    assert drills.strict() is is_strict


@pytest.mark.parametrize("typo", ["stric", "strict!", "1", "off"])
def test_a_mistyped_ftlab_drills_is_an_error_naming_the_allowed_values(monkeypatch, typo):
    monkeypatch.setenv("FTLAB_DRILLS", typo)
    with pytest.raises(ValueError) as err:
        drills.check("d1", drills.reference("d1"))
    assert repr(typo) in str(err.value) and "FTLAB_DRILLS=strict" in str(err.value) and "unset" in str(err.value)


@pytest.mark.parametrize("text, value", [
    ("0,78%", 0.0078), ("0,78 %", 0.0078), ("3,5", 3.5), ("-0,5", -0.5), ("0,780", 0.78),  # decimal comma
    ("131,072", 131072), ("1,234.5", 1234.5), ("1,31,072", 131072),                        # English, Indian
    ("1.234,5", 1234.5), ("1 234", 1234), ("1 234,5", 1234.5), ("1\u202f234 GB", 1234),   # German, SI
])
def test_parse_number_reads_locale_forms(text, value):
    assert drills.parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["1,2,3", "1.234.567", "12 34", "1,", "0,78,5%"])
def test_parse_number_refuses_ambiguous_forms_with_the_forms_it_reads(text):
    with pytest.raises(drills.AnswerError) as err:
        drills.parse_number(text)
    assert repr(text) in str(err.value) and "'0,78%'" in str(err.value) and "'131,072'" in str(err.value)


def test_a_decimal_comma_percent_is_graded_as_what_it_says():
    assert drills.check("d1", ("131,072", "0,78%")).passed
    assert drills.check("d1", ("131 072", "0,78 %")).passed
    wrong = drills.check("d1", ("131,072", "0,0078%"))  # 100x too small: the hint says so
    assert not wrong.passed and "100x" in wrong.message


def test_drills_take_ignore_index_from_ftlab_train():
    from ftlab import train
    from ftlab.drills import lesson05

    assert lesson05.IGNORE_INDEX is train.IGNORE_INDEX
    for path in Path(lesson05.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        assigned = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                    and any(isinstance(t, ast.Name) and t.id == "IGNORE_INDEX"
                            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
        assert not assigned, f"{path.name} defines IGNORE_INDEX; import it from ftlab.train"
