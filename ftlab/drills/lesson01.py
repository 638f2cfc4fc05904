"""Lesson 01's drills: counting a probe's parameters (predicted, 01a; written as trainable_count,
01e), what build_linear_probe freezes, the optimizer's parameter groups for differential learning
rates (01f), picking probe vs partial vs full fine-tuning, CLIP's zero-shot head, and the macro-F1
of a classifier that always answers the common class (01g)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from ._core import AnswerError, Drill, choice, code, numeric, register

LESSON = "01_linear_probe"

# -- 01a: the probe's parameter count ------------------------------------------------------------

register(Drill(
    "01a", "Probe parameter count", LESSON, 1, "numeric", 20490, numeric(
        20490, rel=0.0,
        hints=[(20480, "Close: you counted the weight matrix. A linear layer also has one bias per class."),
               (2058, "Features and classes multiply in the weight matrix (one weight per pair), they do not add."),
               (25557032, "That is all of ResNet-50. After build_linear_probe only the new head trains."),
               (23528522, "That is the whole probe model, frozen backbone included. Count only "
                          "what the optimiser updates."),
               (23508032, "That is the frozen backbone. The question asks what the optimiser updates.")],
        fallback="Trainable = d_feat x K weights + K biases, with d_feat = 2048 for ResNet-50.",
        praise="2048 x 10 + 10 = 20,490: under 0.1% of ResNet-50's 25.6M parameters."),
    wrong=(20480, 2058, 25557032, 23528522, 23508032),
    prompt="ResNet-50 (2048 features) probed for 10 classes: how many trainable parameters?"))

# -- 01b: what is trainable after build_linear_probe ---------------------------------------------

register(Drill(
    "01b", "What trains after build_linear_probe?", LESSON, 1, "choice", "b", choice(
        "b",
        {"a": "build_linear_probe sets requires_grad=False on every backbone parameter before it adds "
              "the head; print trainable_names(model) to see.",
         "c": "layer4 trains only after you unfreeze it (partial fine-tuning, later in the lesson).",
         "d": "BatchNorm's affine parameters are frozen with the rest, and its running statistics are "
              "buffers, never trained: a frozen BatchNorm even stays in eval mode."},
        "Only the new head: fc.weight and fc.bias. Everything the backbone learned stays as pretrained."),
    wrong=("a", "c", "d"),
    options={"a": "Every parameter: the backbone and the new fc.",
             "b": "Only fc.weight and fc.bias.",
             "c": "layer4 and fc.",
             "d": "fc and every BatchNorm layer (weights and running statistics)."},
    prompt="After model = build_linear_probe(10), which parameters have requires_grad=True?"))

# -- 01c: probe, partial or full fine-tuning for a task and a budget ------------------------------

register(Drill(
    "01c", "Probe, partial or full fine-tuning?", LESSON, 2, "choice", "b", choice(
        "b",
        {"a": "400 images for 25.6M trainable weights over-fit, and lr 1e-3 on pretrained weights "
              "moves them far from what made them useful. Full fine-tuning is the upper reference "
              "when data and compute are plentiful.",
         "c": "Random weights throw away what ImageNet taught: in this lesson a probe on random "
              "features scored near chance, and 400 images cannot make up for it.",
         "d": "Partial fine-tuning can help later, but one learning rate for a fresh head and "
              "pretrained weights lets the head's large early gradients wreck the features. Use "
              "differential learning rates, and only after a probe has set the baseline."},
        "A probe on cached features trains in seconds, cannot over-fit the backbone, and is the "
        "baseline every other method must beat. Unfreeze layer4 only if it is not enough."),
    wrong=("a", "c", "d"),
    options={"a": "Fine-tune all of ResNet-50 with AdamW at lr 1e-3.",
             "b": "A linear probe on frozen ResNet-50 features, cached once.",
             "c": "Train a ResNet-50 from random weights on the 400 images.",
             "d": "Unfreeze layer4 and train it and the head with the same lr 1e-2."},
    prompt="50 labelled photos for each of 8 bird species (ImageNet-like photos), a T4 for 15 minutes: "
           "what do you train first?"))

# -- 01d: CLIP's zero-shot logits with prompt ensembling -----------------------------------------

def zero_shot_logits_solution(image_emb, text_emb):
    """``image_emb [N, D]`` unit rows, ``text_emb [T, K, D]`` unit rows (T templates, K classes)
    -> ``[N, K]`` cosine similarities to each class's ensembled, renormalised prompt embedding."""
    class_emb = F.normalize(text_emb.mean(0), dim=-1)  # [K, D]: average over templates, unit again
    return image_emb @ class_emb.T


