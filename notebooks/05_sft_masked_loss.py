# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · SFT with the prompt masked, proven equal to TRL
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/05_sft_masked_loss.ipynb)
#
# **What you will learn**
# - why supervised fine-tuning (SFT) trains only the response: train with and without the prompt
#   masked, and watch the unmasked model learn to write *questions*;
# - how the labels are built, token by token, and where the prompt really ends: you write
#   `format_example` (the prompt masked) and the padding collator, checked against `ftlab.sft` and TRL;
# - three pitfalls that silently break SFT: padding, the EOS token, truncation;
# - that `ftlab.sft` builds exactly the labels TRL's `SFTTrainer` builds, and trains the same way;
# - what SFT changes, measured on held-out instructions: the loss on the wanted answers, whether
#   answers end by themselves, and whether the model forgets what it knew from pretraining.

# %% [markdown]
# ## Set-up

# %%
import importlib.metadata as md
import os
import subprocess
import sys
import tempfile

if "google.colab" in sys.modules:  # only on Colab: install ftlab and bitsandbytes, keep Colab's torch
    FTLAB_PIN = "ftlab[quant] @ git+https://github.com/ftlab-course/ftlab@v0.7.0"
    # To try another build, set FTLAB_INSTALL to any pip requirement (a wheel's path, a branch).
    FTLAB_PIN = os.environ.get("FTLAB_INSTALL", FTLAB_PIN)
    keep = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)  # never touch torch
    keep.write("".join(f"{p}=={md.version(p)}\n" for p in ("torch", "torchvision")))
    keep.close()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", keep.name, FTLAB_PIN], check=True)

from ftlab.runtime import headline, profile, report, seed_everything

env = report()

# %% [markdown]
# ## Config
# The tiny profile trains a LoRA adapter on the 0.9M-parameter micro-world LM; the full profile
# runs QLoRA (lesson 04's recipe) on the ~1B model with a thousand Alpaca-cleaned instructions
# (`name="meta-llama/Llama-3.2-1B"`, `ftlab.models.GATED_CAUSAL_LM`, trains Llama-3.2-1B instead,
# with a Hugging Face token). Every line after this cell is the same at both scales.
#
# Exact match is a fair score for the micro-world's short, exact answers; Alpaca's answers are
# paragraphs, which a 1B model almost never matches word for word, before or after SFT: a number
# that means nothing. So the full profile does not score it (`exact_match=False`) and reads what
# moves at any scale: the loss on the held-out answers, and whether answers end by themselves.

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0                # same LoRA init and data order on every run
    name: str | None = None      # full profile: the hub model (None: TinyLlama-1.1B)
    quantization: str | None = None  # "nf4" = QLoRA (lesson 04); None = LoRA on the full-precision base
    r: int = 8                   # LoRA rank on every linear layer
    alpha: float = 16            # LoRA scale alpha / r = 2
    lr: float = 2e-3             # peak learning rate (AdamW), constant
    num_steps: int = 60          # optimizer steps of each SFT run
    batch_size: int = 16         # examples per micro-batch
    grad_accum: int = 1          # effective batch = batch_size * grad_accum
    max_length: int = 64         # tokens per example (prompt + response + EOS); longer ones are cut
    template: str = "chat"       # "chat" (the tokenizer's chat template) or "alpaca"
    eval_kind: str = "fact"      # which held-out instructions are scored
    eval_size: int = 40          # held-out instructions scored before and after
    answer_tokens: int = 24      # new tokens an answer may take: one that has not ended by then rambles
    exact_match: bool = True     # also score exact match (short, exact answers only)
    n_facts: int = 64            # general-knowledge clozes checked for forgetting


cfg = Config()
if profile() == "full":  # TinyLlama-1.1B in 4 bits on a T4/L4, 1000 Alpaca-cleaned instructions
    cfg = Config(quantization="nf4", r=16, alpha=32, lr=2e-4, num_steps=120, batch_size=4, grad_accum=2,
                 max_length=512, eval_kind="alpaca", eval_size=16, answer_tokens=192, exact_match=False)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. The labels, by hand
