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
# - how the labels are built, token by token, and where the prompt really ends;
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
    FTLAB_PIN = "ftlab[quant] @ git+https://github.com/ftlab-course/ftlab@v0.4.0"
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
# paragraphs, which a 1B model matches word for word ~0% of the time before and after SFT: a number
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
from ftlab.sft import common_prefix_length, format_prompt, show_labels, tokenize_example

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
# ## 2. Padding, EOS, truncation: three silent bugs
# **Padding.** A batch is right-padded to its longest example; padding must get -100 too. Mask it
# *by position* (the attention mask), not by id: Llama tokenizers have no pad token, so the full
# profile pads with EOS, and when the pad id is the token that ends an answer (TinyLlama's `</s>`),
# `labels[input_ids == pad_token_id] = -100` also erases the ending the model must learn to stop
# on (drill 05c). `SFTCollator` pads labels by position. (Llama-3's chat template ends a turn with
# `<|eot_id|>`, not its EOS `<|end_of_text|>`; `ftlab.chat.turn_end_ids` finds both. The demo
# pads with the token that ends an answer, whichever it is.)

# %%
from ftlab.chat import turn_end_ids
from ftlab.sft import SFTCollator, tokenize_dataset

short = tokenize_example("What is 7 + 5?", "7 + 5 = 12.", tokenizer)
end = turn_end_ids(tokenizer)[-1]  # the token that ends an answer: EOS (Llama-3's template: <|eot_id|>)
batch = SFTCollator(pad_token_id=end)([example, short])  # pad with it, as the ~1B Llama pads with EOS
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

train_rows = list(load_instructions("train"))
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
same = trl_by_ids == ours_by_ids
print(f"{len(trl_by_ids)} distinct examples; labels identical to TRL's: {same}")
assert same, "ftlab.sft and TRL should build the same labels"
trl_out = trainer.train()
trl_losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
ours_losses = [s.loss for s in runs[True]["history"].steps]
tail = max(1, len(trl_losses) // 5)
print(f"mean loss over the last {tail} steps: ftlab {sum(ours_losses[-tail:]) / tail:.3f}, "
      f"TRL {sum(trl_losses[-tail:]) / tail:.3f}; TRL took {trl_out.metrics['train_runtime']:.1f} s")
if profile() == "tiny":
    assert abs(sum(ours_losses[-tail:]) - sum(trl_losses[-tail:])) / tail < 0.15, "similar loss curves"

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
# tiny profile asserts that their last fifth agrees within 0.15 nats.

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
# ## Drills

# %% [markdown]
# ### Drill 05a ★★☆ · Build the labels (checked against TRL)
# Write `sft_labels(prompt_ids, full_ids)`: both are 1-D long tensors, `prompt_ids` the prompt
# tokenized alone and `full_ids` prompt + response. Return labels shaped like `full_ids`: -100 on
# the prompt, the ids on the rest. Careful where the prompt ends (section 1).

# %% tags=["answer"]
from ftlab.drills import check


def sft_labels(prompt_ids, full_ids):
    raise NotImplementedError  # your code


# %%
check("05a", sft_labels)

# %% cellView="form" tags=["solution"]
#@title Solution
# The prompt ends where the two sequences first differ: a merge across the boundary changes the
# last prompt token, so len(prompt_ids) can be one too many. Do not shift: the loss does that.
def sft_labels(prompt_ids, full_ids):
    n = 0
    while n < min(len(prompt_ids), len(full_ids)) and prompt_ids[n] == full_ids[n]:
        n += 1
    labels = full_ids.clone()
    labels[:n] = -100
    return labels


check("05a", sft_labels)

# %% [markdown]
# ### Drill 05b ★☆☆ · Tokens in the loss
# A chat example has 12 prompt tokens, then a 6-token answer, the EOS and the template's `'\n'`;
# the collator right-pads it to 32. How many of its 32 positions have a label that is not -100?

# %% tags=["answer"]
answer_05b = ...  # a number

# %%
check("05b", answer_05b)

# %% cellView="form" tags=["solution"]
#@title Solution
# The prompt (12) and the padding (32 - 20) are -100; the answer, the EOS and the newline are trained.
answer_05b = 6 + 1 + 1
check("05b", answer_05b)

# %% [markdown]
# ### Drill 05c ★★☆ · Pad token = EOS
# The ~1B Llama has no pad token, so `load_causal_lm` pads with EOS. A classmate builds labels
# with `labels[input_ids == tokenizer.pad_token_id] = -100`. What goes wrong? One letter.
#
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
# Masking by id hits the real EOS of every example too (section 2 counted 0 EOS labels left).
answer_05c = "b"
check("05c", answer_05c)

# %% [markdown]
# ## Summary
# - SFT trains the response only: the prompt's labels are -100. Trained on the prompt too, the
#   tiny model learned the prompts (its prompt loss fell far below the masked run's) and to write
#   questions when a user turn begins, and spent most of its gradient on prompt text.
# - The prompt ends where the tokenized prompt and the tokenized full text diverge, which is the
#   rule TRL uses; `ftlab.sft` builds the same labels as TRL's `SFTTrainer`, checked example by
#   example, and trains to the same loss.
# - Pad by position, keep the EOS, and never let truncation leave an example with no trained
#   token (`tokenize_dataset` drops and counts them).
# - In a short LoRA run the loss on held-out answers fell, answers learned to end by themselves, and
#   (tiny) held-out exact match rose from nothing, with general knowledge kept: the numbers are in
#   section 6 and the headline.
#
# **Try next:** set `template = "alpaca"` in the config and rerun: same labels as TRL, other
# prompt text. Raise `num_steps` and compare the unmasked run's exact match. Then drills 05a-05c,
# and lesson 06, which starts DPO from the adapter saved in section 7.
