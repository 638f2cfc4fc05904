"""The lessons' files are in shape: pairs complete and in sync, outputs stripped, the right
Colab badge, the lesson skeleton (docs/authoring.md).

The checks are plain functions that return a list of problems (empty when fine), so that the
tests at the bottom can prove each one catches what it is for on a synthetic notebook. Fix what
they report with `make sync` (pairs, outputs) and `make badges` (badges, README table).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

import ftlab

from lesson_cells import load_script

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


badges = load_script("badges")
sync_notebooks = load_script("sync_notebooks")

SUMMARY_WITHIN_LAST = 4  # the "Summary" heading sits in one of the last cells
TITLE_RE = re.compile(r"^# \S", re.M)
SUMMARY_RE = re.compile(r"^#{1,6}\s.*\bSummary\b", re.M | re.I)
REPORT_RE = re.compile(r"\breport\(\s*\)")
TORCH_INSTALL_RE = re.compile(r"pip\s+install[^\n]*(?<![\w.-])torch(?![\w.-])")


# --- the checks ----------------------------------------------------------------------------------


def lesson_stems(folder: Path) -> list[str]:
    return badges.notebook_stems(folder)


def check_twins(folder: Path, stem: str) -> list[str]:
    """Both NN_topic.ipynb and NN_topic.py exist."""
    return [f"{stem}{ext} is missing (run `make sync` to create it from its twin)"
            for ext in (".ipynb", ".py") if not (folder / f"{stem}{ext}").exists()]


def _cells(nb) -> list[tuple[str, str]]:
    """What must agree between twins: each cell's type and source, blank lines at the ends
    trimmed (jupytext drops them in the .py); metadata and ids may differ."""
    return [(c.cell_type, c.source.strip("\n").rstrip()) for c in nb.cells]


def check_in_sync(ipynb: Path, py: Path) -> list[str]:
    """The .py (percent format) has the same cells as the .ipynb."""
    a = _cells(jupytext.read(ipynb, fmt="ipynb"))
    b = _cells(jupytext.read(py, fmt="py:percent"))
    if a == b:
        return []
    if len(a) != len(b):
        return [f"{ipynb.name} has {len(a)} cells, {py.name} has {len(b)}: out of sync "
                "(edit one, then `make sync`)"]
    first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return [f"{ipynb.name} and {py.name} differ from cell {first} on "
            f"({a[first][1][:60]!r} vs {b[first][1][:60]!r}): out of sync (run `make sync`)"]


def check_no_outputs(ipynb: Path) -> list[str]:
    """No code cell has outputs or an execution count (notebooks are committed clean)."""
    nb = nbformat.read(ipynb, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{ipynb.name}: cell {i} has outputs (run `make sync` to strip them)")
        if cell.get("execution_count") is not None:
            problems.append(f"{ipynb.name}: cell {i} has an execution_count (run `make sync`)")
    return problems


def check_badge(path: Path, repo_url: str) -> list[str]:
    """The first markdown cell has the Open-in-Colab badge for this file, built from REPO_URL."""
    fmt = "ipynb" if path.suffix == ".ipynb" else "py:percent"
    nb = jupytext.read(path, fmt=fmt)
    first_md = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first_md is None:
        return [f"{path.name}: no markdown cell for the title and Colab badge"]
    expected = badges.colab_url(repo_url, path.with_suffix(".ipynb").name)
    urls = [m.group("url") for m in badges.BADGE_RE.finditer(first_md.source)]
    if urls != [expected]:
        return [f"{path.name}: first markdown cell has Colab badge links {urls}, expected "
                f"exactly [{expected!r}] (run `make badges`)"]
    return []


def check_skeleton(ipynb: Path) -> list[str]:
    """Title first; the first code cell is the set-up cell calling ftlab.runtime's report();
    a "Summary" heading near the end; the python3 kernel; no pip install of torch."""
    nb = nbformat.read(ipynb, as_version=4)
    cells, name, problems = nb.cells, ipynb.name, []
    if not cells or cells[0].cell_type != "markdown" or not TITLE_RE.search(cells[0].source):
        problems.append(f"{name}: the first cell must be markdown with a '# Title' line")
    code = [c for c in cells if c.cell_type == "code"]
    if not code or not (REPORT_RE.search(code[0].source) and "ftlab" in code[0].source):
        problems.append(f"{name}: the first code cell must be the set-up cell that imports "
                        "ftlab.runtime and calls report()")
    tail = cells[-SUMMARY_WITHIN_LAST:]
    if not any(c.cell_type == "markdown" and SUMMARY_RE.search(c.source) for c in tail):
        problems.append(f"{name}: no '## Summary' heading in the last {SUMMARY_WITHIN_LAST} cells")
    kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
    if kernel != "python3":
        problems.append(f"{name}: kernelspec is {kernel!r}; use 'python3' (`make sync` sets it)")
    for i, cell in enumerate(code):
        if TORCH_INSTALL_RE.search(cell.source):
            problems.append(f"{name}: code cell {i} pip-installs torch; Colab's torch must be kept")
    return problems


CHECK_RE = re.compile(r"""\bcheck\(\s*["']([^"']+)["']""")
SOLUTION_TITLE = "#@title Solution"


def check_drill_cells(ipynb: Path) -> list[str]:
    """Each drill: an answer cell (tag ``answer``), a check cell, then a solution cell (tag
    ``solution``, Colab form ``cellView: form``, first line ``#@title Solution``) that checks the
    same id. Every drill registered for this lesson appears in it, and only those."""
    from ftlab import drills

    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    name, stem, problems, seen = ipynb.name, ipynb.stem, [], []
    for i, cell in enumerate(code):
        tags = cell.metadata.get("tags", [])
        ids = CHECK_RE.findall(cell.source)
        if "solution" in tags:
            if cell.metadata.get("cellView") != "form" or not cell.source.startswith(SOLUTION_TITLE):
                problems.append(f"{name}: solution cell {i} must be a Colab form (cellView: form) "
                                f"starting with {SOLUTION_TITLE!r}")
            continue
        if not ids:
            continue
        seen += ids
        before = code[i - 1].metadata.get("tags", []) if i else []
        if "answer" not in before:
            problems.append(f"{name}: the check of {ids} (code cell {i}) must follow an answer cell "
                            "tagged 'answer'")
        after = code[i + 1] if i + 1 < len(code) else None
        if after is None or "solution" not in after.metadata.get("tags", []) \
                or CHECK_RE.findall(after.source) != ids:
            problems.append(f"{name}: the check of {ids} (code cell {i}) must be followed by a "
                            "solution cell tagged 'solution' that checks the same drill")
    unknown = sorted(set(seen) - set(drills.all_drills()))
    if unknown:
        problems.append(f"{name}: checks unknown drills {unknown}")
    mine = [d for d in drills.all_drills() if drills.DRILLS[d].lesson == stem]
    missing = [d for d in mine if d not in seen]
    if missing:
        problems.append(f"{name}: drills registered for {stem} are not in it: {missing}")
    return problems


PIN_RE = re.compile(r"(?P<req>ftlab(?:\[[^\]]*\])?)\s*@\s*git\+https://github\.com/[^@\s\"']+"
                    r"@(?P<ref>[^\s\"']+)")


def check_install_pin(ipynb: Path, version: str) -> list[str]:
    """The set-up cell installs ``ftlab[quant]`` (bitsandbytes too) at the release tag of this
    package version, ``v<version>``, so a lesson on Colab runs the ftlab it was written for."""
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    pins = PIN_RE.findall(code[0].source) if code else []
    if pins != [("ftlab[quant]", f"v{version}")]:
        return [f"{ipynb.name}: the set-up cell pins {pins}, expected [('ftlab[quant]', 'v{version}')] "
                "(bump the version, then `make badges` rewrites every notebook's pin; tag the release)"]
    return []


def all_problems(folder: Path, stem: str, repo_url: str) -> list[str]:
    problems = check_twins(folder, stem)
    if problems:
        return problems
    ipynb, py = folder / f"{stem}.ipynb", folder / f"{stem}.py"
    return (check_in_sync(ipynb, py) + check_no_outputs(ipynb) + check_badge(ipynb, repo_url)
            + check_badge(py, repo_url) + check_skeleton(ipynb) + check_drill_cells(ipynb))


# --- the repository's notebooks ------------------------------------------------------------------

STEMS = lesson_stems(NOTEBOOKS)


@pytest.mark.parametrize("stem", STEMS)
def test_lesson_has_both_twins(stem):
    assert check_twins(NOTEBOOKS, stem) == []


@pytest.mark.parametrize("stem", STEMS)
def test_lesson_twins_in_sync(stem):
    ipynb, py = NOTEBOOKS / f"{stem}.ipynb", NOTEBOOKS / f"{stem}.py"
    if not (ipynb.exists() and py.exists()):
        pytest.skip("a twin is missing (reported by test_lesson_has_both_twins)")
    assert check_in_sync(ipynb, py) == []


@pytest.mark.parametrize("stem", STEMS)
def test_lesson_has_no_outputs(stem):
    ipynb = NOTEBOOKS / f"{stem}.ipynb"
    if not ipynb.exists():
        pytest.skip("no .ipynb (reported by test_lesson_has_both_twins)")
    assert check_no_outputs(ipynb) == []


@pytest.mark.parametrize("stem", STEMS)
def test_lesson_has_colab_badge_for_repo_url(stem):
    files = [p for p in (NOTEBOOKS / f"{stem}.ipynb", NOTEBOOKS / f"{stem}.py") if p.exists()]
    assert [msg for p in files for msg in check_badge(p, ftlab.REPO_URL)] == []


@pytest.mark.parametrize("stem", STEMS)
def test_lesson_follows_skeleton(stem):
    ipynb = NOTEBOOKS / f"{stem}.ipynb"
    if not ipynb.exists():
        pytest.skip("no .ipynb (reported by test_lesson_has_both_twins)")
    assert check_skeleton(ipynb) == []


@pytest.mark.parametrize("stem", STEMS)
def test_lesson_installs_the_release_of_this_version(stem):
    assert check_install_pin(NOTEBOOKS / f"{stem}.ipynb", ftlab.__version__) == []


def test_install_pin_check_catches_a_stale_pin(tmp_path):
    nb = _good_notebook("01_demo")
    nb.cells[1].source = '%pip install "ftlab[quant] @ git+https://github.com/o/ftlab@v0.0.9"\n' + nb.cells[1].source
    ipynb, _ = _write_pair(tmp_path, "01_demo", nb)
    assert ("pins [('ftlab[quant]', 'v0.0.9')], expected [('ftlab[quant]', 'v1.2.3')]"
            in check_install_pin(ipynb, "1.2.3")[0])
    nb.cells[1].source = nb.cells[1].source.replace("ftlab[quant] @", "ftlab @").replace("v0.0.9", "v1.2.3")
    ipynb, _ = _write_pair(tmp_path, "01_demo", nb)
    assert "pins [('ftlab', 'v1.2.3')]" in check_install_pin(ipynb, "1.2.3")[0]  # no bitsandbytes
    nb.cells[1].source = nb.cells[1].source.replace("ftlab @", "ftlab[quant] @")
    ipynb, _ = _write_pair(tmp_path, "01_demo", nb)
    assert check_install_pin(ipynb, "1.2.3") == []


@pytest.mark.parametrize("stem", STEMS)
def test_lesson_drills_have_answer_check_and_solution_cells(stem):
    ipynb = NOTEBOOKS / f"{stem}.ipynb"
    if not ipynb.exists():
        pytest.skip("no .ipynb (reported by test_lesson_has_both_twins)")
    assert check_drill_cells(ipynb) == []


def test_every_drill_belongs_to_a_lesson_notebook():
    from ftlab import drills

    lessons = {drills.DRILLS[d].lesson for d in drills.all_drills()}
    assert lessons <= set(STEMS), f"drills name lessons that have no notebook: {lessons - set(STEMS)}"


def test_there_is_at_least_one_lesson():
    assert STEMS, "notebooks/ has no NN_topic.ipynb / NN_topic.py lesson"


def test_badges_and_readme_table_up_to_date():
    """`python scripts/badges.py --check` passes: README table and badges match REPO_URL."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "badges.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_notebooks_folder_pairs_with_jupytext():
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(NOTEBOOKS / "00_any.ipynb"))
    assert config is not None, "no jupytext.toml found for notebooks/"
    assert config.default_formats(str(NOTEBOOKS / "00_any.ipynb")) == "ipynb,py:percent"


# --- the checks catch what they are for (synthetic lessons in tmp_path) ---------------------------

REPO = "https://github.com/someone/ftlab"


def _good_notebook(stem: str, repo_url: str = REPO):
    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = dict(sync_notebooks.KERNELSPEC)
    nb.cells = [
        v4.new_markdown_cell(f"# {stem}\n\n{badges.badge(repo_url, stem + '.ipynb')}\n\n"
                             "What you will learn."),
        v4.new_code_cell("from ftlab.runtime import report\nenv = report()"),
        v4.new_code_cell("x = 1 + 1\nx"),
        v4.new_markdown_cell("## Summary\n\n- one thing"),
    ]
    return nb


def _write_pair(folder: Path, stem: str, nb) -> tuple[Path, Path]:
    ipynb, py = folder / f"{stem}.ipynb", folder / f"{stem}.py"
    nbformat.write(nb, ipynb)
    py.write_text(jupytext.writes(nb, fmt="py:percent"), encoding="utf-8")
    return ipynb, py


def test_checks_pass_a_good_lesson(tmp_path):
    _write_pair(tmp_path, "01_demo", _good_notebook("01_demo"))
    assert all_problems(tmp_path, "01_demo", REPO) == []


def test_no_outputs_check_fails_on_outputs(tmp_path):
    nb = _good_notebook("01_demo")
    nb.cells[2].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"},
                                                  execution_count=1)]
    nb.cells[2].execution_count = 1
    ipynb, _ = _write_pair(tmp_path, "01_demo", nb)
    problems = check_no_outputs(ipynb)
    assert len(problems) == 2 and "has outputs" in problems[0]
    assert all_problems(tmp_path, "01_demo", REPO) == problems


