"""Lesson 06's drills: why DPO needs no reward model (the seed's D3, as a derivation), a DPO loss
by hand, the summed response log-probability and the DPO loss with its implicit rewards (both
checked against ftlab.dpo, in the middle of the lesson, before its reference cells), and the loss
at step 0 predicted before the lesson prints it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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
         (_with_prompt, "The -100 positions (the prompt) were counted: multiply the picked log-probs by "
                        "the mask labels != -100 so that only response tokens add up.")]

register(Drill(
    "06c", "The response log-probability", LESSON, 3, "code", response_logprob_solution,
    code(response_logprob_solution, _inputs, hints=_BUGS, atol=1e-8, rtol=1e-6,
         signature="response_logprob(logits, labels)",
         praise="That is ftlab.dpo.sequence_logprobs (and TRL's logps) from the logits: shift, "
                "log_softmax, gather, mask, sum."),
    wrong=tuple(bug for bug, _ in _BUGS),
    prompt="response_logprob(logits (B, L, V), labels (B, L) with -100 on the prompt) -> (B,) summed "
           "log-probabilities of the response tokens."))


# -- 06d: the DPO loss and its implicit rewards (lesson 08's 08b reviews the loss alone) ----------

def dpo_loss_solution(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """(B,) summed log-probs x 4 and beta -> (loss 0-d, chosen_rewards (B,), rejected_rewards (B,))."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)        # implicit reward beta * log(pi / pi_ref)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards, rejected_rewards


def _ftlab_dpo_loss(pc, pr, rc, rr, beta):
    from ftlab.dpo import dpo_loss

    return dpo_loss(pc, pr, rc, rr, beta)


def _loss_inputs(gen):
    n = int(torch.randint(2, 9, (1,), generator=gen))
    logp = lambda: -30 * torch.rand(n, generator=gen, dtype=torch.float64)  # noqa: E731
    return logp(), logp(), logp(), logp(), float(torch.rand(1, generator=gen)) * 0.9 + 0.05


_RETURNS = "(loss, chosen_rewards, rejected_rewards)"


class _NotATriple(Exception):
    """The student's dpo_loss returned something other than three tensors."""


def _flat(fn):
    """``fn``'s three outputs as one (1 + 2B,) tensor, so the code grader compares all three at once."""
    def flat(*args):
        out = fn(*args)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            what = f"{len(out)} things" if isinstance(out, (tuple, list)) else f"a {type(out).__name__}"
            raise _NotATriple(f"dpo_loss returns three things, {_RETURNS}; yours returned {what}.")
        loss, chosen, rejected = (torch.as_tensor(t, dtype=torch.float64) for t in out)
        if loss.numel() != 1:
            raise _NotATriple(f"the loss is one number, the mean over the pairs; yours has shape {tuple(loss.shape)}.")
        return torch.cat([loss.reshape(1), chosen.reshape(-1), rejected.reshape(-1)])
    return flat


def _loss(pc, pr, rc, rr, b, loss):  # a bug in the loss alone: the rewards are right
    return loss, b * (pc - rc), b * (pr - rr)


_LOSS_BUGS = [
    (lambda pc, pr, rc, rr, b: _loss(pc, pr, rc, rr, b, F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean()),
     "The sign is flipped: the loss is MINUS log sigmoid of the reward margin (a negative log-likelihood "
     "to minimise)."),
    (lambda pc, pr, rc, rr, b: _loss(pc, pr, rc, rr, b, -b * F.logsigmoid((pc - rc) - (pr - rr)).mean()),
     "beta is on the wrong side: it scales the margin INSIDE the sigmoid, -log sigmoid(beta * margin), "
     "not the loss outside it."),
    (lambda pc, pr, rc, rr, b: _loss(pc, pr, rc, rr, b, -F.logsigmoid(((pc - rc) - (pr - rr)) / b).mean()),
     "beta divides the margin here; it multiplies it: the reward is beta * log(pi / pi_ref)."),
    (lambda pc, pr, rc, rr, b: _loss(pc, pr, rc, rr, b, -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum()),
     "That is the sum over the pairs; the loss is the mean, so it does not grow with the batch size."),
    (lambda pc, pr, rc, rr, b: _loss(pc, pr, rc, rr, b, -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean()),
     "Chosen and rejected are swapped: the margin is chosen's reward minus rejected's."),
    (lambda pc, pr, rc, rr, b: _loss(pc, pr, rc, rr, b, -F.logsigmoid(b * (pc - pr)).mean()),
     "The reference is missing from the loss: each reward is beta * (policy - reference)."),
    (lambda pc, pr, rc, rr, b: (-F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean(), pc - rc, pr - rr),
     "The loss is right; the rewards need beta too: chosen_rewards = beta * (policy_chosen - ref_chosen)."),
]


def _dpo_loss_grader():
    inner = code(_flat(_ftlab_dpo_loss), _loss_inputs, hints=[(_flat(bug), text) for bug, text in _LOSS_BUGS],
                 atol=1e-8, rtol=1e-6, signature=f"dpo_loss(policy_chosen, policy_rejected, ref_chosen, "
                                                 f"ref_rejected, beta) -> {_RETURNS}",
                 praise="Equal to ftlab.dpo.dpo_loss, loss and rewards, on random batches: TRL's sigmoid "
                        "loss, with the implicit rewards TRL logs as rewards/chosen and rewards/rejected.")

    def grade(answer):
        if not callable(answer):
            return inner(answer)  # its message names the signature
        ok, text = inner(_flat(answer))
        if not ok and text.startswith("Your function raised _NotATriple"):
            text = text.split(": ", 1)[1]  # the shape of the return, said plainly
        return ok, text
    return grade


register(Drill(
    "06d", "The DPO loss and its implicit rewards", LESSON, 2, "code", dpo_loss_solution, _dpo_loss_grader(),
    wrong=tuple(bug for bug, _ in _LOSS_BUGS),
    prompt=f"dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta), each (B,) but beta -> "
           f"{_RETURNS}: the mean of -log sigmoid(reward margin) and the (B,) rewards beta * log(pi / pi_ref)."))


# -- 06e: predict, then run: the loss before the first update ----------------------------------

_LOG2 = math.log(2)
register(Drill(
    "06e", "Predict the DPO loss at step 0", LESSON, 1, "numeric", round(_LOG2, 4), numeric(
        _LOG2, rel=0.01,
        hints=[(0.0, "Every reward margin is 0 at step 0, but the loss is -log sigmoid(0), and sigmoid(0) is not 1."),
               (0.5, "sigmoid(0) = 0.5 is the probability the model gives 'chosen wins'; the loss is -log of it."),
               (-_LOG2, "Sign: the loss is MINUS log sigmoid(0), a positive number.")],
        fallback="At step 0 the DPO adapter is B = 0: the policy IS the reference, every log-ratio is 0. "
                 "What is -log sigmoid(beta * 0)?",
        praise="log 2 = 0.693, whatever beta and whatever the data: a coin toss on every pair. Each step "
               "of the run starts from there."),
    wrong=(0, 0.5, round(-_LOG2, 4)),
    prompt="Before the first update the policy equals the reference. The DPO loss of a batch (a number)?"))
