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
# # 00 · Start here: set-up, profiles, and a five-minute tour
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/00_start_here.ipynb)
#
# **What you will learn**
# - how every lesson starts: one set-up cell, one environment report, one config cell;
# - the two *profiles*: `tiny` (a micro-world that runs offline on a laptop CPU in seconds) and
#   `full` (real pretrained models on a Colab T4/L4), and how to switch;
# - the three things every later lesson does: load a pretrained model, train it with
#   `ftlab.train`, and measure what changed.
#
# Run the cells top to bottom. On a CPU the whole notebook takes well under a minute.

# %% [markdown]
# ## Set-up
# On Colab the first cell installs `ftlab` from the course repository, pinned to a release,
# while keeping Colab's own torch (reinstalling torch on Colab breaks its CUDA build). Anywhere
# else it does nothing: you installed ftlab with `make` or `pip install -e .`.

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

env = report()  # versions, device, GPU, profile: paste this when you ask for help

# %% [markdown]
# ## Profiles: one notebook, two scales
# `ftlab` reads the environment variable `FTLAB_PROFILE`:
#
# | profile | models and data | runs on |
# |---|---|---|
# | `tiny` | the micro-world shipped in `data/`: a ~0.9M-parameter Llama that was pretrained on an invented world, a small CNN, a tiny CLIP, a tiny DistilBERT | any CPU, offline, seconds |
# | `full` | real hub models: a ~1.1B Llama, ResNet-50, CLIP ViT-B/32, DistilBERT, and real datasets | a Colab T4/L4, minutes |
#
# Unset, it picks `full` when a CUDA GPU is present and `tiny` otherwise. To force one, set it
# *before* the set-up cell, e.g. `%env FTLAB_PROFILE=tiny` (then restart the kernel). The loaders
# in `ftlab.models` and `ftlab.data` return the same types at both scales, so the **config cell
# is the only place a lesson differs between profiles**; every line after it is the code you
# would run on the real model.

# %%
print(f"This run uses the {profile()!r} profile.")

# %% [markdown]
# ## Config
# One cell, every knob named and explained.

# %%
from dataclasses import dataclass, field


@dataclass
class Config:
    seed: int = 0                # same data order and same init on every run
    num_steps: int = 60          # optimizer steps in the short training run
    batch_size: int = 16         # examples per micro-batch
    grad_accum: int = 1          # effective batch = batch_size * grad_accum
    lr: float = 3e-4             # peak learning rate (AdamW)
    max_length: int = 64         # tokens per example, prompt + answer
    train_last_blocks: int = 4   # unfreeze the last N transformer blocks (4 = all of the tiny LM)
    eval_kind: str = "fact"      # which held-out instructions to score: questions about people
    eval_size: int = 40          # held-out instructions scored before and after
    answer_tokens: int = 24      # most tokens a generated answer may take (does it stop by itself within them?)
    exact_match: bool = True     # also score exact match: one right sentence per question, as in the micro-world
    cloze: list = field(default_factory=list)  # plain-text prompts the model should complete


cfg = Config(cloze=["Kafi lives in", "7 + 5 =", "The opposite of hot is"])
if profile() == "full":  # a real 1.1B model: bigger steps cost more, and it knows real facts
    # Alpaca's answers are paragraphs: no 1B model writes one word for word (exact match reads 0%
    # before and after), so the full profile measures the answer loss and whether answers stop.
    cfg = Config(num_steps=30, batch_size=4, grad_accum=4, lr=1e-4, max_length=256, eval_size=32,
                 answer_tokens=128, exact_match=False, train_last_blocks=2, eval_kind="alpaca",
                 cloze=["The capital of France is", "7 + 5 =", "The opposite of hot is"])
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. Load a pretrained model
# `load_causal_lm()` returns a Hugging Face model and its tokenizer. In the tiny profile it is a
# 4-layer Llama that read 40,000 short documents about a made-up world: who lives where, who
# keeps which pet, addition sums, opposites. It never saw a question.

# %%
import torch

from ftlab.models import count_parameters, load_causal_lm

model, tokenizer = load_causal_lm()
n_params = count_parameters(model)
print(f"{type(model).__name__}: {n_params:,} parameters, "
      f"{model.config.num_hidden_layers} layers, hidden size {model.config.hidden_size}, "
      f"vocabulary {len(tokenizer):,} tokens")

