"""Every drill: the reference passes, a blank is not attempted, a known-wrong answer fails with a hint."""

from __future__ import annotations

import pytest

from ftlab import drills

WRONG = {
    "d1": (16 * 4096, 0.004),       # only one of the two factors
    "d2": (14, 3.5),                # weights only
    "d3": "a",
    "d4": "d",
    "d5": "b",
}


def test_every_drill_has_a_known_wrong_answer_here():
    assert sorted(WRONG) == sorted(drills.all_drills())


@pytest.mark.parametrize("drill_id", drills.all_drills())
def test_reference_passes(drill_id, monkeypatch):
    monkeypatch.delenv("FTLAB_DRILLS", raising=False)
    result = drills.check(drill_id, drills.reference(drill_id))
    assert result.status == "pass", result.message


@pytest.mark.parametrize("drill_id", drills.all_drills())
@pytest.mark.parametrize("blank", [None, ..., "", (None, ...)])
def test_blank_is_not_attempted(drill_id, blank, monkeypatch):
    monkeypatch.delenv("FTLAB_DRILLS", raising=False)
    assert drills.check(drill_id, blank).status == "not attempted"


@pytest.mark.parametrize("drill_id", drills.all_drills())
def test_known_wrong_answer_fails_with_a_hint(drill_id, monkeypatch):
    monkeypatch.delenv("FTLAB_DRILLS", raising=False)
    result = drills.check(drill_id, WRONG[drill_id])
    assert result.status == "fail"
    assert result.message.startswith("Hint:") and len(result.message) > 20


def test_numeric_answers_accept_percent_strings_and_commas():
    assert drills.check("d1", ("131,072", "0.78%")).passed
    assert drills.check("d1", (131072, 0.0078)).passed
    assert not drills.check("d1", (131072, 0.78)).passed  # a percent written as a fraction
    assert drills.check("d2", ("112 GB", 3.5)).passed      # fp32 master weights are fair too
    assert "100x" in drills.check("d1", (131072, 0.000078)).message


def test_bad_input_gets_a_clear_message_not_a_traceback(capsys):
    r = drills.check("d99", 1)
    assert r.status == "fail" and "d1" in r.message
    r = drills.check("d1", 131072)
    assert r.status == "fail" and "pair" in r.message
    r = drills.check("d3", "z")
    assert r.status == "fail" and "not an option" in r.message
    r = drills.check("d3", 3)
    assert r.status == "fail" and "letter" in r.message
    assert "d3" in capsys.readouterr().out


def test_strict_mode_raises_on_anything_but_a_pass(monkeypatch):
    monkeypatch.setenv("FTLAB_DRILLS", "strict")
    with pytest.raises(drills.DrillNotPassed):
        drills.check("d1", ...)
    with pytest.raises(drills.DrillNotPassed):
        drills.check("d1", WRONG["d1"])
    assert drills.check("d1", drills.reference("d1")).passed


def test_each_drill_has_difficulty_marks_and_choice_drills_list_options():
    for drill_id in drills.all_drills():
        d = drills.DRILLS[drill_id]
        assert d.difficulty in (1, 2, 3)
        if d.kind == "choice":
            assert d.reference in d.options and len(d.options) >= 3
        assert drill_id.upper() in drills.describe(drill_id)