def _reference_zero_shot_logits(image_emb, text_emb):  # written out differently, on purpose
    summed = text_emb.sum(0)
    class_emb = summed / summed.norm(dim=-1, keepdim=True)
    return torch.einsum("nd,kd->nk", image_emb, class_emb)


def _zero_shot_inputs(gen):
    n, t, k, d = 5, int(torch.randint(2, 5, (1,), generator=gen)), 4, 8
    image = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(t, k, d, generator=gen, dtype=torch.float64), dim=-1)
    return image, text


_ZERO_SHOT_BUGS = [
    (lambda img, txt: img @ txt.mean(0).T,
     "Close: the mean of unit vectors is shorter than 1, and by a different amount per class. "
     "Renormalise each class embedding after averaging."),
    (lambda img, txt: img @ txt[0].T,
     "That uses only the first template. Average the text embeddings over all templates."),
    (lambda img, txt: img @ F.normalize(txt.mean(1), dim=-1).T,
     "That averages over the classes. The templates are the first axis: average over dim 0."),
    (lambda img, txt: (F.normalize(txt.mean(0), dim=-1) @ img.T),
     "Transposed: the logits are one row per image, one column per class [N, K]."),
]

register(Drill(
    "01d", "CLIP zero-shot logits with prompt ensembling", LESSON, 3, "code", zero_shot_logits_solution,
    code(_reference_zero_shot_logits, _zero_shot_inputs, hints=_ZERO_SHOT_BUGS, atol=1e-9, rtol=1e-7,
         signature="zero_shot_logits(image_emb, text_emb)",
         praise="That is ftlab.probe.zero_shot_head's weight: the ensembled prompts are a linear "
                "head built from text."),
    wrong=tuple(bug for bug, _ in _ZERO_SHOT_BUGS),
    prompt="zero_shot_logits(image_emb [N, D], text_emb [T, K, D]) -> [N, K]: unit image embeddings "
           "against the template-averaged, renormalised class embeddings."))

# -- 01g: macro-F1 of the majority-class classifier -------------------------------------------------

_MAJORITY_F1 = 2 * 0.9 * 1.0 / (0.9 + 1.0)  # class A: precision 90/100, recall 90/90

register(Drill(
    "01g", "Macro-F1 of always answering the common class", LESSON, 1, "numeric", _MAJORITY_F1 / 3, numeric(
        _MAJORITY_F1 / 3, rel=0.02,
        hints=[(0.9, "That is the accuracy (and micro-F1, which on single-label data equals accuracy). "
                     "Macro-F1 is the mean of the three classes' F1."),
               (_MAJORITY_F1, "That is class A's F1 alone. B and C are never predicted: their F1 is 0, and "
                              "macro-F1 averages all three classes."),
               (1 / 3, "Close: class A's recall is 1, but its precision is 90/100, so its F1 is 2PR/(P+R), "
                       "below 1. Then average with the two zeros."),
               (0.3, "That is macro-precision (0.9 + 0 + 0) / 3. F1 per class first: 2PR / (P + R)."),
               (0.0, "Class A is found every time: its F1 is high. Only B and C score 0.")],
        fallback="Per class: precision = TP / predicted, recall = TP / actual, F1 = 2PR / (P + R); "
                 "then the plain mean over A, B and C.",
        praise="F1(A) = 2 * 0.9 * 1 / 1.9 = 0.947, F1(B) = F1(C) = 0: macro-F1 = 0.316, while accuracy reads 90%."),
    wrong=(0.9, _MAJORITY_F1, 1 / 3, 0.3, 0.0),
    prompt="100 test images, 90 of class A and 5 each of B and C; a classifier always answers A. "
           "Its macro-F1, a number in 0..1?"))

# -- small ResNet-shaped models for the two code drills below -----------------------------------
#
# Torchvision's names (conv1, bn1, layer1..layer4, fc) at toy sizes, so that a function written
# for these works unchanged on the lesson's probe. Built on the CPU under a forked RNG: a check
# cell in the lesson must not move the global random state the lesson's runs are seeded from.

