"""Supervised fine-tuning data: prompt templates, prompt masking (-100), padding (lesson 05).

An SFT example is a prompt and a response. The model reads both, but only the response (and the
EOS that ends it) is trained: every prompt token gets the label -100, which the loss skips
(``ftlab.train.causal_lm_loss``). Three pieces, each one screen long:

- :func:`tokenize_example` -> ``{"input_ids", "attention_mask", "labels"}`` as Python lists
  (one example, not padded), with the prompt masked;
- :func:`tokenize_dataset` does it for a dataset, drops examples that truncation would leave
  with no trained token, and says how many it dropped;
- :class:`SFTCollator` right-pads a list of examples into (B, L) tensors: input_ids padded with
  the pad token, attention_mask 0 on padding, labels -100 on padding.

Equal to TRL (tested in ``tests/test_sft.py``): TRL 1.16's ``SFTTrainer`` with
``SFTConfig(completion_only_loss=True)`` (the default for prompt/completion datasets) tokenizes
the prompt alone and prompt + completion, and masks the longest common prefix of the two
(``trl.data_utils.common_prefix_length``); it appends EOS to string completions, lets the chat
template write it for conversational ones, truncates with ``truncation_mode="keep_start"`` and
drops examples left fully masked. :func:`tokenize_example` does the same, so on the same data and
tokenizer the labels are equal; :func:`trl_records` writes rows in the dataset format TRL wants
(its ``SFTTrainer``'s, and its ``DPOTrainer``'s for preference rows: lesson 06).

Decisions:

- The prompt/response boundary is the common prefix of the tokenized prompt and the tokenized
  full text, never ``len(tokenize(prompt))``: a BPE merge across the boundary (prompt ``"... is"``
  + response ``"n't"``) changes the last prompt token, and that merged token is then trained.
- Truncation keeps the start. An example left without a trained token raises a ValueError in
  :func:`tokenize_example` (an all -100 example has zero target tokens: 0/0 = NaN loss) and is
  dropped and counted by :func:`tokenize_dataset`.
- Padding positions are masked by position (the attention mask), never by token id: Llama
  tokenizers pad with EOS, and masking ``input_ids == pad_token_id`` would also mask the EOS the
  model must learn to stop on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from ftlab.chat import chat_prompt, turn_end_ids
from ftlab.train import IGNORE_INDEX  # the label the loss skips: one constant, kept by the loss's module

TEMPLATES = ("chat", "alpaca")

# The Alpaca instruction/response template (Taori et al., 2023), without its system preamble.
ALPACA_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"template={template!r} is not a template; use one of {TEMPLATES}: 'chat' (the "
                         "tokenizer's chat template) or 'alpaca' (### Instruction / ### Response).")


def _messages(prompt: str, response: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": prompt}]
    if response is not None:
        turns.append({"role": "assistant", "content": response})
    return turns


def format_prompt(prompt: str, tokenizer, template: str = "chat") -> str:
    """The text the model reads before its answer starts (what it sees at inference)."""
    _check_template(template)
    if template == "alpaca":
        return ALPACA_TEMPLATE.format(prompt=prompt)
    return chat_prompt(tokenizer, prompt)


def _check_rows(rows, where: str) -> None:
    """A clear error for a dict of columns (``ds[:8]``) passed where rows are expected."""
    if isinstance(rows, Mapping):
        columns = {k: len(v) if isinstance(v, Sequence) and not isinstance(v, str) else "?" for k, v in rows.items()}
        raise TypeError(f"{where} takes rows (a datasets.Dataset, or a list of dicts with 'prompt' and "
                        f"'response'), but got one dict of columns {columns} (what ds[:n] returns). Pass "
                        "ds.select(range(n)), or rows: [dict(zip(d, v)) for v in zip(*d.values())].")


def _check_row(row, i: int, where: str) -> None:
    if not isinstance(row, Mapping):
        raise TypeError(f"row {i} is a {type(row).__name__} ({row!r:.60}); {where} takes rows that are "
                        "dicts with 'prompt' and 'response' (ftlab.data.load_instructions() gives them).")


def _eos_token(tokenizer) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if not isinstance(eos, str) or not eos:
        raise ValueError(f"this {type(tokenizer).__name__} has no EOS token: template='alpaca' ends every "
                         "response with EOS so the model learns to stop. Give the tokenizer one "
                         "(tokenizer.add_special_tokens({'eos_token': '</s>'}) and resize the model's "
                         "embeddings), or load the model with ftlab.models.load_causal_lm().")
    return eos


def _ids(tokenizer, prompt: str, response: str | None, template: str) -> list[int]:
    """Token ids of the prompt alone (response None) or of prompt + response, as TRL builds them."""
    if template == "alpaca":  # a string prompt/completion in TRL: tokenizer(text), EOS appended
        text = ALPACA_TEMPLATE.format(prompt=prompt)
        if response is not None:
            eos = _eos_token(tokenizer)
            text += response if response.endswith(eos) else response + eos
        return list(tokenizer(text)["input_ids"])
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("template='chat' needs a tokenizer with a chat template; this one has none. "
                         "Use template='alpaca', or load the model with ftlab.models.load_causal_lm(), "
                         "which gives every tokenizer one.")
    out = tokenizer.apply_chat_template(_messages(prompt, response), tokenize=True, return_dict=True,
                                        add_generation_prompt=response is None)
    return list(out["input_ids"])


def user_turn_start(tokenizer) -> str:
    """The chat template's text before a user's words: what a model sees when a user turn begins.

    Tiny (and TinyLlama, which gets the micro-world's template): ``"<|user|>\\n"``; Llama-3:
    ``"<|start_header_id|>user<|end_header_id|>\\n\\n"``. Without the BOS the template writes
    first when the tokenizer adds it itself, so ``tokenizer(user_turn_start(tok) + "What")``
    holds one BOS, not two. Lesson 05 hands the start of a user turn to a model to see whether it
    writes a question.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("user_turn_start needs a tokenizer with a chat template; load the model with "
                         "ftlab.models.load_causal_lm(), which gives every tokenizer one.")
    marker = "\x00QUESTION\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    if marker not in text:
        raise ValueError("the chat template does not write the user's message verbatim; cannot find where it starts.")
    start = text.split(marker, 1)[0]
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    if adds_bos and start.startswith(bos):
        start = start[len(bos):]
    return start


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share: where the prompt really ends in prompt + response."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_example(prompt: str, response: str, tokenizer, max_length: int | None = None,
                     template: str = "chat", mask_prompt: bool = True) -> dict[str, list[int]]:
    """One SFT example: ``{"input_ids", "attention_mask", "labels"}``, Python lists of length L.

    ``labels`` are the input ids with every prompt token set to -100 (``mask_prompt=False``
    trains every token, the lesson-05 baseline). The response and its EOS are trained. With
    ``max_length`` the sequence keeps its first ``max_length`` tokens.

    Raises:
        ValueError: truncation would leave no trained token (an all -100 example gives a NaN
            loss), or the template is unknown.
    """
    _check_template(template)
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise TypeError(f"prompt and response must be strings, got {type(prompt).__name__} and "
                        f"{type(response).__name__}.")
    prompt_ids = _ids(tokenizer, prompt, None, template)
    input_ids = _ids(tokenizer, prompt, response, template)
    n_prompt = common_prefix_length(prompt_ids, input_ids)  # a merge across the boundary moves it left
    answer_ids = set(input_ids[n_prompt:])
    if (tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in answer_ids
            and not set(turn_end_ids(tokenizer)) & answer_ids):  # Llama-3 ends a turn with <|eot_id|>
        warnings.warn("the response has no EOS token after it: the model will not learn to stop. "
                      "Check the chat template writes the EOS after the assistant turn.", stacklevel=2)
    labels = list(input_ids) if not mask_prompt else [IGNORE_INDEX] * n_prompt + input_ids[n_prompt:]
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length={max_length!r} is not valid: use an int >= 2 (tokens per "
                             "example), or None for no truncation.")
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels[1:]):  # labels[0] is never a target after the shift
        raise ValueError(f"max_length={max_length} cuts this example inside its prompt ({n_prompt} "
                         f"prompt tokens of {len(_ids(tokenizer, prompt, response, template))}): no "
                         "response token would be trained, and an all -100 example gives a NaN loss. "
                         "Raise max_length, shorten the prompt, or use tokenize_dataset(), which drops "
                         "and counts such examples.")
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


