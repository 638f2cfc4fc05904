"""Lesson 03 writes the Houlsby adapter itself and checks its drill where the adapter is taught,
asks for a prediction before peft counts prefix tuning, and types no measured number: its
three-seed table is docs/peft_seeds.md, written by scripts/peft_seeds.py."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import jupytext
import pytest
import torch
import torch.nn.functional as F

from ftlab import drills
from ftlab.adapters import BottleneckAdapter
from ftlab.drills import lesson03
from lesson_cells import cell_index

ROOT = Path(__file__).resolve().parent.parent

LESSON = ROOT / "notebooks" / "03_peft_methods.py"
SEEDS_DOC = ROOT / "docs" / "peft_seeds.md"


pytestmark = pytest.mark.usefixtures("not_strict")  # drills report, never raise, here


@pytest.fixture(scope="module")
def notebook():
    return jupytext.read(LESSON, fmt="py:percent")


@pytest.fixture(scope="module")
def cells(notebook) -> list[str]:
    return [c.source for c in notebook.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def peft_seeds():
    spec = importlib.util.spec_from_file_location("ftlab_scripts_peft_seeds", ROOT / "scripts" / "peft_seeds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _index(cells, needle: str) -> int:
    return cell_index(cells, needle, "lesson 03")


# -- where the drills sit -------------------------------------------------------------------------

def test_adapter_drill_is_checked_in_section_6_before_the_lessons_adapter(cells):
    """03d is answered and checked after the LoRA recipe (section 5), before the lesson's own
    adapter and the adapters going into the model, inside the first two thirds."""
    checked = _index(cells, 'check("03d", answer_03d)')
    assert _index(cells, "lora_config(cfg.recipe_r, ALL_LINEAR))") < checked
    assert checked < _index(cells, "def houlsby_adapter") <= _index(cells, "add_adapters(model")
    assert checked < 2 * len(cells) / 3


def test_prefix_prediction_comes_before_peft_counts_it(cells):
    checked = _index(cells, 'check("03e", answer_03e)')
    assert checked < _index(cells, "PrefixTuningConfig(") < _index(cells, "table = pd.DataFrame(results)")
    assert checked < 2 * len(cells) / 3
    assert "m = 8" in cells[_index(cells, "PrefixTuningConfig(")]  # the drill's m in both profiles


# -- the drills' answers are the real numbers ------------------------------------------------------

def test_prefix_drill_is_what_peft_counts_on_tinyllama():
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftlab.memory import known_config
    from ftlab.models import count_parameters

    config = known_config("TinyLlama-1.1B")
    assert (config.num_hidden_layers, config.hidden_size) == (lesson03.LLAMA_LAYERS, lesson03.LLAMA_WIDTH)
    assert config.num_key_value_heads * config.head_dim == lesson03.LLAMA_KV_WIDTH
    with torch.device("meta"):
        model = get_peft_model(AutoModelForCausalLM.from_config(config),
                               PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=lesson03.PREFIX_M))
    assert count_parameters(model, trainable_only=True) == drills.reference("03e") == 90_112
    assert drills.check("03e", "90,112").passed
    assert "model width" in drills.check("03e", 720_896).message  # d = 2048 instead of 256
    assert "keys only" in drills.check("03e", 45_056).message
    assert "one layer" in drills.check("03e", 4_096).message


def test_lessons_adapter_equals_ftlabs_and_the_drills_solution(cells):
    source = cells[_index(cells, "def houlsby_adapter")].split("\n\n\nmodel, _ =")[0]
    namespace = {}
    exec(source, namespace)
    houlsby_adapter = namespace["houlsby_adapter"]
    torch.manual_seed(0)
    adapter = BottleneckAdapter(16, 4)
    torch.nn.init.normal_(adapter.up.weight)
    torch.nn.init.normal_(adapter.up.bias)
    h = torch.randn(2, 5, 16)
    weights = (adapter.down.weight, adapter.down.bias, adapter.up.weight, adapter.up.bias)
    with torch.no_grad():
        ours, theirs = houlsby_adapter(h, *weights), adapter(h)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(lesson03.adapter_forward_solution(h, *weights), theirs)
        assert (ours - h).abs().max() > 0.1  # a random up: the check could see a wrong formula
    assert drills.check("03d", houlsby_adapter).passed
    relu = drills.check("03d", lambda h, Wd, bd, Wu, bu: h + F.linear(F.relu(F.linear(h, Wd, bd)), Wu, bu))
    assert relu.status == "fail" and "GELU" in relu.message


# -- no measured number typed in the lesson's text -------------------------------------------------

MEASURED = re.compile(r"\b0\.\d{3}\b|\b\d+\.\d+%")  # an accuracy (0.994) or a share (4.7%)


def test_lessons_markdown_types_no_accuracy_or_share(notebook):
    typed = [m.group() for c in notebook.cells if c.cell_type == "markdown" for m in MEASURED.finditer(c.source)]
    assert typed == [], f"numbers typed into lesson 03's text: {typed}; print them from variables"
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "docs/peft_seeds.md" in text and "scripts/peft_seeds.py" in text


# -- scripts/peft_seeds.py -------------------------------------------------------------------------

def test_seeded_notebook_changes_only_the_seed_and_stops_before_the_claims(peft_seeds, notebook):
    nb = peft_seeds.seeded_notebook(LESSON.read_text(encoding="utf-8"), 2)
    original = [c.source for c in notebook.cells]
    changed = [i for i, c in enumerate(nb.cells[:-1]) if c.source != original[i]]
    assert len(changed) == 1
    config = nb.cells[changed[0]].source
    assert "seed: int = 2 " in config and "seed: int = 0" not in config
    assert "class Config" in config
    assert not any(peft_seeds.STOP in c.source for c in nb.cells)
    assert "table = pd.DataFrame(results)" in "".join(c.source for c in nb.cells)
    assert peft_seeds.MARK.strip() in nb.cells[-1].source
    with pytest.raises(ValueError, match="seed: int = 0"):
        peft_seeds.seeded_notebook(LESSON.read_text(encoding="utf-8").replace("seed: int = 0", "seed = 0"), 1)
    with pytest.raises(ValueError, match="whole number"):
        peft_seeds.seeded_notebook(LESSON.read_text(encoding="utf-8"), -1)


def _run(full, lora, probe=0.5, share=0.04):
    return {"margin": 0.03, "max_share": 0.05, "results": {
        "linear probe": {"trainable": 130, "share": 0.0005, "accuracy": probe},
        "full fine-tuning": {"trainable": 1000, "share": 1.0, "accuracy": full},
        "LoRA r=2 (all linear)": {"trainable": 40, "share": share, "accuracy": lora}}}


def test_render_tabulates_each_seed_and_flags_a_failing_claim(peft_seeds):
    text = peft_seeds.render({0: _run(0.95, 0.94), 1: _run(0.95, 0.90)})
    assert "| method | trainable | seed 0 | seed 1 |" in text
    assert "| full fine-tuning | 100.00% | 0.950 | 0.950 |" in text
    assert "| LoRA r=2 (all linear) | 4.00% | 0.940 | 0.900 |" in text
    assert "| LoRA (all linear) within 0.03 of full fine-tuning | holds | **fails** |" in text
    assert "| full fine-tuning beats the probe by 0.2 or more | holds | holds |" in text
    assert peft_seeds.claims(_run(0.6, 0.6, probe=0.5, share=0.06)) == {
        "LoRA (all linear) within 0.03 of full fine-tuning": True,
        "LoRA (all linear) trains at most 5%": False,
        "full fine-tuning beats the probe by 0.2 or more": False}


def test_seeds_doc_has_three_seeds_every_method_and_every_claim_holds(cells):
    text = SEEDS_DOC.read_text(encoding="utf-8")
    assert "| method | trainable | seed 0 | seed 1 | seed 2 |" in text
    for method in ("linear probe", "full fine-tuning", "LoRA r=2 (all linear)", "Houlsby adapters",
                   "prompt tuning", "IA3"):
        assert f"| {method}" in text
    assert text.count("| holds | holds | holds |") == 3 and "**fails**" not in text
