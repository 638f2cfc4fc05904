"""Keep every lesson pair in sync and free of outputs (``make sync``).

Each lesson is two files: ``notebooks/NN_topic.ipynb`` (what Colab and Jupyter open) and
``notebooks/NN_topic.py`` (jupytext percent format: what reviewers read in a diff). For each pair
the newer file is the source of the cells, as ``jupytext --sync`` does; then outputs, execution
counts and widget state are stripped, the pairing and a ``python3`` kernel are recorded in the
notebook's metadata, and both files are written (the .py last, so it is never the older one).
A lone .py gets its .ipynb and a lone .ipynb its .py.

    python scripts/sync_notebooks.py            # sync all pairs in notebooks/
    python scripts/sync_notebooks.py --check    # exit 1 if any file would change
    python scripts/sync_notebooks.py notebooks/01_linear_probe.py   # just that pair
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
FORMATS = "ipynb,py:percent"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def strip(nb) -> None:
    """Outputs, execution counts, per-cell timings and widget state out; the pairing in."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nb.metadata.setdefault("jupytext", {})["formats"] = FORMATS
    nb.metadata["jupytext"].pop("text_representation", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)


def synced(stem: str, folder: Path = NOTEBOOKS) -> dict[Path, str]:
    """The text both files of pair ``stem`` should have: {path: text}, .ipynb first."""
    ipynb, py = folder / f"{stem}.ipynb", folder / f"{stem}.py"
    if not ipynb.exists() and not py.exists():
        raise FileNotFoundError(f"neither {ipynb} nor {py} exists")
    if ipynb.exists():
        nb = jupytext.read(ipynb, fmt="ipynb")
        if py.exists() and py.stat().st_mtime > ipynb.stat().st_mtime:
            # The .py was edited last: take its cells, keep the notebook's metadata and cell ids.
            nb = combine_inputs_with_outputs(jupytext.read(py, fmt="py:percent"), nb, fmt="py:percent")
    else:
        nb = jupytext.read(py, fmt="py:percent")
    strip(nb)
    return {
        ipynb: nbformat.writes(nb) + "\n",  # as nbformat.write and Jupyter save it
        py: drop_version_lines(jupytext.writes(nb, fmt="py:percent")),
    }


def drop_version_lines(text: str) -> str:
    """Leave jupytext's own version out of the .py header, so that upgrading jupytext does not
    rewrite every lesson (jupytext reads the file the same without it)."""
    if not text.startswith("# ---\n"):
        return text
    end = text.index("\n# ---\n") + 1
    header = re.sub(r"(?m)^#\s+(jupytext_version|format_version): .*\n", "", text[:end])
    return header + text[end:]


def stems_from(paths: list[str]) -> list[str]:
    if paths:
        return sorted({Path(p).stem for p in paths})
    return sorted({p.stem for p in NOTEBOOKS.iterdir()
                   if p.suffix in (".ipynb", ".py") and re.match(r"\d\d_", p.name)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="notebooks (either file of a pair); default all")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of sync")
    args = parser.parse_args(argv)
    folder = Path(args.paths[0]).resolve().parent if args.paths else NOTEBOOKS
    stale = []
    for stem in stems_from(args.paths):
        wrote = False
        for path, text in synced(stem, folder).items():  # .ipynb first, then .py
            old = path.read_text(encoding="utf-8") if path.exists() else None
            if old == text:
                if wrote and not args.check:
                    # Jupytext refuses to open a pair whose .py is older than its .ipynb.
                    os.utime(path)
                continue
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
                wrote = True
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if args.check and stale:
        for path in stale:
            print(f"out of sync or has outputs: {path}")
        print("run `make sync`")
        return 1
    if not stale:
        print("notebook pairs in sync, outputs stripped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