# A causal LM is trained to predict every next token. For SFT we only want it to learn the
# **response**: the prompt is given at inference, so learning to produce it is wasted capacity
# (and, section 3 shows, a change in behaviour). Hugging Face losses skip every position whose
# label is **-100**, so the labels are the input ids with the prompt set to -100.
#
# Where does the prompt end? Tokenize the prompt alone and the full text, and take their common
# prefix. Not `len(prompt_ids)`: a BPE tokenizer can merge the last prompt characters with the
# first response characters into one token (`tests/test_sft.py` builds such a tokenizer), and
# then the full text's token at that position is a different one. TRL uses the same rule.

# %%
import torch

from ftlab.models import load_causal_lm
from ftlab.sft import common_prefix_length, format_prompt, show_labels, tokenize_dataset, tokenize_example

model, tokenizer = load_causal_lm(name=cfg.name, quantization=cfg.quantization)
prompt, response = "Where does Kafi live?", "Kafi lives in Daletol."
messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
prompt_ids = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, return_dict=True)["input_ids"]
full_ids = tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"]
n_prompt = common_prefix_length(prompt_ids, full_ids)
labels = [-100] * n_prompt + full_ids[n_prompt:]  # the whole idea, in one line

example = tokenize_example(prompt, response, tokenizer, template=cfg.template)
assert example["labels"] == labels and example["input_ids"] == full_ids
print(f"prompt as the model sees it: {format_prompt(prompt, tokenizer, cfg.template)!r}")
print(show_labels(example, tokenizer))
n_trained = sum(label != -100 for label in labels)
print(f"{n_prompt} prompt tokens masked, {n_trained} trained (the answer and the template's end of the turn)")

# %% [markdown]
# ### Drill 05a ★★☆ · Build the labels (checked against TRL)
# Write `sft_labels(prompt_ids, full_ids)`: both are 1-D long tensors, `prompt_ids` (P,) the prompt
# tokenized alone and `full_ids` (L,) prompt + response. Return labels shaped like `full_ids`: -100
# on the prompt, the ids on the rest. Careful where the prompt ends (the paragraph above).
# *Hint:* count the leading positions where the two agree; that count, no more, no less, is masked.

# %% tags=["answer"]
from ftlab.drills import check


def sft_labels(prompt_ids, full_ids):
    raise NotImplementedError  # your code here


answer_05a = sft_labels

# %%
check("05a", answer_05a)

# %% cellView="form" tags=["solution"]
#@title Solution
# The prompt ends where the two sequences first differ: a merge across the boundary changes the
# last prompt token, so len(prompt_ids) can be one too many. Do not shift: the loss does that.
def solution_sft_labels(prompt_ids, full_ids):
    n = 0
    while n < min(len(prompt_ids), len(full_ids)) and prompt_ids[n] == full_ids[n]:
        n += 1
    labels = full_ids.clone()  # (L,)
    labels[:n] = -100
    return labels


solution_05a = solution_sft_labels
check("05a", solution_05a)

# %% [markdown]
# ### Two templates: chat and Alpaca
# The chat template (the tokenizer's own) wraps each turn in role markers. The **Alpaca** template
# (Taori et al., 2023), the classic one for instruction tuning, is plain text in three sections:
# `### Instruction:` the task; `### Input:` the material it works on (a text to translate or
# summarise), optional; `### Response:` what the model learns to write, the only trained part.
# An empty input drops the whole `### Input:` block (and the preamble's mention of it) instead of
# leaving an empty section. `ftlab.sft.ALPACA_TEMPLATE` keeps only Instruction and Response:
# `ftlab.data` writes Alpaca's input into the prompt, after the instruction and a blank line.

# %%
ALPACA = {  # the two prompts of the Alpaca repository, word for word; the response follows directly
    "input": "Below is an instruction that describes a task, paired with an input that provides further context. "
             "Write a response that appropriately completes the request.\n\n"
             "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
    "no_input": "Below is an instruction that describes a task. Write a response that appropriately completes "
                "the request.\n\n### Instruction:\n{instruction}\n\n### Response:",
}


def alpaca_prompt(instruction, input=""):
    """The Alpaca prompt: with an ### Input: block only when the input is not empty."""
    return ALPACA["input" if input.strip() else "no_input"].format(instruction=instruction, input=input)


print("chat template:\n" + tokenizer.apply_chat_template(messages, tokenize=False))
print("Alpaca, with an input:\n" + alpaca_prompt("Translate to French.", "Good morning.") + " Bonjour.")
print("\nAlpaca, empty input:\n" + alpaca_prompt(prompt) + " " + response)

