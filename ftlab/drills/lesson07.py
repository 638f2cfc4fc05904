"""Lesson 07's drills: bytes per parameter, 8-bit optimizer state, the largest batch that fits,
what gradient checkpointing saves, and what a bare parameter count misses.

The seed's D2 (84 GB for full fine-tuning of 7B) is drill ``d2`` in lesson 08; these go around it.
"""

from __future__ import annotations

from ._core import Drill, choice, numeric, register

LESSON = "07_memory_budget"
# Llama-3-8B under the QLoRA recipe: embedding and untied head, 128256 x 4096 each, kept in fp32
LLAMA3_8B_FP32_EMBED_HEAD_GB = 2 * 128256 * 4096 * 4 / 1e9

register(Drill(
    "07a", "Bytes per parameter of mixed-precision full fine-tuning", LESSON, 1, "numeric", 16, numeric(
        16, rel=0.0,
        hints=[(12, "That is weights + gradients + Adam's moments. Mixed precision also keeps an fp32 "
                    "master copy of every weight for the update: 4 bytes more."),
               (8, "8 bytes is Adam's two fp32 moments alone. Add the bf16 weight, its bf16 gradient "
                   "and the fp32 master weight."),
               (4, "4 bytes is one fp32 copy. Count every copy training keeps: weight, master weight, "
                   "gradient, two moments."),
               (2, "2 bytes is the bf16 weight alone. Training keeps a gradient and optimizer state too."),
               (18, "The gradient has the weight's dtype: bf16, 2 bytes, not 4.")],
        fallback="Add bytes per parameter: bf16 weight, fp32 master weight, bf16 gradient, two fp32 moments.",
        praise="2 (bf16 weight) + 4 (fp32 master) + 2 (bf16 gradient) + 8 (two fp32 moments) = 16 bytes: "
               "a 1B model needs 16 GB before activations."),
    wrong=(12, 8, 4, 2, 18),
    prompt="Full fine-tuning in bf16 with AdamW and fp32 master weights: bytes per parameter, before activations?"))

register(Drill(
    "07b", "8-bit AdamW's state per parameter", LESSON, 1, "numeric", 2, numeric(
        2, rel=0.03,
        hints=[(8, "8 bytes is the fp32 AdamW of the same two moments. Here each moment is 8 bits."),
               (1, "That is one moment. Adam keeps two: the mean and the mean of squares."),
               (4, "Each moment is 8 bits = 1 byte, not 16 bits."),
               (16, "16 is bits, not bytes: two moments of 8 bits."),
               (0.25, "Bits and bytes: two 8-bit moments are 2 bytes (16 bits).")],
        fallback="Two moments per parameter, each stored in 8 bits; give the answer in bytes.",
        praise="Two 8-bit moments = 2 bytes (plus an fp32 scale per 256 values, ~2.03 bytes): a quarter "
               "of fp32 AdamW's 8."),
    wrong=(8, 1, 4, 16, 0.25),
    prompt="bitsandbytes' 8-bit AdamW: bytes of optimizer state per trainable parameter (ignore the block scales)?"))

register(Drill(
    "07c", "The largest batch that fits on a T4", LESSON, 2, "numeric", 3, numeric(
        3, rel=0.0,
        hints=[(4, "4 sequences need 1.55 + 4 x 3.31 = 14.8 GiB, and the CUDA context takes 0.5 GiB of "
                   "the 15.0: that is over."),
               (3.91, "A batch is a whole number of sequences: round down, since a fraction over is OOM."),
               (2, "Too careful: 1.55 + 3 x 3.31 = 11.5 GiB, plus 0.5 GiB context, still fits 15.0."),
               (5, "Even before the static parts and the context, 5 x 3.31 is over 15 GiB.")],
        fallback="Static parts once, activations once per sequence, plus the CUDA context: the largest "
                 "whole batch whose sum stays under 15.0 GiB.",
        praise="(15.0 - 0.5 - 1.55) / 3.31 = 3.9, so batch 3. Checkpointing would let 7 fit."),
    wrong=(4, 3.91, 2, 5),
    prompt="QLoRA on Llama-3.2-1B at 1024 tokens: static 1.55 GiB, activations 3.31 GiB per sequence, "
           "a T4 has 15.0 GiB, CUDA takes 0.5 GiB. Largest batch?"))

register(Drill(
    "07d", "What gradient checkpointing saves", LESSON, 2, "choice", "c", choice(
        "c",
        {"a": "The weights are all still there: checkpointing changes what the forward pass keeps "
              "for backward, not the model.",
         "b": "The optimizer state is the same size: one state per trainable parameter, whatever the "
              "forward pass keeps.",
         "d": "Every trainable parameter still gets a gradient. Look at what grows with batch x "
              "sequence length."},
        "Activations: each layer keeps only its input, and the backward pass recomputes the layer's "
        "insides when it needs them, at the cost of about one more forward pass (~30% more time)."),
    wrong=("a", "b", "d"),
    options={"a": "Weights: layers are loaded from CPU memory only when needed.",
             "b": "Optimizer state: the moments are recomputed instead of stored.",
             "c": "Activations: only each layer's input is kept; the rest is recomputed in the backward pass.",
             "d": "Gradients: only a checkpointed subset of parameters gets one."},
    prompt="Gradient checkpointing trades compute for memory. Which part of training memory does it cut?"))

register(Drill(
    "07e", "What a bare parameter count misses in QLoRA", LESSON, 3, "numeric",
    round(LLAMA3_8B_FP32_EMBED_HEAD_GB, 3), numeric(
        LLAMA3_8B_FP32_EMBED_HEAD_GB, rel=0.03,
        hints=[(LLAMA3_8B_FP32_EMBED_HEAD_GB / 2, "That is one matrix in fp32, or both in 16 bits. Llama-3-8B "
                "does not tie its head to the embedding, and the recipe upcasts both to fp32."),
               (LLAMA3_8B_FP32_EMBED_HEAD_GB / 8, "NF4 quantizes only the decoder's linear layers; the "
                "embedding and head stay unquantized, and prepare_model_for_kbit_training makes them fp32."),
               (LLAMA3_8B_FP32_EMBED_HEAD_GB * 1e9 / 1024**3, "That is GiB (2^30 bytes). Answer in GB (1e9 bytes)."),
               (LLAMA3_8B_FP32_EMBED_HEAD_GB / 4, "That counts one matrix in 16 bits. There are two (untied), "
                "and they are fp32 here.")],
        fallback="vocab x hidden parameters per matrix, two matrices (untied), 4 bytes each (fp32), in GB.",
        praise="2 x 128,256 x 4,096 x 4 bytes = 4.2 GB: as much as the whole NF4 decoder. A bare count "
               "(8e9 x 0.52 bytes) misses it."),
    wrong=(LLAMA3_8B_FP32_EMBED_HEAD_GB / 2, LLAMA3_8B_FP32_EMBED_HEAD_GB / 8, 3.914, LLAMA3_8B_FP32_EMBED_HEAD_GB / 4),
    prompt="Llama-3-8B (vocab 128,256, hidden 4,096, untied head) under QLoRA: GB taken by the fp32 "
           "embedding and head?"))
