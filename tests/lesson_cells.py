"""Reading the course's own files in tests: a lesson's code cells (the lesson pieces' tests run the
code a student reads) and the scripts under scripts/.

Import it from a test module (`from lesson_cells import code_cells, cell_index, load_script`); the
``not_strict`` fixture that goes with it lives in conftest.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


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


def load_script(name: str):
    """Import scripts/<name>.py (scripts/ is not a package) once, as ``ftlab_scripts_<name>``."""
    module_name = f"ftlab_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module
