"""The Colab set-up cell: the same install block in every lesson, pinned to this version with the
quant extra, overridable through FTLAB_INSTALL, and never touching torch.

The cell's own source is executed here with a fake ``google.colab`` in ``sys.modules`` and
``subprocess.run`` replaced, so the pip command it would run on Colab is captured, not run.
``make rehearse-colab`` runs it for real (scripts/colab_rehearsal.py).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

import ftlab

from lesson_cells import load_script

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
PIN = f"ftlab[quant] @ git+{ftlab.REPO_URL}@v{ftlab.__version__}"


def setup_cell(ipynb: Path) -> str:
    """The source of the lesson's first code cell."""
    nb = nbformat.read(ipynb, as_version=4)
    return next(c for c in nb.cells if c.cell_type == "code").source


def install_block(source: str) -> str:
    """The set-up cell up to its first ``from ftlab`` import: the part every lesson shares (the
    names each lesson imports from ftlab.runtime after it are its own)."""
    head, sep, _ = source.partition("\nfrom ftlab")
    assert sep, "the set-up cell imports nothing from ftlab"
    return head.rstrip()


def run_install_block(source: str, monkeypatch, env: dict[str, str] | None = None) -> list[dict]:
    """Exec the install block as on Colab: a fake google.colab imported, subprocess.run captured.
    Returns one dict per pip call: the command and the constraints file's lines."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.delenv("FTLAB_INSTALL", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    calls = []

    def fake_run(cmd, *args, **kwargs):
        constraints = []
        if "-c" in cmd:
            path = Path(cmd[cmd.index("-c") + 1])
            constraints = path.read_text().splitlines()
            path.unlink()
        calls.append({"cmd": list(cmd), "kwargs": kwargs, "constraints": constraints})
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    exec(compile(install_block(source), "<set-up cell>", "exec"), {"__name__": "__main__"})
    return calls


def test_every_lesson_has_the_same_install_block():
    assert len(LESSONS) == 12
    blocks = {ipynb.name: install_block(setup_cell(ipynb)) for ipynb in LESSONS}
    first = blocks[LESSONS[0].name]
    assert [name for name, block in blocks.items() if block != first] == []
    assert f'FTLAB_PIN = "{PIN}"' in first
    assert 'os.environ.get("FTLAB_INSTALL", FTLAB_PIN)' in first
    assert "FTLAB_INSTALL" in first.split("os.environ")[0]  # said in a comment before it is used


@pytest.mark.parametrize("ipynb", LESSONS, ids=lambda p: p.stem)
def test_twin_py_has_the_same_install_block(ipynb):
    import jupytext

    nb = jupytext.read(ipynb.with_suffix(".py"), fmt="py:percent")
    source = next(c for c in nb.cells if c.cell_type == "code").source
    assert install_block(source) == install_block(setup_cell(ipynb))


def test_on_colab_the_cell_installs_the_pinned_release_with_quant_and_keeps_torch(monkeypatch):
    calls = run_install_block(setup_cell(LESSONS[0]), monkeypatch)
    assert len(calls) == 1
    cmd = calls[0]["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[-1] == PIN == f"ftlab[quant] @ git+https://github.com/ftlab-course/ftlab@v{ftlab.__version__}"
    assert calls[0]["kwargs"] == {"check": True}
    assert calls[0]["constraints"] == [f"torch=={md.version('torch')}", f"torchvision=={md.version('torchvision')}"]
    assert not any(arg.startswith(("torch", "-U", "--upgrade")) for arg in cmd)


def test_ftlab_install_replaces_the_pin(monkeypatch):
    wheel = "ftlab[quant] @ file:///tmp/colab-wheel/ftlab-9.9.9-py3-none-any.whl"
    calls = run_install_block(setup_cell(LESSONS[-1]), monkeypatch, {"FTLAB_INSTALL": wheel})
    cmd = calls[0]["cmd"]
    assert cmd[-1] == wheel and PIN not in cmd
    assert cmd[cmd.index("-c") + 1 :][1:] == [wheel]  # the constraints still come first
    assert calls[0]["constraints"] == [f"torch=={md.version('torch')}", f"torchvision=={md.version('torchvision')}"]


def test_off_colab_the_cell_installs_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(compile(install_block(setup_cell(LESSONS[0])), "<set-up cell>", "exec"), {"__name__": "__main__"})
    assert calls == []


def test_pin_is_a_pep508_requirement_with_the_quant_extra():
    from packaging.requirements import Requirement

    req = Requirement(PIN)
    assert (req.name, req.extras, req.url) == ("ftlab", {"quant"},
                                               f"git+{ftlab.REPO_URL}@v{ftlab.__version__}")


def test_badges_rewrites_a_stale_pin_to_repo_url_and_this_version():
    badges = load_script("badges")
    stale = 'FTLAB_PIN = "ftlab[quant] @ git+https://github.com/old/ftlab@v0.2.0"'
    fixed = badges.fix_install_line(stale, "https://github.com/someone/ftlab", "0.3.0")
    assert fixed == 'FTLAB_PIN = "ftlab[quant] @ git+https://github.com/someone/ftlab@v0.3.0"'
    assert badges.fix_install_line('"ftlab @ git+https://github.com/o/r"', "https://github.com/o/r", "1.0") == \
        '"ftlab @ git+https://github.com/o/r@v1.0"'


def _ftlab_imports(source: str) -> list[tuple[str, str]]:
    """(module, name) for every ``from ftlab... import name`` in ``source``."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return []
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ftlab"
            for alias in node.names]


def test_this_version_has_every_name_the_lessons_import():
    """The pin is only right if the release it names has what the lessons import."""
    import importlib

    missing = []
    for ipynb in LESSONS:
        nb = nbformat.read(ipynb, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            for module, name in _ftlab_imports(cell.source):
                mod = importlib.import_module(module)
                if not hasattr(mod, name) and importlib.util.find_spec(f"{module}.{name}") is None:
                    missing.append(f"{ipynb.stem}: from {module} import {name}")
    assert missing == []


def test_colab_preinstalled_list_keeps_torch_out_and_trl_bitsandbytes_out():
    rehearsal = load_script("colab_rehearsal")
    reqs = rehearsal.preinstalled()
    names = {r.split("==")[0].lower() for r in reqs}
    assert all("==" in r for r in reqs)  # exact versions: a rehearsal of one runtime
    assert not names & {"torch", "torchvision", "trl", "bitsandbytes", "ftlab"}
    assert {"transformers", "peft", "accelerate", "datasets", "ipywidgets", "ipykernel", "nbclient"} <= names
    assert next(r for r in reqs if r.startswith("ipywidgets==")).startswith("ipywidgets==7.")


STUB_CHECK = """
import sys
import google.colab
from google.colab import output, userdata
assert "google.colab" in sys.modules and google.colab.IS_STUB
output.enable_custom_widget_manager()
assert output.custom_widget_manager_enabled is True
assert userdata.get("HF_TOKEN") == "hf_x"
try:
    userdata.get("OTHER")
except userdata.SecretNotFoundError:
    print("stub ok")
"""


def test_colab_stub_answers_like_colab():
    """In a child process (an imported google.colab would make ftlab think it runs on Colab)."""
    stub = ROOT / "scripts" / "colab_stub"
    assert not (stub / "google" / "__init__.py").exists()  # a namespace: google.protobuf still imports
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(stub), "COLAB_SECRET_HF_TOKEN": "hf_x"}
    result = subprocess.run([sys.executable, "-c", STUB_CHECK], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stub ok"
