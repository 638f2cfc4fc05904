"""Lesson 06's drills: why DPO needs no reward model (the seed's D3, as a derivation), a DPO loss
by hand, and the summed response log-probability checked against ftlab.dpo."""

from __future__ import annotations

import math

import torch

from ._core import Drill, choice, code, numeric, register

LESSON = "06_dpo"


# -- 06a: the partition function cancels (the seed's D3, step by step) ---------------------------

register(Drill(
    "06a", "Where the partition function goes", LESSON, 2, "choice", "b", choice(
        "b",
        {"a": "Z(x) is a sum over every possible response: it is the very thing nobody can compute. "
              "It is not estimated; look at what happens to it in a difference of two rewards.",
         "c": "beta multiplies log Z(x) too; setting beta to 1 does not remove it.",
         "d": "The reference model only gives pi_ref(y|x), a per-response probability. Z(x) sums "
              "pi_ref(y|x) exp(r/beta) over all y, and still depends on the prompt x."},
        "Z(x) depends on the prompt only. Chosen and rejected share the prompt, so in "
        "r(x, y_c) - r(x, y_r) the beta*log Z(x) terms cancel, and Bradley-Terry needs only that difference."),
    wrong=("a", "c", "d"),
    prompt="From pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x), r = beta*log(pi*/pi_ref) + beta*log Z(x). "
           "Why can DPO's loss ignore Z(x)?",
    options={"a": "DPO estimates Z(x) by sampling responses from the policy.",
             "b": "Z(x) depends only on the prompt, so it cancels in the chosen-minus-rejected reward difference.",
             "c": "With beta = 1, log Z(x) = 0.",
             "d": "The reference model computes Z(x) in its forward pass."}))


# -- 06b: one DPO loss by hand -------------------------------------------------------------------

def _loss(margin: float) -> float:
    return math.log1p(math.exp(-margin))  # -log sigmoid(margin)


_06B = _loss(0.1 * ((-12 + 15) - (-20 + 18)))  # 0.474
register(Drill(
    "06b", "One DPO loss by hand", LESSON, 1, "numeric", round(_06B, 4), numeric(
        _06B, rel=0.01,
        hints=[(_loss(5.0), "beta is missing: the margin is multiplied by beta inside the sigmoid."),
               (_loss(-0.5), "Sign: the margin is chosen's log-ratio minus rejected's, and the loss is -log sigmoid."),
               (_loss(0.1 * (-12 + 20)), "The reference is missing: the reward is beta * (policy - reference)."),
               (0.5, "That is the margin beta * (3 - (-2)); the loss is -log sigmoid of it.")],
        fallback="log-ratios: chosen -12 - (-15) = 3, rejected -20 - (-18) = -2; margin 0.1 * (3 - (-2)); "
                 "loss = -log sigmoid(margin).",
        praise="-log sigmoid(0.1 * (3 + 2)) = -log sigmoid(0.5) = 0.474. The chosen reward is 0.3, the rejected -0.2."),
    wrong=(round(_loss(5.0), 4), round(_loss(-0.5), 4), round(_loss(0.8), 4), 0.5),
    prompt="beta = 0.1; policy log-probs: chosen -12, rejected -20; reference: chosen -15, rejected -18. "
           "The DPO loss of this pair (a number)?"))


# -- 06c: the summed response log-probability ----------------------------------------------------

def response_logprob_solution(logits, labels):
    """(B, L, V) logits, (B, L) labels with -100 on the prompt -> (B,) summed log-probs of the
    response tokens: position t predicts labels[:, t + 1]."""
    logps = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = labels[:, 1:]
    mask = targets != -100
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1)


def _inputs(gen):
    b, n, v = 3, 7, 11
    logits = torch.randn(b, n, v, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, v, (b, n), generator=gen)
    prompt = torch.randint(1, n - 2, (b,), generator=gen)
    labels[torch.arange(n) < prompt.unsqueeze(1)] = -100
    return logits, labels


def _no_shift(logits, labels):
    logps = torch.log_softmax(logits, dim=-1)
    mask = labels != -100
    return (logps.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(1)


def _no_softmax(logits, labels):
    targets, mask = labels[:, 1:], labels[:, 1:] != -100
    return (logits[:, :-1].gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(1)


def _mean(logits, labels):
    mask = labels[:, 1:] != -100
    return response_logprob_solution(logits, labels) / mask.sum(1)


def _with_prompt(logits, labels):
    logps = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = labels[:, 1:].clamp(min=0)
    return logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(1)


_BUGS = [(_no_shift, "The logits at position t predict the token at t + 1: drop the last logit and the first label."),
         (_no_softmax, "Those are raw logits; take log_softmax over the vocabulary first."),
         (_mean, "DPO (and TRL) SUM the response log-probabilities; that is a per-token mean."),
         (_with_prompt, "The masked positions (-100) must contribute nothing: multiply by the mask.")]

register(Drill(
    "06c", "The response log-probability", LESSON, 3, "code", response_logprob_solution,
    code(response_logprob_solution, _inputs, hints=_BUGS, atol=1e-8, rtol=1e-6,
         signature="response_logprob(logits, labels)",
         praise="That is ftlab.dpo.sequence_logprobs (and TRL's logps) from the logits: shift, "
                "log_softmax, gather, mask, sum."),
    wrong=tuple(bug for bug, _ in _BUGS),
    prompt="response_logprob(logits (B, L, V), labels (B, L) with -100 on the prompt) -> (B,) summed "
           "log-probabilities of the response tokens."))
