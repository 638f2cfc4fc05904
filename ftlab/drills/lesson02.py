"""Lesson 02's drills, in the order the lesson asks them: write LoRA's forward (with its dropout)
and its merge, both checked against peft, in the middle of the lesson before the reference class;
predict the trainable parameters of LoRA on the tiny model before the cell prints them; then the
review at the end: the rsLoRA scale, and why B starts at zero."""

from __future__ import annotations

import torch

from ._core import Drill, choice, code, numeric, register

LESSON = "02_lora_from_scratch"


def _peft_layer(W, A, B, r, alpha, dropout=None):
    """peft's lora.Linear around a bias-free base with weight W, holding A and B; ``dropout``
    (a function of the LoRA input, or None) stands in for its nn.Dropout, so that a random mask
    becomes a fixed one that the check can repeat."""
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLoraLinear

    base = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer = PeftLoraLinear(base, "default", LoraConfig(r=r, lora_alpha=alpha, target_modules=["base"]),
                           r=r, lora_alpha=alpha)
    if dropout is not None:
        layer.lora_dropout["default"] = _AsModule(dropout)
    with torch.no_grad():
        base.weight.copy_(W)
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
    return layer


class _AsModule(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class FixedMask:
    """A dropout with its mask drawn once: ``x * mask / (1 - p)``, the same every call, so that the
    check can compare a function that uses it with peft's layer using it (nn.Dropout draws anew)."""

    def __init__(self, d_in: int, p: float, generator: torch.Generator):
        self.p = p
        self.mask = (torch.rand(d_in, generator=generator) >= p).float() / (1 - p)

    def __call__(self, x):
        return x * self.mask

    def __repr__(self):
        return f"FixedMask(p={self.p})"


def _trial(gen) -> int:
    """Which trial of the check this is: code() seeds each trial's generator with 1000 + trial."""
    return gen.initial_seed() - 1000


def _shapes(gen):
    """(d_out, d_in, r, alpha): trial 0 square (so that a transposed update has the right shape and
    gets its own hint), the others not; alpha is never r, so scale = alpha / r is never 1 or r / alpha."""
    d_out, d_in = (12, 12) if _trial(gen) == 0 else (10, 14)
    r = int(torch.randint(1, 5, (1,), generator=gen))
    alpha = r * (0.5, 2.0, 4.0)[int(torch.randint(0, 3, (1,), generator=gen))]
    return d_out, d_in, r, alpha


# -- 02a: the forward of LoRALinear, dropout included, against peft's lora.Linear ----------------

def forward_solution(x, W, A, B, r, alpha, dropout=None):
    """y = x W^T + (alpha / r) * dropout(x) A^T B^T, for x (..., d_in) -> y (..., d_out)."""
    h = x if dropout is None else dropout(x)
    return x @ W.T + (alpha / r) * ((h @ A.T) @ B.T)


def _peft_forward(x, W, A, B, r, alpha, dropout=None):
    with torch.no_grad():
        return _peft_layer(W, A, B, r, alpha, dropout)(x)


def _forward_inputs(gen):
    """Trials 0 and 2 without dropout, 1 and 3 with a fixed mask, so both cases are checked."""
    d_out, d_in, r, alpha = _shapes(gen)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    dropout = FixedMask(d_in, 0.25, gen) if _trial(gen) % 2 else None
    return randn(2, 5, d_in), randn(d_out, d_in), randn(r, d_in), randn(d_out, r), r, alpha, dropout


def _on(x, dropout):
    return x if dropout is None else dropout(x)


_FORWARD_BUGS = [
    (lambda x, W, A, B, r, a, d=None: x @ W.T + (_on(x, d) @ A.T) @ B.T,
     "Close: the update is missing its scale, alpha / r."),
    (lambda x, W, A, B, r, a, d=None: x @ W.T + (r / a) * ((_on(x, d) @ A.T) @ B.T),
     "The scale is upside down: alpha / r, so that a larger alpha means a larger update."),
    (lambda x, W, A, B, r, a, d=None: x @ W.T + (a / r) * (_on(x, d) @ (B @ A)),
     "x (..., d_in) meets the update transposed: x A^T B^T = x (B A)^T, not x (B A)."),
    (lambda x, W, A, B, r, a, d=None: _on(x, d) @ W.T + (a / r) * ((_on(x, d) @ A.T) @ B.T),
     "Dropout goes on the input of the LoRA path only; the frozen base sees x as it is."),
    (lambda x, W, A, B, r, a, d=None: x @ W.T + (a / r) * ((x @ A.T) @ B.T),
     "Right without dropout; when `dropout` is given, apply it to x before A (the LoRA path only)."),
]

register(Drill(
    "02a", "Write LoRALinear's forward, dropout included (checked against peft)", LESSON, 2, "code",
    forward_solution,
    code(_peft_forward, _forward_inputs, hints=_FORWARD_BUGS,
         signature="lora_linear_forward(x, W, A, B, r, alpha, dropout=None)",
         praise="Equal to peft's lora.Linear, with and without dropout: the base sees x, the low-rank "
                "path sees dropout(x), and (x A^T) B^T is only r wide in the middle."),
    wrong=tuple(bug for bug, _ in _FORWARD_BUGS),
    prompt="lora_linear_forward(x, W, A, B, r, alpha, dropout=None) for x (..., d_in), W (d_out, d_in), "
           "A (r, d_in), B (d_out, r); dropout is None or a function to apply to the LoRA input."))


# -- 02b: merge, against peft's lora.Linear.merge() ----------------------------------------------

def merge_solution(W, A, B, r, alpha):
    """The merged weight (d_out, d_in): W + (alpha / r) * B @ A."""
    return W + (alpha / r) * (B @ A)


def _peft_merge(W, A, B, r, alpha):
    layer = _peft_layer(W, A, B, r, alpha)
    with torch.no_grad():
        layer.merge()
        return layer.get_base_layer().weight.clone()


def _merge_inputs(gen):
    d_out, d_in, r, alpha = _shapes(gen)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return randn(d_out, d_in), randn(r, d_in), randn(d_out, r), r, alpha


_MERGE_BUGS = [
    (lambda W, A, B, r, a: W + B @ A, "Close: the update B @ A is missing its scale, alpha / r."),
    (lambda W, A, B, r, a: W + (r / a) * (B @ A),
     "The scale is upside down: alpha / r, so that a larger alpha means a larger update."),
    (lambda W, A, B, r, a: W + (a / r) * (A.T @ B.T),
     "That is the update transposed: B @ A is (d_out, r)(r, d_in) = (d_out, d_in), W's own shape."),
    (lambda W, A, B, r, a: (a / r) * (W + B @ A), "Only the update is scaled; the frozen W goes in unscaled."),
    (lambda W, A, B, r, a: W - (a / r) * (B @ A), "That subtracts the update: it is how peft *unmerges*."),
    (lambda W, A, B, r, a: (a / r) * (B @ A), "That is only the update ΔW. The merged layer still needs the frozen W."),
]

register(Drill(
    "02b", "Write the merge (checked against peft)", LESSON, 2, "code", merge_solution,
    code(_peft_merge, _merge_inputs, hints=_MERGE_BUGS, signature="merge_weight(W, A, B, r, alpha)",
         praise="Equal to peft's merge(). One d_out x d_in matrix again: the merged layer costs "
                "exactly what the base did."),
    wrong=tuple(bug for bug, _ in _MERGE_BUGS),
    prompt="merge_weight(W, A, B, r, alpha) -> the merged weight, for W (d_out, d_in), A (r, d_in), B (d_out, r)."))


# -- 02c: predict, then run: the trainable parameters of LoRA on the tiny model ------------------
# The lesson's check cell injects LoRA r = 8 on q_proj and v_proj of the tiny model in both
# profiles (it takes a second anywhere), so the number it prints is this one on Colab too.

TINY_BLOCKS, TINY_Q, TINY_V, TINY_R = 4, (128, 128), (64, 128), 8  # blocks; (d_out, d_in); rank
_TINY = TINY_BLOCKS * (TINY_R * sum(TINY_Q) + TINY_R * sum(TINY_V))

register(Drill(
    "02c", "Predict: LoRA's trainable parameters on the tiny model", LESSON, 1, "numeric", _TINY, numeric(
        _TINY, rel=0.0,
        hints=[(TINY_R * sum(TINY_Q) + TINY_R * sum(TINY_V), f"That is one block. The model has {TINY_BLOCKS}."),
               (TINY_BLOCKS * 2 * TINY_R * sum(TINY_Q), "v_proj is not square: its d_out is smaller than q_proj's "
                                                        "(fewer key/value heads)."),
               (TINY_BLOCKS * TINY_R * sum(TINY_Q), "That counts q_proj only; v_proj has its own A and B."),
               (TINY_BLOCKS * (TINY_Q[0] * TINY_Q[1] + TINY_V[0] * TINY_V[1]),
                "That is the frozen weights of q_proj and v_proj. LoRA trains A (r x d_in) and B (d_out x r).")],
        fallback="Each wrapped layer adds r * (d_in + d_out); add q_proj and v_proj, times the blocks.",
        praise="The peft line below prints the same count: only A and B train. The same sum on TinyLlama "
               "(22 blocks, q_proj 2048 -> 2048, v_proj 2048 -> 256) at r = 8 is 1,126,400, about "
               "0.1% of its 1.1B."),
    wrong=(TINY_R * sum(TINY_Q) + TINY_R * sum(TINY_V), TINY_BLOCKS * 2 * TINY_R * sum(TINY_Q),
           TINY_BLOCKS * TINY_R * sum(TINY_Q), TINY_BLOCKS * (TINY_Q[0] * TINY_Q[1] + TINY_V[0] * TINY_V[1])),
    prompt=f"The tiny model: {TINY_BLOCKS} blocks, q_proj {TINY_Q} and v_proj {TINY_V} (d_out, d_in). "
           f"LoRA r = {TINY_R} on both: trainable parameters?"))


# -- 02d: the rsLoRA scale ----------------------------------------------------------------------

register(Drill(
    "02d", "The rsLoRA scale", LESSON, 1, "numeric", 2.0, numeric(
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


# -- 02e: why B starts at zero, and A does not --------------------------------------------------

register(Drill(
    "02e", "Both factors at zero?", LESSON, 2, "choice", "b", choice(
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
