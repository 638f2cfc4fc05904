"""A pip-installed ftlab (as on Colab, where only the notebook comes from the repository) finds
the micro-world: data/ ships inside the wheel as ftlab/_data.

One wheel is built per test session (about 10-30 s on 2 cores, most of it copying data/ and
importing torch in the subprocess). It is built from a copy of the sources, so that a stale
build/ folder in the checkout can never leak old files into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ftlab

ROOT = Path(__file__).resolve().parent.parent
# Under data/, these are caches or editor litter, not artifacts: they need not ship.
SKIP_DIRS = {"__pycache__", ".cache", "cache", ".ipynb_checkpoints"}


def _is_shipped(rel: Path) -> bool:
    return not (any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts)
                or rel.suffix == ".pyc")


def data_artifacts() -> list[str]:
    """Every file under data/ that the wheel must carry, relative to data/, as posix paths."""
    data = ROOT / "data"
    return sorted(p.relative_to(data).as_posix() for p in data.rglob("*")
                  if p.is_file() and _is_shipped(p.relative_to(data)))


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIP_DIRS or n.endswith(".pyc") or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("ftlab", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=_ignore)
    dist = work / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dist), str(src))
    (whl,) = dist.glob("ftlab-*.whl")
    return whl


def test_wheel_is_named_for_the_package_version(wheel):
    assert wheel.name.startswith(f"ftlab-{ftlab.__version__}-py3-none-any")


def test_wheel_ships_the_micro_world_and_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ftlab/_data/README.md" in names
    assert "ftlab/__init__.py" in names and "ftlab/runtime.py" in names
    missing = [rel for rel in data_artifacts() if f"ftlab/_data/{rel}" not in names]
    assert missing == [], f"data/ files not in the wheel: {missing}"
    root = Path(ftlab.__file__).resolve().parent
    modules = [f"ftlab/{p.relative_to(root).as_posix()}" for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    left_out = [m for m in modules if m not in names]
    assert left_out == [], f"package modules not in the wheel (add their package to pyproject.toml): {left_out}"


def test_installed_wheel_finds_its_own_data(wheel, tmp_path):
    target = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--quiet", "--target", str(target), str(wheel))

    # cwd and PYTHONPATH keep the checkout off the path: ftlab must come from the target.
    env = {k: v for k, v in os.environ.items() if k not in ("FTLAB_DATA", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    # ... and the micro-world loads from the wheel: the tiny LM, its tokenizer and a dataset.
    code = ("import ftlab, ftlab.runtime as rt; from ftlab.models import load_causal_lm; "
            "from ftlab.data import load_instructions; "
            "from ftlab.drills import check; assert check('d1', (131072, '0.78%')).passed; "
            "m, t = load_causal_lm(profile='tiny'); n = len(load_instructions('test')); "
            "print(type(m).__name__, len(t), n); print(ftlab.__file__); "
            "d = rt.data_dir(); print(d); print((d / 'README.md').is_file())")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded, module_file, data_dir, has_readme = result.stdout.strip().splitlines()[-4:]
    assert loaded == "LlamaForCausalLM 768 150", loaded
    assert Path(module_file).resolve().is_relative_to(target.resolve()), module_file
    assert Path(data_dir).resolve() == (target / "ftlab" / "_data").resolve()
    assert has_readme == "True"
