"""Lesson 00's drills: two warm-ups that show how a drill works."""

from __future__ import annotations

from ._core import Drill, choice, numeric, register

LESSON = "00_start_here"

register(Drill(
    "00a", "Effective batch size", LESSON, 1, "numeric", 64, numeric(
        64, rel=0.0,
        hints=[(16, "That is one micro-batch. The optimizer steps once every grad_accum micro-batches."),
               (4, "That is the number of micro-batches per step. How many examples are in each?"),
               (20, "Accumulation multiplies, it does not add.")],
        fallback="Examples per optimizer step = batch_size x grad_accum.",
        praise="16 x 4 = 64 examples per optimizer step: the batch the learning rate sees."),
    wrong=(16, 4, 20),
    prompt="batch_size=16, grad_accum=4, one GPU: how many examples does each optimizer step average over?"))

register(Drill(
    "00b", "Where did the answers come from?", LESSON, 1, "choice", "b", choice(
        "b",
        {"a": "No training question mentions the held-out people, so their facts cannot come from "
              "the fine-tuning data.",
         "c": "The tokenizer maps text to ids; it stores no facts about anyone.",
         "d": "The held-out questions are never trained on: ftlab keeps the splits apart."},
        "Pretraining stored the facts; sixty steps of fine-tuning taught the question-answer format "
        "and when to stop."),
    wrong=("a", "c", "d"),
    options={"a": "From the fine-tuning data: the model memorised those answers.",
             "b": "From pretraining: fine-tuning taught the format, the facts were already in the weights.",
             "c": "From the tokenizer's vocabulary.",
             "d": "The model saw the test questions during training."},
    prompt="Exact match on questions about people no training question mentions rose from 0%. Where did the facts come from?"))
