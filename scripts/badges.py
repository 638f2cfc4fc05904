"""Rewrite everything that is built from ``ftlab.REPO_URL``: the README's lesson table, each
notebook's Open-in-Colab badge, and each notebook's Colab install line, whose repository is
``REPO_URL`` and whose tag is ``v`` + ``ftlab.__version__`` (so a release is: bump the version,
run this script, commit, tag).

    python scripts/badges.py          # rewrite what is out of date
    python scripts/badges.py --check  # exit 1 and say what would change (tests run this)

A fork changes ``REPO_URL`` in ``ftlab/__init__.py`` and runs this script once. Both files of a
notebook pair (``NN_topic.ipynb`` and ``NN_topic.py``) get the same edit, so a pair in sync stays
in sync. The lesson list below is the course plan (docs/authoring.md); a lesson whose notebook does not
exist yet is listed as "coming".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"

START_MARKER = "<!-- lessons:start -->"
END_MARKER = "<!-- lessons:end -->"

BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
# Any Open-in-Colab badge, whatever repository its link points at.
BADGE_RE = re.compile(
    r"\[!\[Open In Colab\]\(" + re.escape(BADGE_SVG) + r"\)\]\((?P<url>[^)\s]+)\)"
)
# ftlab's pip spec in a set-up cell, ``ftlab[quant] @ git+https://github.com/o/r@v0.3.0``: its
# repository and its ``@ref`` are rewritten (to REPO_URL and ``v<version>``), its extras kept.
INSTALL_RE = re.compile(
    r"(?P<head>ftlab(?:\[[\w,\s-]*\])?\s*@\s*git\+)"
    r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_-]+(?:\.git)?(?:@[\w.+-]+)?"
)


@dataclass(frozen=True)
class Lesson:
    number: str  # "00"
    slug: str  # "start_here": the notebook is notebooks/00_start_here.ipynb
    title: str
    teaches: str
    runtime: str  # what to pick in Colab's "Change runtime type"

    @property
    def stem(self) -> str:
        return f"{self.number}_{self.slug}"


LESSONS_FILE = NOTEBOOKS / "lessons.toml"


def read_lessons(path: Path = LESSONS_FILE) -> tuple[Lesson, ...]:
    """The course's lessons, in order, from ``notebooks/lessons.toml`` (the one list of them)."""
    with path.open("rb") as f:
        entries = tomllib.load(f)["lesson"]
    return tuple(Lesson(e["number"], e["slug"], e["title"], e["teaches"], e["runtime"]) for e in entries)


LESSONS = read_lessons()


def _checkout_ftlab():
    """The ``ftlab`` package of this checkout (not whatever ftlab is installed)."""
    sys.path.insert(0, str(ROOT))
    try:
        import ftlab
    finally:
        sys.path.pop(0)
    return ftlab


def repo_url() -> str:
    """``ftlab.REPO_URL`` from this checkout."""
    return _checkout_ftlab().REPO_URL


def version() -> str:
    """``ftlab.__version__`` from this checkout: the release tag the install lines pin."""
    return _checkout_ftlab().__version__