# %% [markdown]
# ### The lesson's `format_example`
# One training row, `{"prompt", "response"}`, becomes three lists of the same length L: the token
# ids of prompt + response (with the end of the turn), an attention mask of ones, and the labels,
# -100 on the prompt. Truncation keeps the first `max_length` tokens. Padding comes later, per
# batch (section 2), and gets -100 there. This is what `ftlab.sft.tokenize_example` does, written
# out; `template="alpaca"` is `ftlab.sft.ALPACA_TEMPLATE`.

# %%
from ftlab.sft import ALPACA_TEMPLATE


def format_example(row, tokenizer, max_length, template=cfg.template):
    """A row {"prompt", "response"} -> {"input_ids", "attention_mask", "labels"}: lists of L ints."""
    if template == "chat":
        user = [{"role": "user", "content": row["prompt"]}]
        turns = user + [{"role": "assistant", "content": row["response"]}]
        prompt_ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, return_dict=True)["input_ids"]  # (P,)
        input_ids = tokenizer.apply_chat_template(turns, return_dict=True)["input_ids"]  # (L,) ends the turn itself
    else:  # alpaca: plain text; the EOS is appended by hand, as TRL does
        text = ALPACA_TEMPLATE.format(prompt=row["prompt"])
        prompt_ids = tokenizer(text)["input_ids"]  # (P,)
        input_ids = tokenizer(text + row["response"] + tokenizer.eos_token)["input_ids"]  # (L,)
    n_prompt = common_prefix_length(prompt_ids, input_ids)  # a merge at the boundary moves it left
    labels = [-100] * n_prompt + input_ids[n_prompt:]  # (L,) the prompt masked
    input_ids, labels = input_ids[:max_length], labels[:max_length]  # truncation keeps the start
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


# %% [markdown]
# **Check.** On every training row, the lesson's `format_example` must give the token ids and the
# labels `ftlab.sft.tokenize_dataset` gives (it drops a row whose labels truncation left all
# -100: the same rule is applied here). Section 5 checks the same labels against TRL's.

# %%
from ftlab.data import load_instructions

train_rows = list(load_instructions("train"))
lesson_ds = [format_example(row, tokenizer, cfg.max_length) for row in train_rows]
lesson_ds = [ex for ex in lesson_ds if any(label != -100 for label in ex["labels"][1:])]  # ftlab's drop rule
ftlab_ds = tokenize_dataset(train_rows, tokenizer, cfg.max_length, cfg.template)
assert len(lesson_ds) == len(ftlab_ds), "the lesson and ftlab should keep the same rows"
n_differ = sum(ours[key] != theirs[key] for ours, theirs in zip(lesson_ds, ftlab_ds)
               for key in ("input_ids", "attention_mask", "labels"))
print(f"{len(lesson_ds)} rows: format_example vs ftlab.sft.tokenize_example, lists that differ: {n_differ}")
assert n_differ == 0, "format_example should equal ftlab.sft's tokenization"

# %% [markdown]
# ## 2. Padding, EOS, truncation: three silent bugs
# **Padding.** Examples differ in length; a batch is one (B, L) tensor, so each example is
# right-padded to the longest in the batch: `input_ids` with the pad id, `attention_mask` with 0
# (the model does not attend there), `labels` with -100 (the loss skips it). Write it first.

# %% [markdown]
# ### Drill 05d ★★☆ · Pad a batch (checked against TRL's collator)
# Write `pad_batch(examples, pad_token_id)`: `examples` is a list of B dicts of lists, as
# `format_example` returns them, of different lengths. Return a dict with `input_ids`,
# `attention_mask` and `labels`, each a (B, L) long tensor, L the longest example. The check
# compares it with the collator TRL's `SFTTrainer` uses, on random batches.
# *Hint:* start from `torch.full((B, L), value)` for each key and copy each example into the start
# of its row; the padding is then whatever is left, found by position.

# %% tags=["answer"]
def pad_batch(examples, pad_token_id):
    raise NotImplementedError  # your code here


answer_05d = pad_batch

# %%
check("05d", answer_05d)

