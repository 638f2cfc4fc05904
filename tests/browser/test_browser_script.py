"""scripts/browser_test.py, the check behind `make browser-test`.

The first tests pin how it reads a cell's outputs (always run). The canary runs the whole script
in headless Chromium on two made-up notebooks, one healthy and one whose explorer breaks when its
slider moves, and asserts that it passes the first and fails the second, naming the traceback:
proof that the browser test can fail. It needs JupyterLab, selenium and Chromium, and takes
about a minute, so `make browser-test` runs it (FTLAB_BROWSER_TESTS=1) and `make test` skips it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("browser_test", ROOT / "scripts" / "browser_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(outputs, index=3, head="train(model)"):
    return {"index": index, "count": 1, "prompt": "[1]:", "head": head, "outputs": outputs}


def test_errors_in_names_each_error_output_and_stderr_traceback_and_nothing_else():
    bt = _script()
    fine = [{"type": "stream", "name": "stdout", "text": "loss 0.3\n"},
            {"type": "stream", "name": "stderr", "text": "UserWarning: something is deprecated\n"},
            {"type": "display_data", "name": None, "text": ""}]
    assert bt.errors_in({"cells": [_cell(fine)]}) == []
    error = {"type": "error", "name": None, "ename": "ValueError", "evalue": "r must be positive", "text": ""}
    stderr = {"type": "stream", "name": "stderr",
              "text": "Traceback (most recent call last):\n  File 'x'\nKeyError: 'q_proj'\n"}
    found = bt.errors_in({"cells": [_cell(fine), _cell([error], index=5, head="lora(r=0)"),
                                    _cell([stderr], index=7, head="merge()")]})
    assert found == ["cell 5 ('lora(r=0)'): ValueError: r must be positive",
                     "cell 7 ('merge()'): a traceback on stderr: KeyError: 'q_proj'"]


def test_the_default_lessons_are_the_two_with_explorers_and_exist():
    bt = _script()
    assert bt.LESSONS == ("07_memory_budget", "02_lora_from_scratch")
    for name in bt.LESSONS:
        assert (ROOT / "notebooks" / f"{name}.ipynb").exists()
        assert "_explorer(" in (ROOT / "notebooks" / f"{name}.py").read_text()


def test_it_says_what_to_install_when_chromium_is_missing(tmp_path, capsys):
    bt = _script()
    code = bt.main(["--chromium", "", "--chromedriver", "", "--out", str(tmp_path)])
    assert code == 1
    assert "apt-get install -y chromium chromium-driver" in capsys.readouterr().out


CANARY = '''import ftlab.widgets as w
real = w.beta_explorer_data
def maybe_broken(beta, *args):
    if BREAK and beta != 1.0:
        raise ValueError("canary: the explorer's function failed")
    return real(beta, *args)
w.beta_explorer_data = maybe_broken'''


def _canary(folder: Path, name: str, broken: bool):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"),
                nbformat.v4.new_code_cell(f"BREAK = {broken}\n" + CANARY),
                nbformat.v4.new_code_cell('w.beta_explorer([0.6, 0.4], [1.0, -1.0], ["yes", "no"], beta=1.0)')]
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.mark.skipif(os.environ.get("FTLAB_BROWSER_TESTS") != "1",
                    reason="needs Chromium and JupyterLab: make browser-test runs it")
def test_canary_a_healthy_explorer_passes_and_one_that_breaks_when_its_slider_moves_fails(tmp_path, capsys):
    assert shutil.which("chromium") and shutil.which("chromedriver"), "install chromium and chromium-driver"
    bt = _script()
    _canary(tmp_path, "canary_healthy", broken=False)
    _canary(tmp_path, "canary_broken", broken=True)
    out = tmp_path / "out"
    code = bt.main(["canary_healthy", "canary_broken", "--notebooks", str(tmp_path), "--out", str(out),
                    "--timeout", "300", "--cell-timeout", "120"])
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert code == 1 and not summary["passed"], printed
    (healthy,) = summary["results"]
    assert healthy["lesson"] == "canary_healthy" and healthy["slider"] == "beta", healthy
    assert healthy["output_before"].startswith("beta = 1:") and healthy["output_after"].startswith("beta = "), healthy
    assert healthy["output_after"] != healthy["output_before"]
    assert (out / "canary_healthy.png").stat().st_size > 10_000
    failure = [line for line in printed.splitlines() if "FAILED" in line]
    assert len(failure) == 1 and "canary_broken" in failure[0] and "traceback" in failure[0], printed
    assert "canary: the explorer's function failed" in failure[0], printed
    assert (out / "canary_broken_failed.png").exists()
    assert not (tmp_path / "canary_broken.py").exists()      # the notebooks were copied, not used in place


def test_last_line_is_the_error_and_its_message():
    bt = _script()
    assert bt.last_line("----\nValueError   Traceback (most recent call last)\nFile x.py:3\n\nValueError: r = 0\n\n") \
        == "ValueError: r = 0"
    assert bt.last_line("  \n") == ""
