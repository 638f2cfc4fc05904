"""Lesson 05's drills: masking the prompt (checked against TRL), counting trained tokens, pad = EOS,
padding a batch (checked against TRL's collator)."""

from __future__ import annotations

import copy

import torch

from ftlab.train import IGNORE_INDEX  # the label the loss skips: one constant, one home

from ._core import Drill, _call_student, choice, code, numeric, register

LESSON = "05_sft_masked_loss"


# -- 05a: SFT labels from the prompt's ids and the full ids, against TRL's boundary rule ----------

def sft_labels_solution(prompt_ids, full_ids):
    """Labels for one example: -100 on the prompt, the token ids on the rest.

    The prompt ends where ``prompt_ids`` and ``full_ids`` stop agreeing (a merge across the
    boundary changes the last prompt token), not at ``len(prompt_ids)``.
    """
    labels = full_ids.clone()
    labels[:_common_prefix(prompt_ids, full_ids)] = IGNORE_INDEX
    return labels


def _common_prefix(prompt_ids, full_ids) -> int:
    """How many leading ids the two sequences share (the prompt's length inside ``full_ids``)."""
    n = 0
    while n < min(len(prompt_ids), len(full_ids)) and prompt_ids[n] == full_ids[n]:
        n += 1
    return n


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


def _bug_one_short(prompt_ids, full_ids):
    labels = full_ids.clone()
    labels[:max(_common_prefix(prompt_ids, full_ids) - 1, 0)] = IGNORE_INDEX
    return labels


def _bug_one_over(prompt_ids, full_ids):
    labels = full_ids.clone()
    labels[:_common_prefix(prompt_ids, full_ids) + 1] = IGNORE_INDEX
    return labels


def _bug_shifted(prompt_ids, full_ids):
    labels = sft_labels_solution(prompt_ids, full_ids)
    return torch.cat([labels[1:], torch.tensor([IGNORE_INDEX])])


