"""Lesson 11's drills: choosing under a budget on competition day.

Which method fits an 8B model on a T4, the size of a LoRA on TinyLlama's attention, how many
examples the time left allows, and which score picks the checkpoint to submit.
"""

from __future__ import annotations

from ._core import Drill, choice, numeric, register

LESSON = "11_competition_day"
# TinyLlama-1.1B: 22 layers, hidden 2048, k/v projections 2048 -> 256 (grouped-query attention)
TINYLLAMA_QV_R16 = 22 * (16 * (2048 + 2048) + 16 * (2048 + 256))
EXAMPLES_IN_TIME = (50 - 15) * 60 / 1.5 * 16

register(Drill(
    "11a", "Which method fits an 8B model on a T4", LESSON, 2, "choice", "c", choice(
        "c",
        {"a": "Full fine-tuning keeps a gradient per weight: 8e9 x 2 bytes of bf16 weights and as much again "
              "for gradients is 32 GB before any optimizer state. A T4 has 15.6 usable.",
         "b": "The frozen base alone in 16 bits is 8e9 x 2 = 16 GB: more than the T4's 15.6 GB usable "
              "before a single activation. Shrink the base.",
         "d": "A 4-bit base is about 0.55 bytes per weight: ~4.4 GB for 8B, plus the fp32 embedding and head "
              "(drill 07e, 4.2 GB). That leaves room for LoRA and activations."},
        "QLoRA: the NF4 decoder takes ~4.4 GB, the fp32 embedding and head 4.2 GB, the adapters and their "
        "AdamW state a few hundred MB, and gradient checkpointing keeps the activations small. The other "
        "plans run out of memory before step 1."),
    wrong=("a", "b", "d"),
    options={"a": "Full fine-tuning in bf16 with 8-bit AdamW.",
             "b": "LoRA r=16 on a bf16 (16-bit) base.",
             "c": "QLoRA: LoRA r=16 on a 4-bit NF4 base, with gradient checkpointing.",
             "d": "None: an 8B model cannot be trained on a T4."},
    prompt="An 8B causal LM (Llama-3-8B), a Colab T4 (15.6 GB usable), 3,000 examples, 3 hours: which plan "
           "can run at all?"))

register(Drill(
    "11b", "The size of a LoRA on TinyLlama's q and v", LESSON, 2, "numeric", TINYLLAMA_QV_R16, numeric(
        TINYLLAMA_QV_R16, rel=0.001,
        hints=[(22 * 2 * 16 * (2048 + 2048), "v_proj is not square: with grouped-query attention it maps "
                                            "2048 to 256, so its LoRA is 16 x (2048 + 256)."),
               (16 * (2048 + 2048) + 16 * (2048 + 256), "That is one layer. TinyLlama has 22."),
               (22 * 16 * (2048 + 2048), "That is q_proj alone. Add v_proj's A and B."),
               (22 * (2048 * 16 + 256 * 16) * 2, "Count A (r x d_in) and B (d_out x r) of each layer: q is "
                                                 "2048 -> 2048, v is 2048 -> 256."),
               (22 * (2048 * 2048 + 2048 * 256), "That is the frozen q and v weights. LoRA trains r x (d_in + "
                                                 "d_out) per layer.")],
        fallback="Per adapted layer r x (d_in + d_out); two layers (q, v) per block; 22 blocks.",
        praise="22 x (16 x 4096 + 16 x 2304) = 2,252,800: 0.2% of the 1.1B weights."),
    wrong=(22 * 2 * 16 * (2048 + 2048), 16 * (2048 + 2048) + 16 * (2048 + 256), 22 * 16 * (2048 + 2048),
           22 * (2048 * 2048 + 2048 * 256)),
    prompt="TinyLlama-1.1B: 22 layers, q_proj 2048 -> 2048, v_proj 2048 -> 256. Parameters LoRA r=16 on q and v trains?"))

register(Drill(
    "11c", "How many examples fit in the time left", LESSON, 2, "numeric", EXAMPLES_IN_TIME, numeric(
        EXAMPLES_IN_TIME, rel=0.01,
        hints=[(50 * 60 / 1.5 * 16, "Keep 15 minutes back for predicting, writing and checking the file: "
                                    "train for 35."),
               ((50 - 15) * 60 / 1.5, "That is steps. Each step sees a batch of 16 examples."),
               ((50 - 15) / 1.5 * 16, "Minutes and seconds: 35 minutes are 2,100 seconds."),
               ((50 - 15) * 60 * 1.5 * 16, "Steps = time / time per step: divide by 1.5 s.")],
        fallback="(minutes left - minutes kept back) x 60 / seconds per step x batch size.",
        praise="35 min x 60 / 1.5 s = 1,400 steps x 16 = 22,400 examples: if the train set is larger, "
               "subsample it or train less than an epoch."),
    wrong=(50 * 60 / 1.5 * 16, (50 - 15) * 60 / 1.5, (50 - 15) / 1.5 * 16, (50 - 15) * 60 * 1.5 * 16),
    prompt="50 minutes left, 15 kept back for predicting and checking, 1.5 s per step of batch 16: how many "
           "training examples can the run see?"))

register(Drill(
    "11d", "Which score picks the checkpoint", LESSON, 1, "choice", "b", choice(
        "b",
        {"a": "The training loss keeps falling while the model overfits: the lowest is often the worst "
              "checkpoint on new data.",
         "c": "Choosing by the test score fits the test set: the score you report is then too high, and a "
              "real competition's hidden test would not reward it.",
         "d": "The last checkpoint may be past the best point (lesson 09's overfitting curve)."},
        "The validation rows held out of train: they pick the checkpoint, and the test set is scored once."),
    wrong=("a", "c", "d"),
    options={"a": "The training loss: the lowest one.",
             "b": "The validation metric, on rows held out of train.",
             "c": "The grader's score on the test set, after submitting each checkpoint.",
             "d": "The last checkpoint, always."},
    prompt="A checkpoint every 50 steps: which score should choose the one you submit?"))