# %% [markdown]
# A pretrained model completes text the way its training data continued. Greedy decoding (always
# the most likely next token) makes the output repeat exactly on every run.

# %%
from ftlab.chat import generate

for prompt, completion in zip(cfg.cloze, generate(model, tokenizer, cfg.cloze, max_new_tokens=6, chat=False)):
    print(f"{prompt!r:30} -> {completion!r}")

# %% [markdown]
# It *knows* things. Now ask it questions in the chat format. It has never seen `<|user|>` or
# `<|assistant|>`, and it was never taught that an answer ends: watch it ramble on, reciting a
# whole biography (sometimes of the wrong person). Three numbers say how well it answers:
#
# - **answer loss**: the mean loss per token (nats) of the *wanted* answer after the question,
#   teacher-forced (`response_loss`). Lower means the model finds the wanted answers more likely;
#   it moves at any scale, long before a generated answer is right word for word.
# - **stops**: the share of generated answers that end by themselves (an EOS token) within
#   `answer_tokens` tokens (`chat_format_report`). A base model does not know that answers end.
# - **exact match**: the answer is the wanted sentence and then stops. It suits the micro-world,
#   whose questions have one right sentence; Alpaca's paragraphs (the full profile) are never
#   written word for word, so the full profile leaves it out (`cfg.exact_match`).

# %%
from ftlab.data import load_instructions
from ftlab.evals import chat_format_report, exact_match, response_loss


def scores(model):
    """answer loss, share of answers that stop, and exact match (None where the config skips it)."""
    return (response_loss(model, tokenizer, test_rows, max_length=cfg.max_length),
            chat_format_report(model, tokenizer, test_rows, max_new_tokens=cfg.answer_tokens)["ends"],
            exact_match(model, tokenizer, test_rows) if cfg.exact_match else None)


def show(loss, stops, em):
    return (f"answer loss {loss:.2f} nats/token, {stops:.0%} of answers stop within {cfg.answer_tokens} tokens"
            + (f", exact match {em:.0%}" if em is not None else ""))


test_ds = load_instructions("test").filter(lambda row: row["kind"] == cfg.eval_kind)
test_rows = list(test_ds.select(range(cfg.eval_size)))
before = generate(model, tokenizer, [r["prompt"] for r in test_rows[:3]])
for r, out in zip(test_rows[:3], before):
    print(f"Q: {r['prompt']}\n   model: {out!r}\n   wanted: {r['response']!r}")
loss_before, stops_before, em_before = scores(model)
print(f"{len(test_rows)} held-out questions before training: {show(loss_before, stops_before, em_before)}")

# %% [markdown]
# ## 2. Train it with `ftlab.train`
# Every lesson trains with the same loop: a progress bar, gradient accumulation, mixed precision
# where the GPU supports it, gradient clipping, a guard that stops on a NaN loss, and a history
# you can plot. Here we fine-tune on question/answer pairs for a few dozen steps. The tiny LM
# trains all four of its blocks; on the 1.1B model the config unfreezes only the last two, which
# keeps the optimizer state small (lesson 02 does better with LoRA). On a GPU, `train` first
# prints its memory plan (the run priced at the model's real size) and stops if it cannot fit;
# on a T4 (fp16) it keeps the trainable weights in fp32 for the run ("master weights").
#
# Each example is one chat turn as the tokenizer's chat template writes it: the question, the
# answer, and the token that ends the answer (the EOS here; Llama-3's template ends a turn with
# `<|eot_id|>`). The labels are the input ids, with padding set to -100 so it is ignored by the
# loss. (Lesson 05 shows why you should also mask the question.)

# %%
from ftlab.train import TrainConfig, causal_lm_loss, train

train_ds = load_instructions("train")


def collate(rows):
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                            {"role": "assistant", "content": r["response"]}], tokenize=False)
             for r in rows]  # the whole turn as the template writes it: question, answer, end of turn
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                      max_length=cfg.max_length, add_special_tokens=False)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


for p in model.parameters():
    p.requires_grad = False
for block in model.model.layers[-cfg.train_last_blocks:]:
    for p in block.parameters():
        p.requires_grad = True
trainable = count_parameters(model, trainable_only=True)
print(f"training {trainable:,} of {n_params:,} parameters ({trainable / n_params:.1%})")

