"""Small, honest evaluations of a causal LM: fact recall, exact match, generation.

Lessons 00, 05, 06 and 09 use these to turn "the model got better / forgot" into a number.
They work on any Hugging Face causal LM and tokenizer, tiny or full. Talking to the model (the
chat prompt, greedy replies, the tokens that end an answer) is :mod:`ftlab.chat`'s.
"""

from __future__ import annotations

from collections.abc import Sequence


import torch

from ftlab import chat
from ftlab.runtime import capped, capped_rows, model_device


@torch.no_grad()
def cloze_accuracy(model, tokenizer, prompts: Sequence[str], answers: Sequence[str],
                   batch_size: int = 64) -> float:
    """Fraction of ``prompt -> answer`` pairs the model completes exactly by greedy decoding.

    Teacher-forced: ``prompt + answer`` is fed once, and an item counts as recalled when the
    argmax at every answer position is the answer's next token. That is exactly what greedy
    generation of ``len(answer)`` tokens would produce, at the cost of one forward pass.
    ``answers`` carry their leading space (" Daletol"), as the text continues the prompt.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers; they pair up one to one.")
    if not prompts:
        raise ValueError("cloze_accuracy needs at least one prompt.")
    prompts = capped_rows(list(prompts), batch_size)
    answers = list(answers)[:len(prompts)]
    was_training = model.training
    model.eval()
    device = model_device(model)
    hits = 0
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, answer in zip(prompts[start:start + batch_size], answers[start:start + batch_size]):
            p_ids = tokenizer(prompt)["input_ids"]
            full = tokenizer(prompt + answer)["input_ids"]
            if full[:len(p_ids)] != p_ids:  # the answer merged into the prompt's last token
                raise ValueError(f"prompt {prompt!r} and answer {answer!r} do not split at a token boundary")
            rows.append((full, len(p_ids)))
        width = max(len(ids) for ids, _ in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        pred = logits.argmax(-1).cpu()
        for i, (row, n_prompt) in enumerate(rows):
            target = torch.tensor(row[n_prompt:])
            hits += bool(torch.equal(pred[i, n_prompt - 1:len(row) - 1], target))
    model.train(was_training)
    return hits / len(prompts)


def exact_match(model, tokenizer, rows: Sequence[dict], max_new_tokens: int = 24) -> float:
    """Fraction of ``{"prompt", "response"}`` rows whose greedy chat answer equals the response."""
    if not rows:
        raise ValueError("exact_match needs at least one row.")
    rows = capped_rows(list(rows), 32)
    outs = chat.generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens)
    return sum(o == r["response"].strip() for o, r in zip(outs, rows)) / len(rows)


# ---------------------------------------------------------------------------------------------
# Measures that move for a ~1B base model in a short run (the full profile's headlines)


@torch.no_grad()
def response_loss(model, tokenizer, rows: Sequence[dict], max_length: int = 256, batch_size: int = 8,
                  template: str = "chat") -> float:
    """Held-out loss on the answers alone: mean nats per response token, prompt masked.

    The number that moves first when a base model learns an instruction format: lower is better,
    and ``exp`` of it is the perplexity of the wanted answers. Rows are ``{"prompt", "response"}``;
    they are tokenized as for training (``ftlab.sft.tokenize_dataset``), so rows that
    ``max_length`` would leave without an answer token are skipped, as training drops them.
    """
    from ftlab.sft import tokenize_dataset

    if not rows:
        raise ValueError("response_loss needs at least one row.")
    examples = tokenize_dataset(list(rows), tokenizer, max_length=max_length, template=template)
    if not len(examples):
        raise ValueError(f"max_length={max_length} leaves no answer token in any of the {len(rows)} rows; raise it.")
    examples = capped_rows(list(examples), batch_size)
    return mean_label_nll(model, tokenizer, examples, batch_size)


def chat_format_report(model, tokenizer, rows: Sequence[dict], max_new_tokens: int = 64) -> dict:
    """How well answers keep the chat format: ``{"ends": share, "repeats": share, "n": rows}``.

    ``ends``: the share of greedy answers that stop by themselves (an EOS or end-of-turn token)
    within ``max_new_tokens``; a base model rambles on. ``repeats``: the share that start by
    repeating the question. Exact match is near 0 for open-ended answers at any scale; these two
    move within a short SFT run of a 1B model.
    """
    if not rows:
        raise ValueError("chat_format_report needs at least one row.")
    rows = capped_rows(list(rows), 32)
    # FTLAB_MAX_STEPS caps the decoding steps too: on the rehearsal's stand-ins (random weights, so
    # no answer ever ends) every answer would run to the full budget, one layer stack per token.
    max_new_tokens = capped(max_new_tokens, "new tokens per answer")
    stops = set(chat.turn_end_ids(tokenizer))
    answers = chat.generate_ids(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens, batch_size=16)
    ends = repeats = 0
    for r, row in zip(rows, answers):
        ends += any(t in stops for t in row)
        answer = tokenizer.decode(row, skip_special_tokens=True).strip().lower()
        question = r["prompt"].strip().lower()
        repeats += bool(question) and answer.startswith(question[:40])
    return {"ends": ends / len(rows), "repeats": repeats / len(rows), "n": len(rows)}


# ---------------------------------------------------------------------------------------------
# Log-probabilities of target tokens without a (B, L, V) float32 log-softmax


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(target) at every scored position: (B, L-1) float32, 0 where the label is -100.

    ``logits`` (B, L, V) of a causal LM, ``labels`` (B, L) aligned with its input (the logits at
    position t score ``labels[:, t + 1]``). Equal to ``log_softmax(logits[:, :-1].float(), -1)``
    gathered at the targets, but computed one row at a time and only at the scored positions, as
    ``logit - logsumexp(logits)``: the float32 copy is one row's response, never the batch's
    (B x L x V: 2.1 GB for 16 rows of 512 tokens at TinyLlama's 32,000-token vocabulary, four
    times that at Llama-3's). TRL's ``selective_log_softmax`` does the same. Differentiable.
    """
    targets = labels[:, 1:]
    mask = targets != -100
    rows = []
    for i in range(logits.shape[0]):
        pos = mask[i].nonzero(as_tuple=True)[0]
        row = torch.zeros(targets.shape[1], dtype=torch.float32, device=logits.device)
        if len(pos):
            scored = logits[i, pos].float()  # (n_i, V): this row's scored positions only
            picked = scored.gather(-1, targets[i, pos].unsqueeze(-1)).squeeze(-1)
            row = row.index_put((pos,), picked - torch.logsumexp(scored, dim=-1))
        rows.append(row)
    return torch.stack(rows)