class SFTDataset(list):
    """A list of tokenized examples (see :func:`tokenize_example`) that remembers what it dropped.

    ``dropped``: how many rows truncation would have left with no trained token;
    ``dropped_rows``: their indices in the input. Pass it to ``ftlab.train.train`` as is.
    """

    def __init__(self, examples=(), dropped_rows=()):
        super().__init__(examples)
        self.dropped_rows = list(dropped_rows)

    @property
    def dropped(self) -> int:
        return len(self.dropped_rows)

    @property
    def trained_tokens(self) -> int:
        """Target tokens over the whole dataset (labels after the shift that are not -100)."""
        return sum(sum(label != IGNORE_INDEX for label in ex["labels"][1:]) for ex in self)

    def __repr__(self) -> str:
        return (f"SFTDataset({len(self)} examples, {self.trained_tokens} trained tokens, "
                f"{self.dropped} dropped by truncation)")


def tokenize_dataset(rows: Iterable[Mapping], tokenizer, max_length: int | None = None,
                     template: str = "chat", mask_prompt: bool = True, verbose: bool = True) -> SFTDataset:
    """:func:`tokenize_example` over rows with ``prompt`` and ``response``; drop and count the rest.

    Returns an :class:`SFTDataset` (a list of examples with ``.dropped``). With ``verbose`` it
    prints how many were dropped when any were. Raises a ValueError if every row was dropped.
    """
    _check_rows(rows, "tokenize_dataset")
    kept, dropped, n = [], [], 0
    for i, row in enumerate(rows):
        n += 1
        _check_row(row, i, "tokenize_dataset")
        if "prompt" not in row or "response" not in row:
            raise ValueError(f"row {i} has keys {sorted(row)}; tokenize_dataset needs 'prompt' and "
                             "'response' (ftlab.data.load_instructions() rows have both).")
        try:
            kept.append(tokenize_example(row["prompt"], row["response"], tokenizer, max_length=max_length,
                                         template=template, mask_prompt=mask_prompt))
        except ValueError as err:
            if "max_length" not in str(err):
                raise
            dropped.append(i)
    if n and not kept:
        raise ValueError(f"max_length={max_length} drops all {n} examples: every prompt fills it. "
                         "Raise max_length.")
    if verbose and dropped:
        print(f"tokenize_dataset: dropped {len(dropped)} of {n} examples that max_length={max_length} "
              "would leave with no response token")
    return SFTDataset(kept, dropped)