def repo_slug(url: str) -> str:
    """``https://github.com/owner/repo(.git)(/)`` -> ``owner/repo``."""
    m = re.fullmatch(r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?", url)
    if not m:
        raise ValueError(f"REPO_URL={url!r} is not a GitHub repository URL "
                         "(https://github.com/<owner>/<repo>)")
    return f"{m.group(1)}/{m.group(2)}"


def colab_url(url: str, filename: str) -> str:
    """The Colab link that opens ``notebooks/<filename>`` from the repository's main branch."""
    return f"https://colab.research.google.com/github/{repo_slug(url)}/blob/main/notebooks/{filename}"


def badge(url: str, filename: str) -> str:
    return f"[![Open In Colab]({BADGE_SVG})]({colab_url(url, filename)})"


def git_url(url: str) -> str:
    return f"https://github.com/{repo_slug(url)}"


# --- notebooks -----------------------------------------------------------------------------------


def fix_title_cell(source: str, badge_md: str) -> str:
    """The first markdown cell with exactly one badge, ``badge_md``: replaced if there, else put
    on its own line after the title (the first ``# `` line), else at the top."""
    if BADGE_RE.search(source):
        seen = []

        def one(m: re.Match) -> str:
            seen.append(m)
            return badge_md if len(seen) == 1 else ""

        return BADGE_RE.sub(one, source)
    lines = source.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return "\n".join(lines[: i + 1] + ["", badge_md] + lines[i + 1:])
    return badge_md + "\n\n" + source


def fix_install_line(source: str, url: str, release: str) -> str:
    """Every ftlab git pin in ``source`` installs tag ``v<release>`` of ``url``."""
    return INSTALL_RE.sub(lambda m: f"{m.group('head')}{git_url(url)}@v{release}", source)


def fix_cells(cells, url: str, filename: str, release: str | None = None) -> bool:
    """Edit nbformat cells in place; True if anything changed."""
    release = release or version()
    changed = False
    first_md = next((c for c in cells if c.cell_type == "markdown"), None)
    if first_md is not None:
        new = fix_title_cell(first_md.source, badge(url, filename))
        changed |= new != first_md.source
        first_md.source = new
    for cell in cells:
        if cell.cell_type == "code":
            new = fix_install_line(cell.source, url, release)
            changed |= new != cell.source
            cell.source = new
    return changed


def notebook_edits(stem: str, url: str, folder: Path = NOTEBOOKS,
                   release: str | None = None) -> dict[Path, str]:
    """New text for each file of the pair ``stem`` that is out of date (empty if none); the
    install line pins ``v<release>`` (default: this checkout's ``ftlab.__version__``)."""
    import jupytext
    import nbformat

    edits: dict[Path, str] = {}
    filename = f"{stem}.ipynb"
    ipynb, py = folder / filename, folder / f"{stem}.py"
    if ipynb.exists():
        text = ipynb.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        if fix_cells(nb.cells, url, filename, release):
            edits[ipynb] = nbformat.writes(nb) + "\n"
    if py.exists():
        text = py.read_text(encoding="utf-8")
        nb = jupytext.reads(text, fmt="py:percent")
        if fix_cells(nb.cells, url, filename, release):
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            try:
                from sync_notebooks import drop_version_lines
            finally:
                sys.path.pop(0)
            edits[py] = drop_version_lines(jupytext.writes(nb, fmt="py:percent"))
    return edits


def notebook_stems(folder: Path = NOTEBOOKS) -> list[str]:
    """``NN_topic`` of every lesson file (.ipynb or .py) in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir()
                   if p.suffix in (".ipynb", ".py") and re.match(r"\d\d_", p.name)})


# --- README --------------------------------------------------------------------------------------


MINUTES = ROOT / "docs" / "lesson_minutes.json"


def colab_minutes(stem: str, path: Path = MINUTES) -> str:
    """"~T4 / ~L4" minutes of the lesson's full profile on Colab, as `make rehearse` estimated them
    (docs/lesson_minutes.json: each training run's arithmetic at real size, plus an allowance)."""
    table = json.loads(path.read_text(encoding="utf-8"))["minutes"] if path.is_file() else {}
    cards = table.get(stem)
    if not cards:
        return "?"
    return " / ".join(f"~{cards[c]}" for c in ("t4", "l4") if c in cards)


def lesson_table(url: str, folder: Path = NOTEBOOKS, minutes: Path = MINUTES) -> str:
    """The README's lesson table: every planned lesson, a Colab badge where the notebook exists."""
    rows = [
        "| # | lesson | what you learn | open | Colab runtime | minutes (full, T4 / L4) |",
        "|---|---|---|---|---|---|",
    ]
    planned = {lesson.stem for lesson in LESSONS}
    lessons = list(LESSONS)
    for stem in notebook_stems(folder):  # a notebook that is not in the plan still gets a row
        if stem not in planned:
            number, _, slug = stem.partition("_")
            lessons.append(Lesson(number, slug, slug.replace("_", " ").capitalize(), "", "?"))
    for lesson in sorted(lessons, key=lambda les: les.stem):
        filename = f"{lesson.stem}.ipynb"
        if (folder / filename).exists():
            name = f"[{lesson.title}](notebooks/{filename})"
            open_cell = badge(url, filename)
        else:
            name, open_cell = lesson.title, "coming"
        rows.append(f"| {lesson.number} | {name} | {lesson.teaches} | {open_cell} | "
                    f"{lesson.runtime} | {colab_minutes(lesson.stem, minutes)} |")
    return "\n".join(rows)


def readme_edit(url: str, readme: Path = README, folder: Path = NOTEBOOKS) -> str | None:
    """The README's new text if its lesson table is out of date, else None."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no {START_MARKER} ... {END_MARKER} block for the table")
    new = (text[: start + len(START_MARKER)] + "\n" + lesson_table(url, folder) + "\n"
           + text[end:])
    return None if new == text else new


def all_edits(url: str | None = None) -> dict[Path, str]:
    url = url or repo_url()
    repo_slug(url)  # fail early, with the reason, on a URL we cannot build links from
    edits: dict[Path, str] = {}
    for stem in notebook_stems():
        edits.update(notebook_edits(stem, url))
    readme = readme_edit(url)
    if readme is not None:
        edits[README] = readme
    return edits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if any file is out of date")
    args = parser.parse_args(argv)
    edits = all_edits()
    for path, text in edits.items():
        rel = path.relative_to(ROOT)
        if args.check:
            print(f"out of date: {rel}")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {rel}")
    if args.check and edits:
        print("run `python scripts/badges.py` (or `make badges`) to fix")
        return 1
    if not edits:
        print(f"badges and lesson table up to date ({repo_slug(repo_url())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
