"""Lesson 02 writes LoRA itself: its MyLoRALinear and my_inject_lora equal ftlab's (and peft's),
its code drills for the forward and the merge come before the class they teach, and its
predict-then-run count is the count the tiny model really has."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from ftlab import drills
from ftlab.drills import lesson02
from ftlab.lora import LoRALinear, inject_lora
from ftlab.models import count_parameters, load_causal_lm
from lesson_cells import cell_index, code_cells

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "02_lora_from_scratch.py"


pytestmark = pytest.mark.usefixtures("not_strict")  # drills report, never raise, here


@pytest.fixture(scope="module")
def cells() -> list[str]:
    return code_cells(LESSON.stem)


def _index(cells, needle: str) -> int:
    return cell_index(cells, needle, "lesson 02")


@pytest.fixture(scope="module")
def lesson_pieces(cells) -> dict:
    """The lesson's own cells that define MyLoRALinear and my_inject_lora, run as they stand."""
    namespace = {"torch": torch, "nn": nn}
    exec(cells[_index(cells, "class MyLoRALinear")], namespace)
    exec(cells[_index(cells, "def my_inject_lora")].split("\n\n\n# The check below")[0], namespace)
    return namespace


def _inputs(make, trial):
    return make(torch.Generator().manual_seed(1000 + trial))


# -- the drills -----------------------------------------------------------------------------------

def test_forward_drill_checks_with_and_without_dropout_and_equals_peft():
    """02a is not lesson 08's 08a: half its trials pass a dropout (a fixed mask) for the LoRA path,
    and its reference equals peft's lora.Linear on every trial, mask or not."""
    masks = [_inputs(lesson02._forward_inputs, t)[-1] for t in range(4)]
    assert [m is None for m in masks] == [True, False, True, False]
    for trial in range(4):
        args = _inputs(lesson02._forward_inputs, trial)
        torch.testing.assert_close(lesson02.forward_solution(*args), lesson02._peft_forward(*args))
    no_dropout = drills.check("02a", lambda x, W, A, B, r, a, d=None: x @ W.T + (a / r) * ((x @ A.T) @ B.T))
    assert no_dropout.status == "fail" and "apply it to x before A" in no_dropout.message
    everywhere = drills.check("02a", lambda x, W, A, B, r, a, d=None:
                              (x if d is None else d(x)) @ W.T + (a / r) * (((x if d is None else d(x)) @ A.T) @ B.T))
    assert everywhere.status == "fail" and "LoRA path only" in everywhere.message


def test_forward_and_merge_drills_name_the_usual_bugs():
    """Scale forgotten, scale upside down (r / alpha) and the update transposed each get their own
    hint: the student computes the scale from r and alpha, and trial 0 is square."""
    assert "missing its scale" in drills.check("02b", lambda W, A, B, r, a: W + B @ A).message
    assert "upside down" in drills.check("02b", lambda W, A, B, r, a: W + (r / a) * (B @ A)).message
    assert "transposed" in drills.check("02b", lambda W, A, B, r, a: W + (a / r) * (A.T @ B.T)).message
    assert "upside down" in drills.check(
        "02a", lambda x, W, A, B, r, a, d=None: x @ W.T + (r / a) * ((x @ A.T) @ B.T)).message
    assert "transposed" in drills.check(
        "02a", lambda x, W, A, B, r, a, d=None: x @ W.T + (a / r) * (x @ (B @ A))).message
    for trial in range(4):
        W, A, B, r, alpha = _inputs(lesson02._merge_inputs, trial)
        assert alpha not in (r, 1.0 * r) and (W.shape[0] == W.shape[1]) == (trial == 0)
        torch.testing.assert_close(lesson02.merge_solution(W, A, B, r, alpha),
                                   lesson02._peft_merge(W, A, B, r, alpha))