class SFTCollator:
    """Right-pad tokenized examples into a batch of (B, L) long tensors.

    ``input_ids`` are padded with ``pad_token_id``, ``attention_mask`` with 0, ``labels`` with
    -100 (padding is found by position, so a pad token equal to EOS keeps its EOS labels).
    ``pad_to_multiple_of`` rounds L up (8 suits tensor cores). Extra keys are dropped.
    """

    def __init__(self, pad_token_id: int | None = None, tokenizer=None, pad_to_multiple_of: int | None = None):
        if pad_token_id is None and tokenizer is not None:
            pad_token_id = getattr(tokenizer, "pad_token_id", None)
            pad_token_id = pad_token_id if pad_token_id is not None else getattr(tokenizer, "eos_token_id", None)
        if pad_token_id is None:
            what = f"this {type(tokenizer).__name__} has neither a pad nor an EOS token" if tokenizer is not None \
                else "no pad_token_id and no tokenizer were given"
            raise ValueError(f"SFTCollator needs a token id to pad with, but {what}. Pass pad_token_id=..., "
                             "or give the tokenizer a pad token (tokenizer.pad_token = tokenizer.eos_token when "
                             "it has an EOS; else tokenizer.add_special_tokens({'pad_token': '<pad>'}) and "
                             "resize the model's embeddings).")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("SFTCollator got an empty list of examples.")
        rows = [{k: list(torch.as_tensor(ex[k]).tolist()) for k in ("input_ids", "labels")} for ex in examples]
        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": torch.full((len(rows), width), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
                 "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)}
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            if len(r["labels"]) != n:
                raise ValueError(f"example {i}: {n} input_ids but {len(r['labels'])} labels.")
            batch["input_ids"][i, :n] = torch.tensor(r["input_ids"], dtype=torch.long)
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = torch.tensor(r["labels"], dtype=torch.long)
        return batch


def show_labels(example: Mapping, tokenizer, width: int = 18) -> str:
    """A token-by-token table of one example: the token, its id, and whether it is trained."""
    lines = [f"{'pos':>3}  {'token':<{width}} {'id':>5}  trained"]
    for pos, (tok_id, label) in enumerate(zip(example["input_ids"], example["labels"])):
        tok_id, label = int(tok_id), int(label)
        text = repr(tokenizer.decode([tok_id]))[:width]
        mark = "yes" if label != IGNORE_INDEX else "-  (-100)"
        lines.append(f"{pos:>3}  {text:<{width}} {tok_id:>5}  {mark}")
    return "\n".join(lines)


TRL_KINDS = {"response": ("prompt", "response"), "preference": ("prompt", "chosen", "rejected")}


