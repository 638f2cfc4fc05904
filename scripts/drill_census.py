#!/usr/bin/env python3
"""Print the course's drill census: drills per lesson and kind, and where each lesson checks first.

    .venv/bin/python scripts/drill_census.py            # a markdown table
    .venv/bin/python scripts/drill_census.py --json     # the same numbers as JSON

"first check" is the line of the lesson's first `check("...")` call in its jupytext twin
(notebooks/NN_topic.py), as a share of the twin's lines: a student meets a checked drill that far
into the lesson. The course's rule (docs/authoring.md) is a checked drill within the first two
thirds of every lesson that teaches a hand-written piece (01-06). tests/test_drill_census.py
holds the course to it and to its count of code drills.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("code", "numeric", "choice")
_CHECK = re.compile(r'^check\("(\w+)"')


def first_check(twin: Path) -> tuple[int, int]:
    """(line of the first `check(...)` call, number of lines) in a lesson's jupytext twin; line 0 if none."""
    lines = twin.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        if _CHECK.match(line):
            return i, len(lines)
    return 0, len(lines)


def census() -> list[dict]:
    """One row per lesson: its drills by kind, its length and where its first check sits."""
    from ftlab.drills._core import DRILLS

    by_lesson: dict[str, Counter] = {}
    for drill in DRILLS.values():
        by_lesson.setdefault(drill.lesson, Counter())[drill.kind] += 1
    rows = []
    for twin in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        kinds = by_lesson.get(twin.stem, Counter())
        line, n_lines = first_check(twin)
        rows.append({"lesson": twin.stem, **{k: kinds[k] for k in KINDS}, "drills": sum(kinds.values()),
                     "lines": n_lines, "first_check_line": line,
                     "first_check_share": round(line / n_lines, 3) if line else None})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| lesson | code | numeric | choice | drills | lines | first check |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        where = f"line {r['first_check_line']} ({r['first_check_share']:.0%})" if r["first_check_line"] else "none"
        out.append(f"| {r['lesson']} | {r['code']} | {r['numeric']} | {r['choice']} | {r['drills']} | "
                   f"{r['lines']} | {where} |")
    total = {k: sum(r[k] for r in rows) for k in (*KINDS, "drills", "lines")}
    out.append(f"| **all** | {total['code']} | {total['numeric']} | {total['choice']} | {total['drills']} | "
               f"{total['lines']} | |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)
    rows = census()
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