def test_sync_check_fails_on_edited_twin(tmp_path):
    ipynb, py = _write_pair(tmp_path, "01_demo", _good_notebook("01_demo"))
    py.write_text(py.read_text().replace("x = 1 + 1", "x = 1 + 2"))
    problems = check_in_sync(ipynb, py)
    assert problems and "cell 2" in problems[0] and "out of sync" in problems[0]


def test_sync_check_fails_on_added_cell(tmp_path):
    ipynb, py = _write_pair(tmp_path, "01_demo", _good_notebook("01_demo"))
    py.write_text(py.read_text() + "\n# %%\nprint('extra')\n")
    assert "has 4 cells" in check_in_sync(ipynb, py)[0]


def test_twin_check_fails_on_missing_twin(tmp_path):
    _, py = _write_pair(tmp_path, "01_demo", _good_notebook("01_demo"))
    py.unlink()
    assert check_twins(tmp_path, "01_demo") == [
        "01_demo.py is missing (run `make sync` to create it from its twin)"]


def test_badge_check_fails_on_other_repo_or_no_badge(tmp_path):
    ipynb, py = _write_pair(tmp_path, "01_demo", _good_notebook("01_demo", "https://github.com/a/b"))
    assert "expected exactly" in check_badge(ipynb, REPO)[0]
    assert "expected exactly" in check_badge(py, REPO)[0]
    nb = _good_notebook("01_demo")
    nb.cells[0].source = "# 01_demo\n\nNo badge here."
    ipynb, _ = _write_pair(tmp_path, "01_demo", nb)
    assert check_badge(ipynb, REPO) != []


