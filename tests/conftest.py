"""Test markers, the order tests start in, and the fixtures several test files share.

Markers:

``standins``: tests that build the hub stand-ins (scripts/build_standins.py) and load them offline
through the real loaders. They take about a minute, so `make test` leaves them out
(``-m "not standins"``) and `make rehearse`, which needs the stand-ins anyway, runs them first.

``lessons``: every lesson run twice in one kernel (tests/test_lessons_rerun.py). `make test` runs
them with the unit tests; `make test-unit` leaves them out, `make test-notebooks` runs only them.

Order: `make test` spreads the tests over pytest-xdist workers one at a time, in collection order,
so the long ones go first (:func:`pytest_collection_modifyitems`): a long test started last keeps
one worker busy while the others sit idle.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Seconds a test takes on 2 busy cores, one torch thread (pytest --durations), for the tests over
# 10 s; the longest start first (see pytest_collection_modifyitems). A scheduling hint only: a test
# renamed or missing here starts in its usual place.
# Each lesson's seconds under `make lessons` (build/lessons/summary.md); make test runs it twice.
LESSON_SECONDS = {"00": 17, "01": 29, "02": 16, "03": 52, "04": 25, "05": 26, "06": 30, "07": 14, "08": 12, "11": 50,
                  "09": 31, "10": 17}
LESSON_DEFAULT_SECONDS = 45  # a lesson not listed above
SLOW_SECONDS = {
    "tests/test_memory.py::test_the_llama_3_2_1b_architecture_quantized_on_cpu_matches_the_static_estimate": 73,
    "tests/test_ddp.py::test_dpo_on_two_processes_matches_one_process_with_grad_accum_2": 22,
    "tests/test_ddp.py::test_two_processes_match_one_process_with_grad_accum_2": 13,
    "tests/test_text_world.py::test_pretrained_encoder_fine_tunes_better_than_random_init": 11,
    "tests/test_packaging.py::test_installed_wheel_finds_its_own_data": 11,
}


def pytest_configure(config):
    config.addinivalue_line("markers", "standins: builds and loads the hub stand-ins (run by make rehearse)")
    config.addinivalue_line("markers", "lessons: runs a lesson twice in one kernel (make test, make test-notebooks)")


def expected_seconds(item) -> float:
    """About how long ``item`` runs: twice its LESSON_SECONDS for a lesson, SLOW_SECONDS's entry,
    else 0."""
    if item.get_closest_marker("lessons"):
        number = item.callspec.id[:2] if hasattr(item, "callspec") else ""
        return 2 * LESSON_SECONDS.get(number, LESSON_DEFAULT_SECONDS)
    return SLOW_SECONDS.get(item.nodeid, 0)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -expected_seconds(item))  # stable: otherwise pytest's own order


@pytest.fixture
def not_strict(monkeypatch):
    """Drill checks report instead of raising, whatever FTLAB_DRILLS the shell set. The lesson pieces'
    tests use it (``pytestmark = pytest.mark.usefixtures("not_strict")``): they check blanks and
    known-wrong answers on purpose."""
    monkeypatch.delenv("FTLAB_DRILLS", raising=False)


# ---------------------------------------------------------------------------------------------
# Shared fixtures


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Every test computes on one torch thread (`make test` also sets OMP_NUM_THREADS=1): the tests'
    tiny ops spend more time handing work between threads than computing (about 10x slower with 2
    threads on 2 shared cores), and two xdist workers already fill the cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def card(monkeypatch):
    """``card("t4")`` simulates that card (FTLAB_SIMULATE_GPU) for this test; returns its GPU record."""
    from ftlab import runtime

    def use(name):
        monkeypatch.setenv("FTLAB_SIMULATE_GPU", name)
        return runtime.simulated_gpu()
    return use


@pytest.fixture
def tinyllama_shaped():
    """``tinyllama_shaped(dtype)``: a fresh model with TinyLlama's depth, vocabulary and repo id and
    tiny widths, seeded, which ftlab.budget prices at real size (1,100,048,384 parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(dtype=torch.float16, layers=22):
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=32000, max_position_embeddings=256)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype)
        model.config._name_or_path = "TinyLlama/TinyLlama_v1.1"
        return model
    return make


def _rehearse_module():
    spec = importlib.util.spec_from_file_location("rehearse", ROOT / "scripts" / "rehearse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def rehearse():
    """scripts/rehearse.py as a module (its STANDINS folder, ensure_standins, standin_env)."""
    return _rehearse_module()


@pytest.fixture(scope="session")
def standins(rehearse) -> Path:
    """The rehearsal's hub stand-ins, build/standins/: built by `make rehearse`, rebuilt here when a
    builder script is newer than its manifest, so the tests and the rehearsal share one build."""
    rehearse.ensure_standins(rehearse.STANDINS)
    return rehearse.STANDINS