def _mini_resnet(gen, blocks: int = 4) -> torch.nn.Module:
    nn = torch.nn
    c, k = int(torch.randint(2, 6, (1,), generator=gen)), int(torch.randint(2, 7, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        layers = {"conv1": nn.Conv2d(3, c, 3, bias=False), "bn1": nn.BatchNorm2d(c)}
        for b in range(1, blocks + 1):  # each block: a conv without bias, then a BatchNorm
            layers[f"layer{b}"] = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers["fc"] = nn.Linear(c, k)  # the head: [c -> k], with a bias
        return nn.Sequential(OrderedDict(layers))


def _frozen_except(model: torch.nn.Module, trainable: set[str]) -> torch.nn.Module:
    for name, block in model.named_children():
        for p in block.parameters():
            p.requires_grad = name in trainable
    return model


# -- 01e: trainable_count --------------------------------------------------------------------------

def trainable_count_solution(model):
    """Elements of the parameters that get gradients: what the optimiser updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _reference_trainable_count(model):  # a tensor, as the code grader compares tensors
    flat = [p.reshape(-1) for p in model.parameters() if p.requires_grad]
    return torch.tensor(float(torch.cat(flat).numel()), dtype=torch.float64)


def _count_inputs(gen):
    model = _mini_resnet(gen)
    # conv1 always frozen, the head always trainable, the blocks in between at random
    trainable = {"fc"} | {n for n in ("bn1", "layer1", "layer2", "layer3", "layer4")
                          if bool(torch.randint(0, 2, (1,), generator=gen))}
    return (_frozen_except(model, trainable),)


def _as_tensor(fn):
    return lambda model: torch.tensor(float(fn(model)), dtype=torch.float64)


_COUNT_BUGS = [
    (lambda m: sum(p.numel() for p in m.parameters()),
     "That counts every parameter, the frozen ones too. Keep only those with p.requires_grad: "
     "the optimiser never updates the rest."),
    (lambda m: sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and n.endswith("weight")),
     "Close, but the biases are missing: a bias is a parameter that trains too (fc.bias: one per "
     "class). Count every parameter with requires_grad, whatever its name."),
    (lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad) + sum(b.numel() for b in m.buffers()),
     "That adds the buffers: BatchNorm's running mean, variance and num_batches_tracked are "
     "statistics, not parameters, and no optimiser updates them. Count model.parameters() only."),
    (lambda m: sum(1 for p in m.parameters() if p.requires_grad),
     "That counts parameter tensors, not numbers: fc.weight is one tensor of K x d_feat numbers. "
     "Add up p.numel()."),
]

register(Drill(
    "01e", "Write trainable_count", LESSON, 1, "code", trainable_count_solution,
    code(_reference_trainable_count, _count_inputs, hints=[(_as_tensor(bug), text) for bug, text in _COUNT_BUGS],
         atol=0.0, rtol=0.0, signature="trainable_count(model)",
         praise="That is ftlab.probe.trainable_count: what the optimiser updates, and what needs "
                "gradient and Adam memory."),
    wrong=tuple(bug for bug, _ in _COUNT_BUGS),
    prompt="trainable_count(model) -> int: the number of parameter elements with requires_grad=True."))


# -- 01f: optimizer parameter groups with differential learning rates -----------------------------

def param_groups_solution(model, lr):
    """``[(names, lr), ...]``: the head ``fc`` at ``lr``, every other trainable parameter at
    ``lr / 10``; frozen parameters in no group."""
    head = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("fc.")]
    body = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")]
    return [(head, lr), (body, lr / 10)]


NOT_IN_A_GROUP = -1.0  # the code below writes this for a parameter the optimizer never sees


def lr_per_parameter(model, groups) -> torch.Tensor:
    """``[P]`` float64: the learning rate each of ``model``'s P parameters gets from ``groups``
    (``[(names, lr), ...]``), :data:`NOT_IN_A_GROUP` for one in no group. What drill 01f compares;
    a malformed answer gets an error that says what form is wanted."""
    names = [n for n, _ in model.named_parameters()]
    lr_of = dict.fromkeys(names, NOT_IN_A_GROUP)
    if not isinstance(groups, (list, tuple)):
        raise TypeError(f"return a list of (names, lr) pairs, e.g. [(['fc.weight', 'fc.bias'], 0.01), "
                        f"...], not a {type(groups).__name__}")
    seen = set()
    for group in groups:
        if not (isinstance(group, (list, tuple)) and len(group) == 2) or isinstance(group[0], str):
            raise TypeError(f"each group is a pair (list of names, lr), e.g. (['fc.weight', 'fc.bias'], "
                            f"0.01), not {group!r:.80}")
        group_names, group_lr = group
        for name in group_names:
            if not isinstance(name, str):
                raise TypeError("a group lists parameter names (the strings from model.named_parameters()), "
                                f"not {type(name).__name__} objects")
            if name not in lr_of:
                raise ValueError(f"{name!r} is not a parameter of this model; its parameters are named "
                                 f"like {names[:3]}")
            if name in seen:
                raise ValueError(f"{name!r} is in two groups; torch.optim refuses a parameter listed twice")
            seen.add(name)
            lr_of[name] = float(group_lr)
    return torch.tensor([lr_of[n] for n in names], dtype=torch.float64)


def _by_parameter(fn):
    return lambda model, lr: lr_per_parameter(model, fn(model, lr))


def _reference_param_groups(model, lr):  # the rule written per parameter, on purpose
    return torch.tensor([(lr if n.split(".")[0] == "fc" else lr / 10) if p.requires_grad else NOT_IN_A_GROUP
                         for n, p in model.named_parameters()], dtype=torch.float64)


def _groups_inputs(gen):
    # partial fine-tuning: the head and layer4 train; in some trials layer3 too
    model = _mini_resnet(gen)
    lr = (1e-2, 3e-3, 1e-3)[int(torch.randint(0, 3, (1,), generator=gen))]
    trainable = {"fc", "layer4"} | ({"layer3"} if torch.rand((), generator=gen) < 0.5 else set())
    return _frozen_except(model, trainable), lr


def _trainable(model, keep=lambda name: True):
    return [n for n, p in model.named_parameters() if p.requires_grad and keep(n)]


_GROUPS_BUGS = [
    (lambda m, lr: [(_trainable(m, lambda n: n.startswith("fc.")), lr),
                    ([n for n, _ in m.named_parameters() if not n.startswith("fc.")], lr / 10)],
     "Frozen parameters are in a group. Leave out every parameter with requires_grad=False: "
     "the optimizer should only hold what trains."),
    (lambda m, lr: [(_trainable(m), lr)],
     "Everything at the head's lr: the pretrained blocks should move ten times more slowly, lr / 10, "
     "so the fresh head's large early gradients do not wreck the features."),
    (lambda m, lr: [(_trainable(m, lambda n: n.startswith("fc.")), lr / 10),
                    (_trainable(m, lambda n: not n.startswith("fc.")), lr)],
     "Swapped: the fresh head takes the large lr, the pretrained blocks lr / 10."),
    (lambda m, lr: [(_trainable(m, lambda n: not n.startswith("fc.")), lr / 10)],
     "The head is in no group, as good as frozen: the optimizer would never update fc. Put "
     "fc.weight and fc.bias in a group at lr."),
    (lambda m, lr: [(_trainable(m, lambda n: n.startswith("fc.")), lr),
                    (_trainable(m, lambda n: n.startswith("layer4.")), lr / 10)],
     "layer4 is right, but here layer3 trains too: read requires_grad rather than naming the block, "
     "and put every trainable parameter outside the head at lr / 10."),
    (lambda m, lr: [(_trainable(m, lambda n: n.startswith("fc.") and n.endswith("weight")), lr),
                    (_trainable(m, lambda n: not n.startswith("fc.") and n.endswith("weight")), lr / 10)],
     "The biases are in no group (BatchNorm's too), so they never train. Group by block, not by "
     "the name 'weight'."),
]

_groups_grade = code(_reference_param_groups, _groups_inputs,
                     hints=[(_by_parameter(bug), text) for bug, text in _GROUPS_BUGS],
                     atol=0.0, rtol=1e-12, signature="param_groups(model, lr)",
                     praise="That is ftlab.probe.differential_lr_groups, with names in place of the "
                            "tensors torch.optim takes.")


def _grade_param_groups(answer):
    if not callable(answer):
        raise AnswerError("this drill wants a function param_groups(model, lr); pass the function "
                          "itself, without calling it")
    return _groups_grade(_by_parameter(answer))


register(Drill(
    "01f", "Parameter groups for differential learning rates", LESSON, 2, "code", param_groups_solution,
    _grade_param_groups,
    wrong=tuple(bug for bug, _ in _GROUPS_BUGS),
    prompt="param_groups(model, lr) -> [(names, lr), ...]: the head fc at lr, every other trainable "
           "parameter at lr / 10, frozen parameters in no group."))