# %% [markdown]
# ### What `train` does, written out
# Before handing the model to `train`, write its loop yourself. One optimizer step reads a
# *window* of `grad_accum` micro-batches. The loss contract: `loss_fn` returns the **sum** of the
# per-token losses of a micro-batch, and the step's loss is the mean over every target token
# of the window, N of them. So each micro-batch back-propagates `loss_sum / N`, and the
# accumulated gradient is that of one big batch. Predict the step's loss first:

# %% [markdown]
# ### Drill 00c ★★☆ · One window, two micro-batches
# A window of two micro-batches: the first has 3 target tokens with mean loss 4.0 nats, the
# second 300 tokens with mean loss 1.0. What loss per token does the step report? Answer with a
# number (two decimals are enough).

# %% tags=["answer"]
from ftlab.drills import check

answer_00c = ...  # your answer, in nats per token

# %%
check("00c", answer_00c)

# %% cellView="form" tags=["solution"]
#@title Solution
# Sum the window's losses, then divide by all its tokens: (3 * 4.0 + 300 * 1.0) / 303.
solution_00c = (3 * 4.0 + 300 * 1.0) / (3 + 300)
check("00c", solution_00c)

# %%
loss_sums, counts = torch.tensor([3 * 4.0, 300 * 1.0]), torch.tensor([3, 300])  # (grad_accum,) each
print(f"window mean {(loss_sums.sum() / counts.sum()).item():.3f} nats/token; the mean of the "
      f"micro-batch means would say {(loss_sums / counts).mean().item():.3f}")

# %% [markdown]
# ### Drill 00d ★★☆ · Scale the loss for gradient accumulation
# Write `window_losses(loss_sums, counts)`: given the summed loss and the target-token count of
# each of the window's micro-batches (two tensors of shape `(grad_accum,)`), return the loss each
# micro-batch back-propagates, shape `(grad_accum,)`, so that their sum is the window's mean loss
# per token. The check compares it with `ftlab.train` on random windows.

# %% tags=["answer"]
def window_losses(loss_sums, counts):
    raise NotImplementedError  # your code here


answer_00d = window_losses

# %%
check("00d", answer_00d)

# %% cellView="form" tags=["solution"]
#@title Solution
# Divide by the tokens of the WHOLE window, not by grad_accum and not by each micro-batch's own
# count: then the sum is (sum of losses) / (all tokens), the mean of one big batch.
def solution_window_losses(loss_sums, counts):
    return loss_sums / counts.sum()


solution_00d = solution_window_losses
check("00d", solution_00d)

# %% [markdown]
# The loop, in the order `train` runs it. `N` is counted before any backward, because every
# micro-batch is divided by the window's total.

# %%
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ftlab.runtime import device


def my_train(model, train_ds, collate, *, lr, num_steps, batch_size, grad_accum, warmup_steps=0,
             max_grad_norm=1.0, dtype=torch.float32):
    """AdamW, linear warmup then a constant lr, window-normalised loss. Returns the loss of each step."""
    dev = device()
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # train's default: no decay
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # lr multiplier after s steps: 0, 1/w, ..., 1
        optimizer, lambda s: s / warmup_steps if s < warmup_steps else 1.0)
    batches = iter(DataLoader(train_ds, batch_size=batch_size, collate_fn=collate))  # in order
    losses = []
    for step in range(num_steps):
        window = [next(batches) for _ in range(grad_accum)]  # grad_accum dicts of (B, L) tensors
        N = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)  # target tokens in the window
        loss_total = 0.0
        for batch in window:
            batch = {k: v.to(dev) for k, v in batch.items()}
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):  # off in fp32
                logits = model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits  # (B, L, V)
                logits, targets = logits[:, :-1].float(), batch["labels"][:, 1:]  # t predicts t+1
                loss_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                           ignore_index=-100, reduction="sum")  # 0-d: summed over tokens
            (loss_sum / N).backward()  # drill 00d: gradients add up to the window mean's gradient
            loss_total += loss_sum.item()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)  # rescale if the global norm > max
        optimizer.step()  # AdamW update with this step's lr
        scheduler.step()  # the next step's lr
        optimizer.zero_grad(set_to_none=True)  # the next window starts from zero gradients
        losses.append(loss_total / N)  # mean loss per target token of this window
    return losses


