"""Every lesson runs, then survives "Run all" a second time in the same kernel, as a student will do.

This is how `make test` executes the lessons, each exactly twice: the first run, in a fresh kernel,
is what ``pytest --nbmake`` checks (the lesson runs top to bottom); the second runs every cell
again in that kernel. It catches state that a second run trips over: an injection applied twice,
a dataset mapped twice, a file that already exists, an accelerate singleton. The two runs must
print the same ``Headline:`` lines (seeded, deterministic); text in parentheses (wall times) may
differ. A failure names the lesson, the run (1 or 2) and the cell.

Environment: ``FTLAB_NOTEBOOKS`` a folder of ``NN_*.ipynb`` to run instead of notebooks/ (`make
test-notebooks NOTEBOOKS=...`); ``NB_CELL_TIMEOUT`` the seconds one cell may run (default 300).
The tests carry the ``lessons`` marker: `make test-unit` leaves them out, `make test-notebooks`
runs only them, and tests/conftest.py puts them first so that pytest-xdist starts the long ones
first.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError, CellTimeoutError

pytestmark = pytest.mark.lessons

ROOT = Path(__file__).resolve().parent.parent
FOLDER = Path(os.environ.get("FTLAB_NOTEBOOKS") or ROOT / "notebooks").resolve()
NOTEBOOKS = sorted(FOLDER.glob("[0-9][0-9]_*.ipynb"))
HEADLINE = "Headline:"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cell_timeout() -> int:
    raw = os.environ.get("NB_CELL_TIMEOUT", "300")
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(f"NB_CELL_TIMEOUT={raw!r}: it should be a whole number of seconds above 0, e.g. 300")
    return seconds


def headlines(nb) -> list[str]:
    """The ``Headline:`` lines the notebook's code cells printed, parenthesised text cut off."""
    return [line.split("(")[0].rstrip()
            for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) for line in out.get("text", "").splitlines()
            if line.startswith(HEADLINE)]


def fill_answers(nb, leave_blank=frozenset()) -> list[str]:
    """Write each drill's worked solution into its answer cell, as a student would, except the
    drills in ``leave_blank``. Returns the ids filled in. The layout (answer cell, check cell,
    solution cell) is the one tests/test_notebooks_format.py enforces."""
    from test_notebooks_format import CHECK_RE, SOLUTION_TITLE

    code = [c for c in nb.cells if c.cell_type == "code"]
    filled = []
    for i, cell in enumerate(code):
        if "answer" not in cell.metadata.get("tags", []):
            continue
        (drill_id,) = CHECK_RE.findall(code[i + 1].source)
        solution = code[i + 2]
        assert "solution" in solution.metadata["tags"], f"drill {drill_id}: no solution cell after its check"
        if drill_id in leave_blank:
            continue
        body = solution.source.removeprefix(SOLUTION_TITLE).replace("solution_", "answer_")
        cell.source = "\n".join(line for line in body.splitlines() if not line.startswith("check("))
        filled.append(drill_id)
    return filled


def _run_lessons():
    """scripts/run_lessons.py, whose headless_client every lesson runner shares."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_lessons", Path(__file__).resolve().parent.parent
                                                  / "scripts" / "run_lessons.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_lessons", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_twice(path: Path, timeout: int) -> list[list[str]]:
    """Run every code cell of ``path``, then every one again, in one kernel; each run's headlines.
    Before the second run the answers are filled in and strict grading is switched on.

    Fails the test with the lesson, the run and the cell when a cell raises or times out.
    """
    nb = nbformat.read(path, as_version=4)
    client = _run_lessons().headless_client(nb, path.parent, timeout)  # as make lessons runs it
    runs = []
    with client.setup_kernel(env={**os.environ, "FTLAB_PROFILE": "tiny", "MPLBACKEND": "Agg"}):
        for run in (1, 2):
            if run == 2:  # the student's edits: every drill answered, strict grading on
                fill_answers(nb)
                first = next(c for c in nb.cells if c.cell_type == "code")
                first.source = f"import os; os.environ['FTLAB_DRILLS'] = 'strict'\n{first.source}"
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, index)
                    failure = None
                except (CellExecutionError, CellTimeoutError) as error:
                    failure = ANSI.sub("", str(error))  # the kernel's traceback comes in colour
                if failure is not None:
                    when = ("in a fresh kernel" if run == 1 else
                            "on the second Run all in the same kernel (answers filled in, FTLAB_DRILLS=strict)")
                    pytest.fail(f"{path.name} failed {when} (run {run} of 2), cell {index}:\n{failure}",
                                pytrace=False)
            runs.append(headlines(nb))
    return runs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_run_all_twice_in_one_kernel(path):
    first, second = run_twice(path, cell_timeout())
    assert first, f"{path.name} printed no {HEADLINE} line"
    assert first == second, f"{path.name}: the second Run all printed other headlines than the first"