def test_skeleton_check_fails_without_report_or_summary(tmp_path):
    nb = _good_notebook("01_demo")
    nb.cells[1].source = "import ftlab"
    nb.cells[3].source = "## The end"
    ipynb, _ = _write_pair(tmp_path, "01_demo", nb)
    problems = check_skeleton(ipynb)
    assert len(problems) == 2
    assert "report()" in problems[0] and "Summary" in problems[1]


def test_skeleton_check_fails_on_torch_install():
    assert TORCH_INSTALL_RE.search('%pip install -q torch==2.4 "ftlab @ git+x"')
    assert not TORCH_INSTALL_RE.search('%pip install -q "ftlab @ git+https://github.com/o/r@v1"')
    assert not TORCH_INSTALL_RE.search("%pip install torchvision-extra")


def test_sync_script_fixes_outputs_and_edited_twin(tmp_path):
    nb = _good_notebook("01_demo")
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    nb.cells[2].execution_count = 4
    ipynb, py = _write_pair(tmp_path, "01_demo", nb)
    py.write_text(py.read_text().replace("x = 1 + 1", "x = 40 + 2"))
    import os

    os.utime(py, (ipynb.stat().st_mtime + 5,) * 2)  # the .py was edited last: it wins
    assert sync_notebooks.main(["--check", str(py)]) == 1
    assert sync_notebooks.main([str(py)]) == 0
    assert all_problems(tmp_path, "01_demo", REPO) == []
    assert "x = 40 + 2" in nbformat.read(ipynb, as_version=4).cells[2].source
    assert py.stat().st_mtime >= ipynb.stat().st_mtime
    assert sync_notebooks.main(["--check", str(py)]) == 0