# %% [markdown]
# **Check: the loop above is `ftlab.train`.** Both start from copies of the same weights and read
# the same examples in the same order (`shuffle=False`), with the same optimizer, warmup, and
# clipping, for three steps; the losses and the final weights must agree. The check runs on a
# tiny random `LlamaForCausalLM` (hidden size 32) in both profiles: three steps of the real
# model, twice, would cost minutes on a T4. It autocasts to bf16 where `train` would (an
# Ampere+ GPU) and runs fp32 otherwise: on a T4 `train` runs fp16 with a loss scaler
# (`GradScaler`, lesson 07), which this loop leaves out.

# %%
import copy

from transformers import LlamaConfig, LlamaForCausalLM

from ftlab.runtime import amp_dtype

seed_everything(cfg.seed)  # the same random init on every run
tiny_lm = LlamaForCausalLM(LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=cfg.max_length))
mine, ref = copy.deepcopy(tiny_lm), copy.deepcopy(tiny_lm)  # the same initial weights, twice
check_ds = train_ds.select(range(3 * 2 * 2))  # three steps of grad_accum=2 micro-batches of 2 examples
dtype = torch.bfloat16 if amp_dtype() == torch.bfloat16 else torch.float32
loop = dict(lr=1e-3, batch_size=2, grad_accum=2, warmup_steps=2, max_grad_norm=1.0)
ref_history = train(ref, check_ds, TrainConfig(num_steps=3, shuffle=False, **loop,
                                               precision="bf16" if dtype == torch.bfloat16 else "fp32"),
                    loss_fn=causal_lm_loss, collate_fn=collate, progress=False)
my_losses = my_train(mine, check_ds, collate, num_steps=len(ref_history.steps), dtype=dtype, **loop)
torch.testing.assert_close(torch.tensor(my_losses), torch.tensor(ref_history.losses))
weight_diff = 0.0
for (name, mine_p), ref_p in zip(mine.named_parameters(), ref.parameters()):
    torch.testing.assert_close(mine_p, ref_p, msg=lambda m, name=name: f"{name}: {m}")
    weight_diff = max(weight_diff, (mine_p - ref_p).abs().max().item())
loss_diff = max(abs(a - b) for a, b in zip(my_losses, ref_history.losses))  # train rounds its loss to fp32
print(f"{len(my_losses)} steps: my loop {[round(x, 4) for x in my_losses]}, "
      f"ftlab.train {[round(x, 4) for x in ref_history.losses]}")
print(f"largest difference: losses {loss_diff:.2g}, weights {weight_diff:.2g} (dtype {dtype})")

# %% [markdown]
# **The same run through Hugging Face's `Trainer`.** Most fine-tuning code you will meet (TRL's
# trainers, model cards, the scripts of other courses) runs this loop inside `transformers.Trainer`,
# set by `TrainingArguments`. Here it takes the check's steps once more from the same initial
# weights: the same lr and warmup (`constant_with_warmup`), batch size, accumulation, clipping,
# weight decay, seed, precision and optimizer (torch's AdamW), and the same order
# (`train_sampling_strategy="sequential"` is `shuffle=False`). Like `train`, the Trainer divides
# each micro-batch's summed loss by the target tokens of the whole window (`num_items_in_batch`,
# since transformers 4.46), so its logged loss of each step must be `train`'s. Its
# `compute_metrics`, run by `Trainer.evaluate`, scores the lesson's answer loss on eight held-out
# questions and must read what `response_loss` reads for the model that `train` trained.

# %%
from transformers import PrinterCallback, Trainer, TrainingArguments

from ftlab.sft import SFTCollator, tokenize_dataset


def answer_logprobs(logits, labels):  # each eval batch: (B, L, V), (B, L) -> (B, L-1), log p of each target
    return -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels[:, 1:], reduction="none")


def compute_metrics(pred):  # pred.predictions (N, L-1) from answer_logprobs, pred.label_ids (N, L)
    answer = pred.label_ids[:, 1:] != -100  # answer tokens: the prompt and padding are -100
    return {"answer_loss": float(-pred.predictions[answer].mean())}  # nats per answer token


