"""Run every lesson headless and say how it went (``make lessons``).

Executes each ``notebooks/NN_*.ipynb`` top to bottom in a fresh ``python3`` kernel (this
interpreter's, so the venv's), in the profile ``FTLAB_PROFILE`` names (``make lessons`` sets
``tiny``). For each lesson it writes the executed notebook and an HTML page to ``build/lessons/``,
then prints a table of lessons, seconds and headline results (the text after ``Headline:`` that
``ftlab.runtime.headline()`` prints; "—" if the lesson printed none), also written to
``build/lessons/summary.md``. A failing lesson does not stop the others; the script exits 1 at
the end if any failed. Lessons over the time budget (60 s each, 5 min in all) are flagged.

    python scripts/run_lessons.py               # all lessons
    python scripts/run_lessons.py 00 03         # lessons whose file name starts with 00 or 03

Plots: the kernel uses matplotlib's inline backend, which renders off-screen like Agg but keeps
the figures in the outputs, so they appear in the HTML pages (``MPLBACKEND=Agg`` would drop them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "build" / "lessons"
LESSON_BUDGET_S = 60.0
TOTAL_BUDGET_S = 300.0
HEADLINE_PREFIX = "Headline:"  # ftlab.runtime.HEADLINE_PREFIX (not imported: that pulls in torch)
NONE = "—"


@dataclass
class Result:
    lesson: str
    seconds: float
    ok: bool
    headline: str
    error: str = ""


def lesson_files(selected: list[str], folder: Path = NOTEBOOKS) -> list[Path]:
    """The lessons ``folder/lessons.toml`` lists, in its order: each ``NN_slug.ipynb`` (or its ``.py``
    twin if the ``.ipynb`` is not made yet). ``selected``: number prefixes such as ``["04", "05"]``."""
    listing = folder / "lessons.toml"
    if not listing.is_file():
        raise SystemExit(f"{listing} is missing: it lists the lessons to run (see notebooks/lessons.toml)")
    with listing.open("rb") as f:
        stems = [f"{e['number']}_{e['slug']}" for e in tomllib.load(f)["lesson"]]
    if selected:
        stems = [s for s in stems if any(s.startswith(sel) for sel in selected)]
    return [folder / f"{s}.ipynb" if (folder / f"{s}.ipynb").exists() else folder / f"{s}.py"
            for s in stems]


def read_lesson(path: Path):
    if path.suffix == ".py":
        import jupytext

        return jupytext.read(path, fmt="py:percent")
    return nbformat.read(path, as_version=4)


def headlines(nb) -> str:
    """The text after ``Headline:`` in the lesson's printed output ("; "-joined if several)."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                for line in out.get("text", "").splitlines():
                    if line.startswith(HEADLINE_PREFIX):
                        found.append(line[len(HEADLINE_PREFIX):].strip())
    return "; ".join(found) or NONE


