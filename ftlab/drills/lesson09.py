"""Lesson 09's drills: forgetting, its cures, and one adapter per task."""

from __future__ import annotations

from ._core import Drill, choice, numeric, register

LESSON = "09_forgetting_and_continual"

# -- 09a: how much of the forgetting does a cure remove? -----------------------------------------
register(Drill(
    "09a", "Share of the forgetting removed", LESSON, 2, "numeric", 0.68,
    numeric(0.68, rel=0.03, hints=[
        (0.42, "That is the gain in recall (percentage points / 100). Divide it by how much full "
               "fine-tuning forgot, not by 1."),
        (0.32, "That is the share of the forgetting that is left with replay; the question asks for the "
               "share removed."),
        (0.8, "That is the recall after replay, not the share of the forgetting it removed."),
    ], fallback="Forgetting = recall before - recall after. Compare full FT's forgetting with replay's.",
       praise="Full FT forgot 62 points, replay 20: replay removed (62 - 20) / 62 = 68% of the forgetting."),
    wrong=(0.42, 0.32, 0.8),
    prompt="General recall 100% before; 38% after full FT; 80% after full FT with replay. "
           "Share of the forgetting that replay removed (a fraction, e.g. 0.5)?"))

# -- 09b: which loss picks the early-stopping step ------------------------------------------------
register(Drill(
    "09b", "Early-stop on which eval?", LESSON, 2, "choice", "c",
    choice("c", {
        "a": "The training loss keeps falling while the model memorises: it has no minimum to stop at, "
             "and it cannot see overfitting.",
        "b": "Then the number you report was used to pick the weights: it is no longer a held-out "
             "estimate. Keep the reported test questions out of every decision.",
        "d": "General knowledge tells you what was forgotten, not when the target stopped improving; "
             "the recipe (LoRA, lower lr, replay) is what limits forgetting.",
    }, praise="A validation set of the target task (here other held-out questions, sets.target_val), "
              "kept apart from the test questions you report."),
    wrong=("a", "b", "d"),
    options={"a": "The training examples.",
             "b": "The held-out target test questions whose score goes in the results table.",
             "c": "Other held-out target questions, kept apart as a validation set.",
             "d": "The general-knowledge facts."},
    prompt="You train past the best point and keep the weights of the step with the lowest loss. "
           "The loss on which examples should pick that step? One letter."))

# -- 09c: one adapter per task, what does the base cost? ------------------------------------------
register(Drill(
    "09c", "Storage for three tasks", LESSON, 1, "numeric", 1.03,
    numeric(1.03, rel=0.02, hints=[
        (3.0, "That is three full fine-tuned copies. With adapters the base is stored once."),
        (0.03, "The frozen base is stored too (once)."),
        (3.03, "The base is shared by the three adapters: count it once."),
    ], fallback="Base once + one adapter (1% of the base) per task.",
       praise="One base plus three 1% adapters: 1.03 base-sizes, against 3 for three full fine-tunes."),
    wrong=(3.0, 0.03, 3.03),
    prompt="Each task's LoRA adapter is 1% of the base's size. Storage for three tasks on one base, "
           "in units of the base's size?"))