def trl_records(rows: Iterable[Mapping], template: str = "chat") -> list[dict]:
    """Rows as the records TRL's trainers read, in the same template as ours.

    Two kinds of rows, told apart by their keys as TRL tells its datasets apart:

    - ``prompt``, ``response`` (SFT, lesson 05) -> ``{"prompt", "completion"}`` for ``SFTTrainer``;
    - ``prompt``, ``chosen``, ``rejected`` (DPO, lesson 06) -> ``{"prompt", "chosen", "rejected"}``
      for ``DPOTrainer``.

    chat: conversational records (the prompt a user turn, each answer an assistant turn; TRL
    applies the tokenizer's chat template, which writes the end of turn). alpaca: strings, the
    prompt in :data:`ALPACA_TEMPLATE` (TRL appends the EOS to each answer itself). Tokenized by
    TRL, they give the token ids :func:`tokenize_example` and ``ftlab.dpo.tokenize_pair`` give.
    """
    _check_template(template)
    _check_rows(rows, "trl_records")
    rows = list(rows)
    if not rows:
        raise ValueError("trl_records got no rows; pass the training rows (a datasets.Dataset or a list of dicts).")
    kind = None
    for i, row in enumerate(rows):
        _check_row(row, i, "trl_records")
        row_kind = next((k for k, keys in TRL_KINDS.items() if all(key in row for key in keys)), None)
        if row_kind is None or (row_kind == "response" and ("chosen" in row or "rejected" in row)):
            raise ValueError(f"row {i} has keys {sorted(row)}; trl_records takes SFT rows with {TRL_KINDS['response']} "
                             f"or preference rows with {TRL_KINDS['preference']}.")
        if kind is not None and row_kind != kind:
            raise ValueError(f"row {i} is a {row_kind} row but the rows before it are {kind} rows: one TRL dataset "
                             "holds one kind (SFTTrainer reads prompt/response rows, DPOTrainer preference rows).")
        kind = row_kind
    answers = TRL_KINDS[kind][1:]  # ("response",) or ("chosen", "rejected")
    names = {"response": "completion", "chosen": "chosen", "rejected": "rejected"}  # TRL's column names
    if template == "chat":
        return [{"prompt": _messages(r["prompt"]),
                 **{names[a]: [{"role": "assistant", "content": r[a]}] for a in answers}} for r in rows]
    return [{"prompt": ALPACA_TEMPLATE.format(prompt=r["prompt"]), **{names[a]: r[a] for a in answers}}
            for r in rows]


def adapter_for(model, adapter_dir: str | Path | None = None) -> Path | None:
    """``adapter_dir`` (default :func:`default_adapter_dir`) if it holds an adapter trained on
    ``model``'s base, else None, saying why.

    Lesson 06 starts DPO from lesson 05's SFT adapter when there is one for the same base model (a
    Llama-3.2-1B adapter does not fit TinyLlama: loading it would fail on shapes) and otherwise
    trains a short SFT run itself.
    """
    import json

    path = Path(adapter_dir) if adapter_dir is not None else default_adapter_dir()
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        print(f"no SFT adapter at {path}")
        return None
    try:
        saved = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file} is not valid JSON ({err}): the adapter is damaged. Delete the folder "
                         f"{path} and run lesson 05 again to save a new one.") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{config_file} holds a {type(saved).__name__}, not an adapter's settings: delete the "
                         f"folder {path} and run lesson 05 again to save a new one.")
    saved = saved.get("base_model_name_or_path") or ""
    base = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    same = saved == base or (Path(saved).is_dir() and Path(base).is_dir()
                             and Path(saved).resolve() == Path(base).resolve())
    if not same:
        print(f"the SFT adapter at {path} was trained on {saved!r}, not on this model ({base!r})")
        return None
    return path


def default_adapter_dir(profile: str | None = None) -> Path:
    """Where lesson 05 saves its SFT LoRA adapter and lesson 06 looks for it.

    ``$FTLAB_ADAPTER_DIR/sft_<profile>``, ``FTLAB_ADAPTER_DIR`` defaulting to
    ``~/.cache/ftlab/adapters`` (next to ``ftlab.probe.feature_cache_dir()``'s features):
    outside the repository, so it survives a fresh checkout and never gets committed.
    """
    from ftlab.runtime import resolve_profile

    root = Path(os.environ.get("FTLAB_ADAPTER_DIR") or Path.home() / ".cache" / "ftlab" / "adapters")
    return root / f"sft_{resolve_profile(profile)}"