# %% cellView="form" tags=["solution"]
#@title Solution
# Fill each (B, L) tensor with its padding value, then write every example into the start of its
# row. Labels are padded with -100 by position, never by id: a pad id equal to EOS keeps its EOS.
def solution_pad_batch(examples, pad_token_id):
    B, L = len(examples), max(len(ex["input_ids"]) for ex in examples)
    batch = {"input_ids": torch.full((B, L), pad_token_id), "attention_mask": torch.zeros(B, L, dtype=torch.long),
             "labels": torch.full((B, L), -100)}
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(ex["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["labels"][i, :n] = torch.tensor(ex["labels"])
    return batch


solution_05d = solution_pad_batch
check("05d", solution_05d)

# %% [markdown]
# The lesson's collator, the one `ftlab.sft.SFTCollator` is (that one also rounds L up to a
# multiple of 8 on request and says what is wrong with a bad batch).

# %%
def sft_collate(examples, pad_token_id):
    """B examples (dicts of lists, lengths L_i) -> dict of (B, L) long tensors, L = max L_i."""
    B, L = len(examples), max(len(ex["input_ids"]) for ex in examples)
    input_ids = torch.full((B, L), pad_token_id)  # (B, L) padding: the pad id
    attention_mask = torch.zeros(B, L, dtype=torch.long)  # (B, L) padding: 0, not attended
    labels = torch.full((B, L), -100)  # (B, L) padding: -100, skipped by the loss
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])  # row i: the example's n tokens first, padding after (by position)
        input_ids[i, :n] = torch.tensor(ex["input_ids"])
        attention_mask[i, :n] = 1
        labels[i, :n] = torch.tensor(ex["labels"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# %% [markdown]
# **Check.** On a batch of three training examples of different lengths, `sft_collate` equals
# `ftlab.sft.SFTCollator` and TRL's `DataCollatorForLanguageModeling` (what `SFTTrainer` pads
# with), key by key.

# %%
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ftlab.sft import SFTCollator

by_length = sorted(lesson_ds, key=lambda ex: len(ex["input_ids"]))
examples = [by_length[0], by_length[len(by_length) // 2], by_length[-1]]  # shortest, middle, longest
pad_id = tokenizer.pad_token_id
ours = sft_collate(examples, pad_id)
for name, theirs in [("ftlab.sft.SFTCollator", SFTCollator(pad_token_id=pad_id)(examples)),
                     ("TRL's collator", DataCollatorForLanguageModeling(pad_token_id=pad_id)(examples))]:
    for key in ("input_ids", "attention_mask", "labels"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    diff = max(int((ours[k] - theirs[k]).abs().max()) for k in ours)
    print(f"sft_collate vs {name}: max difference {diff}")
print(f"lengths {[len(ex['input_ids']) for ex in examples]} -> batch {tuple(ours['input_ids'].shape)}; "
      f"padding positions {int((ours['attention_mask'] == 0).sum())}, each with label -100")

# %% [markdown]
# ### Drill 05b ★☆☆ · Tokens in the loss (predict, then run)
# A chat example has 12 prompt tokens, then a 6-token answer, the EOS and the template's `'\n'`;
# the collator right-pads it to 32. How many of its 32 positions have a label that is not -100?
# Answer before you run the cell after the solution: it builds that very example.

# %% tags=["answer"]
answer_05b = ...  # a number

# %%
check("05b", answer_05b)

# %% cellView="form" tags=["solution"]
#@title Solution
# The prompt (12) and the padding (32 - 20) are -100; the answer, the EOS and the newline are trained.
solution_05b = 6 + 1 + 1
check("05b", solution_05b)

# %%
eos_id, newline_id = 2, 13  # stand-in ids: only the count matters here
ids = list(range(100, 112)) + list(range(200, 206)) + [eos_id, newline_id]  # 12 prompt + 6 answer + EOS + \n
drill_example = {"input_ids": ids, "labels": [-100] * 12 + ids[12:]}
padded = sft_collate([drill_example, {"input_ids": [7] * 32, "labels": [7] * 32}], pad_token_id=0)
n_in_loss = int((padded["labels"][0] != -100).sum())
print(f"positions with a label: {n_in_loss} of {padded['labels'].shape[1]}")
seen = sum(label != -100 for ex in lesson_ds for label in ex["labels"])
total = sum(len(ex["labels"]) for ex in lesson_ds)
print(f"over the {len(lesson_ds)} training examples the loss sees {seen:,} of {total:,} tokens ({seen / total:.0%}), "
      "before padding")

# %% [markdown]
# ### Drill 05c ★★☆ · Pad token = EOS (predict, then run)
# Llama tokenizers have no pad token, so the full profile pads with EOS. A classmate masks padding
# by id, `labels[input_ids == pad_token_id] = -100`, the pad id being the token that ends an answer
# (TinyLlama's `</s>`; Llama-3's chat template ends a turn with `<|eot_id|>`, which
# `ftlab.chat.turn_end_ids` finds too). What goes wrong? Answer, then run the demo after it.
# - (a) Nothing: padding is masked, the rest is trained as before.
# - (b) The model never learns to stop: every EOS label becomes -100.
# - (c) The loss becomes NaN on short examples.
# - (d) The prompt is trained again.

# %% tags=["answer"]
answer_05c = ...  # "a", "b", "c" or "d"

# %%
check("05c", answer_05c)

# %% cellView="form" tags=["solution"]
#@title Solution
# Masking by id hits the real EOS of every example too (the demo below counts the EOS labels left).
solution_05c = "b"
check("05c", solution_05c)

# %%
from ftlab.chat import turn_end_ids

short = tokenize_example("What is 7 + 5?", "7 + 5 = 12.", tokenizer)
end = turn_end_ids(tokenizer)[-1]  # the token that ends an answer: EOS (Llama-3's template: <|eot_id|>)
batch = sft_collate([example, short], pad_token_id=end)  # pad with it, as the ~1B Llama pads with EOS
by_id = batch["labels"].masked_fill(batch["input_ids"] == end, -100)  # the bug: mask by id
print(f"batch {tuple(batch['input_ids'].shape)}; labels {tokenizer.decode([end])!r} kept: by position "
      f"{int((batch['labels'] == end).sum())}, by id {int((by_id == end).sum())}")
assert int((batch["labels"] == end).sum()) == 2 and int((by_id == end).sum()) == 0

# %% [markdown]
# **EOS.** The EOS is a response token: it is how the model learns where an answer ends. The chat
# template writes it after the assistant turn; the alpaca template appends it (as TRL does).
# Lesson 00 showed the untrained model rambling on for want of it.
#
# **Truncation.** `max_length` keeps the first tokens. If it cuts inside the prompt, no token is
# left to train: the loss would be 0 / 0 = NaN. `tokenize_example` raises a ValueError, and
# `tokenize_dataset` drops such examples and says how many. The long prompt below repeats a
# four-word sentence `max_length / 2` times, so it fills `max_length` at any scale.

# %%
try:
    tokenize_example(prompt, response, tokenizer, max_length=8)
except ValueError as err:
    print("ValueError:", str(err)[:110], "...")
long_row = {"prompt": "Tell me everything. " * (cfg.max_length // 2), "response": "No."}  # 4 words a time: > max_length tokens
demo = tokenize_dataset([{"prompt": prompt, "response": response}, long_row], tokenizer, max_length=cfg.max_length)
print(demo)
assert demo.dropped == 1

# %% [markdown]
# ## 3. Before training
# Held-out instructions (tiny: questions about people no training question mentions). The base
# model never saw a question; it continues text. Three measures that work at any scale:
# - the **answer loss**: nats per token of the wanted answers, the prompt masked
#   (`ftlab.evals.response_loss`); lower means the model finds the right answers likelier;
# - the **chat format** (`ftlab.evals.chat_format_report`): the share of greedy answers that end
#   by themselves (an end-of-turn token) within `answer_tokens`, and the share that start by
#   repeating the question. A base model rambles on;
# - **general knowledge**: clozes the base model completes from pretraining (`ftlab.evals.known_facts`:
#   held-out micro-world facts in tiny, well-known facts such as "The capital of France is" ->
#   " Paris" in full), to watch for forgetting.

# %%
from ftlab.data import load_instructions
from ftlab.chat import generate
from ftlab.evals import chat_format_report, cloze_accuracy, exact_match, known_facts, response_loss

test_rows = list(load_instructions("test").filter(lambda row: row["kind"] == cfg.eval_kind).select(range(cfg.eval_size)))
facts = known_facts(cfg.n_facts)
shown = [r["prompt"] for r in test_rows[:3]]
before = generate(model, tokenizer, shown)  # the first 24 tokens of each answer
loss_before = response_loss(model, tokenizer, test_rows, cfg.max_length, batch_size=4, template=cfg.template)
format_before = chat_format_report(model, tokenizer, test_rows, max_new_tokens=cfg.answer_tokens)
em_before = exact_match(model, tokenizer, test_rows) if cfg.exact_match else None
facts_before = cloze_accuracy(model, tokenizer, facts["prompt"], facts["answer"])
for p, out in zip(shown, before):
    print(f"Q: {p}\n   before: {out!r}")
print(f"held-out answers: loss {loss_before:.2f} nats/token; end within {cfg.answer_tokens} tokens "
      f"{format_before['ends']:.0%}; repeat the question {format_before['repeats']:.0%}"
      + (f"; exact match {em_before:.0%}" if cfg.exact_match else ""))
print(f"general knowledge: {facts_before:.0%} of {len(facts)} clozes completed")

# %% [markdown]
# ## 4. Masked vs unmasked, same data, same steps
# Two LoRA runs from the same base, the same init and the same batches; the only difference is
# `mask_prompt`. To see what each learned, measure on held-out examples:
# - the loss on **prompt** tokens (nats per token, `ftlab.evals.prompt_loss`): only the unmasked
#   run was trained on them;
# - the loss on the **answers** and the chat format, as in section 3;
# - what each writes when we start a user turn (the template's user header and a first word) and
#   nothing else: does it write a question?

# %%
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from ftlab.evals import prompt_loss
from ftlab.sft import user_turn_start
from ftlab.train import TrainConfig, causal_lm_loss, train

collate = SFTCollator(tokenizer=tokenizer)
train_cfg = TrainConfig(lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size,
                        grad_accum=cfg.grad_accum, seed=cfg.seed)
lora_config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")


def fresh_lora_model():
    """The base model with a new LoRA adapter (QLoRA in the full profile), same init every call."""
    base, _ = load_causal_lm(name=cfg.name, quantization=cfg.quantization)
    if cfg.quantization:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True,
                                               gradient_checkpointing_kwargs={"use_reentrant": False})
    seed_everything(cfg.seed)
    return get_peft_model(base, lora_config)


starts = ["What", "Which", "Where", "Tell", "Who", "How"]
opener = [user_turn_start(tokenizer) + s for s in starts]  # a user turn, begun (the tokenizer adds BOS)


def writes_questions(model):
    outs = generate(model, tokenizer, opener, max_new_tokens=16, chat=False)
    return outs, sum(s.strip().split("\n")[0].endswith("?") for s in outs) / len(outs)


train_ds = {mask: tokenize_dataset(train_rows, tokenizer, cfg.max_length, cfg.template, mask_prompt=mask)
            for mask in (True, False)}
runs = {}
for mask in (True, False):
    m = fresh_lora_model()
    history = train(m, train_ds[mask], train_cfg, loss_fn=causal_lm_loss, collate_fn=collate, progress=False)
    outs, q_rate = writes_questions(m)
    runs[mask] = dict(model=m, history=history, outs=outs, q_rate=q_rate,
                      prompt_loss=prompt_loss(m, tokenizer, test_rows, cfg.max_length, batch_size=4, template=cfg.template),
                      answer_loss=response_loss(m, tokenizer, test_rows, cfg.max_length, batch_size=4, template=cfg.template),
                      format=chat_format_report(m, tokenizer, test_rows, max_new_tokens=cfg.answer_tokens),
                      em=exact_match(m, tokenizer, test_rows) if cfg.exact_match else None)
print(f"{'':>10} {'trained tokens':>14} {'prompt loss':>12} {'answer loss':>12} {'answers end':>12} "
      f"{'writes a question':>18} {'exact match':>12}")
for mask in (True, False):
    r = runs[mask]
    em = f"{r['em']:.0%}" if cfg.exact_match else "-"
    print(f"{'masked' if mask else 'unmasked':>10} {train_ds[mask].trained_tokens:>14,} {r['prompt_loss']:>7.2f} nats "
          f"{r['answer_loss']:>7.2f} nats {r['format']['ends']:>12.0%} {r['q_rate']:>18.0%} {em:>12}")
for s, a, b in list(zip(starts, runs[True]["outs"], runs[False]["outs"]))[:4]:
    print(f"{user_turn_start(tokenizer) + s!r}...\n   masked:   {a.splitlines()[0]!r}\n   unmasked: {b.splitlines()[0]!r}")
if profile() == "tiny":
    assert runs[False]["prompt_loss"] < runs[True]["prompt_loss"] - 3, "the unmasked run should learn the prompts"
    assert runs[False]["q_rate"] >= runs[True]["q_rate"] + 0.5, "the unmasked run should write questions"

# %% [markdown]
# The unmasked run spent most of its gradient on prompts (the trained-token column: most of its
# tokens are question text), and it learned them: its held-out prompt loss is far below the masked
# run's, and handed the start of a user turn it writes a *question* (the tiny profile asserts
# both). The masked run never learned to ask; its prompt loss stayed at the base model's level.
# The answers come out alike here because the micro-world's prompts are short and formulaic; with
# real, long prompts the unmasked gradient is mostly prompt, and the answers it should learn get
# a small share of it.

# %% [markdown]
# ## 5. The same run with TRL's `SFTTrainer`
# TRL 1.16: a dataset of `prompt`/`completion` records (conversational, for the chat template)
# trains with `completion_only_loss=True` by default. `trl_records` writes our rows that way.
# First the labels TRL builds, compared with ours, then a training run with the same LoRA,
# learning rate, batch size and steps.

# %%
from datasets import Dataset
from transformers import PrinterCallback
from trl import SFTConfig, SFTTrainer

from ftlab.plots import plot_history
from ftlab.sft import trl_records

from ftlab.runtime import capped, trainer_precision

# Precision from the card (fp16 on a T4, bf16 on an L4, fp32 on a CPU): left unset, transformers
# picks bf16 whenever torch calls it supported, which a T4 answers yes to while emulating it slowly.
# capped(n) is n (FTLAB_MAX_STEPS shortens it in a rehearsal, as it does every ftlab.train run).
trl_args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=capped(cfg.num_steps), per_device_train_batch_size=cfg.batch_size,
                     gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type="constant",
                     warmup_steps=0, max_grad_norm=1.0, max_length=cfg.max_length, completion_only_loss=True,
                     logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed, disable_tqdm=True,
                     use_cpu=not torch.cuda.is_available(), **trainer_precision())
base, _ = load_causal_lm(name=cfg.name, quantization=cfg.quantization)
seed_everything(cfg.seed)
trainer = SFTTrainer(model=base, args=trl_args, train_dataset=Dataset.from_list(trl_records(train_rows, cfg.template)),
                     processing_class=tokenizer, peft_config=lora_config)
trainer.remove_callback(PrinterCallback)  # the loss curve below shows the logs
trl_by_ids = {tuple(ids): labels for ids, labels in zip(trainer.train_dataset["input_ids"], trainer.train_dataset["labels"])}
ours_by_ids = {tuple(ex["input_ids"]): ex["labels"] for ex in train_ds[True]}
lesson_by_ids = {tuple(ex["input_ids"]): ex["labels"] for ex in lesson_ds}  # section 1's format_example
same, lesson_same = trl_by_ids == ours_by_ids, trl_by_ids == lesson_by_ids
print(f"{len(trl_by_ids)} distinct examples; labels identical to TRL's: ftlab.sft {same}, "
      f"the lesson's format_example {lesson_same}")
assert same and lesson_same, "ftlab.sft, format_example and TRL should build the same labels"
trl_out = trainer.train()
trl_losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
ours_losses = [s.loss for s in runs[True]["history"].steps]
tail = max(1, len(trl_losses) // 5)  # the last fifth of the steps
loss_tol = 0.15  # nats: how far apart the two last-fifth means may be (tiny profile)
gap = abs(sum(ours_losses[-tail:]) - sum(trl_losses[-tail:])) / tail
print(f"mean loss over the last {tail} steps: ftlab {sum(ours_losses[-tail:]) / tail:.3f}, "
      f"TRL {sum(trl_losses[-tail:]) / tail:.3f} (gap {gap:.3f}, tolerance {loss_tol} nats); "
      f"TRL took {trl_out.metrics['train_runtime']:.1f} s")
if profile() == "tiny":
    assert gap < loss_tol, "similar loss curves"

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(range(1, len(ours_losses) + 1), ours_losses, label="ftlab.train + ftlab.sft")
ax.plot(range(1, len(trl_losses) + 1), trl_losses, label="TRL SFTTrainer", alpha=0.8)
ax.set_xlabel("optimizer step")
ax.set_ylabel("loss (nats per response token)")
ax.set_title("Same labels, same recipe, different data order")
ax.legend()
plt.close(fig)
fig

# %% [markdown]
# The curves differ step by step (each trainer shuffles the data its own way) but fall alike: the
# tiny profile asserts that the means of their last fifth agree within `loss_tol` (printed above).

# %% [markdown]
# ## 6. After: held-out questions, generations, and forgetting
# The masked run is the SFT model. Did it learn to answer (a lower loss on the wanted answers,
# answers that end by themselves), and does it still know what it knew from pretraining?

# %%
model = runs[True]["model"]
after = generate(model, tokenizer, shown)
loss_after, format_after, em_after = runs[True]["answer_loss"], runs[True]["format"], runs[True]["em"]
facts_after = cloze_accuracy(model, tokenizer, facts["prompt"], facts["answer"])
for r, b, a in zip(test_rows[:3], before, after):
    print(f"Q: {r['prompt']}\n   before: {b!r}\n   after:  {a!r}\n   wanted: {r['response']!r}")
print(f"answer loss {loss_before:.2f} -> {loss_after:.2f} nats/token; answers that end within {cfg.answer_tokens} "
      f"tokens {format_before['ends']:.0%} -> {format_after['ends']:.0%} (unmasked run {runs[False]['format']['ends']:.0%}); "
      f"repeat the question {format_before['repeats']:.0%} -> {format_after['repeats']:.0%}")
print(f"general knowledge {facts_before:.0%} -> {facts_after:.0%}"
      + (f"; exact match {em_before:.0%} -> {em_after:.0%}" if cfg.exact_match else ""))
if profile() == "tiny":
    assert em_after >= em_before + 0.35, "SFT should teach the model to answer held-out questions"
    assert loss_after < loss_before - 1, "SFT should make the wanted answers likelier"
    assert format_after["ends"] >= max(0.9, format_before["ends"] + 0.3), "SFT should teach answers to end"
    assert facts_after >= facts_before - 0.1, "a short LoRA SFT should keep pretraining facts"

# %% [markdown]
# The general knowledge barely moves: a short LoRA run changes little of the base. Lesson 09
# trains longer and with full fine-tuning, and measures how much is forgotten.
#
# ## 7. Save the adapter for lesson 06
# DPO (lesson 06) starts from this SFT model. The adapter goes to a cache folder outside the
# repository; `ftlab.sft.default_adapter_dir()` says where, and lesson 06 looks there.

# %%
from ftlab.sft import default_adapter_dir

adapter_dir = default_adapter_dir()
model.save_pretrained(adapter_dir)
print(f"saved to {adapter_dir}: {sorted(f.name for f in adapter_dir.iterdir())}")
_ = headline(f"{profile()}: labels = TRL's on {len(trl_by_ids)} distinct examples; masked SFT: answer loss "
             f"{loss_before:.2f} -> {loss_after:.2f} nats/token, answers end within {cfg.answer_tokens} tokens "
             f"{format_before['ends']:.0%} -> {format_after['ends']:.0%} (unmasked {runs[False]['format']['ends']:.0%})"
             + (f", exact match {em_before:.0%} -> {em_after:.0%}" if cfg.exact_match else "")
             + f"; prompt loss unmasked {runs[False]['prompt_loss']:.2f} vs masked {runs[True]['prompt_loss']:.2f}"
             f"; general knowledge {facts_before:.0%} -> {facts_after:.0%}")

# %% [markdown]
# ## Summary
# - SFT trains the response only: the prompt's labels are -100. Trained on the prompt too, the
#   tiny model learned the prompts (its prompt loss fell far below the masked run's) and to write
#   questions when a user turn begins, and spent most of its gradient on prompt text.
# - The prompt ends where the tokenized prompt and the tokenized full text diverge, which is the
#   rule TRL uses. The lesson's `format_example` and `sft_collate`, `ftlab.sft` and TRL's
#   `SFTTrainer` build the same labels and batches, checked example by example, and train to the
#   same loss.
# - Pad by position, keep the EOS, and never let truncation leave an example with no trained
#   token (`tokenize_dataset` drops and counts them).
# - In a short LoRA run the loss on held-out answers fell, answers learned to end by themselves, and
#   (tiny) held-out exact match rose from nothing, with general knowledge kept: the numbers are in
#   section 6 and the headline.
#
# **Try next:** set `template = "alpaca"` in the config and rerun: same labels as TRL, other
# prompt text. Raise `num_steps` and compare the unmasked run's exact match. Redo drills 05a and
# 05d without the hints, then lesson 06, which starts DPO from the adapter saved in section 7.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
