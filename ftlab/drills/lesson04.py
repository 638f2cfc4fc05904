"""Lesson 04's drills, in the lesson's order: an NF4 round trip checked against bitsandbytes (04b, before
the lesson's own NF4), NF4 storage predicted before the lesson prints it (04a), merging, the peak."""

from __future__ import annotations

import torch

from ._core import Drill, choice, code, numeric, register

LESSON = "04_qlora"
N = 4096 * 4096

# -- 04b: an NF4 round trip, against bitsandbytes --------------------------------------------------

def nf4_roundtrip_solution(w, codebook):
    """Blockwise absmax (64), nearest level of the codebook, then back: level x absmax."""
    blocks = w.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    scaled = blocks / absmax
    nearest = (scaled.unsqueeze(-1) - codebook).abs().argmin(dim=-1)
    return (codebook[nearest] * absmax).reshape(w.shape)


def _bnb_roundtrip(w, codebook):
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
    return bnbf.dequantize_4bit(packed, state).reshape(w.shape)


def _nf4_inputs(gen):
    from ftlab.quant import NF4_CODEBOOK

    blocks = int(torch.randint(2, 9, (1,), generator=gen))
    return torch.randn(64 * blocks, generator=gen) * 0.05, NF4_CODEBOOK.clone()


def _uniform(w, codebook):
    blocks = w.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    return (torch.round(blocks / absmax * 7) / 7 * absmax).reshape(w.shape)


def _per_tensor(w, codebook):
    absmax = w.abs().max()
    nearest = (w.unsqueeze(-1) / absmax - codebook).abs().argmin(dim=-1)
    return codebook[nearest] * absmax


def _no_abs(w, codebook):
    blocks = w.reshape(-1, 64)
    top = blocks.amax(dim=1, keepdim=True)  # the largest value, not the largest magnitude
    return (codebook[(blocks.unsqueeze(-1) / top.unsqueeze(-1) - codebook).abs().argmin(dim=-1)] * top).reshape(w.shape)


def _sign_lost(w, codebook):
    blocks = w.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    nearest = (blocks.abs().unsqueeze(-1) / absmax.unsqueeze(-1) - codebook).abs().argmin(dim=-1)
    return (codebook[nearest] * absmax).reshape(w.shape)


def _no_rescale(w, codebook):
    blocks = w.reshape(-1, 64)
    scaled = blocks / blocks.abs().amax(dim=1, keepdim=True)
    return codebook[(scaled.unsqueeze(-1) - codebook).abs().argmin(dim=-1)].reshape(w.shape)


register(Drill(
    "04b", "An NF4 round trip (checked against bitsandbytes)", LESSON, 2, "code", nf4_roundtrip_solution,
    code(_bnb_roundtrip, _nf4_inputs, atol=1e-6, rtol=1e-5, signature="nf4_roundtrip(w, codebook)", hints=[
        (_uniform, "That is a uniform 4-bit grid. Snap to the nearest *codebook* level instead."),
        (_per_tensor, "One absmax for the whole tensor: NF4 uses one per block of 64 values."),
        (_no_rescale, "You return the levels in [-1, 1]. Multiply each by its block's absmax."),
        (_no_abs, "Your scale is each block's largest value; absmax is its largest magnitude, "
                  "blocks.abs().amax(...), so that the most negative weight lands on -1, not below it."),
        (_sign_lost, "Every weight comes back positive: you snapped |w| / absmax. Divide w itself, "
                     "sign included: NF4 has 7 negative levels."),
    ], praise="Equal to bitsandbytes' quantize_4bit + dequantize_4bit: you wrote NF4."),
    wrong=(_uniform, _per_tensor, _no_rescale, _no_abs, _sign_lost),
    prompt="nf4_roundtrip(w, codebook): w 1-D, a multiple of 64 long; return the dequantized NF4 weight."))


# -- 04a: predict the bytes before the double-quantization cell prints them ----------------------

register(Drill(
    "04a", "Bytes of one NF4 weight", LESSON, 1, "numeric", N // 2 + 4 * (N // 64), numeric(
        N // 2 + 4 * (N // 64), rel=0.001,
        hints=[(N // 2, "Those are the 4-bit codes alone. Each block of 64 also stores its fp32 absmax."),
               (N + 4 * (N // 64), "Two 4-bit codes share a byte: the codes take N/2 bytes, not N."),
               (2 * N, "That is the fp16 weight, before quantization."),
               (N // 2 + N // 64, "An absmax without double quantization is fp32: 4 bytes per block.")],
        fallback="codes: N/2 bytes (two per byte); scales: N/64 blocks x 4 bytes.",
        praise="8,388,608 bytes of codes + 262,144 x 4 bytes of absmax = 9,437,184 bytes: 4.5 bits per weight."),
    wrong=(N // 2, N + 4 * (N // 64), 2 * N, N // 2 + N // 64),
    prompt="A 4096 x 4096 weight in NF4, blocksize 64, no double quantization: bytes stored (codes + scales)?"))


register(Drill(
    "04c", "Merging a QLoRA adapter", LESSON, 2, "choice", "c", choice(
        "c",
        {"a": "Re-quantizing W + BA puts a fresh rounding error on every weight, nearly half the size of the "
              "update itself in lesson 04: the 4-bit merge is no longer the model you trained.",
         "b": "Close, and common practice, but the adapter learned its update on top of the quantized "
              "weights, not the original ones: section 5 measures this merge far from the QLoRA model "
              "(its KL is many times that of the right answer).",
         "d": "The codes are indices into a fixed table; adding to an index does not add to the weight."},
        "Dequantize the NF4 base to 16-bit and merge into that: the same weights the adapter was trained "
        "on, so the merged model is the QLoRA model (KL about 0 in section 5). Quantize again only for "
        "serving, knowing it re-rounds the update with the weights."),
    wrong=("a", "b", "d"),
    options={"a": "Merge straight into the 4-bit base and save it: same quality, smallest file.",
             "b": "Load the original 16-bit base from the hub, merge the adapter into it, save the 16-bit model.",
             "c": "Dequantize the NF4 base to 16-bit, merge the adapter into those weights, save the 16-bit model.",
             "d": "Add scale*B@A to the NF4 codes (the 4-bit indices) directly."},
    prompt="You trained a LoRA adapter on an NF4 base and want one merged model to ship. What do you do?"))


register(Drill(
    "04d", "What dominates QLoRA's peak", LESSON, 3, "choice", "c", choice(
        "c",
        {"a": "The 1.24B weights in NF4 are about 1.5 GiB, a tenth of that peak.",
         "b": "The adapters are ~11M parameters: their 8-bit state is tens of MB.",
         "d": "SDPA never materialises the s x s scores; it keeps q, k, v, its output and a logsumexp."},
        "The vocabulary is 128,256 wide: the loss keeps an fp32 log-softmax over it for every position "
        "and its backward makes two more buffers of that size, ~4 GiB each at 16 x 512. Shorter "
        "sequences or a smaller batch shrink it; checkpointing does not."),
    wrong=("a", "b", "d"),
    options={"a": "The NF4 weights.",
             "b": "The LoRA adapters' optimizer state.",
             "c": "The loss: fp32 log-probabilities over the 128k vocabulary at every position, and their gradients.",
             "d": "The attention scores, batch x heads x 512 x 512."},
    prompt="Llama-3.2-1B QLoRA, batch 16 x 512, checkpointing: the calculator's peak is 15.7 GiB. Its biggest part?"))
