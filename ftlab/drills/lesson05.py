"""Lesson 05's drills: masking the prompt (checked against TRL), counting trained tokens, pad = EOS."""

from __future__ import annotations

import torch

from ftlab.train import IGNORE_INDEX  # the label the loss skips: one constant, one home

from ._core import Drill, choice, code, numeric, register

LESSON = "05_sft_masked_loss"


# -- 05a: SFT labels from the prompt's ids and the full ids, against TRL's boundary rule ----------

def sft_labels_solution(prompt_ids, full_ids):
    """Labels for one example: -100 on the prompt, the token ids on the rest.

    The prompt ends where ``prompt_ids`` and ``full_ids`` stop agreeing (a merge across the
    boundary changes the last prompt token), not at ``len(prompt_ids)``.
    """
    n = 0
    while n < min(len(prompt_ids), len(full_ids)) and prompt_ids[n] == full_ids[n]:
        n += 1
    labels = full_ids.clone()
    labels[:n] = IGNORE_INDEX
    return labels


def _trl_labels(prompt_ids, full_ids):
    # TRL 1.16's SFTTrainer: completion_mask = [0] * common_prefix_length(prompt, prompt+completion) + [1] * rest
    from trl.data_utils import common_prefix_length

    n = common_prefix_length(prompt_ids.tolist(), full_ids.tolist())
    mask = torch.tensor([0] * n + [1] * (len(full_ids) - n), dtype=torch.bool)
    return torch.where(mask, full_ids, torch.full_like(full_ids, IGNORE_INDEX))


def _ids_inputs(gen):
    """A prompt of 4-9 tokens and a response of 2-6; in trials 1 and 3 the last prompt token merges."""
    n_prompt = int(torch.randint(4, 10, (1,), generator=gen))
    n_resp = int(torch.randint(2, 7, (1,), generator=gen))
    prompt = torch.randint(10, 500, (n_prompt,), generator=gen)
    full = torch.cat([prompt, torch.randint(10, 500, (n_resp,), generator=gen)])
    if int(torch.randint(0, 2, (1,), generator=gen)) or n_prompt % 2:  # a BPE merge at the boundary
        full[n_prompt - 1] = 777  # the merged token: prompt's last piece + response's first
    return prompt, full


def _bug_len(prompt_ids, full_ids):
    labels = full_ids.clone()
    labels[:len(prompt_ids)] = IGNORE_INDEX
    return labels


def _bug_response(prompt_ids, full_ids):
    labels = sft_labels_solution(prompt_ids, full_ids)
    return torch.where(labels == IGNORE_INDEX, full_ids, torch.full_like(full_ids, IGNORE_INDEX))


def _bug_shifted(prompt_ids, full_ids):
    labels = sft_labels_solution(prompt_ids, full_ids)
    return torch.cat([labels[1:], torch.tensor([IGNORE_INDEX])])


_MASK_BUGS = [
    (_bug_len, "You masked len(prompt_ids) tokens. When the tokenizer merges across the boundary, the last "
               "prompt token of full_ids is a different (merged) token: the prompt ends where the two "
               "sequences first differ."),
    (_bug_response, "Inverted: you masked the response and trained the prompt."),
    (lambda p, f: f.clone(), "Nothing is masked: that trains the prompt too (the unmasked run of section 3)."),
    (_bug_shifted, "Do not shift the labels yourself: Hugging Face labels are aligned with input_ids, and the "
                   "loss shifts them (ftlab.train.causal_lm_loss does labels[:, 1:])."),
]

register(Drill(
    "05a", "Build SFT labels (checked against TRL)", LESSON, 2, "code", sft_labels_solution,
    code(_trl_labels, _ids_inputs, hints=_MASK_BUGS, signature="sft_labels(prompt_ids, full_ids)",
         praise="Equal to the labels TRL's SFTTrainer builds: -100 up to where the prompt and the full "
                "sequence diverge, the ids after."),
    wrong=tuple(bug for bug, _ in _MASK_BUGS),
    prompt="sft_labels(prompt_ids, full_ids) -> labels (1-D long tensors): -100 on the prompt, ids elsewhere."))


# -- 05b: how many tokens does one example train? -------------------------------------------------

register(Drill(
    "05b", "Tokens in the loss", LESSON, 1, "numeric", 8,
    numeric(8, rel=0.0, hints=[
        (32, "Padding is masked too: the collator pads labels with -100."),
        (20, "That counts the prompt: with the prompt masked, only the response is trained."),
        (19, "That counts the prompt without its first token; the prompt is masked entirely."),
        (6, "The EOS and the newline the chat template writes after it are part of the completion: "
            "they are trained (the EOS is how the model learns to stop)."),
        (7, "Close: the newline the chat template writes after the EOS is trained too, as in TRL."),
    ], fallback="Count the positions whose label is not -100: the response's tokens, the EOS, and the "
                "template's newline after it.",
       praise="6 answer tokens + EOS + the template's newline: 8 of the 32 positions."),
    wrong=(32, 20, 6, 7),
    prompt="12 prompt tokens, a 6-token answer, then EOS and '\\n', right-padded to 32: positions with a label?"))


# -- 05c: pad = EOS ----------------------------------------------------------------------------

register(Drill(
    "05c", "Pad token = EOS", LESSON, 2, "choice", "b",
    choice("b", {
        "a": "Padding only ever sits after the answer, but masking by id also hits the real EOS inside "
             "each example: something does change.",
        "c": "The answer tokens still have labels, so the loss has items to average: no NaN. Look at "
             "which token lost its label.",
        "d": "The prompt is masked by the -100s you wrote for it; the pad rule changes a different token.",
    }, praise="Every EOS gets -100, so the model never sees a target that says 'stop here', and it "
              "rambles at inference. Mask padding by position (the attention mask), as SFTCollator does."),
    wrong=("a", "c", "d"),
    options={"a": "Nothing: padding is masked, the rest is trained as before.",
             "b": "The model never learns to stop: every EOS label becomes -100.",
             "c": "The loss becomes NaN on short examples.",
             "d": "The prompt is trained again."},
    prompt="Llama pads with EOS; labels[input_ids == pad_token_id] = -100. What goes wrong? One letter."))
