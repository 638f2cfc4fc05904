"""The full profile of the language lessons 00, 02 and 09, rehearsed: what a 1B model on a T4 / L4 meets.

Two kinds of test. The memory plan of lesson 09's full fine-tune is priced here, on a model with
TinyLlama's real depth and vocabulary and tiny widths (seconds, part of `make test`). The others
run the real loaders against the hub stand-ins (``build/standins``, built by ``make rehearse`` or
here if missing) in a child process, as tests/test_standins.py does: they are marked
``standins`` and run by ``make rehearse``, not ``make test`` (tests/conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


# ---------------------------------------------------------------------------------------------
# Lesson 09: full fine-tuning of 1.1B weights on a T4


# card, tinyllama_shaped, rehearse and standins: tests/conftest.py


def _batch(b=8, seq=64):
    ids = torch.randint(3, 32000, (b, seq))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


@pytest.mark.parametrize("name", ["t4", "l4"])
def test_lesson09_full_finetune_fits_each_card_with_fp32_weights_and_8bit_adamw(card, tinyllama_shaped, name):
    """Lesson 09's full configuration: every weight trains, loaded in fp32 (master weights; the
    matmuls run in half under autocast), 8-bit AdamW, batch 8 x 64. On a T4 the plain AdamW run
    (8 bytes of state per weight) is refused before step 1; the 8-bit one fits with room."""
    from ftlab import budget
    from ftlab.measure import make_optimizer

    gpu = card(name)
    model = tinyllama_shaped(torch.float32)
    amp = "fp16" if name == "t4" else "bf16"
    plan = budget.plan_run(model, _batch(), optimizer=make_optimizer("adamw8bit", model.parameters()),
                           mixed_precision=amp, gpu=gpu)
    assert plan.estimate.trainable == plan.estimate.n_params == 1_100_048_384  # the real TinyLlama
    gib = 1024**3
    assert plan.estimate.weights == plan.estimate.gradients == 4 * 1_100_048_384  # fp32 weights and grads
    assert plan.estimate.optimizer / plan.estimate.n_params < 2.1  # 8-bit state: 2 bytes per weight
    assert plan.fits and plan.gpu_peak < 12 * gib < plan.gpu_usable
    plain = budget.plan_run(model, _batch(), optimizer=make_optimizer("adamw", model.parameters()),
                            mixed_precision=amp, gpu=gpu)
    assert plain.fits == (name == "l4")  # plain AdamW: 4 + 4 + 8 bytes per weight
    if name == "t4":
        assert "8-bit AdamW" in plain.advice()


def test_lesson09_config_says_what_the_calculator_says():
    """The lesson's full config is the one the plan above prices (fp32 weights, adamw8bit, batch 8
    of at most max_length 64 tokens) and its comment names the card it fits."""
    import jupytext

    nb = jupytext.read(NOTEBOOKS / "09_forgetting_and_continual.py")
    config = next(c.source for c in nb.cells if c.cell_type == "code" and "class Config" in c.source)
    full = config[config.index('if profile() == "full"'):]
    assert 'optimizer="adamw8bit"' in full and "batch_size=8" in full and "fits a T4" in full
    assert "max_length" not in full  # the default, 64 tokens, is what the plan prices
    runs = next(c.source for c in nb.cells if c.cell_type == "code" and "def fresh_model" in c.source)
    assert "def fresh_model(dtype=torch.float32)" in runs


# ---------------------------------------------------------------------------------------------
# Against the stand-ins, in a child process


@pytest.fixture(scope="module")
def standin_env(rehearse, standins):
    env = {**os.environ, **rehearse.standin_env(standins), "FTLAB_PROFILE": "full", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE"):
        env.pop(key, None)
    return env


def _child(code: str, env: dict, **extra) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                          timeout=600, cwd=NOTEBOOKS)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lesson_cells(stem: str, until: str) -> list[str]:
    """The lesson's code cells, from the first to the one that contains ``until``."""
    import jupytext

    cells = []
    for cell in jupytext.read(NOTEBOOKS / f"{stem}.py").cells:
        if cell.cell_type == "code":
            cells.append(cell.source)
            if until in cell.source:
                return cells
    raise AssertionError(f"no code cell of {stem} contains {until!r}")


