"""Every drill: the reference passes, a blank is not attempted, each known-wrong answer fails with a hint."""

from __future__ import annotations

import pytest
import torch

from ftlab import drills
from ftlab.drills import lesson08

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
    r = drills.check("d3", "z")
    assert r.status == "fail" and "not an option" in r.message
    r = drills.check("d3", 3)
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
