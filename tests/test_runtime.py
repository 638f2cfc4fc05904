"""ftlab.runtime: profiles, precision per GPU, seeds, Colab detection, the report, data_dir."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ftlab import runtime


@pytest.fixture
def no_env(monkeypatch):
    for name in ("FTLAB_PROFILE", "FTLAB_DATA", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _fake_gpu(monkeypatch, capability, bf16_supported=True):
    """Pretend a CUDA GPU of ``capability`` is present (``None``: no GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)


# --- profile -------------------------------------------------------------------------------------


def test_profile_unset_is_tiny_without_cuda(no_env):
    _fake_gpu(no_env, None)
    assert runtime.profile() == "tiny"


def test_profile_unset_is_full_with_cuda(no_env):
    _fake_gpu(no_env, (7, 5))
    assert runtime.profile() == "full"


def test_profile_empty_string_means_unset(no_env):
    _fake_gpu(no_env, None)
    no_env.setenv("FTLAB_PROFILE", "  ")
    assert runtime.profile() == "tiny"


@pytest.mark.parametrize("value, expected", [
    ("tiny", "tiny"), ("full", "full"), ("TINY", "tiny"), (" Full\n", "full"), ("\ttiny ", "tiny"),
])
def test_profile_explicit_wins_over_hardware(no_env, value, expected):
    _fake_gpu(no_env, (8, 0) if expected == "tiny" else None)  # the opposite of the default
    no_env.setenv("FTLAB_PROFILE", value)
    assert runtime.profile() == expected


def test_profile_unknown_value_names_the_valid_ones(no_env):
    no_env.setenv("FTLAB_PROFILE", "medium")
    with pytest.raises(ValueError) as err:
        runtime.profile()
    message = str(err.value)
    assert "medium" in message and "tiny" in message and "full" in message


def test_resolve_profile_checks_an_explicit_value(no_env):
    no_env.setenv("FTLAB_PROFILE", "full")
    assert runtime.resolve_profile(None) == "full"
    assert runtime.resolve_profile("tiny") == "tiny"
    with pytest.raises(ValueError, match="tiny"):
        runtime.resolve_profile("small")


# --- precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize("capability, dtype", [
    ((7, 5), torch.float16),   # T4
    ((7, 0), torch.float16),   # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4
    ((9, 0), torch.bfloat16),  # H100
    (None, torch.float32),     # CPU
])
def test_dtype_for_capability(capability, dtype):
    assert runtime.dtype_for_capability(capability) is dtype


def test_amp_dtype_is_fp16_on_a_t4_even_if_torch_claims_bf16(no_env):
    _fake_gpu(no_env, (7, 5), bf16_supported=True)  # torch says yes on a T4: emulated, slow
    assert runtime.amp_dtype() is torch.float16


def test_amp_dtype_is_bf16_on_an_l4(no_env):
    _fake_gpu(no_env, (8, 9))
    assert runtime.amp_dtype() is torch.bfloat16


def test_amp_dtype_is_fp32_on_cpu(no_env):
    _fake_gpu(no_env, None)
    assert runtime.amp_dtype() is torch.float32


def test_device_follows_cuda(no_env):
    _fake_gpu(no_env, None)
    assert runtime.device() == torch.device("cpu")
    _fake_gpu(no_env, (7, 5))
    assert runtime.device() == torch.device("cuda")


# --- seeds ---------------------------------------------------------------------------------------


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), torch.randn(2).tolist()


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    assert runtime.seed_everything(123) == 123
    first = _draws()
    runtime.seed_everything(123)
    assert _draws() == first
    runtime.seed_everything(124)
    assert _draws() != first


def test_seed_everything_accepts_seeds_past_numpys_range():
    runtime.seed_everything(2**40)  # numpy takes seeds < 2**32; the seed is reduced for it


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        runtime.seed_everything(bad)


# --- where am I ----------------------------------------------------------------------------------


def test_in_colab_false_here_true_with_colab_env(no_env):
    assert runtime.in_colab() is False
    no_env.setenv("COLAB_RELEASE_TAG", "release-colab_20260101")
    assert runtime.in_colab() is True


def test_report_prints_profile_versions_and_device(no_env, capsys):
    no_env.setenv("FTLAB_PROFILE", "tiny")
    info = runtime.report()
    out = capsys.readouterr().out
    assert out.startswith("ftlab environment")
    for key in ("profile", "torch", "device", "python", "transformers", "amp_dtype", "gpu"):
        assert key in info, key
        assert any(line.split()[:1] == [key] for line in out.splitlines()), key
    assert info["profile"] == "tiny"
    assert info["torch"] == torch.__version__.split("+")[0] or info["torch"] == torch.__version__
    assert info["device"] == str(runtime.device())


def test_headline_prints_the_prefix_make_lessons_collects(capsys):
    line = runtime.headline("probe 91% vs random 40%")
    assert line == "Headline: probe 91% vs random 40%"
    assert capsys.readouterr().out == line + "\n"
    assert runtime.HEADLINE_PREFIX == "Headline:"


# --- data_dir ------------------------------------------------------------------------------------


def test_data_dir_honours_ftlab_data(no_env, tmp_path):
    (tmp_path / "world").mkdir()
    no_env.setenv("FTLAB_DATA", str(tmp_path))
    assert runtime.data_dir() == tmp_path


