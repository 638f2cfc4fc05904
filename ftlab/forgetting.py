"""Measuring and limiting catastrophic forgetting (lesson 09).

A fine-tune on a narrow task is judged on four numbers, before and after:

- the **target** skill it was trained for (exact match on held-out instructions);
- **general knowledge** it had from pretraining (cloze accuracy on facts no training row mentions);
- a **second skill** it had from pretraining and was not trained on (another cloze set);
- **general text**: the loss per token (nats) on held-out plain text, the most sensitive of the four.

:func:`forgetting_report` computes them; :func:`forgetting_sets` loads the sets at either scale
(tiny: the micro-world; full: a generated narrow task, well-known facts and English opposites a
~1B base model completes, Alpaca answers as general text). The cures the lesson compares need
three more tools, each an ``eval_fn`` for ``ftlab.train.train`` or a batch builder:
:class:`MatchedSkill` scores a run when its validation target first reaches a common level (so
recipes are compared at equal learning), :class:`EarlyStopping` keeps the weights of the lowest
validation loss (or of the last eval above a floor), and :func:`replay_mix` puts a fixed share of
general text into every batch. :func:`base_weights_hash`
proves that training adapters leaves the frozen base untouched.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ftlab.evals import cloze_accuracy, exact_match, mean_label_nll
from ftlab.runtime import capped_rows, max_steps, resolve_profile


def forgetting_report(model, tokenizer, target_rows: Sequence[Mapping], general: Mapping[str, Sequence[str]],
                      skill: Mapping[str, Sequence[str]], max_new_tokens: int = 16,
                      text: Sequence[str] | None = None, text_length: int = 64) -> dict[str, float]:
    """The scores of a fine-tune: ``{"target", "general", "skill"}`` fractions in [0, 1], and
    ``"text"`` (nats per token, lower is better) when ``text`` is given.

    ``target_rows``: held-out ``{"prompt", "response"}`` rows of the trained task (exact match).
    ``general`` and ``skill``: clozes, mappings with ``prompt`` and ``answer`` lists (a
    ``datasets.Dataset`` from ``ftlab.data.load_facts`` works), scored by
    :func:`ftlab.evals.cloze_accuracy`. ``text``: held-out plain text, scored by :func:`text_loss`
    on its first ``text_length`` tokens.
    """
    report = {"target": exact_match(model, tokenizer, list(target_rows), max_new_tokens=max_new_tokens),
              "general": cloze_accuracy(model, tokenizer, list(general["prompt"]), list(general["answer"])),
              "skill": cloze_accuracy(model, tokenizer, list(skill["prompt"]), list(skill["answer"]))}
    if text is not None:
        report["text"] = text_loss(model, tokenizer, text, max_length=text_length)
    return report


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


@torch.no_grad()
def text_loss(model, tokenizer, texts: Sequence[str], max_length: int = 64, batch_size: int = 8) -> float:
    """Mean loss per token (nats) of plain ``texts``, each cut to ``max_length`` tokens.

    How well the model still predicts general text: it rises when a fine-tune forgets, long
    before a cloze flips. ``exp`` of it is the perplexity. The first token (BOS) is not scored.
    """
    if not texts:
        raise ValueError("text_loss needs at least one text.")
    examples = capped_rows(lm_examples(list(texts), tokenizer, max_length), batch_size)
    return mean_label_nll(model, tokenizer, examples, batch_size)


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


def _eval_step(calls: int, eval_every: int, num_steps: int | None) -> int:
    """The step of ``train``'s ``calls``-th evaluation (1-based): every ``eval_every`` steps, and once
    more after a last step that is not a multiple of it (``FTLAB_MAX_STEPS`` may cut the run)."""
    step = calls * eval_every
    if num_steps is not None:
        cap = max_steps()
        step = min(step, num_steps if cap is None else min(num_steps, cap))
    return step


def _check_every(eval_every) -> None:
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every={eval_every!r}: the TrainConfig's eval_every, an int >= 1.")


class EarlyStopping:
    """An ``eval_fn`` for ``ftlab.train.train`` that keeps the weights of the step to stop at.

    Pass the same ``eval_every`` as the TrainConfig (and its ``num_steps``, so that the evaluation
    ``train`` adds after a last step that is not a multiple of ``eval_every`` gets its real step).
    ``score_fn(model) -> float`` is a *validation* eval (never the set you report); every score is
    recorded in ``steps`` / ``scores``. Two rules pick the weights that ``restore(model)`` puts back:

    - ``mode="min"`` (a loss) or ``"max"`` (an accuracy), no ``floor``: the best score so far, the
      classic early stopping on validation loss (lesson 09, section 2);
    - ``floor`` (with ``mode="max"``): the last evaluation before the score first fell under the
      floor, e.g. general recall kept at 80% of the base's.

    (``train`` cannot be interrupted from an ``eval_fn``: the steps after the kept one are computed
    and then discarded by ``restore``.) The copy lives in CPU memory and is overwritten in place: a
    full fine-tune of a 1.1B model keeps one 4.4 GB fp32 copy in host RAM, not a second one on the
    GPU (which a T4 has no room for).
    """

    def __init__(self, score_fn: Callable, floor: float | None = None, eval_every: int | None = None,
                 num_steps: int | None = None, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: 'min' for a score that should go down (a loss), 'max' for one "
                             "that should go up (an accuracy).")
        if floor is not None and mode == "min":
            raise ValueError("floor works with mode='max' (stop once an accuracy falls under it); with "
                             "mode='min' leave floor=None to keep the weights of the lowest loss.")
        _check_every(eval_every)
        self.score_fn, self.floor, self.eval_every, self.mode = score_fn, floor, eval_every, mode
        self.num_steps = num_steps  # the run's steps: train's last evaluation comes after the last step
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.steps: list[int] = []
        self.scores: list[float] = []
        self._state: dict[str, torch.Tensor] | None = None
        self._stopped = False

    def snapshot(self, model, step: int = 0) -> None:
        """Copy the trainable weights now (call once before training: step 0)."""
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        if self._state is None or self._state.keys() != params.keys() or any(
                self._state[n].shape != p.shape or self._state[n].dtype != p.dtype for n, p in params.items()):
            self._state = {n: torch.empty(p.shape, dtype=p.dtype, device="cpu") for n, p in params.items()}
        for n, p in params.items():
            self._state[n].copy_(p)
        self.best_step = step

    def _keep(self, score: float) -> bool:
        if self.floor is not None:  # patience 0: the first eval under the floor ends the run
            self._stopped = self._stopped or score < self.floor
            return not self._stopped
        if self.best_score is None:
            return True
        return score < self.best_score if self.mode == "min" else score > self.best_score

    def __call__(self, model) -> dict[str, float]:
        score = float(self.score_fn(model))
        step = _eval_step(len(self.steps) + 1, self.eval_every, self.num_steps)
        self.steps.append(step)
        self.scores.append(score)
        if self._keep(score):
            self.snapshot(model, step)
            self.best_score = score
        return {"val_loss" if self.mode == "min" else "val_score": score}

    def restore(self, model) -> int:
        """Load the kept weights into ``model``; return the step they come from (0 = before training)."""
        if self._state is None:
            raise RuntimeError("EarlyStopping has no weights to restore: call snapshot(model) before training.")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self._state.items():
                params[name].copy_(value)
        return self.best_step


class MatchedSkill:
    """An ``eval_fn`` that scores a run when its target skill first reaches ``level``.

    Comparing fine-tuning recipes after the same number of steps mixes two things: how much of
    the target each learnt and how much else each forgot. Scoring each run when its *validation*
    target score first reaches the same ``level`` compares forgetting at equal learning.
    ``score_fn(model) -> float`` scores the target on validation rows (not the reported test rows);
    at the first evaluation with a score >= ``level``, ``report_fn(model)`` runs once and its result
    is kept in ``report`` (the step in ``reached_step``). After that the target is not scored again
    (``{}`` is returned), so a run pays for the validation eval only until it gets there.
    ``reached_step is None`` after training: the run never reached the level (``best`` says how
    close it came).
    """

    def __init__(self, score_fn: Callable, level: float, report_fn: Callable, eval_every: int,
                 num_steps: int | None = None):
        _check_every(eval_every)
        self.score_fn, self.level, self.report_fn = score_fn, level, report_fn
        self.eval_every, self.num_steps = eval_every, num_steps
        self.steps: list[int] = []
        self.scores: list[float] = []
        self.reached_step: int | None = None
        self.report = None
        self._calls = 0

    @property
    def best(self) -> float | None:
        """The highest validation score seen (None before any evaluation)."""
        return max(self.scores) if self.scores else None

    def __call__(self, model) -> dict[str, float]:
        self._calls += 1
        if self.reached_step is not None:
            return {}
        score = float(self.score_fn(model))
        self.steps.append(_eval_step(self._calls, self.eval_every, self.num_steps))
        self.scores.append(score)
        if score >= self.level:
            self.reached_step, self.report = self.steps[-1], self.report_fn(model)
        return {"target_val": score}


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


# ---------------------------------------------------------------------------------------------
# The sets, at both scales

# Well-known facts for early stopping at full scale: a validation set, disjoint from the reported
# one (ftlab.evals.known_facts), phrased so that the answer is the obvious next word of plain text
# for a ~1B base model. Each answer starts with its space and splits from its prompt at a word
# boundary in the Llama tokenizers (tests/test_forgetting.py checks both).
VALIDATION_FACTS = (
    ("The capital of England is", " London"),
    ("The capital of Egypt is", " Cairo"),
    ("The capital of Greece is", " Athens"),
    ("The capital of Portugal is", " Lisbon"),
    ("The capital of Austria is", " Vienna"),
    ("The capital of Ireland is", " Dublin"),
    ("The capital of Norway is", " Oslo"),
    ("The capital of China is", " Beijing"),
    ("The largest planet in the solar system is", " Jupiter"),
    ("The tallest mountain in the world is Mount", " Everest"),
    ("The longest river in Africa is the", " Nile"),
    ("The law of gravity was discovered by Isaac", " Newton"),
    ("The telephone was invented by Alexander Graham", " Bell"),
    ("There are seven days in a", " week"),
    ("There are twelve months in a", " year"),
    ("The boiling point of water is 100 degrees", " Celsius"),
    ("Mount Fuji is the highest mountain in", " Japan"),
    ("The Colosseum is in", " Rome"),
    ("A square has four", " sides"),
    ("Light travels faster than", " sound"),
    ("The sun rises in the east and sets in the", " west"),
    ("Kangaroos are native to", " Australia"),
    ("Saturday, Sunday,", " Monday"),
    ("The Taj Mahal is in", " India"),
)

# A second skill a ~1B base model has from pretraining and lesson 09's narrow task never trains:
# "The opposite of hot is" -> " cold", asked in both directions (pairs with one obvious answer).
ENGLISH_OPPOSITES = (
    ("hot", "cold"), ("up", "down"), ("left", "right"), ("black", "white"), ("day", "night"),
    ("fast", "slow"), ("happy", "sad"), ("wet", "dry"), ("true", "false"), ("yes", "no"),
    ("win", "lose"), ("love", "hate"), ("north", "south"), ("east", "west"), ("full", "empty"),
    ("rich", "poor"), ("early", "late"), ("inside", "outside"), ("push", "pull"), ("strong", "weak"),
    ("top", "bottom"), ("buy", "sell"), ("war", "peace"), ("big", "small"),
)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")

# The narrow tasks each profile offers (lesson 09: target_kind, and one adapter per task).
# tiny: the micro-world's instruction kinds. full: generated tasks with one right short answer,
# which a base model does not give in the chat format and a short fine-tune teaches; exact match
# is meaningful for them at any scale (unlike Alpaca's paragraphs).
TASKS = {"tiny": ("fact", "addition", "opposite"), "full": ("date", "addition", "opposite")}
GENERATED_SIZES = {"train": 1000, "test": 200}


def _clozes(pairs) -> dict[str, list[str]]:
    return {"prompt": [p for p, _ in pairs], "answer": [a for _, a in pairs]}


def opposite_clozes(pairs=ENGLISH_OPPOSITES, template: str = "The opposite of {} is") -> dict[str, list[str]]:
    """Both directions of every pair as clozes: ``{"prompt": [...], "answer": [" cold", ...]}``."""
    pairs = list(pairs)
    return _clozes([(template.format(x), f" {y}") for x, y in pairs] + [(template.format(y), f" {x}") for x, y in pairs])


def _date_rows(rng: random.Random, n: int, taken: set) -> list[dict]:
    templates = ("Write {d} {month} {y} as an ISO date (YYYY-MM-DD).",
                 "Convert the date {month} {d}, {y} to ISO 8601 format.",
                 "What is {d} {month} {y} in YYYY-MM-DD format?")
    rows = []
    while len(rows) < n:
        y, m, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
        if (y, m, d) in taken:
            continue
        taken.add((y, m, d))
        prompt = rng.choice(templates).format(d=d, month=MONTHS[m - 1], y=y)
        rows.append({"prompt": prompt, "response": f"{y:04d}-{m:02d}-{d:02d}", "kind": "date"})
    return rows


def _addition_rows(rng: random.Random, n: int, taken: set) -> list[dict]:
    templates = ("What is {a} + {b}? Answer with the number only.", "Add {a} and {b}. Reply with the sum only.",
                 "Compute {a} + {b}. Give just the number.")
    rows = []
    while len(rows) < n:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if (a, b) in taken:
            continue
        taken.add((a, b))
        rows.append({"prompt": rng.choice(templates).format(a=a, b=b), "response": str(a + b), "kind": "addition"})
    return rows


def _opposite_rows(pairs) -> list[dict]:
    templates = ('What is the opposite of "{x}"? Answer with one word.', 'Give the opposite of the word "{x}".',
                 'One word: the opposite of "{x}".')
    return [{"prompt": t.format(x=x), "response": y, "kind": "opposite"}
            for a, b in pairs for x, y in ((a, b), (b, a)) for t in templates]


def generated_task(kind: str, split: str = "train") -> list[dict]:
    """The full profile's narrow tasks, generated (seeded; the same rows on every machine).

    ``"date"``: "Write 7 March 1994 as an ISO date (YYYY-MM-DD)." -> "1994-03-07";
    ``"addition"``: two-digit sums, the number only; ``"opposite"``: one English word.
    ``split`` "train" and "test" never share a date, a sum or a word pair.
    """
    if split not in GENERATED_SIZES:
        raise ValueError(f"split={split!r}: the generated tasks have splits {tuple(GENERATED_SIZES)}.")
    if kind not in TASKS["full"]:
        raise ValueError(f"kind={kind!r} is not a generated task; use one of {TASKS['full']}.")
    if kind == "opposite":  # every fourth pair is held out
        pairs = [p for i, p in enumerate(ENGLISH_OPPOSITES) if (i % 4 == 3) == (split == "test")]
        return _opposite_rows(pairs)
    rng, taken = random.Random(f"ftlab-{kind}"), set()
    make = _date_rows if kind == "date" else _addition_rows
    train = make(rng, GENERATED_SIZES["train"], taken)
    return train if split == "train" else make(rng, GENERATED_SIZES["test"], taken)


def task_rows(kind: str, split: str = "train", profile: str | None = None) -> list[dict]:
    """``{"prompt", "response", "kind"}`` rows of one narrow task (see :data:`TASKS`).

    tiny: the micro-world's instructions of that kind (``test`` asks about held-out people).
    full: :func:`generated_task`. A kind the profile does not have is an error that names the
    ones it has (Alpaca, the full profile's instruction set, has no kinds to filter by).
    """
    prof = resolve_profile(profile)
    if kind not in TASKS[prof]:
        raise ValueError(f"target kind {kind!r} does not exist in the {prof} profile: its narrow tasks are "
                         f"{TASKS[prof]}" + (" (generated, see ftlab.forgetting.generated_task)" if prof == "full" else
                                             " (the micro-world's instruction kinds)") + ".")
    if prof == "full":
        return generated_task(kind, split)
    from ftlab.data import load_instructions

    return [dict(r) for r in load_instructions(split, profile="tiny") if r["kind"] == kind]


@dataclass
class ForgettingSets:
    """What lesson 09 trains on and measures forgetting with, at one scale (:func:`forgetting_sets`)."""

    target_kind: str                # the narrow task
    train: list[dict]               # its training rows
    target: list[dict]              # its held-out test rows: exact match before / after (reported)
    general: dict                   # general-knowledge clozes, reported (never used to decide anything)
    general_val: dict               # other general-knowledge clozes: early stopping decides on these
    skill: dict                     # a second pretraining skill, as clozes
    replay: list[str]               # general text that replay mixes into the batches
    text: list[str]                 # held-out general text: loss per token before / after
    tasks: dict = field(default_factory=dict)  # narrow task -> training rows (one adapter per task)
    target_val: list[dict] = field(default_factory=list)  # other held-out rows of the task: decisions use these

    def describe(self) -> str:
        """One line per set: its size and its first item."""
        def cloze(c):
            return f"{len(c['prompt'])} clozes, e.g. {c['prompt'][0]!r} -> {c['answer'][0]!r}"

        return "\n".join([
            f"target ({self.target_kind}): {len(self.train)} training rows, {len(self.target)} held out, e.g. "
            f"{self.target[0]['prompt']!r} -> {self.target[0]['response']!r}; {len(self.target_val)} validation rows",
            f"general: {cloze(self.general)}", f"general_val: {cloze(self.general_val)}",
            f"skill: {cloze(self.skill)}",
            f"text: {len(self.text)} held-out texts, e.g. {self.text[0][:60]!r}...",
            f"replay: {len(self.replay)} texts",
            "tasks: " + ", ".join(f"{k} ({len(v)} rows)" for k, v in self.tasks.items())])


def forgetting_sets(target_kind: str, eval_size: int = 40, replay_docs: int = 400, text_docs: int = 64,
                    profile: str | None = None, val_size: int = 24) -> ForgettingSets:
    """Every set lesson 09 needs, for the profile's model.

    tiny: the micro-world. The target is one instruction kind (``"fact"``: questions about the
    training people); general knowledge is the held-out people's facts and early stopping watches
    the training people's; the second skill is the world's opposites; the general text is
    pretraining documents (replay and the held-out text are drawn with different seeds).

    full (a ~1B base model): the target is a generated task (``"date"``: dates to ISO format);
    general knowledge is well-known facts (:func:`ftlab.evals.known_facts`, reported) and
    :data:`VALIDATION_FACTS` (early stopping); the second skill is English opposites; the
    general text is Alpaca answers as plain text (training rows for replay, test rows held out).

    The task's held-out rows are split in two: the first ``eval_size`` are the reported ``target``,
    the next ``val_size`` are ``target_val``, which early stopping and matched-skill stopping watch.
    """
    prof = resolve_profile(profile)
    for name, value in (("eval_size", eval_size), ("replay_docs", replay_docs), ("text_docs", text_docs),
                        ("val_size", val_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: a number of rows, an int >= 1.")
    train, held_out = task_rows(target_kind, "train", prof), task_rows(target_kind, "test", prof)
    if len(held_out) < eval_size + val_size:
        raise ValueError(f"the {prof} profile's {target_kind!r} task has {len(held_out)} held-out rows, fewer than "
                         f"eval_size + val_size = {eval_size} + {val_size}; lower them so that both fit.")
    target, target_val = held_out[:eval_size], held_out[eval_size:eval_size + val_size]
    if prof == "tiny":  # one read of the training instructions for every kind
        from ftlab.data import load_instructions

        rows = [dict(r) for r in load_instructions("train", profile="tiny")]
        tasks = {kind: (train if kind == target_kind else [r for r in rows if r["kind"] == kind]) for kind in TASKS[prof]}
    else:
        tasks = {kind: (train if kind == target_kind else task_rows(kind, "train", prof)) for kind in TASKS[prof]}
    from ftlab.evals import known_facts

    general = known_facts(profile=prof)
    general = {"prompt": list(general["prompt"]), "answer": list(general["answer"])}
    if prof == "tiny":
        from ftlab.data import load_facts
        from ftlab.data.world import OPPOSITES, make_world, pretraining_corpus

        val = load_facts("train")
        general_val = {"prompt": list(val["prompt"]), "answer": list(val["answer"])}
        skill = opposite_clozes(OPPOSITES)
        world = make_world()
        replay, text = pretraining_corpus(world, replay_docs, seed=1), pretraining_corpus(world, text_docs, seed=2)
    else:
        from ftlab.data import load_instructions

        general_val, skill = _clozes(VALIDATION_FACTS), opposite_clozes(ENGLISH_OPPOSITES)
        def answers(split, n):  # answers of a few words or more: a one-word answer is no text to predict
            return [r["response"] for r in load_instructions(split, profile=prof) if len(r["response"].split()) >= 4][:n]

        replay, text = answers("train", replay_docs), answers("test", text_docs)
    return ForgettingSets(target_kind, train, target, general, general_val, skill, replay, text, tasks, target_val)
