"""Lesson 03's drills: counting what each PEFT method trains, choosing one, writing an adapter.

DistilBERT-base is the model of the counting drills: dim 768, 6 blocks, FFN 3072.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import Drill, choice, code, numeric, register

LESSON = "03_peft_methods"
DIM, LAYERS, FFN = 768, 6, 3072

# -- 03a: LoRA on q_lin / v_lin of DistilBERT-base -----------------------------------------------

LORA_QV = LAYERS * 2 * 8 * (DIM + DIM)  # 147,456

register(Drill(
    "03a", "LoRA parameters on q_lin and v_lin of DistilBERT-base", LESSON, 1, "numeric", LORA_QV, numeric(
        LORA_QV, rel=0.0,
        hints=[(LORA_QV // 2, "That is one projection per block. LoRA wraps both q_lin and v_lin."),
               (LORA_QV // LAYERS, "That is one block. DistilBERT-base has 6."),
               (LAYERS * 2 * DIM * DIM, "That is the frozen q_lin and v_lin weights. LoRA adds r*(d_in + d_out) per layer."),
               (LORA_QV * 2, "That wraps all four attention projections; the question wraps q_lin and v_lin only.")],
        fallback="Per wrapped layer r*(d_in + d_out); two wrapped layers per block; 6 blocks.",
        praise="6 blocks x 2 layers x 8 x (768 + 768) = 147,456: 0.2% of DistilBERT's 66M."),
    wrong=(LORA_QV // 2, LORA_QV // LAYERS, LAYERS * 2 * DIM * DIM, LORA_QV * 2),
    prompt="r=8 on q_lin and v_lin (768 x 768 each) in all 6 blocks, head not counted: LoRA parameters?"))


# -- 03b: IA3 on k_lin, v_lin and lin2 ----------------------------------------------------------

IA3 = LAYERS * (DIM + DIM + FFN)  # 27,648

register(Drill(
    "03b", "IA3 parameters on DistilBERT-base", LESSON, 2, "numeric", IA3, numeric(
        IA3, rel=0.0,
        hints=[(LAYERS * 3 * DIM, "lin2 is a feed-forward module: IA3 scales its *input*, 3072 wide, not its output."),
               (LAYERS * 2 * DIM, "You left out lin2: IA3 scales keys, values and the FFN's hidden units."),
               (DIM + DIM + FFN, "That is one block. DistilBERT-base has 6."),
               (LAYERS * (DIM * DIM * 2 + DIM * FFN), "That counts the frozen weights. IA3 learns one vector per layer, not a matrix.")],
        fallback="One learned scale per unit: k_lin and v_lin outputs (768 each), lin2's input (3072), in 6 blocks.",
        praise="6 x (768 + 768 + 3072) = 27,648: 0.04% of the model, about a fifth of LoRA r=8 on q and v."),
    wrong=(LAYERS * 3 * DIM, LAYERS * 2 * DIM, DIM + DIM + FFN, LAYERS * (DIM * DIM * 2 + DIM * FFN)),
    prompt="IA3 with target_modules=[k_lin, v_lin, lin2], feedforward_modules=[lin2], head not counted: parameters?"))


# -- 03c: five tasks on one base ----------------------------------------------------------------

register(Drill(
    "03c", "Five tasks, one GPU", LESSON, 2, "choice", "b", choice(
        "b",
        {"a": "Five full copies: five times the weights in memory and on disk, for tasks that share one body.",
         "c": "merge_and_unload writes one adapter into the base weights for good. After the first merge the "
              "shared base is gone; five merged models is option (a) again.",
         "d": "Prompt tuning does share the base, but on small models it trails LoRA far behind (this lesson's "
              "table), and the question asks for the accuracy of fine-tuning."},
        "One frozen base in memory, five small LoRA adapters (each with its own head) loaded with "
        "load_adapter, and set_adapter(task) per request. Swapping costs no copy of the base."),
    wrong=("a", "c", "d"),
    options={"a": "Fully fine-tune five copies of DistilBERT and load all five.",
             "b": "Train one LoRA adapter per task on the same frozen base; load all five and switch with set_adapter.",
             "c": "Train one LoRA adapter per task and merge each into the base with merge_and_unload.",
             "d": "Prompt-tune five soft prompts on the frozen base."},
    prompt="Five classification tasks served from one GPU with near fine-tuning accuracy, requests mixed: which set-up?"))


# -- 03d: the Houlsby adapter forward, against ftlab.adapters ------------------------------------

def adapter_forward_solution(h, W_down, b_down, W_up, b_up):
    """h + W_up gelu(W_down h + b_down) + b_up, on the last dimension of h."""
    return h + F.linear(F.gelu(F.linear(h, W_down, b_down)), W_up, b_up)


def _ftlab_adapter(h, W_down, b_down, W_up, b_up):
    from ftlab.adapters import BottleneckAdapter

    adapter = BottleneckAdapter(W_down.shape[1], W_down.shape[0]).to(h.dtype)
    with torch.no_grad():
        for param, value in ((adapter.down.weight, W_down), (adapter.down.bias, b_down),
                             (adapter.up.weight, W_up), (adapter.up.bias, b_up)):
            param.copy_(value)
        return adapter(h)


def _adapter_inputs(gen):
    dim, b = 12, int(torch.randint(2, 6, (1,), generator=gen))
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return randn(2, 5, dim), randn(b, dim), randn(b), randn(dim, b), randn(dim)


_ADAPTER_BUGS = [
    (lambda h, Wd, bd, Wu, bu: F.linear(F.gelu(F.linear(h, Wd, bd)), Wu, bu),
     "The skip connection is missing: an adapter adds its output to h, so that it starts as the identity."),
    (lambda h, Wd, bd, Wu, bu: h + F.linear(F.relu(F.linear(h, Wd, bd)), Wu, bu),
     "Close: this adapter uses GELU, like DistilBERT's own feed-forward, not ReLU."),
    (lambda h, Wd, bd, Wu, bu: h + F.linear(F.linear(h, Wd, bd), Wu, bu),
     "The non-linearity is missing. Without it the adapter is a low-rank linear map (LoRA's update, in effect)."),
    (lambda h, Wd, bd, Wu, bu: h + F.gelu(F.linear(F.linear(h, Wd, bd), Wu, bu)),
     "The GELU goes in the bottleneck, between down and up, not after up."),
]

register(Drill(
    "03d", "Write the adapter forward (checked against ftlab.adapters)", LESSON, 2, "code",
    adapter_forward_solution,
    code(_ftlab_adapter, _adapter_inputs, hints=_ADAPTER_BUGS,
         signature="adapter_forward(h, W_down, b_down, W_up, b_up)",
         praise="Equal to BottleneckAdapter on random inputs. With W_up = 0 it returns h: the identity."),
    wrong=tuple(bug for bug, _ in _ADAPTER_BUGS),
    prompt="adapter_forward(h, W_down, b_down, W_up, b_up) for h (..., dim), W_down (b, dim), W_up (dim, b)."))


# -- 03e: predict, then run: prefix tuning's parameters on TinyLlama-1.1B ------------------------
# The lesson's prefix cell builds TinyLlama on the meta device with PREFIX_M virtual tokens in both
# profiles, so the count peft prints there is this one on Colab too.

PREFIX_M, LLAMA_LAYERS, LLAMA_WIDTH, LLAMA_KV_WIDTH = 8, 22, 2048, 4 * 64  # m; L; d_model; kv heads x head width
PREFIX = PREFIX_M * 2 * LLAMA_LAYERS * LLAMA_KV_WIDTH  # 90,112

register(Drill(
    "03e", "Predict: prefix tuning's parameters on TinyLlama-1.1B", LESSON, 2, "numeric", PREFIX, numeric(
        PREFIX, rel=0.0,
        hints=[(PREFIX_M * 2 * LLAMA_LAYERS * LLAMA_WIDTH,
                "That uses the model width, 2048. TinyLlama's keys and values are narrower: grouped-query "
                "attention gives them 4 heads of 64, so d = 256."),
               (PREFIX_M * LLAMA_LAYERS * LLAMA_KV_WIDTH, "That counts the keys only; each prefix position has a value too."),
               (PREFIX_M * 2 * LLAMA_KV_WIDTH, "That is one layer. The prefix goes into all 22."),
               (PREFIX_M * LLAMA_WIDTH, "That is prompt tuning: m input vectors of width 2048. Prefix tuning "
                                        "learns keys and values for every layer.")],
        fallback="m key vectors and m value vectors, each d wide, in each of the L layers: m x 2 x L x d.",
        praise="8 x 2 x 22 x 256 = 90,112, what peft counts below: about 0.008% of TinyLlama's 1.1B, "
               "and 5.5 times prompt tuning's 8 x 2048."),
    wrong=(PREFIX_M * 2 * LLAMA_LAYERS * LLAMA_WIDTH, PREFIX_M * LLAMA_LAYERS * LLAMA_KV_WIDTH,
           PREFIX_M * 2 * LLAMA_KV_WIDTH, PREFIX_M * LLAMA_WIDTH),
    prompt=f"Prefix tuning, m = {PREFIX_M}, on TinyLlama-1.1B: {LLAMA_LAYERS} layers, width {LLAMA_WIDTH}, "
           f"4 key/value heads of 64. Trainable parameters?"))
