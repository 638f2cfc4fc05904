"""Lesson 01 writes its probe, its freeze loop and its parameter groups in its own cells: those
cells equal ftlab's (the tested copy), and drills 01e (trainable_count) and 01f (parameter groups)
grade the usual bugs with their own hints, without moving the lesson's random state."""

from __future__ import annotations

import types
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

from ftlab import drills, probe
from ftlab.drills import lesson01
from ftlab.runtime import seed_everything

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "01_linear_probe.py"


pytestmark = pytest.mark.usefixtures("not_strict")  # drills report, never raise, here


def _code_cells() -> list[str]:
    return [c.source for c in jupytext.read(LESSON, fmt="py:percent").cells if c.cell_type == "code"]


def _cell_defining(name: str) -> str:
    (cell,) = [c for c in _code_cells() if f"def {name}(" in c and "NotImplementedError" not in c]
    return cell


def _lesson_namespace(num_classes: int = 6) -> dict:
    """Run the lesson's probe cell (tiny profile) with the few names it takes from earlier cells."""
    ns = {"cfg": types.SimpleNamespace(backbone="resnet50", seed=0), "K": num_classes,
          "seed_everything": seed_everything, "__name__": "lesson01"}
    exec(compile(_cell_defining("build_linear_probe"), "01_linear_probe:probe", "exec"), ns)
    return ns


def test_the_lessons_probe_cell_builds_what_ftlab_builds():
    ns = _lesson_namespace(6)
    model = ns["model"]
    seed_everything(0)
    reference = probe.build_linear_probe(6)
    assert ns["names"] == probe.trainable_names(reference) == ["fc.weight", "fc.bias"]
    assert ns["trainable_count"](model) == probe.trainable_count(reference) == 128 * 6 + 6
    assert ns["trainable_count"](ns["resnet50"]) == 2048 * 10 + 10  # drill 01a's answer, printed
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0.0, rtol=0.0)


def test_the_lessons_freeze_keeps_a_frozen_batchnorms_statistics_in_train_mode():
    ns = _lesson_namespace(6)
    model = ns["model"].train()
    before = model.bn1.running_mean.clone()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
    torch.testing.assert_close(model.bn1.running_mean, before, atol=0.0, rtol=0.0)
    probe.unfreeze(model, "bn1")  # unfrozen, it trains (and moves its statistics) again
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 32, 32))
    assert (model.bn1.running_mean - before).abs().max() > 0


def test_the_lessons_parameter_groups_equal_ftlabs_for_partial_and_full_fine_tuning():
    ns = _lesson_namespace(6)
    exec(compile(_cell_defining("differential_lr_groups"), "01_linear_probe:groups", "exec"), ns)
    for blocks in (("layer4",), ()):
        net = probe.unfreeze(ns["build_linear_probe"](6), *blocks)
        name_of = {id(p): n for n, p in net.named_parameters()}

        def described(groups):
            return [(sorted(name_of[id(p)] for p in g["params"]), g["lr"], g["weight_decay"]) for g in groups]

        ours = described(ns["differential_lr_groups"](net, 1e-2, 1e-3))
        assert ours == described(probe.differential_lr_groups(net, head_lr=1e-2, backbone_lr=1e-3))
        assert [lr for _, lr, _ in ours] == [1e-2, 1e-3]
        assert ours[0][0] == ["fc.bias", "fc.weight"]
        if blocks:
            assert {n.split(".")[0] for n in ours[1][0]} == {"layer4"}


def test_drill_01a_is_asked_before_the_probe_count_is_printed_and_a_code_drill_sits_early():
    cells = _code_cells()
    first = {d: next(i for i, c in enumerate(cells) if f'check("{d}"' in c) for d in ("01a", "01e", "01f")}
    printed = cells.index(_cell_defining("build_linear_probe"))
    assert first["01a"] < printed and first["01e"] < printed
    assert first["01f"] < cells.index(_cell_defining("differential_lr_groups"))
    assert first["01e"] < 2 * len(cells) / 3


@pytest.mark.parametrize("bug, words", [
    (lambda m: sum(p.numel() for p in m.parameters()), "frozen ones too"),
    (lambda m: sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and n.endswith("weight")),
     "biases are missing"),
    (lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad) + sum(b.numel() for b in m.buffers()),
     "buffers"),
    (lambda m: sum(1 for p in m.parameters() if p.requires_grad), "tensors, not numbers"),
])
def test_trainable_count_drill_names_each_usual_bug(bug, words):
    result = drills.grade("01e", bug)
    assert result.status == "fail" and words in result.message


def test_trainable_count_drill_passes_a_tensor_or_an_int():
    assert drills.grade("01e", lesson01.trainable_count_solution).passed
    assert drills.grade("01e", lambda m: torch.tensor(probe.trainable_count(m))).passed


def test_param_groups_drill_reads_requires_grad_not_the_block_name():
    only_layer4 = drills.DRILLS["01f"].wrong[4]
    result = drills.grade("01f", only_layer4)
    assert result.status == "fail" and "layer3 trains too" in result.message
    assert drills.grade("01f", lesson01.param_groups_solution).passed


def test_param_groups_drill_accepts_any_order_and_tuples():
    def reordered(model, lr):
        body = tuple(n for n, p in reversed(list(model.named_parameters())) if p.requires_grad and n[:3] != "fc.")
        return ((body, lr / 10), (("fc.bias", "fc.weight"), lr))

    assert drills.grade("01f", reordered).passed


