"""Lesson 08's mixed review: code drills checked against peft and the DPO formula, plus numbers.

The code drills run the student's function on random inputs and compare it with the library a
competitor would use (peft's LoRA layer) or with the formula itself (the DPO loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import Drill, choice, code, numeric, register

LESSON = "08_drills"


# -- 08a: the LoRA forward, against peft's lora.Linear ------------------------------------------

def lora_forward_solution(x, W, A, B, scale):
    """y = x W^T + scale * (x A^T) B^T, without ever forming the d x k product B A."""
    return x @ W.T + scale * ((x @ A.T) @ B.T)


def _peft_lora_forward(x, W, A, B, scale):
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLoraLinear

    r = A.shape[0]
    base = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        base.weight.copy_(W)
    config = LoraConfig(r=r, lora_alpha=scale * r, target_modules=["base"])
    layer = PeftLoraLinear(base, "default", config, r=r, lora_alpha=scale * r)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
        return layer(x)


def _lora_inputs(gen):
    d_in, d_out, r = 12, 10, int(torch.randint(1, 5, (1,), generator=gen))
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return randn(2, 5, d_in), randn(d_out, d_in), randn(r, d_in), randn(d_out, r), float(torch.randint(1, 5, (1,), generator=gen)) / 2


_LORA_BUGS = [
    (lambda x, W, A, B, s: x @ W.T + (x @ A.T) @ B.T,
     "Close: the update is missing its scale (alpha / r)."),
    (lambda x, W, A, B, s: s * ((x @ A.T) @ B.T),
     "That is only the low-rank update. The frozen base still contributes x W^T."),
    (lambda x, W, A, B, s: x @ W.T + s * (x @ A.T),
     "The rank-r intermediate must go through B to get back to d_out features."),
    (lambda x, W, A, B, s: s * (x @ W.T + (x @ A.T) @ B.T),
     "Only the update is scaled; the base output is added unscaled."),
]

register(Drill(
    "08a", "Write the LoRA forward (checked against peft)", LESSON, 2, "code", lora_forward_solution,
    code(_peft_lora_forward, _lora_inputs, hints=_LORA_BUGS, signature="lora_forward(x, W, A, B, scale)",
         praise="Equal to peft's lora.Linear on random inputs. Computing (x A^T) B^T keeps the "
                "rank-r bottleneck: never build the full B A."),
    wrong=tuple(bug for bug, _ in _LORA_BUGS),
    prompt="lora_forward(x, W, A, B, scale) for x (..., d_in), W (d_out, d_in), A (r, d_in), B (d_out, r)."))


# -- 08b: the DPO loss, against the formula ------------------------------------------------------

def dpo_loss_solution(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), averaged over the batch."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def _dpo_formula(pc, pr, rc, rr, beta):  # written out differently from the solution, on purpose
    logits = beta * (pc - pr) - beta * (rc - rr)
    return torch.log1p(torch.exp(-logits)).mean()


def _dpo_inputs(gen):
    n = int(torch.randint(2, 9, (1,), generator=gen))
    logp = lambda: -20 * torch.rand(n, generator=gen, dtype=torch.float64)  # noqa: E731
    return logp(), logp(), logp(), logp(), float(torch.rand(1, generator=gen)) * 0.5 + 0.05


_DPO_BUGS = [
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(),
     "The reference model is missing: the reward is beta * log(pi / pi_ref), a log-ratio."),
    (lambda pc, pr, rc, rr, b: F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean(),
     "Check the sign: a loss to minimise is the *negative* log-likelihood of preferring chosen."),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum(),
     "Right per pair; average over the batch instead of summing."),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid((pc - rc) - (pr - rr)).mean(),
     "beta is missing: it scales the margin inside the sigmoid."),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean(),
     "Chosen and rejected are swapped: the margin is chosen minus rejected."),
]

register(Drill(
    "08b", "Write the DPO loss (checked against the formula)", LESSON, 2, "code", dpo_loss_solution,
    code(_dpo_formula, _dpo_inputs, hints=_DPO_BUGS, atol=1e-8, rtol=1e-6,
         signature="dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)",
         praise="That is TRL's sigmoid DPO loss. F.logsigmoid is the stable way to write log(sigmoid)."),
    wrong=tuple(bug for bug, _ in _DPO_BUGS),
    prompt="dpo_loss(...) -> scalar: the mean of -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))."))


# -- 08c: tokens per optimizer step --------------------------------------------------------------

register(Drill(
    "08c", "Tokens per optimizer step on two GPUs", LESSON, 1, "numeric", 32768, numeric(
        32768, rel=0.0,
        hints=[(16384, "That is one GPU's share. Under DDP every GPU runs its own micro-batches."),
               (2048, "That is one micro-batch on one GPU. The step also accumulates 8 of them."),
               (64, "That counts sequences. Multiply by the tokens in each.")],
        fallback="per-device batch x grad_accum x GPUs gives sequences per step; times seq_len.",
        praise="4 x 8 x 2 = 64 sequences x 512 tokens = 32,768 tokens per step."),
    wrong=(16384, 2048, 64),
    prompt="Per-device batch 4, grad_accum 8, 2 GPUs (DDP), sequences of 512 tokens: tokens per optimizer step?"))


# -- 08d: the bits NF4 really costs --------------------------------------------------------------

register(Drill(
    "08d", "Bits per parameter of NF4 with its scales", LESSON, 2, "numeric", 4.5, numeric(
        4.5, rel=0.005,
        hints=[(4.0, "4 bits is the code alone. Each block of 64 weights also stores one fp32 absmax."),
               (4.127, "That is with double quantization. Here the absmax scales stay fp32."),
               (36.0, "One fp32 absmax is shared by 64 weights: divide its 32 bits by the block."),
               (0.5, "That is bytes for the code alone; the question asks bits, scales included.")],
        fallback="Bits = 4 for the code + (bits of one absmax) / (weights per block).",
        praise="4 + 32/64 = 4.5 bits. Double quantization brings the scales to ~0.127 bits: ~4.127."),
    wrong=(4, 4.127, 36, 0.5),
    prompt="NF4 with blocksize 64 and one fp32 absmax per block, no double quantization: bits per parameter?"))


# -- 08e: a NaN loss on step one -----------------------------------------------------------------

register(Drill(
    "08e", "A NaN loss at step one of SFT", LESSON, 3, "choice", "c", choice(
        "c",
        {"a": "A high learning rate diverges over steps, but this loss is NaN before any update.",
         "b": "fp16 overflow gives inf/NaN in big activations, yet this model runs in fp32 here.",
         "d": "Padding is masked with -100 and ignored; it cannot make the mean undefined on its own."},
        "Every label in that batch is -100, so the mean cross-entropy is 0/0 = NaN. Truncate the "
        "prompt, not the response, or drop the example (ftlab.sft refuses to build it)."),
    wrong=("a", "b", "d"),
    options={"a": "The learning rate is too high.",
             "b": "fp16 overflow in the attention scores.",
             "c": "The only example in the batch has a prompt that fills max_length, so every label is -100.",
             "d": "Padding tokens are included in the loss."},
    prompt="fp32, batch size 1, prompt masked with -100, truncation at max_length; loss is NaN at step one. Why?"))
