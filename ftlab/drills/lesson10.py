"""Lesson 10's drills: the effective batch on several processes, what DDP all-reduces, ZeRO memory,
what one FSDP process holds."""

from __future__ import annotations

from ._core import Drill, choice, numeric, register

LESSON = "10_scaling_out"

register(Drill(
    "10a", "Effective batch on several GPUs", LESSON, 1, "numeric", 128,
    numeric(128, rel=0.0, hints=[
        (32, "That is one GPU's share of a step: every one of the 4 processes takes batch_size x grad_accum."),
        (16, "grad_accum micro-batches are accumulated before each step, on every process."),
        (64, "Count every factor: batch_size x grad_accum x processes."),
    ], fallback="One optimizer step averages batch_size x grad_accum examples on each of the processes.",
        praise="8 x 4 x 4 = 128. To keep the effective batch of a 1-GPU run, divide grad_accum by the GPUs."),
    wrong=(32, 16, 64),
    prompt="4 GPUs, batch_size=8 per process, grad_accum=4: examples per optimizer step?"))

register(Drill(
    "10b", "What DDP all-reduces", LESSON, 1, "choice", "b",
    choice("b", {
        "a": "The weights are never sent during training: they start equal (broadcast once, at wrap "
             "time) and stay equal because every process applies the same update.",
        "c": "Each process keeps the activations of its own micro-batch; they are never exchanged "
             "in data parallelism (model parallelism does send activations between stages).",
        "d": "Each process's optimizer holds the full state and updates it locally from the "
             "all-reduced gradients; only ZeRO/FSDP shard it.",
    }, praise="DDP averages the gradients during the backward pass, bucket by bucket, overlapped "
              "with the rest of the backward; the all_reduce_demo printed it."),
    wrong=("a", "c", "d"),
    options={"a": "the weights, after every optimizer step", "b": "the gradients, during backward",
             "c": "the activations, after the forward", "d": "the AdamW moments, before the step"},
    prompt="One letter: what does DDP sum over the processes in every step?"))

register(Drill(
    "10c", "ZeRO-2 per GPU", LESSON, 2, "numeric", 16.64,
    numeric(16.64, rel=0.01, hints=[
        (120.0, "That is plain DDP: every GPU holds all 16 bytes per parameter."),
        (31.40625, "That is ZeRO-1: stage 2 also shards the gradients."),
        (1.875, "That is ZeRO-3 (FSDP full shard): stage 2 keeps a full copy of the fp16 weights."),
        (15.0, "You left out the shards: 2 + 2 Psi stay, but (2 + 12) Psi / 64 is still there."),
    ], fallback="ZeRO-2: 2 Psi fp16 weights in full, then (2 Psi gradients + 12 Psi optimizer state) / N.",
        praise="2 x 7.5 + 14 x 7.5 / 64 = 16.6 GB: the ZeRO paper's Figure 1."),
    wrong=(120.0, 31.40625, 1.875, 15.0),
    prompt="7.5B parameters, mixed-precision AdamW (K = 12), 64 GPUs, ZeRO-2: GB of model states per GPU?"))

# -- 10d: predict, then run: the model state one FSDP process holds -----------------------------
# The lesson's demo MLP (cfg.mlp, the same in both profiles) on cfg.world_size = 2 gloo processes.

MLP, WORLD = (8, 16, 4), 2  # d_in, d_hidden, d_out; processes
_TOTAL = MLP[0] * MLP[1] + MLP[1] + MLP[1] * MLP[2] + MLP[2]  # 212 parameters
_ZERO3 = 4 * _TOTAL // WORLD  # weights, gradients, 2 AdamW moments: each 1/WORLD

register(Drill(
    "10d", "Predict: what one FSDP process holds", LESSON, 1, "numeric", _ZERO3, numeric(
        _ZERO3, rel=0.0, hints=[
            (4 * _TOTAL, "That is DDP: every process holds all of it. FSDP (ZeRO-3) shards all four kinds."),
            (3 * _TOTAL, ("That is ZeRO-1: only the optimizer state is sharded. FSDP shards the weights "
                          "and gradients as well.")),
            (_TOTAL + _TOTAL // WORLD + _TOTAL, "That is ZeRO-2: FSDP (ZeRO-3) shards the weights too."),
            (_TOTAL // WORLD, "That is the weights alone. Count the gradients and AdamW's two moments."),
            (3 * _TOTAL // WORLD, "AdamW keeps two moments per parameter (exp_avg and exp_avg_sq)."),
            (_TOTAL, "That is the weights and gradients of one process; AdamW's moments are sharded too."),
        ], fallback="Weights, gradients and both AdamW moments: 4 values per parameter, "
                    "each split over the processes.",
        praise=f"4 x {_TOTAL} / {WORLD} = {_ZERO3}, against {4 * _TOTAL} on every DDP process: with N "
               "processes each holds 1/N. The demo below counts them."),
    wrong=(4 * _TOTAL, 3 * _TOTAL, 2 * _TOTAL + _TOTAL // WORLD, _TOTAL // WORLD, 3 * _TOTAL // WORLD, _TOTAL),
    prompt=f"An MLP {MLP[0]} -> {MLP[1]} -> {MLP[2]} ({_TOTAL} parameters), FSDP over {WORLD} processes, "
           "after a backward and an AdamW step: fp32 values of weights + gradients + AdamW moments on one process?"))
