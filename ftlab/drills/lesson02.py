"""Lesson 02's drills: write the merge (checked against peft), count LoRA's parameters on the
full profile's model, the rsLoRA scale, and why B starts at zero."""

from __future__ import annotations

import torch

from ._core import Drill, choice, code, numeric, register

LESSON = "02_lora_from_scratch"


# -- 02a: merge, against peft's lora.Linear.merge() ----------------------------------------------

def merge_solution(W, A, B, scale):
    """The merged weight (d_out, d_in): W + scale * B @ A."""
    return W + scale * (B @ A)


def _peft_merge(W, A, B, scale):
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLoraLinear

    r = A.shape[0]
    base = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    config = LoraConfig(r=r, lora_alpha=scale * r, target_modules=["base"])
    layer = PeftLoraLinear(base, "default", config, r=r, lora_alpha=scale * r)
    with torch.no_grad():
        base.weight.copy_(W)
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
        layer.merge()
        return base.weight.clone()


def _merge_inputs(gen):
    d_out, d_in, r = 10, 14, int(torch.randint(1, 5, (1,), generator=gen))
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return randn(d_out, d_in), randn(r, d_in), randn(d_out, r), float(torch.randint(1, 9, (1,), generator=gen)) / 4


_MERGE_BUGS = [
    (lambda W, A, B, s: W + B @ A, "Close: the update B @ A is missing its scale (alpha / r)."),
    (lambda W, A, B, s: s * (W + B @ A), "Only the update is scaled; the frozen W goes in unscaled."),
    (lambda W, A, B, s: W - s * (B @ A), "That subtracts the update: it is how peft *unmerges*."),
    (lambda W, A, B, s: s * (B @ A), "That is only the update ΔW. The merged layer still needs the frozen W."),
]

register(Drill(
    "02a", "Write the merge (checked against peft)", LESSON, 2, "code", merge_solution,
    code(_peft_merge, _merge_inputs, hints=_MERGE_BUGS, signature="merge_weight(W, A, B, scale)",
         praise="Equal to peft's merge(). One d_out x d_in matrix again: the merged layer costs "
                "exactly what the base did."),
    wrong=tuple(bug for bug, _ in _MERGE_BUGS),
    prompt="merge_weight(W, A, B, scale) -> the merged weight, for W (d_out, d_in), A (r, d_in), B (d_out, r)."))


# -- 02b: LoRA's parameters on the full profile's model -------------------------------------------

_TINYLLAMA = 22 * (8 * (2048 + 2048) + 8 * (2048 + 256))  # 22 blocks; q 2048->2048, v 2048->256

register(Drill(
    "02b", "Trainable parameters of LoRA on TinyLlama", LESSON, 2, "numeric", _TINYLLAMA, numeric(
        _TINYLLAMA, rel=0.0,
        hints=[(22 * 2 * 8 * (2048 + 2048), "v_proj is not square: with grouped-query attention it maps "
                                            "2048 -> 4 KV heads x 64 = 256."),
               (8 * (2048 + 2048) + 8 * (2048 + 256), "That is one block. The model has 22."),
               (22 * 8 * (2048 + 2048), "That counts q_proj only; v_proj has its own A and B."),
               (22 * (2048 * 2048 + 2048 * 256), "That is the frozen weights of q_proj and v_proj, d_out x d_in each."),
               (22 * 2 * 8 * 8, "LoRA's factors are r x d_in and d_out x r, not r x r.")],
        fallback="Each wrapped layer adds r * (d_in + d_out); add q_proj and v_proj, times the blocks.",
        praise="22 x (8 x 4096 + 8 x 2304) = 1,126,400: about 0.1% of TinyLlama's 1.1B."),
    wrong=(22 * 2 * 8 * 4096, 8 * 4096 + 8 * 2304, 22 * 8 * 4096, 22 * (2048 * 2048 + 2048 * 256), 22 * 2 * 64),
    prompt="TinyLlama: 22 blocks, hidden 2048, q_proj 2048->2048, v_proj 2048->256. LoRA r=8 on q_proj "
           "and v_proj: trainable parameters?"))


# -- 02c: the rsLoRA scale ----------------------------------------------------------------------

register(Drill(
    "02c", "The rsLoRA scale", LESSON, 1, "numeric", 2.0, numeric(
        2.0, rel=0.001,
        hints=[(0.25, "That is alpha / r, plain LoRA's scale. rsLoRA divides by the square root of r."),
               (8.0, "That is sqrt(r) alone; the scale is alpha divided by it."),
               (128.0, "That multiplies alpha by sqrt(r); rsLoRA divides by it."),
               (4.0, "That is sqrt(alpha). The scale is alpha / sqrt(r).")],
        fallback="rsLoRA scales B @ A by alpha / sqrt(r).",
        praise="16 / sqrt(64) = 2. Plain LoRA would use 16 / 64 = 0.25: at a large rank its update "
               "is scaled down so much that it learns slowly, which is what rsLoRA fixes."),
    wrong=(0.25, 8, 128, 4),
    prompt="alpha = 16, r = 64, use_rslora=True: the number that multiplies B @ A?"))


# -- 02d: why B starts at zero, and A does not --------------------------------------------------

register(Drill(
    "02d", "Both factors at zero?", LESSON, 2, "choice", "b", choice(
        "b",
        {"a": "The gradient of A is B^T times something, and of B something times A^T: with both at "
              "zero, neither gradient is ever nonzero.",
         "c": "Nothing is divided by B or A; zero factors give a zero update, not a NaN.",
         "d": "B's gradient is (grad_out)^T (x A^T): it needs a nonzero A, which is exactly what was taken away."},
        "With A = B = 0 both gradients are zero and stay zero: a saddle the optimizer never leaves. "
        "One random factor (A) breaks the tie; the other at zero (B) keeps the start equal to the "
        "pretrained model."),
    wrong=("a", "c", "d"),
    options={"a": "It trains as usual: the output starts unchanged, which is all that matters.",
             "b": "The output starts unchanged, but neither A nor B ever gets a nonzero gradient, so the adapter never learns.",
             "c": "The loss is NaN at the first step.",
             "d": "Only B learns, so the update is still low-rank and training works."},
    prompt="You initialise both A and B to zeros instead of A random and B zero. What happens in training?"))
