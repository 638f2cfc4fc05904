"""How `make test` runs the lessons: each exactly twice, in one kernel, with the lesson named on failure.

The first tests run tests/test_lessons_rerun.py in a child pytest on a folder of small notebooks
(FTLAB_NOTEBOOKS): a lesson that passes, one that fails on its first run, one that fails only on
the second "Run all", one whose headline changes between the runs and one whose headline differs
only in parentheses. The last ones read `make -n` to check that `make test` executes the lessons
in one pytest session, once (no nbmake pass besides the re-run test), on pytest-xdist workers with
one torch thread each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
RERUN = "tests/test_lessons_rerun.py::test_run_all_twice_in_one_kernel"

LESSONS = {
    "00_fine": ['runs = globals().get("runs", 0) + 1',
                'print(f"Headline: tiny: answer 42 (run {runs}, {runs * 1.5} s)")'],
    "01_breaks": ['print("Headline: never")', 'raise ValueError("the set-up went wrong")'],
    "02_twice": ['assert "seen" not in globals(), "state left by the first run"\nseen = True',
                 'print("Headline: tiny: fine once")'],
    "03_drifts": ['import random', 'print(f"Headline: tiny: {random.random():.6f}")'],
    "04_silent": ['print("no headline here")'],
}


def _write(folder: Path, stem: str, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {stem}")]
                                  + [nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{stem}.ipynb")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    """What the child pytest said about each lesson: {stem: (PASSED|FAILED, its summary line)}."""
    folder = tmp_path_factory.mktemp("lessons")
    for stem, cells in LESSONS.items():
        _write(folder, stem, cells)
    env = {**os.environ, "FTLAB_NOTEBOOKS": str(folder), "NB_CELL_TIMEOUT": "60", "OMP_NUM_THREADS": "1",
           "COLUMNS": "1000"}  # summary lines in full
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-rA", RERUN.split("::")[0]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    out = done.stdout + done.stderr
    found = {m.group(2): (m.group(1), m.group(0))
             for m in re.finditer(r"^(PASSED|FAILED) " + re.escape(RERUN) + r"\[(\w+)\].*$", out, re.M)}
    return done.returncode, found, out


def test_only_the_folder_named_by_ftlab_notebooks_runs(outcome):
    rc, found, out = outcome
    assert set(found) == set(LESSONS), out[-3000:]
    assert rc == 1  # some failed: pytest's exit code for failures


def test_a_lesson_that_runs_twice_alike_passes_and_parenthesised_text_may_differ(outcome):
    _, found, out = outcome
    assert found["00_fine"][0] == "PASSED", out[-3000:]


def test_a_failing_lesson_is_named_with_its_run_and_cell(outcome):
    _, found, out = outcome
    status, line = found["01_breaks"]
    assert status == "FAILED"
    assert "01_breaks.ipynb failed in a fresh kernel (run 1 of 2), cell 2" in line, line
    assert "ValueError: the set-up went wrong" in out


def test_state_that_trips_the_second_run_all_fails_the_lesson(outcome):
    _, found, out = outcome
    status, line = found["02_twice"]
    assert status == "FAILED"
    assert ("02_twice.ipynb failed on the second Run all in the same kernel (answers filled in, "
            "FTLAB_DRILLS=strict) (run 2 of 2), cell 1") in line, line
    assert "state left by the first run" in out


def test_headlines_must_agree_between_the_runs(outcome):
    _, found, out = outcome
    status, line = found["03_drifts"]
    assert status == "FAILED"
    assert "03_drifts.ipynb: the second Run all printed other headlines than the first" in line, line


def test_a_lesson_without_a_headline_fails(outcome):
    _, found, _ = outcome
    status, line = found["04_silent"]
    assert status == "FAILED" and "04_silent.ipynb printed no Headline: line" in line, line


def test_a_bad_cell_timeout_is_named(monkeypatch):
    from test_lessons_rerun import cell_timeout

    for bad in ("five", "0", "-3"):
        monkeypatch.setenv("NB_CELL_TIMEOUT", bad)
        with pytest.raises(ValueError, match=rf"NB_CELL_TIMEOUT='{bad}'.*whole number of seconds"):
            cell_timeout()
    monkeypatch.setenv("NB_CELL_TIMEOUT", "42")
    assert cell_timeout() == 42
    monkeypatch.delenv("NB_CELL_TIMEOUT")
    assert cell_timeout() == 300


def test_lessons_and_the_slowest_unit_tests_are_collected_first():
    """xdist hands out tests in collection order: the long ones first, so none starts last."""
    import conftest

    class Callspec:
        def __init__(self, id):
            self.id = id

    class Item:
        def __init__(self, nodeid, lesson=None):
            self.nodeid, self.lesson = nodeid, lesson
            if lesson:
                self.callspec = Callspec(lesson)

        def get_closest_marker(self, name):
            return object() if name == "lessons" and self.lesson else None

    ddp = "tests/test_ddp.py::test_dpo_on_two_processes_matches_one_process_with_grad_accum_2"
    llama = "tests/test_memory.py::test_the_llama_3_2_1b_architecture_quantized_on_cpu_matches_the_static_estimate"
    items = [Item("tests/test_adapters.py::test_a"), Item(ddp), Item(f"{RERUN}[08_a]", lesson="08_a"),
             Item("tests/test_adapters.py::test_b"), Item(llama), Item(f"{RERUN}[03_b]", lesson="03_b"),
             Item(f"{RERUN}[99_new]", lesson="99_new")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == [f"{RERUN}[03_b]", f"{RERUN}[99_new]", llama, f"{RERUN}[08_a]", ddp,
                                         "tests/test_adapters.py::test_a", "tests/test_adapters.py::test_b"]
    # a lesson runs twice: even the shortest (08) outlasts the DDP test
    assert 2 * conftest.LESSON_SECONDS["03"] > 2 * conftest.LESSON_DEFAULT_SECONDS > conftest.SLOW_SECONDS[llama]
    assert 2 * conftest.LESSON_SECONDS["08"] > conftest.SLOW_SECONDS[ddp] > 0


# ---------------------------------------------------------------------------------------------
# make test, as make would run it (make -n prints the commands without running them)


def _dry_run(*args: str) -> list[str]:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert done.returncode == 0, done.stderr
    # the pytest commands only (make -n also prints the venv's install recipe when it is stale)
    return [line for line in done.stdout.splitlines() if " -m pytest " in line]


def test_make_test_runs_the_lessons_once_in_one_xdist_session_with_one_thread():
    (command,) = _dry_run("test")  # one pytest session: unit tests and lessons together
    assert "--nbmake" not in command  # the lessons run only in tests/test_lessons_rerun.py
    assert " tests " in command and '-m "not standins"' in command
    assert "OMP_NUM_THREADS=1" in command and "NB_CELL_TIMEOUT=300" in command
    assert re.search(r" -n 2 --maxschedchunk 1\b", command), command
    assert "FTLAB_NOTEBOOKS=notebooks" in command


def test_test_unit_and_test_notebooks_split_the_same_session():
    (unit,) = _dry_run("test-unit")
    assert '-m "not standins and not lessons"' in unit
    (lessons,) = _dry_run("test-notebooks", "NOTEBOOKS=elsewhere", "TEST_WORKERS=0", "NB_CELL_TIMEOUT=90")
    assert "tests/test_lessons_rerun.py" in lessons and "FTLAB_NOTEBOOKS=elsewhere" in lessons
    assert "NB_CELL_TIMEOUT=90" in lessons and " -n " not in lessons  # TEST_WORKERS=0: no xdist


def test_the_headless_client_does_not_play_the_output_widget_front_end(tmp_path):
    """Every lesson runner (make lessons, make rehearse, make test) uses run_lessons.headless_client.
    It leaves out nbclient's mimic of an Output widget's front end, which sends on the shell channel
    while the client waits there for the cell's reply and can hang a run for good (nbclient issue
    312; lessons 02 and 06 hung this way). An explorer (ipywidgets.interactive) still runs, what it
    prints lands in the cell's output, and the widget's state is still recorded."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_lessons", ROOT / "scripts" / "run_lessons.py")
    run_lessons = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_lessons", run_lessons)  # its dataclasses look their module up there
    spec.loader.exec_module(run_lessons)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import ipywidgets as w\n"
        "print('Memory plan: printed before the explorer')\n"
        "w.interactive(lambda beta: print(f'beta is {beta}'), beta=w.FloatSlider(value=0.5))")])
    client = run_lessons.headless_client(nb, tmp_path, 60)
    client.execute()
    assert client.comm_objects == {}  # no Output widget played, so nothing was sent back
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream")
    assert "beta is 0.5" in text
    assert "Memory plan: printed before the explorer" in text  # the explorer's clear_output wipes nothing
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in nb.cells[0].outputs)  # the widget itself
    assert client.widget_state  # its state is kept in the executed notebook
    from nbclient import NotebookClient

    default = NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3")
    assert default.comm_open_handlers["jupyter.widget"].__name__ == "on_comm_open_jupyter_widget"
