"""Lesson 01's drills: counting a probe's parameters, what build_linear_probe freezes, picking
probe vs partial vs full fine-tuning, and CLIP's zero-shot head with prompt ensembling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import Drill, choice, code, numeric, register

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