def test_sync_script_creates_missing_ipynb(tmp_path):
    _, py = _write_pair(tmp_path, "01_demo", _good_notebook("01_demo"))
    (tmp_path / "01_demo.ipynb").unlink()
    assert sync_notebooks.main([str(py)]) == 0
    assert all_problems(tmp_path, "01_demo", REPO) == []


def test_badges_script_rewrites_badge_and_install_line_in_both_twins(tmp_path):
    nb = _good_notebook("01_demo", "https://github.com/old/ftlab")
    nb.cells[1].source = ('%pip install -q "ftlab @ git+https://github.com/old/ftlab@v0.1.0"\n'
                          + nb.cells[1].source)
    _write_pair(tmp_path, "01_demo", nb)
    edits = badges.notebook_edits("01_demo", REPO, tmp_path)
    assert set(edits) == {tmp_path / "01_demo.ipynb", tmp_path / "01_demo.py"}
    for path, text in edits.items():  # the repository is REPO_URL's, the tag this version's
        path.write_text(text)
        assert f"git+https://github.com/someone/ftlab@v{ftlab.__version__}" in text
        assert "github.com/old" not in text
    assert all_problems(tmp_path, "01_demo", REPO) == []
    assert badges.notebook_edits("01_demo", REPO, tmp_path) == {}