def test_lr_per_parameter_gives_each_parameters_lr_and_minus_one_outside_the_groups():
    model = lesson01._frozen_except(lesson01._mini_resnet(torch.Generator().manual_seed(0)), {"fc", "layer4"})
    lrs = dict(zip([n for n, _ in model.named_parameters()],
                   lesson01.lr_per_parameter(model, lesson01.param_groups_solution(model, 0.01)).tolist()))
    assert lrs["fc.weight"] == lrs["fc.bias"] == 0.01
    assert lrs["layer4.0.weight"] == lrs["layer4.1.bias"] == pytest.approx(0.001)
    assert lrs["conv1.weight"] == lrs["layer3.0.weight"] == lesson01.NOT_IN_A_GROUP == -1.0


@pytest.mark.parametrize("answer, words", [
    ({"fc": 0.01}, "list of (names, lr) pairs"),
    ([("fc.weight", 0.01)], "each group is a pair (list of names, lr)"),
    ([(["fc.weight"], 0.01), (["fc.weight"], 0.001)], "in two groups"),
    ([(["head.weight"], 0.01)], "not a parameter of this model"),
])
def test_lr_per_parameter_says_what_form_is_wanted(answer, words):
    model = lesson01._mini_resnet(torch.Generator().manual_seed(0))
    with pytest.raises((TypeError, ValueError), match=words.replace("(", r"\(").replace(")", r"\)")):
        lesson01.lr_per_parameter(model, answer)


def test_param_groups_drill_reports_tensors_in_place_of_names_plainly():
    result = drills.grade("01f", lambda m, lr: [(list(m.fc.parameters()), lr)])
    assert result.status == "fail" and "parameter names" in result.message
    assert drills.grade("01f", [(["fc.weight"], 0.01)]).message.endswith("without calling it")


@pytest.mark.parametrize("drill_id, answer", [("01e", lesson01.trainable_count_solution),
                                              ("01f", lesson01.param_groups_solution)])
def test_checking_a_code_drill_leaves_the_global_random_state_alone(drill_id, answer):
    seed_everything(0)
    state = torch.get_rng_state()
    assert drills.grade(drill_id, answer).passed
    assert torch.equal(torch.get_rng_state(), state)


# -- section 5: per-class scores and macro-F1, written in the lesson's own cell -----------------

def _f1_namespace() -> dict:
    ns = {"torch": torch}
    exec(compile(_cell_defining("f1_per_class"), "01_linear_probe:f1", "exec"), ns)
    return ns


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_lessons_macro_f1_equals_scikit_learns(seed):
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    ns = _f1_namespace()
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (200,), generator=gen)
    pred = torch.where(torch.rand(200, generator=gen) < 0.6, y, torch.randint(0, 5, (200,), generator=gen))
    pred[pred == 4] = 3  # class 4 is never predicted: its precision has nothing to divide by
    weight = torch.rand(200, generator=gen, dtype=torch.float64)
    for w in (None, weight):
        sk_w = None if w is None else w.numpy()
        want = f1_score(y.numpy(), pred.numpy(), average="macro", labels=list(range(5)), sample_weight=sk_w,
                        zero_division=0)
        assert ns["macro_f1"](pred, y, 5, w) == pytest.approx(want, abs=1e-12)
        assert probe.macro_f1(pred, y, 5, w) == pytest.approx(want, abs=1e-12)
        p, r, f, _ = precision_recall_fscore_support(y.numpy(), pred.numpy(), labels=list(range(5)),
                                                     sample_weight=sk_w, zero_division=0)
        ours = ns["f1_per_class"](ns["confusion_matrix"](pred, y, 5, w))
        for a, b in zip(ours, (p, r, f)):
            torch.testing.assert_close(a, torch.as_tensor(b, dtype=torch.float64), atol=1e-12, rtol=0.0)


def test_the_lessons_macro_f1_of_the_majority_classifier_is_drill_01gs_answer():
    from sklearn.metrics import f1_score

    ns = _f1_namespace()
    y, pred = torch.tensor([0] * 90 + [1] * 5 + [2] * 5), torch.zeros(100, dtype=torch.long)
    assert ns["macro_f1"](pred, y, 3) == pytest.approx(f1_score(y.numpy(), pred.numpy(), average="macro",
                                                                zero_division=0), abs=1e-12)
    assert drills.grade("01g", ns["macro_f1"](pred, y, 3)).passed


def test_class_weights_equal_scikit_learns_balanced_weights():
    from sklearn.utils.class_weight import compute_class_weight

    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 2 + [4] * 9)  # class 3 absent
    present = [0, 1, 2, 4]
    want = compute_class_weight("balanced", classes=np.array(present), y=labels.numpy())
    got = probe.class_weights(labels, 5)
    torch.testing.assert_close(got[present], torch.as_tensor(want, dtype=torch.float32))
    assert got[3] == 0.0


@pytest.mark.parametrize("answer, words", [(0.9, "accuracy"), (0.9474, "class A's F1 alone"),
                                           (1 / 3, "precision is 90/100"), (0.3, "macro-precision")])
def test_drill_01g_names_each_usual_slip(answer, words):
    result = drills.grade("01g", answer)
    assert result.status == "fail" and words in result.message
    assert drills.grade("01g", "31.6%").passed


def test_drill_01g_is_asked_before_the_lesson_prints_macro_f1():
    cells = _code_cells()
    asked = next(i for i, c in enumerate(cells) if 'check("01g"' in c)
    assert asked < cells.index(_cell_defining("f1_per_class"))