_MASK_BUGS = [
    (_bug_len, "You masked len(prompt_ids) tokens. When the tokenizer merges across the boundary, the last "
               "prompt token of full_ids is a different (merged) token: the prompt ends where the two "
               "sequences first differ."),
    (_bug_response, "Inverted: you masked the response and trained the prompt."),
    (_bug_one_short, "Off by one at the boundary: the last prompt token is still trained. Mask every position "
                     "where the two sequences agree, the last one included (labels[:n] with n the count)."),
    (_bug_one_over, "Off by one at the boundary: the first response token got -100 too. The prompt is the "
                    "positions where the two sequences agree, no more (labels[:n], not labels[:n + 1])."),
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


# -- 05d: pad a batch of SFT examples, against TRL's collator ------------------------------------

KEYS = ("input_ids", "attention_mask", "labels")


def pad_batch_solution(examples, pad_token_id):
    """Right-pad examples (dicts of lists) to the longest: a dict of (B, L) long tensors.

    input_ids are padded with ``pad_token_id``, attention_mask with 0, labels with -100 (by
    position: a pad id equal to EOS keeps the EOS labels).
    """
    L = max(len(ex["input_ids"]) for ex in examples)
    batch = {"input_ids": torch.full((len(examples), L), pad_token_id),
             "attention_mask": torch.zeros(len(examples), L, dtype=torch.long),
             "labels": torch.full((len(examples), L), IGNORE_INDEX)}
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(ex["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["labels"][i, :n] = torch.tensor(ex["labels"])
    return batch


def _trl_collate(examples, pad_token_id):
    """What TRL 1.16's SFTTrainer pads with: DataCollatorForLanguageModeling, labels given."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id)(examples)


def _batch_inputs(gen):
    """2-4 examples of 3-9 tokens (two lengths at least), each prompt masked and ending in EOS (id 2);
    the pad id is EOS in about half the trials (as for a Llama tokenizer), else 0."""
    n = int(torch.randint(2, 5, (1,), generator=gen))
    lengths = torch.randint(3, 10, (n,), generator=gen).tolist()
    lengths[0] = max(lengths) + 1 if len(set(lengths)) == 1 else lengths[0]
    examples = []
    for length in lengths:
        ids = torch.randint(10, 500, (length,), generator=gen).tolist()
        ids[-1] = 2  # EOS ends the answer
        n_prompt = int(torch.randint(1, length - 1, (1,), generator=gen))
        examples.append({"input_ids": ids, "attention_mask": [1] * length,
                         "labels": [IGNORE_INDEX] * n_prompt + ids[n_prompt:]})
    pad_token_id = 2 if int(torch.randint(0, 2, (1,), generator=gen)) else 0
    return examples, pad_token_id


def _bug_labels_pad_id(examples, pad_token_id):
    batch = pad_batch_solution(examples, pad_token_id)
    batch["labels"][batch["attention_mask"] == 0] = pad_token_id
    return batch


def _bug_mask_by_id(examples, pad_token_id):
    batch = _bug_labels_pad_id(examples, pad_token_id)
    batch["labels"][batch["input_ids"] == pad_token_id] = IGNORE_INDEX
    return batch


def _bug_mask_all_ones(examples, pad_token_id):
    batch = pad_batch_solution(examples, pad_token_id)
    batch["attention_mask"].fill_(1)
    return batch


def _bug_left_pad(examples, pad_token_id):
    batch = pad_batch_solution(examples, pad_token_id)
    for i, ex in enumerate(examples):  # roll each row so its padding comes first
        shift = batch["input_ids"].shape[1] - len(ex["input_ids"])
        for key in KEYS:
            batch[key][i] = batch[key][i].roll(shift)
    return batch


def _bug_ids_minus_100(examples, pad_token_id):
    batch = pad_batch_solution(examples, pad_token_id)
    batch["input_ids"][batch["attention_mask"] == 0] = IGNORE_INDEX
    return batch


_PAD_BUGS = [
    (_bug_labels_pad_id, "The labels' padding holds the pad id: the loss then trains the model to predict padding "
                         "after every answer. Pad labels with -100, which the loss skips."),
    (_bug_mask_by_id, "You masked labels where input_ids == pad_token_id. When the pad id is the EOS (Llama), "
                      "that erases every real EOS label and the model never learns to stop: mask padding by "
                      "position (the positions past each example's length), as drill 05c says."),
    (_bug_mask_all_ones, "attention_mask is 1 on the padding too: the model would attend to pad tokens. It is 1 "
                         "on each example's own tokens and 0 after them."),
    (_bug_left_pad, "That is left padding. Training pads on the right (TRL and ftlab do): the example's tokens "
                    "first, then the padding."),
    (_bug_ids_minus_100, "-100 is a label, not a token: input_ids are padded with pad_token_id (an embedding "
                         "lookup of -100 fails). Only the labels get -100."),
]


def _stacked(fn):
    """``fn``'s dict of (B, L) tensors as one (3, B, L) tensor, the form the code grader compares."""
    def run(examples, pad_token_id):
        out = fn(copy.deepcopy(examples), pad_token_id)  # a function may extend the lists in place
        if not isinstance(out, dict):
            return out  # None, a tensor...: the grader says what is wrong with it
        return torch.stack([torch.as_tensor(out[key]).long() for key in KEYS])
    return run


def _form_problem(answer) -> str | None:
    """Run the answer on one small batch; what is wrong with the form of its output, if anything."""
    examples = [{"input_ids": [5, 6, 7, 2], "attention_mask": [1] * 4, "labels": [-100, -100, 7, 2]},
                {"input_ids": [8, 9, 2], "attention_mask": [1] * 3, "labels": [-100, 9, 2]}]
    call = _call_student(answer, (copy.deepcopy(examples), 0), 5.0)
    if isinstance(call.error, NotImplementedError):
        raise call.error
    if call.error is not None or call.timed_out or call.value is None:
        return None  # the code grader reports these
    out = call.value
    if not isinstance(out, dict):
        return (f"pad_batch returned a {type(out).__name__}; return a dict with the keys {list(KEYS)}, each a "
                "(B, L) tensor, as SFTCollator and TRL's collator do.")
    missing = [key for key in KEYS if key not in out]
    if missing:
        return f"pad_batch's dict has no {missing}; it needs all of {list(KEYS)}."
    for key in KEYS:
        shape = tuple(torch.as_tensor(out[key]).shape)
        if shape != (2, 4):
            return (f"{key} has shape {shape}; two examples of 4 and 3 tokens pad to (B, L) = (2, 4): one row per "
                    "example, as long as the longest.")
    return None


_grade_05d = code(_stacked(_trl_collate), _batch_inputs, hints=[(_stacked(bug), text) for bug, text in _PAD_BUGS],
                  signature="pad_batch(examples, pad_token_id)",
                  praise="Equal to the batch TRL's DataCollatorForLanguageModeling pads: pad ids on the right, "
                         "attention 0 and labels -100 on the padding, found by position.")


def _grade_pad_batch(answer):
    if not callable(answer):
        return _grade_05d(answer)
    problem = _form_problem(answer)
    if problem:
        return False, problem
    return _grade_05d(_stacked(answer))


register(Drill(
    "05d", "Pad a batch (checked against TRL's collator)", LESSON, 2, "code", pad_batch_solution, _grade_pad_batch,
    wrong=tuple(bug for bug, _ in _PAD_BUGS),
    prompt="pad_batch(examples, pad_token_id) -> dict of (B, L) long tensors: input_ids padded with the pad id, "
           "attention_mask with 0, labels with -100."))