def test_badge_is_inserted_after_title_when_missing():
    source = "# 03 · PEFT methods\n\nWhat you will learn."
    fixed = badges.fix_title_cell(source, "BADGE")
    assert fixed == "# 03 · PEFT methods\n\nBADGE\n\nWhat you will learn."


def test_colab_url_from_repo_url():
    for url in ("https://github.com/o/r", "https://github.com/o/r.git", "https://github.com/o/r/"):
        assert badges.colab_url(url, "00_start_here.ipynb") == (
            "https://colab.research.google.com/github/o/r/blob/main/notebooks/00_start_here.ipynb")
    with pytest.raises(ValueError, match="GitHub"):
        badges.repo_slug("https://gitlab.com/o/r")


def test_lesson_table_lists_every_planned_lesson(tmp_path):
    _write_pair(tmp_path, "02_lora_from_scratch", _good_notebook("02_lora_from_scratch"))
    table = badges.lesson_table(REPO, tmp_path).splitlines()
    rows = table[2:]
    assert [r.split("|")[1].strip() for r in rows] == [f"{i:02d}" for i in range(12)]
    assert "colab.research.google.com/github/someone/ftlab/blob/main/notebooks/02_lora" in rows[2]
    assert all("coming" in r for i, r in enumerate(rows) if i != 2)


