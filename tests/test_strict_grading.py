"""Strict grading: ``FTLAB_DRILLS=strict pytest --nbmake`` fails a notebook with a drill left blank
and passes it once the answer is filled in.

The notebooks here are lesson 08's set-up and one of its drills (answer, check and solution cells
as the lesson has them), not the whole lesson: every lesson already runs once more in
tests/test_lessons_rerun.py with every answer filled in under strict grading."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_lessons_rerun import fill_answers

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "08_drills.ipynb"


def run_strict(nb, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / LESSON.name
    nbformat.write(nb, path)
    env = {**os.environ, "FTLAB_DRILLS": "strict", "FTLAB_PROFILE": "tiny", "MPLBACKEND": "Agg",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                           str(path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.fixture(scope="module")
def lesson():
    return nbformat.read(LESSON, as_version=4)


def one_drill(lesson, drill_id: str):
    """Lesson 08's first code cell (its set-up), the import of ``check``, and the answer, check and
    solution cells of one drill."""
    from test_notebooks_format import CHECK_RE

    code = [c for c in lesson.cells if c.cell_type == "code"]
    (at,) = [i for i, c in enumerate(code) if "answer" in c.metadata.get("tags", [])
             and CHECK_RE.findall(code[i + 1].source) == [drill_id]]
    cells = copy.deepcopy([code[0], *code[at:at + 3]])  # the module's lesson stays as committed
    return nbformat.v4.new_notebook(cells=[cells[0], nbformat.v4.new_code_cell("from ftlab.drills import check"),
                                                  *cells[1:]], metadata=lesson.metadata)


def test_strict_mode_fails_a_notebook_with_its_drill_left_blank(lesson, tmp_path):
    nb = one_drill(lesson, "08c")
    assert fill_answers(nb, leave_blank={"08c"}) == []
    result = run_strict(nb, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-2000:]
    assert "DrillNotPassed" in out and "08c: not attempted" in out, out[-2000:]


def test_strict_mode_passes_the_notebook_once_the_answer_is_filled_in(lesson, tmp_path):
    nb = one_drill(lesson, "08c")
    assert fill_answers(nb) == ["08c"]
    result = run_strict(nb, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "1 passed" in result.stdout


def test_the_committed_lesson_is_blank_so_strict_mode_has_something_to_grade(lesson):
    code = [c for c in lesson.cells if c.cell_type == "code"]
    answers = [c.source for c in code if "answer" in c.metadata.get("tags", [])]
    assert answers and all("..." in a or "NotImplementedError" in a for a in answers)


def test_in_a_kernel_a_never_ending_answer_fails_in_seconds_and_the_kernel_runs_on(tmp_path, monkeypatch):
    """The time limit's SIGALRM works where students run drills: in a Jupyter kernel's cells. The
    check returns (twice: re-running the cell works), a right answer still passes after it, and
    in strict mode the time-out is a DrillNotPassed, not a hang."""
    import nbclient

    cells = [
        "import os, time\nfrom ftlab.drills import DrillNotPassed, check, reference\n"
        "check('08b', reference('08b'))",
        "def spin(*args):\n    while True:\n        pass",
        "for attempt in range(2):\n    started = time.monotonic()\n    r = check('08b', spin)\n"
        "    print('ELAPSED', round(time.monotonic() - started, 1), r.status)",
        "print('AFTER', check('08b', reference('08b')).status)",
        "os.environ['FTLAB_DRILLS'] = 'strict'\ntry:\n    check('08b', spin)\nexcept DrillNotPassed as err:\n"
        "    print('STRICT', err)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    for key, value in {"FTLAB_PROFILE": "tiny", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this environment
    monkeypatch.delenv("FTLAB_DRILLS", raising=False)
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    runs = [line.split() for line in out.splitlines() if line.startswith("ELAPSED")]
    assert len(runs) == 2 and all(status == "fail" for _, _, status in runs), out
    assert all(5 <= float(seconds) < 8 for _, seconds, _ in runs), out
    assert out.count("ran out of time") == 4 and "AFTER pass" in out, out  # strict prints, then raises
    assert "STRICT ❌ 08b: fail. Hint: Your function ran out of time" in out, out
