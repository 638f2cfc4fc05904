"""Measuring and limiting catastrophic forgetting (lesson 09).

A fine-tune on a narrow task is judged on three numbers, before and after:

- the **target** skill it was trained for (exact match on held-out instructions);
- **general knowledge** it had from pretraining (cloze accuracy on facts no training row mentions);
- a **second skill** it had from pretraining and was not trained on (another cloze set).

:func:`forgetting_report` computes the three. The cures the lesson compares need two more tools:
:func:`replay_mix` puts a fixed share of pretraining text into every batch, and
:class:`EarlyStopping` is an ``eval_fn`` for ``ftlab.train.train`` that keeps the weights of the
last evaluation at which general knowledge was still above a floor. :func:`base_weights_hash`
proves that training adapters leaves the frozen base untouched.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence

import torch

from ftlab.evals import cloze_accuracy, exact_match


def forgetting_report(model, tokenizer, target_rows: Sequence[Mapping], general: Mapping[str, Sequence[str]],
                      skill: Mapping[str, Sequence[str]], max_new_tokens: int = 16) -> dict[str, float]:
    """The three scores of a fine-tune, each a fraction in [0, 1].

    ``target_rows``: held-out ``{"prompt", "response"}`` rows of the trained task (exact match).
    ``general`` and ``skill``: clozes, mappings with ``prompt`` and ``answer`` lists (a
    ``datasets.Dataset`` from ``ftlab.data.load_facts`` works), scored by
    :func:`ftlab.evals.cloze_accuracy`. Returns ``{"target", "general", "skill"}``.
    """
    return {"target": exact_match(model, tokenizer, list(target_rows), max_new_tokens=max_new_tokens),
            "general": cloze_accuracy(model, tokenizer, list(general["prompt"]), list(general["answer"])),
            "skill": cloze_accuracy(model, tokenizer, list(skill["prompt"]), list(skill["answer"]))}


def lm_examples(texts: Sequence[str], tokenizer, max_length: int = 64) -> list[dict]:
    """Plain text as causal-LM examples: every token is trained (labels = input_ids).

    This is what pretraining saw, so it is what replay mixes back in. Texts are cut to
    ``max_length`` tokens (BOS included, as the tokenizer adds it).
    """
    out = []
    for text in texts:
        ids = tokenizer(text)["input_ids"][:max_length]
        if len(ids) < 2:
            raise ValueError(f"text {text!r} is {len(ids)} token(s): a causal LM needs 2 to learn anything.")
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return out


def replay_mix(task: Sequence, general: Sequence, replay_share: float, batch_size: int, num_steps: int,
               seed: int = 0) -> list:
    """Examples in batch order: every batch of ``batch_size`` holds ``round(replay_share * batch_size)``
    general examples and the rest from ``task``, for ``num_steps`` batches.

    Train on it with ``shuffle=False`` (and ``grad_accum=1``), so that the loop cuts batches
    exactly where this function put them. Both sources are drawn without replacement, reshuffled
    each time one runs out. ``replay_share=0`` is plain fine-tuning.
    """
    if not 0 <= replay_share < 1:
        raise ValueError(f"replay_share={replay_share!r}: the share of each batch that is general text, in [0, 1).")
    n_general = round(replay_share * batch_size)
    if n_general and not general:
        raise ValueError("replay_share > 0 but no general examples were given.")
    if not task:
        raise ValueError("replay_mix needs task examples.")
    rng = random.Random(seed)

    def endless(items):
        while True:
            order = list(range(len(items)))
            rng.shuffle(order)
            yield from (items[i] for i in order)

    task_it, general_it = endless(task), endless(general) if n_general else None
    out = []
    for _ in range(num_steps):
        batch = [next(task_it) for _ in range(batch_size - n_general)]
        batch += [next(general_it) for _ in range(n_general)]
        rng.shuffle(batch)
        out.extend(batch)
    return out


class EarlyStopping:
    """An ``eval_fn`` for ``ftlab.train.train`` that stops on a general eval.

    Pass the same ``eval_every`` as the TrainConfig. ``score_fn(model) -> float`` is the general eval (use a *validation* set, not the one you
    report). At every evaluation the score is recorded; while it stays at or above ``floor``
    the trainable weights are copied. ``restore(model)`` puts back the copy from the last
    evaluation above the floor: the run as if it had stopped there. (``train`` cannot be
    interrupted from an ``eval_fn``, so the steps after it are computed and then discarded.)
    """

    def __init__(self, score_fn: Callable, floor: float, eval_every: int):
        self.score_fn, self.floor, self.eval_every = score_fn, floor, eval_every
        self.best_step: int | None = None
        self.steps: list[int] = []
        self.scores: list[float] = []
        self._state: dict[str, torch.Tensor] | None = None
        self._stopped = False

    def snapshot(self, model, step: int = 0) -> None:
        """Copy the trainable weights now (call once before training: step 0)."""
        self._state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.best_step = step

    def __call__(self, model) -> dict[str, float]:
        score = float(self.score_fn(model))
        step = len(self.steps) * self.eval_every + self.eval_every  # train calls it every eval_every steps
        self.steps.append(step)
        self.scores.append(score)
        if score >= self.floor and not self._stopped:
            self.snapshot(model, step)
        else:
            self._stopped = True  # patience 0: the first eval under the floor ends the run
        return {"general_val": score}

    def restore(self, model) -> int:
        """Load the kept weights into ``model``; return the step they come from (0 = before training)."""
        if self._state is None:
            raise RuntimeError("EarlyStopping has no weights to restore: call snapshot(model) before training.")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self._state.items():
                params[name].copy_(value)
        return self.best_step


def base_weights_hash(model) -> str:
    """SHA-256 of every parameter that is not a LoRA weight, in module order (hex digest).

    Equal before and after training adapters proves the base was not touched. The names are
    ignored (peft renames ``q_proj.weight`` to ``q_proj.base_layer.weight``), the values are not.
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()