args = TrainingArguments(
    output_dir=tempfile.mkdtemp(), save_strategy="no", report_to="none", disable_tqdm=True,  # quiet, no files
    max_steps=len(ref_history.steps), learning_rate=loop["lr"], lr_scheduler_type="constant_with_warmup",
    warmup_steps=loop["warmup_steps"], per_device_train_batch_size=loop["batch_size"],
    gradient_accumulation_steps=loop["grad_accum"], max_grad_norm=loop["max_grad_norm"], weight_decay=0.0,
    seed=cfg.seed, optim="adamw_torch", train_sampling_strategy="sequential",
    bf16=dtype == torch.bfloat16, use_cpu=device().type == "cpu",  # the check's precision and device
    logging_steps=1, remove_unused_columns=False)  # log every step's loss; collate reads prompt/response
trainer = Trainer(model=copy.deepcopy(tiny_lm), args=args, train_dataset=check_ds, data_collator=collate,
                  eval_dataset=tokenize_dataset(test_rows[:8], tokenizer, max_length=cfg.max_length, verbose=False),
                  compute_metrics=compute_metrics, preprocess_logits_for_metrics=answer_logprobs)
trainer.remove_callback(PrinterCallback)  # it would print every log line
trainer.train()
hf_losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]  # one per step
trainer.data_collator = SFTCollator(tokenizer=tokenizer)  # evaluation pads tokenized rows, prompt masked
hf_answer_loss = trainer.evaluate()["eval_answer_loss"]
with torch.autocast(device().type, dtype=dtype, enabled=dtype != torch.float32):  # as the Trainer evaluates
    ref_answer_loss = response_loss(ref, tokenizer, test_rows[:8], max_length=cfg.max_length)
torch.testing.assert_close(torch.tensor(hf_losses), torch.tensor(ref_history.losses))
torch.testing.assert_close(torch.tensor(hf_answer_loss), torch.tensor(ref_answer_loss))
trainer_diff = max(abs(a - b) for a, b in zip(hf_losses, ref_history.losses))
print(f"Trainer {[round(x, 4) for x in hf_losses]}, ftlab.train {[round(x, 4) for x in ref_history.losses]}: "
      f"largest difference {trainer_diff:.2g}")
print(f"answer loss: compute_metrics {hf_answer_loss:.4f}, response_loss {ref_answer_loss:.4f} nats/token "
      f"(difference {abs(hf_answer_loss - ref_answer_loss):.2g})")

# %% [markdown]
# The same loop, with a progress bar, mixed precision, the NaN guard and a history, on the
# lesson's model:

# %%
history = train(model, train_ds, TrainConfig(lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size,
                                             grad_accum=cfg.grad_accum, seed=cfg.seed),
                loss_fn=causal_lm_loss, collate_fn=collate)

# %%
from ftlab.plots import plot_history

fig = plot_history(history)  # loss per optimizer step
fig

# %% [markdown]
# ## 3. Measure what changed
# The same held-out questions and the same three numbers after training. In the tiny profile the
# questions ask about people that no training question mentions: the model learned *how to
# answer*, and pulls the facts from its pretraining. In the full profile watch the answer loss
# fall and the share of answers that stop rise: thirty steps teach a 1.1B model the format.

# %%
after = generate(model, tokenizer, [r["prompt"] for r in test_rows[:3]])
for r, out in zip(test_rows[:3], after):
    print(f"Q: {r['prompt']}\n   model: {out!r}\n   wanted: {r['response']!r}")
loss_after, stops_after, em_after = scores(model)
first, last, steps = history.steps[0].loss, history.final_loss, len(history.steps)
print(f"training loss {first:.2f} -> {last:.2f} in {steps} steps, {history.seconds:.1f} s")
print(f"before: {show(loss_before, stops_before, em_before)}")
print(f"after:  {show(loss_after, stops_after, em_after)}")
if profile() == "tiny":  # the tour's claims, checked every time the notebook runs
    assert last < first / 2, "training should at least halve the loss"
    assert loss_after < loss_before / 2, "the wanted answers should become far more likely"
    assert stops_after >= stops_before + 0.3, "a short fine-tune should teach the model that answers end"
    assert em_after >= em_before + 0.25, "a short fine-tune should teach the model to answer"