def _run_cells(cells: list[str], report: str) -> str:
    """A child program that runs ``cells`` in one namespace, then prints ``report`` (an expression) as JSON."""
    return "import json\nns = {\"__name__\": \"__main__\"}\n" + "".join(f"exec({c!r}, ns)\n" for c in cells) + \
        f"print(json.dumps(eval({report!r}, ns)))\n"


CLOZES = textwrap.dedent('''
    import json
    from transformers import AutoTokenizer
    from ftlab.evals import WELL_KNOWN_FACTS
    from ftlab.forgetting import ENGLISH_OPPOSITES, VALIDATION_FACTS, opposite_clozes
    pairs = list(WELL_KNOWN_FACTS) + list(VALIDATION_FACTS)
    c = opposite_clozes(ENGLISH_OPPOSITES)
    pairs += list(zip(c["prompt"], c["answer"]))
    out = {}
    for repo in ("TinyLlama/TinyLlama_v1.1", "meta-llama/Llama-3.2-1B"):
        tok = AutoTokenizer.from_pretrained(repo)
        bad = []
        for p, a in pairs:
            p_ids, full = tok(p)["input_ids"], tok(p + a)["input_ids"]
            if full[:len(p_ids)] != p_ids or len(full) == len(p_ids):
                bad.append([p, a])
        out[repo] = bad
    print(json.dumps({"n": len(pairs), "general": len(set(WELL_KNOWN_FACTS) & set(VALIDATION_FACTS)), "bad": out}))
''')


@pytest.mark.standins
def test_full_profile_clozes_split_from_their_prompt_in_both_llama_tokenizers(standin_env):
    """cloze_accuracy needs the answer's tokens to follow the prompt's unchanged (it raises otherwise):
    true of every general-knowledge and opposites cloze in TinyLlama's and Llama-3's real tokenizers."""
    r = _child(CLOZES, standin_env)
    assert r["n"] >= 90 and r["general"] == 0  # the reported and the early-stopping facts are disjoint
    assert r["bad"] == {"TinyLlama/TinyLlama_v1.1": [], "meta-llama/Llama-3.2-1B": []}


@pytest.mark.standins
@pytest.mark.parametrize("name", ["t4", "l4"])
def test_lesson09_full_profile_measures_before_training_on_the_standin(standin_env, name):
    """Lesson 09's first two sections of code in the full profile (config, sets, base model, report):
    it used to ask Alpaca for rows of kind "fact", get none, and stop with "exact_match needs at
    least one row". Now the target is a generated task with held-out rows, and the base is scored
    on all four numbers."""
    cells = _lesson_cells("09_forgetting_and_continual", "before = report_of(m)")
    code = _run_cells(cells, '{"kind": cfg.target_kind, "train": len(sets.train), "target": len(sets.target), '
                             '"general": len(sets.general["prompt"]), "val": len(sets.general_val["prompt"]), '
                             '"before": before, "val_before": val_before, "dtype": str(m.dtype)}')
    r = _child(code, standin_env, FTLAB_SIMULATE_GPU=name, FTLAB_MAX_STEPS="1")
    assert r["kind"] == "date" and r["train"] == 1000 and r["target"] == 32
    assert r["general"] == r["val"] == 24
    assert set(r["before"]) == {"target", "general", "skill", "text"}
    assert all(0 <= r["before"][k] <= 1 for k in ("target", "general", "skill"))
    assert math.isfinite(r["before"]["text"]) and r["before"]["text"] > 0
    assert r["dtype"] == ("torch.float16" if name == "t4" else "torch.bfloat16")  # loaded in half