def test_predict_drill_is_the_tiny_models_real_count():
    """02c's answer, typed in ftlab/drills/lesson02.py, is what ftlab and peft count on the tiny model."""
    from peft import LoraConfig, get_peft_model

    ours = inject_lora(load_causal_lm(profile="tiny")[0], ["q_proj", "v_proj"], r=lesson02.TINY_R, alpha=16)
    theirs = get_peft_model(load_causal_lm(profile="tiny")[0],
                            LoraConfig(r=lesson02.TINY_R, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    assert count_parameters(ours, trainable_only=True) == drills.reference("02c") == 14_336
    assert theirs.get_nb_trainable_parameters()[0] == drills.reference("02c")
    assert drills.check("02c", "14,336").passed
    assert "one block" in drills.check("02c", 14_336 // 4).message


# -- the lesson's own LoRA ------------------------------------------------------------------------

def test_lessons_lora_linear_equals_ftlabs_forward_with_dropout_and_merge(lesson_pieces):
    MyLoRALinear = lesson_pieces["MyLoRALinear"]
    torch.manual_seed(0)
    base, x = nn.Linear(12, 6), torch.randn(3, 12)
    torch.manual_seed(1)
    mine = MyLoRALinear(copy.deepcopy(base), 3, 6, dropout=0.2)
    torch.manual_seed(1)
    ours = LoRALinear(copy.deepcopy(base), r=3, alpha=6, dropout=0.2)
    torch.testing.assert_close(mine.A, ours.A, rtol=0, atol=0)  # Kaiming-uniform, as ftlab and peft
    assert torch.equal(mine.B, torch.zeros(6, 3)) and mine.scale == 2.0
    assert [n for n, p in mine.named_parameters() if p.requires_grad] == ["A", "B"]
    with torch.no_grad():
        mine.B.normal_()
        ours.B.copy_(mine.B)
    torch.manual_seed(2)
    y_mine = mine(x)
    torch.manual_seed(2)
    torch.testing.assert_close(y_mine, ours(x))
    merged = mine.merge()
    assert type(merged) is nn.Linear and not merged.weight.requires_grad
    torch.testing.assert_close(merged.weight, base.weight + 2.0 * mine.B @ mine.A)
    torch.testing.assert_close(merged.weight, ours.merge().weight)
    torch.testing.assert_close(merged.bias, base.bias)


def test_lessons_inject_lora_equals_ftlabs_on_the_tiny_model(lesson_pieces):
    my_inject_lora, MyLoRALinear = lesson_pieces["my_inject_lora"], lesson_pieces["MyLoRALinear"]
    torch.manual_seed(0)
    mine = my_inject_lora(load_causal_lm(profile="tiny")[0], ["q_proj", "v_proj"], 8, 16)
    ours = inject_lora(load_causal_lm(profile="tiny")[0], ["q_proj", "v_proj"], r=8, alpha=16)
    wrapped = {n: m for n, m in mine.named_modules() if isinstance(m, MyLoRALinear)}
    assert len(wrapped) == 8 and count_parameters(mine, trainable_only=True) == count_parameters(ours, trainable_only=True)
    ids = torch.randint(0, mine.config.vocab_size, (2, 9))
    with torch.no_grad():
        for name, m in wrapped.items():
            m.B.normal_(std=0.1)
            ours.get_submodule(name).A.copy_(m.A)
            ours.get_submodule(name).B.copy_(m.B)
        torch.testing.assert_close(mine.eval()(input_ids=ids).logits, ours.eval()(input_ids=ids).logits)
    with pytest.raises(ValueError, match="no nn.Linear is named"):
        my_inject_lora(load_causal_lm(profile="tiny")[0], ["query"], 8, 16)


# -- where things sit in the lesson ---------------------------------------------------------------

def test_drills_come_before_the_reference_and_the_prediction_before_the_count(cells):
    """The forward and merge drills are checked before the class that answers them, inside the
    first two thirds of the lesson; the predict drill is checked before peft prints the count."""
    reference = _index(cells, "class MyLoRALinear")
    assert _index(cells, 'check("02a", answer_02a)') < _index(cells, 'check("02b", answer_02b)') < reference
    assert _index(cells, 'check("02a", answer_02a)') < 2 * len(cells) / 3
    assert _index(cells, 'check("02c", answer_02c)') < _index(cells, "print_trainable_parameters()")
    assert _index(cells, "def my_inject_lora") < _index(cells, "get_peft_model(")
    assert "from ftlab.lora import LoRALinear" not in "".join(cells[:reference])


def test_lesson_no_longer_calls_q_and_v_a_good_default():
    text = LESSON.read_text(encoding="utf-8")
    assert "good default" not in text
    assert "original LoRA paper's choice" in text and "Lesson 03 measures why" in text
