"""The course's drill rules, from scripts/drill_census.py: enough code drills, and early checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("drill_census", ROOT / "scripts" / "drill_census.py")
drill_census = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(drill_census)

MIN_CODE_DRILLS = 14  # one per hand-written piece the lessons teach, at least
WRITE_IT_YOURSELF = ("01", "02", "03", "04", "05", "06")  # lessons that write a piece by hand
EARLY = 2 / 3  # a checked drill within this share of the lesson


@pytest.fixture(scope="module")
def rows():
    return {r["lesson"][:2]: r for r in drill_census.census()}


def test_first_check_finds_the_first_check_call_and_not_a_mention(tmp_path):
    twin = tmp_path / "99_x.py"
    twin.write_text('# check("99a", answer) in a comment\nx = 1\ncheck("99a", answer_99a)\ncheck("99b", b)\n')
    assert drill_census.first_check(twin) == (3, 4)
    twin.write_text("x = 1\n")
    assert drill_census.first_check(twin) == (0, 1)


def test_the_course_has_enough_code_drills(rows):
    n_code = sum(r["code"] for r in rows.values())
    assert n_code >= MIN_CODE_DRILLS, f"{n_code} code drills; the course promises at least {MIN_CODE_DRILLS}"


@pytest.mark.parametrize("lesson", WRITE_IT_YOURSELF)
def test_each_write_it_yourself_lesson_checks_a_drill_early(rows, lesson):
    row = rows[lesson]
    assert row["code"] >= 1, f"lesson {row['lesson']} writes a piece by hand but has no code drill"
    assert row["first_check_line"], f"lesson {row['lesson']} has no check(...) cell"
    assert row["first_check_share"] <= EARLY, (
        f"lesson {row['lesson']}'s first checked drill is at line {row['first_check_line']} of {row['lines']} "
        f"({row['first_check_share']:.0%}); put one within the first {EARLY:.0%}, where its idea is taught")


def test_the_census_counts_every_registered_drill(rows):
    from ftlab.drills._core import DRILLS

    assert sum(r["drills"] for r in rows.values()) == len(DRILLS)
    assert drill_census.markdown(list(rows.values())).count("\n") == len(rows) + 2  # header, rule, total