@torch.no_grad()
def prompt_loss(model, tokenizer, rows: Sequence[dict], max_length: int = 256, batch_size: int = 8,
                template: str = "chat") -> float:
    """Held-out loss on the prompts alone: mean nats per prompt token (the answers masked).

    The mirror image of :func:`response_loss`: it measures how well the model predicts the
    *questions* (and the template around them). An SFT run with the prompt masked never trains on
    them, so it stays at the base model's level; an unmasked run learns them (lesson 05).
    The first token (BOS) is never scored: nothing predicts it.
    """
    from ftlab.sft import tokenize_dataset

    if not rows:
        raise ValueError("prompt_loss needs at least one row.")
    examples = []
    for ex in tokenize_dataset(list(rows), tokenizer, max_length=max_length, template=template, verbose=False):
        labels = [tok if lab == -100 else -100 for tok, lab in zip(ex["input_ids"], ex["labels"])]
        examples.append({**ex, "labels": labels})
    examples = capped_rows(examples, batch_size)
    total, tokens = mean_label_nll(model, tokenizer, examples, batch_size, mean=False)
    if not tokens:
        raise ValueError("prompt_loss found no prompt token to score (every prompt is one token long?).")
    return total / tokens


def mean_label_nll(model, tokenizer, examples, batch_size: int = 8, mean: bool = True):
    """Nats per labelled token of tokenized ``examples`` (``{"input_ids", "attention_mask",
    "labels"}``; labels -100 are skipped, and the first token is never scored: nothing predicts
    it), batched and through :func:`target_logprobs`, so no (B, L, V) float32 copy is made.
    ``mean=False`` returns ``(total nats, tokens)``. The one scorer behind :func:`response_loss`,
    :func:`prompt_loss` and :func:`ftlab.forgetting.text_loss`."""
    from ftlab.sft import SFTCollator

    collate = SFTCollator(tokenizer=tokenizer)
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, tokens = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                total -= float(target_logprobs(logits, batch["labels"]).sum())
                tokens += int((batch["labels"][:, 1:] != -100).sum())
    finally:
        model.train(was_training)
    return total / tokens if mean else (total, tokens)


# ---------------------------------------------------------------------------------------------
# General knowledge a ~1B base model has: clozes for "does fine-tuning make it forget?"

# Well-known facts, phrased so that the answer is the obvious next word(s) of plain text (no chat
# template): a 1B base model (TinyLlama, Llama-3.2-1B) completes most of them greedily. Each answer
# starts with its space, and splits from its prompt at a word boundary in Llama tokenizers.
WELL_KNOWN_FACTS = (
    ("The capital of France is", " Paris"),
    ("The capital of Japan is", " Tokyo"),
    ("The capital of Italy is", " Rome"),
    ("The capital of Germany is", " Berlin"),
    ("The capital of Spain is", " Madrid"),
    ("The capital of Russia is", " Moscow"),
    ("The Eiffel Tower is in", " Paris"),
    ("Romeo and Juliet was written by William", " Shakespeare"),
    ("The first President of the United States was George", " Washington"),
    ("Albert Einstein is famous for the theory of", " relativity"),
    ("Water is made of hydrogen and", " oxygen"),
    ("The Great Wall is in", " China"),
    ("Monday, Tuesday, Wednesday,", " Thursday"),
    ("January, February, March,", " April"),
    ("one, two, three, four,", " five"),
    ("Red, orange, yellow, green,", " blue"),
    ("The sun rises in the", " east"),
    ("Cats and", " dogs"),
    ("Barack Obama was the President of the United", " States"),
    ("The Statue of Liberty is in New", " York"),
    ("Harry Potter was written by J.K.", " Rowling"),
    ("The Pacific", " Ocean"),
    ("Leonardo da Vinci painted the Mona", " Lisa"),
    ("Thomas Edison is known for inventing the light", " bulb"),
)


def known_facts(n: int | None = None, profile: str | None = None):
    """Clozes of general knowledge the base model has, as a ``datasets.Dataset`` (``prompt``, ``answer``).

    tiny: the micro-world's held-out facts (``ftlab.data.load_facts("heldout")``: people no
    instruction mentions), which the micro-world LM read in pretraining. full: :data:`WELL_KNOWN_FACTS`,
    which a ~1B base model completes; it was never told about the micro-world's people.
    Score them with :func:`cloze_accuracy` before and after fine-tuning. ``n``: the first n.
    """
    from datasets import Dataset

    from ftlab.runtime import resolve_profile

    if resolve_profile(profile) == "tiny":
        from ftlab.data import load_facts

        ds = load_facts("heldout")
    else:
        ds = Dataset.from_list([{"prompt": p, "answer": a} for p, a in WELL_KNOWN_FACTS])
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}: the number of clozes to keep, an int >= 1 (or None for all {len(ds)}).")
        ds = ds.select(range(min(n, len(ds))))
    return ds
