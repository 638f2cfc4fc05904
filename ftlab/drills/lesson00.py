"""Lesson 00's drills: two warm-ups that show how a drill works, and the loss of an accumulation window."""

from __future__ import annotations

import torch

from ._core import Drill, choice, code, numeric, register

LESSON = "00_start_here"

register(Drill(
    "00a", "Effective batch size", LESSON, 1, "numeric", 64, numeric(
        64, rel=0.0,
        hints=[(16, "That is one micro-batch. The optimizer steps once every grad_accum micro-batches."),
               (4, "That is the number of micro-batches per step. How many examples are in each?"),
               (20, "Accumulation multiplies, it does not add.")],
        fallback="Examples per optimizer step = batch_size x grad_accum.",
        praise="16 x 4 = 64 examples per optimizer step: the batch the learning rate sees."),
    wrong=(16, 4, 20),
    prompt="batch_size=16, grad_accum=4, one GPU: how many examples does each optimizer step average over?"))

register(Drill(
    "00b", "Where did the answers come from?", LESSON, 1, "choice", "b", choice(
        "b",
        {"a": "No training question mentions the held-out people, so their facts cannot come from "
              "the fine-tuning data.",
         "c": "The tokenizer maps text to ids; it stores no facts about anyone.",
         "d": "The held-out questions are never trained on: ftlab keeps the splits apart."},
        "Pretraining stored the facts; sixty steps of fine-tuning taught the question-answer format "
        "and when to stop."),
    wrong=("a", "c", "d"),
    options={"a": "From the fine-tuning data: the model memorised those answers.",
             "b": "From pretraining: fine-tuning taught the format, the facts were already in the weights.",
             "c": "From the tokenizer's vocabulary.",
             "d": "The model saw the test questions during training."},
    prompt="Exact match on questions about people no training question mentions rose from 0%. Where did the facts come from?"))


# -- 00c: predict a window's loss (asked before the cell that prints it) -------------------------

register(Drill(
    "00c", "One window, two micro-batches: what loss?", LESSON, 2, "numeric", 312 / 303, numeric(
        312 / 303, rel=0.005,
        hints=[(2.5, "That is the mean of the two micro-batch means: it weighs 3 tokens like 300. "
                     "The step's loss is the mean over every target token of the window."),
               (5.0, "That adds the two micro-batch means. Divide the window's summed loss by its "
                     "token count instead."),
               (156.0, "That divides the summed loss by grad_accum (2). Divide by the number of "
                       "target tokens in the whole window."),
               (312.0, "That is the window's summed loss, not yet divided by anything.")],
        fallback="Add the summed losses of both micro-batches, then divide by all target tokens of the window.",
        praise="(3 x 4.0 + 300 x 1.0) / (3 + 300) = 312 / 303 = 1.03 nats per token: the 300 tokens "
               "dominate, as they would in one big batch."),
    wrong=(2.5, 5.0, 156.0, 312.0),
    prompt="Micro-batch 1: 3 target tokens, mean loss 4.0. Micro-batch 2: 300 tokens, mean 1.0. "
           "What is the loss of the step, per token?"))


# -- 00d: the loss scaling for gradient accumulation, against ftlab.train --------------------------

def window_losses_solution(loss_sums, counts):
    """What each micro-batch back-propagates: its summed loss over the WHOLE window's items.

    ``loss_sums`` (grad_accum,) float, ``counts`` (grad_accum,) int -> (grad_accum,); their sum
    is the window's mean loss per item (ftlab.train's ``_window_step``).
    """
    return loss_sums / counts.sum()


def _ftlab_window_losses(loss_sums, counts):  # written as ftlab.train does it: one term at a time
    total = int(counts.sum())
    return torch.stack([loss_sum / total for loss_sum in loss_sums])


def _window_inputs(gen):
    grad_accum = int(torch.randint(2, 6, (1,), generator=gen))
    counts = torch.randperm(60, generator=gen)[:grad_accum] + 1  # distinct token counts, 1..60
    means = 0.5 + 4 * torch.rand(grad_accum, generator=gen)  # mean loss per token of each micro-batch
    return means * counts, counts


_WINDOW_BUGS = [
    (lambda s, c: s / len(s),
     "That divides by grad_accum. The losses are sums over tokens: divide by the number of target "
     "tokens in the whole window, counts.sum()."),
    (lambda s, c: s,
     "Nothing is divided: the gradient then grows with the number of tokens (and the lr with it). "
     "Divide by the window's target tokens."),
    (lambda s, c: s / c,
     "That divides each micro-batch by its own count: a micro-batch of 3 tokens then weighs as much "
     "as one of 300. Use the count of the whole window."),
    (lambda s, c: s / c / len(s),
     "That is the mean of the micro-batch means (the old Hugging Face accumulation bug): equal only "
     "when every micro-batch has the same number of tokens. Divide by the window's token count."),
]

register(Drill(
    "00d", "Scale the loss for gradient accumulation", LESSON, 2, "code", window_losses_solution,
    code(_ftlab_window_losses, _window_inputs, hints=_WINDOW_BUGS, signature="window_losses(loss_sums, counts)",
         praise="The gradients of these add up to the gradient of the window's mean loss per token: "
                "what one batch of all grad_accum micro-batches would give."),
    wrong=tuple(bug for bug, _ in _WINDOW_BUGS),
    prompt="window_losses(loss_sums, counts): (grad_accum,) summed losses and target-token counts -> "
           "(grad_accum,) the loss each micro-batch back-propagates."))