def first_error(nb, exc: BaseException) -> str:
    """One line saying what went wrong: the failing cell's exception, else the exception."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i}: {out.get('ename')}: {out.get('evalue')}".splitlines()[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def headless_client(nb, folder: Path, cell_timeout: int):
    """An nbclient ``NotebookClient`` for ``nb`` that runs in ``folder`` the way make lessons, make
    rehearse and make test run every lesson.

    nbclient, left to itself, plays the front end of an ipywidgets ``Output`` widget (the one
    inside each lesson's explorer, ``ipywidgets.interactive``): it sends the widget's state back
    to the kernel on the shell channel while it is waiting on that same channel for the cell's
    reply, and now and then that reply never arrives: the kernel sits idle, the run waits forever,
    and no cell timeout fires (jupyter/nbclient issue 312). Nobody looks at a widget in a
    headless run, so this client does not play that part: the widget's state is still saved in
    the executed notebook, and what the explorer prints goes to the cell's output. The explorer
    clears its own output before it prints (``clear_output(wait=True)``); with no widget to clear,
    that would wipe what the cell printed before it (a run's memory plan, its numbers), so this
    client keeps every line a cell prints: no lesson clears its output for any other reason.
    """
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    client.comm_open_handlers["jupyter.widget"] = lambda msg: None  # no Output-widget mimic
    client.clear_output = lambda outs, msg, cell_index: None  # keep what the cell printed before
    return client


def run_one(path: Path, out_dir: Path, cell_timeout: int) -> Result:
    nb = read_lesson(path)
    client = headless_client(nb, path.parent, cell_timeout)
    start = time.perf_counter()
    ok, error = True, ""
    # The kernel process's own log (not the cells' output) goes to a file, not the terminal.
    kernel_log = (out_dir / f"{path.stem}.kernel.log").open("w")
    try:
        client.execute(stderr=kernel_log)
    except Exception as exc:  # a failing cell, a timeout, a dead kernel: record it and go on
        ok, error = False, first_error(nb, exc)
    finally:
        kernel_log.close()
    seconds = time.perf_counter() - start
    write_outputs(nb, out_dir / path.stem)
    return Result(path.stem, seconds, ok, headlines(nb), error)


def write_outputs(nb, stem_path: Path) -> None:
    nbformat.write(nb, stem_path.with_suffix(".ipynb"))
    try:
        from nbconvert import HTMLExporter

        html, _ = HTMLExporter().from_notebook_node(nb)
        stem_path.with_suffix(".html").write_text(html, encoding="utf-8")
    except Exception:  # an HTML page is a convenience; never fail a lesson over it
        traceback.print_exc()


def table(results: list[Result]) -> str:
    rows = ["| lesson | seconds | status | headline |", "|---|---:|---|---|"]
    for r in results:
        status = "ok" if r.ok else f"**FAILED**: {r.error}"
        if r.seconds > LESSON_BUDGET_S:
            status += f", over {LESSON_BUDGET_S:.0f} s"
        cells = [r.lesson, f"{r.seconds:.1f}", status, r.headline]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    total = sum(r.seconds for r in results)
    over = f", over the {TOTAL_BUDGET_S / 60:.0f} min budget" if total > TOTAL_BUDGET_S else ""
    rows.append(f"| **total** | {total:.1f} | {sum(r.ok for r in results)}/{len(results)} "
                f"passed{over} | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson number prefixes, e.g. 00 03; default all")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default build/lessons)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="the lessons' folder")
    parser.add_argument("--cell-timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)

    # Plots stay in the outputs (inline backend, off-screen); the kernel inherits this env.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ.setdefault("FTLAB_PROFILE", "tiny")
    files = lesson_files(args.lessons, args.notebooks)
    if not files:
        print(f"no lessons found in {args.notebooks}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"running {len(files)} lesson(s), FTLAB_PROFILE={os.environ['FTLAB_PROFILE']}, "
          f"outputs in {args.out}")
    results = []
    for path in files:
        print(f"  {path.name} ...", end=" ", flush=True)
        result = run_one(path, args.out, args.cell_timeout)
        status = "ok" if result.ok else f"FAILED: {result.error}"
        print(f"{result.seconds:.1f} s, {status}", flush=True)
        results.append(result)

    text = table(results)
    profile = os.environ["FTLAB_PROFILE"]
    (args.out / "summary.md").write_text(
        f"# Lessons, {profile} profile, {os.cpu_count()} CPU cores\n\n{text}\n", encoding="utf-8")
    print()
    print(text)
    slow = [r.lesson for r in results if r.seconds > LESSON_BUDGET_S]
    if slow:
        print(f"\nover {LESSON_BUDGET_S:.0f} s: {', '.join(slow)}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAILED {r.lesson}: {r.error} (see {args.out / r.lesson}.html)")
    print(f"\nwrote {args.out}/summary.md and an .ipynb and .html per lesson")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
