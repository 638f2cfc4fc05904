"""Auto-checked drills: write an answer, call ``check(id, answer)``, get told at once.

A result is ``"pass"``, ``"fail"`` (with a hint that helps without giving the answer away) or
``"not attempted"`` (``None``, ``...``, an empty string, or a function that still raises
``NotImplementedError``). With ``FTLAB_DRILLS=strict`` anything but a pass raises
:class:`DrillNotPassed`, so ``FTLAB_DRILLS=strict pytest --nbmake notebooks/`` grades a
student's own notebooks; unset, a check reports and the lesson carries on, and any other value
is an error (a typo never grades leniently by accident).

A code drill runs the student's function with a time limit per call (``TIME_LIMIT_S``, 5 s): a
function that never returns fails, saying it ran out of time. Whatever the function raises,
``SystemExit`` and ``KeyboardInterrupt`` included, is a failed result; the kernel's own
interrupt (Ctrl-C, the stop button) still stops the check.

Drills live next to their lesson: ``seed.py`` holds the seed's D1-D5 and ``lessonNN.py`` the
drills of lesson NN; every such module is imported here, so ``all_drills()`` is the course.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._core import (BLANK, DRILLS, FAIL, PASS, AnswerError, Drill, DrillNotPassed, Result,
                    all_drills, check, describe, grade, is_blank, parse_number, reference,
                    register, scoreboard, strict)

__all__ = ["check", "all_drills", "reference", "describe", "grade", "strict", "register", "scoreboard",
           "Drill", "Result", "DrillNotPassed", "AnswerError", "DRILLS", "PASS", "FAIL", "BLANK",
           "is_blank", "parse_number"]

importlib.import_module(f"{__name__}.seed")
for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("lesson")):
    importlib.import_module(f"{__name__}.{_mod}")