def test_lessons_toml_lists_exactly_the_notebooks_on_disk():
    """notebooks/lessons.toml is the one list of lessons: every listed lesson has its notebook and
    twin, every notebook is listed, in number order; make lessons / rehearse run that list."""
    import tomllib

    run_lessons = load_script("run_lessons")
    stems = [f"{e['number']}_{e['slug']}" for e in tomllib.loads((NOTEBOOKS / "lessons.toml").read_text())["lesson"]]
    assert [lesson.stem for lesson in badges.LESSONS] == stems
    assert stems == sorted(stems) and len(set(stems)) == len(stems)
    on_disk = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert stems == on_disk
    assert all((NOTEBOOKS / f"{s}.py").is_file() for s in stems)
    assert [p.stem for p in run_lessons.lesson_files([])] == stems
    assert [p.stem for p in run_lessons.lesson_files(["04", "10"])] == ["04_qlora", "10_scaling_out"]


def test_lesson_table_minutes_come_from_the_rehearsals_estimate(tmp_path):
    """The "minutes (full)" column is docs/lesson_minutes.json, written by `make rehearse`; a lesson
    it does not list shows "?" rather than a typed guess."""
    import json

    minutes = tmp_path / "minutes.json"
    minutes.write_text(json.dumps({"how": "test", "minutes": {"02_lora_from_scratch": {"t4": 7, "l4": 4}}}))
    rows = badges.lesson_table(REPO, tmp_path, minutes).splitlines()[2:]
    assert rows[2].endswith("| ~7 / ~4 |")
    assert rows[3].endswith("| ? |")
    shipped = json.loads(badges.MINUTES.read_text())["minutes"]
    assert sorted(shipped) == [lesson.stem for lesson in badges.LESSONS]
    assert all(set(cards) == {"t4", "l4"} and cards["l4"] <= cards["t4"] for cards in shipped.values())


def _drill_cells(drill_id: str, answer: str, solution: str):
    v4 = nbformat.v4
    return [v4.new_code_cell(f"answer = {answer}", metadata={"tags": ["answer"]}),
            v4.new_code_cell(f"check({drill_id!r}, answer)"),
            v4.new_code_cell(f"{SOLUTION_TITLE}\nanswer = {solution}\ncheck({drill_id!r}, answer)",
                             metadata={"tags": ["solution"], "cellView": "form"})]


def test_drill_cell_check_passes_a_good_drill_and_catches_a_missing_solution(tmp_path):
    nb = _good_notebook("00_start_here")
    nb.cells[2:2] = _drill_cells("00a", "...", "16 * 4") + _drill_cells("00b", "...", "'b'")
    nb.cells[8:8] = _drill_cells("00c", "...", "312 / 303") + _drill_cells("00d", "...", "lambda s, c: s / c.sum()")
    ipynb, _ = _write_pair(tmp_path, "00_start_here", nb)
    assert check_drill_cells(ipynb) == []
    del nb.cells[4]  # 00a's solution
    nb.cells[4].metadata = {}  # 00b's answer cell loses its tag
    nb.cells[6].metadata = {"tags": ["solution"]}  # ... and its solution is not a form
    ipynb, _ = _write_pair(tmp_path, "00_start_here", nb)
    problems = check_drill_cells(ipynb)
    assert len(problems) == 3, problems
    assert "followed by a solution" in problems[0] and "answer cell" in problems[1]
    assert "Colab form" in problems[2]


def test_drill_cell_check_catches_unknown_and_missing_drills(tmp_path):
    nb = _good_notebook("00_start_here")
    nb.cells[2:2] = _drill_cells("zz9", "...", "1")
    ipynb, _ = _write_pair(tmp_path, "00_start_here", nb)
    problems = check_drill_cells(ipynb)
    assert any("unknown drills ['zz9']" in p for p in problems)
    assert any("not in it: ['00a', '00b', '00c', '00d']" in p for p in problems)