def test_data_dir_errors_on_a_missing_folder(no_env, tmp_path):
    no_env.setenv("FTLAB_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"FTLAB_DATA='.*nope' is not a folder.*world/, lm/.*unset FTLAB_DATA"):
        runtime.data_dir()


def test_ftlab_data_without_the_micro_world_names_the_folder_and_how_to_unset_it(no_env, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    no_env.setenv("FTLAB_DATA", str(tmp_path))
    expected = (rf"FTLAB_DATA='{tmp_path}' names a folder without the micro-world: it holds notes.txt, photos, "
                r"but should hold world/, lm/, text/, vision/, clip/.*unset FTLAB_DATA.*del os.environ\['FTLAB_DATA'\]")
    with pytest.raises(FileNotFoundError, match=expected):
        runtime.data_dir()
    from ftlab.data import load_instructions

    with pytest.raises(FileNotFoundError, match="names a folder without the micro-world"):
        load_instructions("train", profile="tiny")


def test_ftlab_data_missing_one_part_names_the_variable_and_the_script(no_env, tmp_path):
    (tmp_path / "vision").mkdir()
    no_env.setenv("FTLAB_DATA", str(tmp_path))
    from ftlab.data import load_facts

    with pytest.raises(FileNotFoundError, match=r"facts.jsonl is missing: FTLAB_DATA=.*lacks world/facts.jsonl "
                                                r"\(built by scripts/build_language_world.py --out FOLDER\)"):
        load_facts()
    assert runtime.data_path("vision") == tmp_path / "vision"


def test_data_dir_defaults_to_the_checkouts_data(no_env):
    path = runtime.data_dir()
    assert (path / "README.md").is_file()


def test_a_damaged_jsonl_line_is_named(no_env, tmp_path):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "facts.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": \n')
    no_env.setenv("FTLAB_DATA", str(tmp_path))
    from ftlab.data import load_facts

    with pytest.raises(ValueError, match=r"facts.jsonl line 2 is not JSON"):
        load_facts()


# --- logging hygiene: importing ftlab changes nothing; quiet() (called by report()) hides two notices
# and the progress bars of work the student did not ask for


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this one's filters are already touched) and return its output."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FTLAB_PROFILE": "tiny"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


_STATE = """
import logging, warnings
def state():
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops").filters
    ours = [f for f in warnings.filters if f[1] is not None and "gradient_checkpointing" in f[1].pattern]
    return len(bnb), len(ours)
"""


def test_importing_ftlab_changes_no_logging_or_warning_filter():
    out = _python(_STATE + """
import ftlab, ftlab.runtime, ftlab.chat, ftlab.evals, ftlab.sft, ftlab.dpo
print(state())
""")
    assert out == "(0, 0)"


def test_quiet_hides_the_two_library_notices_and_nothing_else():
    out = _python(_STATE + """
import io, contextlib
from ftlab import runtime
with contextlib.redirect_stdout(io.StringIO()):
    runtime.report()  # the set-up cell's call
runtime.quiet()  # twice: nothing more
log = logging.getLogger("bitsandbytes.backends.cpu.ops")
make = lambda msg: log.makeRecord(log.name, logging.WARNING, "ops.py", 1, msg, (), None)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("default")
    runtime.quiet()  # under a fresh filter list, as a notebook kernel has
    warnings.warn("`gradient_checkpointing_enable` is deprecated, use ...", FutureWarning)
    warnings.warn("something else is deprecated", FutureWarning)
print(state(), log.filter(make("Failed to load CPU gemm_4bit_forward from kernels-community")),
      bool(log.filter(make("Failed to load CPU something else"))), [str(w.message) for w in seen])
""")
    assert out == "(1, 1) False True ['something else is deprecated']"


def test_quiet_hides_loading_and_dataset_bars_but_keeps_training_and_download_bars():
    out = _python("""
import contextlib, io
import datasets
from huggingface_hub import utils as hub_utils
from transformers.utils import logging as hf_logging
from ftlab import runtime
from ftlab.models import load_causal_lm
from ftlab.train import train
before = (hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
          hub_utils.are_progress_bars_disabled())
with contextlib.redirect_stdout(io.StringIO()):
    runtime.report()
err = io.StringIO()
with contextlib.redirect_stderr(err):
    model, tokenizer = load_causal_lm()
    datasets.Dataset.from_list([{"x": i} for i in range(5)]).filter(lambda row: row["x"] > 1)
    import torch
    train(torch.nn.Linear(2, 2), [(torch.zeros(2), 0)] * 4, num_steps=2, batch_size=2, progress=True)
after = (hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
         hub_utils.are_progress_bars_disabled())
text = err.getvalue()
print(before, after, "Loading weights" in text, "Filter" in text, "train:" in text)
""")
    assert out.splitlines()[-1] == "(True, True, False) (False, False, False) False False True", out


def test_model_device_is_where_the_weights_are_and_names_a_model_without_any():
    assert runtime.model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"a ReLU has no parameters, so it is on no device"):
        runtime.model_device(torch.nn.ReLU())
    with pytest.raises(TypeError, match=r"a str is not a model"):
        runtime.model_device("gpt2")