_ = headline(f"{profile()}: {n_params / 1e6:.2f}M-param LM, held-out answer loss {loss_before:.2f} -> "
             f"{loss_after:.2f} nats/token, answers that stop {stops_before:.0%} -> {stops_after:.0%}"
             + (f", exact match {em_before:.0%} -> {em_after:.0%}" if cfg.exact_match else "")
             + f" after {steps} steps ({history.seconds:.0f} s); the loop by hand = ftlab.train = HF Trainer "
             f"(loss gaps {loss_diff:.0e}, {trainer_diff:.0e})")

# %% [markdown]
# ## Drills
# Every lesson ends with drills. Each one is four cells: the question, a cell where you write
# your answer in place of the `...`, a check cell that tells you at once whether you are right
# (a wrong answer gets a hint, not the solution), and a **Solution** cell. In Colab the solution
# is collapsed: try first, then double-click it to open. Here it already runs after the check,
# so the notebook passes end to end.
#
# Stars mark difficulty: ★☆☆ quick, ★★☆ needs a calculation or a function, ★★★ competition level.
# To grade all your answers at once, see "Grading your own drills" in the README.

# %% [markdown]
# ### Drill 00a ★☆☆ · Effective batch size
# The full profile above trains with `batch_size=4, grad_accum=4`. Suppose instead
# `batch_size=16, grad_accum=4` on one GPU. How many examples does each optimizer step average
# its gradient over? Answer with a number.

# %% tags=["answer"]
from ftlab.drills import check

answer_00a = ...  # your answer

# %%
check("00a", answer_00a)

# %% cellView="form" tags=["solution"]
#@title Solution
# train() sums the loss over grad_accum micro-batches before one optimizer step, so a step sees
# batch_size * grad_accum examples. That is the batch size the learning rate should be tuned for.
solution_00a = 16 * 4
check("00a", solution_00a)

# %% [markdown]
# ### Drill 00b ★☆☆ · Where did the answers come from?
# In the tiny profile, exact match on questions about people that **no training question
# mentions** rose from 0% within sixty steps. Where did the model get those people's facts?
# Answer with one letter, e.g. `"a"`.
#
# - (a) From the fine-tuning data: the model memorised those answers.
# - (b) From pretraining: fine-tuning taught the format; the facts were already in the weights.
# - (c) From the tokenizer's vocabulary.
# - (d) The model saw the test questions during training.

# %% tags=["answer"]
answer_00b = ...  # "a", "b", "c" or "d"

# %%
check("00b", answer_00b)

# %% cellView="form" tags=["solution"]
#@title Solution
# The fine-tuning questions are about other people, and the splits never share a question, so
# the facts must have been stored during pretraining (the cloze prompts above show it). Sixty
# steps taught the chat format and when to stop, which is why exact match jumps so fast.
solution_00b = "b"
check("00b", solution_00b)

# %% [markdown]
# ## Where to go next
#
# | lesson | you will |
# |---|---|
# | 01 linear probe | freeze a pretrained ResNet / CLIP and train only a new head |
# | 02 LoRA from scratch | write LoRA by hand and prove it equals peft |
# | 03 PEFT methods | compare full FT, probe, LoRA, adapters, prompt tuning, IA3 |
# | 04 QLoRA | write NF4 by hand, then fine-tune a ~1B model on a T4 |
# | 05 SFT | mask the prompt out of the loss and see why it matters |
# | 06 DPO | teach preferences without a reward model |
# | 07 memory budget | predict what fits on a T4 / L4 before you run out of memory |
# | 08 drills | the competition-style exercises in one place |
# | 09 forgetting | measure catastrophic forgetting and prevent it |
# | 10 scaling out | the same training on several GPUs |

# %% [markdown]
# ## Summary
# - Every lesson opens with the same set-up cell and environment report; switch scale with
#   `FTLAB_PROFILE` (`tiny` offline, `full` on a GPU) and nothing else changes.
# - The tiny LM is genuinely pretrained: it completes facts of its world, but cannot answer
#   questions until it is fine-tuned.
# - A few dozen steps of `ftlab.train` on question/answer pairs make the wanted answers far more
#   likely (the answer loss) and teach the model to stop (tiny: exact match on questions about
#   *unseen* people jumps too): fine-tuning taught a format, and the knowledge came from
#   pretraining.
#
# **Try next:** set `train_last_blocks = 1` or `lr = 2e-3` and watch the three numbers: too little
# capacity teaches the format slowly, too high a learning rate wrecks what pretraining stored
# (lesson 09 measures that). Then open lesson 01.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
