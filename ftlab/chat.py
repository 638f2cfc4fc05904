"""Talking to a chat model: the prompt it reads, the tokens that end its answer, greedy replies.

Lessons 00, 04, 05 and 06 show what a model answers before and after training; the evaluations
in :mod:`ftlab.evals` score those answers. Three pieces, for any Hugging Face causal LM and
tokenizer, tiny or full:

- :func:`chat_prompt`: the text a chat model sees for one user turn, up to where its answer starts;
- :func:`turn_end_ids`: the token ids that end an answer (the EOS, and the template's end-of-turn
  token when it is another one, as in Llama-3);
- :func:`generate` (text) and :func:`generate_ids` (token ids): greedy completions, batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ftlab.runtime import model_device


def chat_prompt(tokenizer, prompt: str) -> str:
    """The text a chat model sees for one user turn, ending where the assistant's answer starts."""
    if not isinstance(prompt, str):
        raise TypeError(f"chat_prompt takes one prompt as a str, got a {type(prompt).__name__} ({prompt!r:.60}).")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{type(tokenizer).__name__} has no chat template, so there is no chat prompt to write. "
                         "Load it with ftlab.models.load_causal_lm (which gives base models the course's "
                         "template), or generate with chat=False for plain text.")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def turn_end_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant's answer: the EOS, and the chat template's end-of-turn token
    when it is another one (Llama-3's template closes a turn with ``<|eot_id|>`` while its EOS is
    ``<|end_of_text|>``: generation that stops only at the EOS never stops after an answer)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if getattr(tokenizer, "chat_template", None):
        marker = "\x00ANSWER\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
        after = text.split(marker, 1)[1] if marker in text else ""
        # The first token after the answer, if it is a special one. Not only all_special_tokens:
        # under transformers 5 that lists the named ones (bos, eos, ...), and Llama-3's <|eot_id|>
        # is an added special token outside it.
        first = tokenizer(after, add_special_tokens=False)["input_ids"][:1] if after else []
        special = set(tokenizer.all_special_ids) | {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                                                    if getattr(t, "special", False)}
        if first and first[0] in special and first[0] not in ids:
            ids.append(first[0])
    return ids


def _prompt_list(prompts, where: str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    bad = next((p for p in prompts if not isinstance(p, str)), None)
    if bad is not None:
        raise TypeError(f"{where} takes a prompt (str) or a list of prompts, but one is a {type(bad).__name__} "
                        f"({bad!r:.60}); pass the prompt texts, e.g. [r['prompt'] for r in rows].")
    return prompts


@torch.no_grad()
def generate_ids(model, tokenizer, prompts: Sequence[str] | str, max_new_tokens: int = 24,
                 chat: bool = True, batch_size: int = 32) -> list[list[int]]:
    """The new token ids of greedy completions of ``prompts``, one list per prompt.

    ``chat``: each prompt is wrapped in :func:`chat_prompt` and decoding stops at any of
    :func:`turn_end_ids`; else the text is continued as it is and stops at the EOS. Rows are
    left-padded (generation continues at the right edge of every row); a row that stopped early
    carries pad tokens after its stop token. The model and the tokenizer's padding side are left
    as they were found.
    """
    prompts = _prompt_list(prompts, "generate")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: the most tokens to add to each prompt, an int >= 1.")
    was_training = model.training
    model.eval()
    device = model_device(model)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stops = turn_end_ids(tokenizer) if chat else tokenizer.eos_token_id
    outs: list[list[int]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            texts = [chat_prompt(tokenizer, p) for p in chunk] if chat else chunk
            # the chat template writes its own BOS; plain text gets the tokenizer's
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
            enc = {k: v.to(device) for k, v in enc.items()}
            new = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
            outs.extend(new[:, enc["input_ids"].shape[1]:].tolist())
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return outs


def generate(model, tokenizer, prompts: Sequence[str] | str, max_new_tokens: int = 24,
             chat: bool = True, batch_size: int = 32) -> list[str]:
    """Greedy completions of ``prompts`` (wrapped in the chat template when ``chat``).

    Returns only the new text, special tokens removed, stripped: one string per prompt (a list
    of one for a single prompt). Greedy so results repeat. :func:`generate_ids` gives the tokens.
    """
    rows = generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, chat=chat, batch_size=batch_size)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
