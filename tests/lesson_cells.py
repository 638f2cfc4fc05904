"""Reading a lesson's own cells in tests: the lesson pieces' tests run the code a student reads.

Import it from a test module (`from lesson_cells import code_cells, cell_index`); the
``not_strict`` fixture that goes with it lives in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import jupytext

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def lesson_path(stem: str) -> Path:
    """notebooks/<stem>.py, the jupytext twin a lesson is edited in (``stem`` like "04_qlora")."""
    path = NOTEBOOKS / f"{stem}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no lesson twin {path}; the lessons are "
                                f"{', '.join(sorted(p.stem for p in NOTEBOOKS.glob('[0-9][0-9]_*.py')))}")
    return path


def code_cells(stem: str) -> list[str]:
    """The sources of the lesson's code cells, in order."""
    return [c.source for c in jupytext.read(lesson_path(stem), fmt="py:percent").cells if c.cell_type == "code"]


def cell_index(cells: list[str], needle: str, lesson: str = "the lesson") -> int:
    """Index of the first code cell that contains ``needle``; a failed assertion names what is missing."""
    found = [i for i, source in enumerate(cells) if needle in source]
    assert found, f"no code cell of {lesson} contains {needle!r}"
    return found[0]
