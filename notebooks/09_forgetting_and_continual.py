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
# # 09 · Forgetting, and one adapter per task
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/09_forgetting_and_continual.ipynb)
#
# **What you will learn**
# - how to *measure* catastrophic forgetting: the target skill, held-out general knowledge and a
#   second skill, before and after a fine-tune;
# - that full fine-tuning on a narrow task forgets far more than LoRA, and that a 5x lower learning
#   rate, replay of general text, or early stopping on a general eval reduce it (the seed's drill D5,
#   as an experiment);
# - continual learning with one adapter per task on a frozen base: swap adapters at inference, and
#   prove the base never changed.

# %% [markdown]
# ## Set-up

# %%
import importlib.metadata as md
import os
import subprocess
import sys
import tempfile

if "google.colab" in sys.modules:  # only on Colab: install ftlab and bitsandbytes, keep Colab's torch
    FTLAB_PIN = "ftlab[quant] @ git+https://github.com/ftlab-course/ftlab@v0.3.0"
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
# The tiny profile fine-tunes the 0.9M-parameter micro-world LM; every run is 60 steps. The
# narrow task is answering questions about the *training* people's facts (`kind == "fact"`).

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0                # same init and data order on every run
    target_kind: str = "fact"    # the narrow task: instruction rows of this kind
    lr: float = 2e-3             # full fine-tuning's learning rate (AdamW, constant): high enough to forget
    low_lr_factor: float = 0.2   # the "lower lr" run uses lr * this (5x lower)
    num_steps: int = 60          # optimizer steps of every run
    batch_size: int = 16         # examples per batch
    max_length: int = 64         # tokens per SFT example
    r: int = 8                   # LoRA rank on every linear layer
    alpha: float = 16            # LoRA scale alpha / r = 2
    replay_share: float = 0.5    # share of every batch that is pretraining text in the replay run
    replay_docs: int = 400       # pretraining documents available to replay
    replay_length: int = 40      # tokens kept of each replayed document
    eval_every: int = 5          # early stopping: general eval every this many steps
    stop_floor: float = 0.8      # early stopping: stop once general validation recall falls below this
    eval_size: int = 40          # held-out target questions scored
    adapter_steps: int = 30      # steps of each task adapter (section 4)
    adapter_eval_size: int = 18  # questions per task in the adapter-swap table (answer loss)


cfg = Config()
if profile() == "full":  # ~1B model, half precision: full FT of 1B weights needs a >= 24 GB GPU
    cfg = Config(lr=2e-5, num_steps=200, batch_size=8, max_length=256, adapter_steps=100)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. Three numbers, before training
# - **target**: exact match on held-out questions of the narrow task (people no training row asks about);
# - **general**: cloze recall of the *held-out* people's facts, read only in pretraining
#   (`load_facts("heldout")`): "Kevo lives in" -> " Nedunar";
# - **skill**: a second pretraining skill the fine-tune never trains: opposites, as a cloze
#   ("The opposite of hot is" -> " cold"), in both directions.
#
# The general eval used for *early stopping* is a different set: the training people's facts
# (`load_facts("train")`). The number we report never picks the weights (drill 09b).

# %%
import torch

from ftlab.data import load_facts, load_instructions
from ftlab.data.world import OPPOSITES, make_world, pretraining_corpus
from ftlab.evals import cloze_accuracy
from ftlab.forgetting import forgetting_report
from ftlab.models import load_causal_lm

model, tokenizer = load_causal_lm()
train_rows = [r for r in load_instructions("train") if r["kind"] == cfg.target_kind]
target_rows = [r for r in load_instructions("test") if r["kind"] == cfg.target_kind][:cfg.eval_size]
general = load_facts("heldout")   # reported
general_val = load_facts("train")  # early stopping only
skill = {"prompt": [f"The opposite of {x} is" for x, y in OPPOSITES] + [f"The opposite of {y} is" for x, y in OPPOSITES],
         "answer": [f" {y}" for x, y in OPPOSITES] + [f" {x}" for x, y in OPPOSITES]}


def report_of(m):
    return forgetting_report(m, tokenizer, target_rows, general, skill)


before = report_of(model)
print(f"{len(train_rows)} training questions; base model: " + ", ".join(f"{k} {v:.0%}" for k, v in before.items()))

# %% [markdown]
# ## 2. Five ways to fine-tune on the narrow task
# Same data, same steps, same seed. Only the recipe changes:
# 1. **full FT** at `lr`;
# 2. **full FT, lr / 5**;
# 3. **LoRA** (r = 8, every linear layer) at the same `lr`: the base is frozen;
# 4. **full FT + replay**: half of every batch is pretraining text (`replay_mix` builds the batches,
#    `shuffle=False` keeps them);
# 5. **full FT + early stopping**: an `eval_fn` scores general recall on the validation facts every 5
#    steps and keeps the weights of the last eval above the floor (`EarlyStopping`).

# %%
from peft import LoraConfig, get_peft_model

from ftlab.forgetting import EarlyStopping, lm_examples, replay_mix
from ftlab.sft import SFTCollator, tokenize_dataset
from ftlab.train import TrainConfig, causal_lm_loss, train

train_ds = tokenize_dataset(train_rows, tokenizer, cfg.max_length)
replay_ds = lm_examples(pretraining_corpus(make_world(), cfg.replay_docs, seed=1), tokenizer, cfg.replay_length)
collate = SFTCollator(tokenizer=tokenizer)
train_cfg = TrainConfig(lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size, seed=cfg.seed)
fit = dict(loss_fn=causal_lm_loss, collate_fn=collate, progress=False)
lora_config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
results, seconds = {"base": before}, {}

m, _ = load_causal_lm()
seconds["full FT"] = train(m, train_ds, train_cfg, **fit).seconds
results["full FT"] = report_of(m)

m, _ = load_causal_lm()
seconds["full FT, lr/5"] = train(m, train_ds, train_cfg, lr=cfg.lr * cfg.low_lr_factor, **fit).seconds
results["full FT, lr/5"] = report_of(m)

m, _ = load_causal_lm()
seed_everything(cfg.seed)  # same LoRA init every run
m = get_peft_model(m, lora_config)
seconds["LoRA"] = train(m, train_ds, train_cfg, **fit).seconds
results["LoRA"] = report_of(m)

m, _ = load_causal_lm()
mixed = replay_mix(train_ds, replay_ds, cfg.replay_share, cfg.batch_size, cfg.num_steps, seed=cfg.seed)
seconds["full FT + replay"] = train(m, mixed, train_cfg, shuffle=False, **fit).seconds
results["full FT + replay"] = report_of(m)

m, _ = load_causal_lm()
stopper = EarlyStopping(lambda mm: cloze_accuracy(mm, tokenizer, general_val["prompt"], general_val["answer"]),
                        floor=cfg.stop_floor, eval_every=cfg.eval_every)
stopper.snapshot(m)  # step 0
seconds["full FT + early stop"] = train(m, train_ds, train_cfg, eval_every=cfg.eval_every, eval_fn=stopper, **fit).seconds
stopped_at = stopper.restore(m)
results["full FT + early stop"] = report_of(m)
print("early stopping: validation recall at steps", dict(zip(stopper.steps, [f"{s:.0%}" for s in stopper.scores])),
      f"-> weights of step {stopped_at}")

# %% [markdown]
# ## 3. One table, one plot

# %%
forgot = {name: before["general"] - r["general"] for name, r in results.items()}
print(f"{'':22} {'target':>7} {'general':>8} {'skill':>6} {'forgot (general)':>17} {'train s':>8}")
for name, r in results.items():
    print(f"{name:22} {r['target']:>7.0%} {r['general']:>8.0%} {r['skill']:>6.0%} {forgot[name]:>17.0%} "
          f"{seconds.get(name, 0):>8.1f}")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5.5, 4))
for name, r in results.items():
    ax.scatter(r["target"], r["general"], s=60)
    ax.annotate(name, (r["target"], r["general"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
ax.set_xlabel("target skill: held-out exact match")
ax.set_ylabel("general knowledge: held-out facts recalled")
ax.set_xlim(-0.05, 1.0)
ax.set_ylim(0, 1.08)
ax.set_title("Narrow fine-tune: what it learns vs what it keeps")
plt.close(fig)
fig

# %%
if profile() == "tiny":
    full, lora = results["full FT"], results["LoRA"]
    assert forgot["full FT"] >= forgot["LoRA"] + 0.3, "full FT should forget markedly more than LoRA"
    assert full["skill"] <= lora["skill"] - 0.3, "full FT should lose the second skill more than LoRA"
    assert forgot["full FT, lr/5"] <= forgot["full FT"] - 0.4, "a 5x lower lr should forget much less"
    assert forgot["full FT + replay"] <= forgot["full FT"] - 0.3, "replay should reduce forgetting"
    assert forgot["full FT + early stop"] <= forgot["full FT"] - 0.3, "early stopping should reduce forgetting"
    assert lora["target"] >= 0.3, "LoRA should learn the task"

# %% [markdown]
# Measured (tiny, seed 0; seeds 1 and 2 agree within a few points for the first four runs): held-out
# facts recalled 100% before; full FT 38% (and opposites 0%: the second skill is gone too, while the
# target stayed at 0%: at this lr it memorised the training people instead of learning to answer);
# lr / 5 94%; LoRA 78% (with 42% target); replay 80%; early stopping 75% (it kept step 5). Over seeds
# 0/1/2 full FT kept 28-38% of the facts and LoRA 78-94%, replay 80-86%, lr / 5 94-97%, so the
# assertions above leave 0.3-0.4 of margin. LoRA learns less *and* forgets less; a lower lr here does
# both better still, because 60 steps at 2e-3 is simply too hot for full fine-tuning.

# %% [markdown]
# ## 4. Continual learning: one adapter per task
# Instead of one model fine-tuned task after task (each run overwriting the last), keep the base
# frozen and train one named LoRA adapter per task. At inference `set_adapter` picks the task.
# The table scores every task with every adapter by the loss on the task's answers (on its
# training questions: did the adapter learn *its* task?), and the base weights are hashed before
# and after.

# %%
from ftlab.forgetting import base_weights_hash
from ftlab.train import count_causal_lm_items

tasks = ("fact", "addition", "opposite")
all_train = list(load_instructions("train"))
task_ds = {t: tokenize_dataset([r for r in all_train if r["kind"] == t], tokenizer, cfg.max_length, verbose=False)
           for t in tasks}


@torch.no_grad()
def answer_loss(m, t):
    """Mean loss per answer token (nats) on the task's first questions: lower = the task is known better."""
    batch = collate(task_ds[t][:cfg.adapter_eval_size])
    m.eval()
    return float(causal_lm_loss(m, batch)) / count_causal_lm_items(batch)


base, _ = load_causal_lm()
hash_before = base_weights_hash(base)
seed_everything(cfg.seed)
multi = get_peft_model(base, lora_config, adapter_name=tasks[0])
for t in tasks[1:]:
    multi.add_adapter(t, lora_config)
for t in tasks:
    multi.set_adapter(t)  # only this adapter is active and trainable
    train(multi, task_ds[t], train_cfg, num_steps=cfg.adapter_steps, **fit)
swap = {}
for adapter in tasks:
    multi.set_adapter(adapter)
    swap[adapter] = {t: answer_loss(multi, t) for t in tasks}
with multi.disable_adapter():
    swap["(none)"] = {t: answer_loss(multi, t) for t in tasks}
hash_after = base_weights_hash(multi)
print("answer loss (nats per token) of each task (columns) with each adapter (rows)")
print(f"{'adapter':>9} " + " ".join(f"{t:>9}" for t in tasks))
for adapter, row in swap.items():
    print(f"{adapter:>9} " + " ".join(f"{row[t]:>9.2f}" for t in tasks))
print(f"base weights sha256 before {hash_before[:16]}..., after {hash_after[:16]}...: "
      f"{'identical' if hash_before == hash_after else 'CHANGED'}")
assert hash_before == hash_after, "training adapters must not touch the base"
if profile() == "tiny":
    for t in tasks:
        others = [swap[a][t] for a in swap if a != t]
        assert swap[t][t] < min(others), f"the {t} adapter should know its task best"
        assert swap[t][t] < swap["(none)"][t] - 1.0, f"the {t} adapter should learn its task"

# %%
_ = headline(f"{profile()}: general recall after a narrow fine-tune: full FT {results['full FT']['general']:.0%}, "
             f"lr/5 {results['full FT, lr/5']['general']:.0%}, LoRA {results['LoRA']['general']:.0%}, "
             f"replay {results['full FT + replay']['general']:.0%}, early stop "
             f"{results['full FT + early stop']['general']:.0%} (base {before['general']:.0%}); "
             f"adapters swap, base hash identical")

# %% [markdown]
# ## Drills

# %% [markdown]
# ### Drill 09a ★★☆ · Share of the forgetting removed
# General recall was 100% before; 38% after full fine-tuning; 80% after full fine-tuning with replay.
# What share of the forgetting did replay remove? A fraction (0.5 = half).

# %% tags=["answer"]
from ftlab.drills import check

answer_09a = ...  # a fraction

# %%
check("09a", answer_09a)

# %% cellView="form" tags=["solution"]
#@title Solution
# Forgetting = before - after: 62 points for full FT, 20 with replay.
answer_09a = ((1.00 - 0.38) - (1.00 - 0.80)) / (1.00 - 0.38)
check("09a", answer_09a)

# %% [markdown]
# ### Drill 09b ★★☆ · Early-stop on which eval?
# You early-stop a narrow fine-tune to limit forgetting. Which eval should decide when to stop?
# One letter.
#
# - (a) The target task's validation loss.
# - (b) The held-out general-knowledge set whose score goes in the results table.
# - (c) A separate general validation set (general knowledge, not the reported set).
# - (d) The training loss.

# %% tags=["answer"]
answer_09b = ...  # "a", "b", "c" or "d"

# %%
check("09b", answer_09b)

# %% cellView="form" tags=["solution"]
#@title Solution
# Section 2 stops on the training people's facts and reports the held-out people's.
answer_09b = "c"
check("09b", answer_09b)

# %% [markdown]
# ### Drill 09c ★☆☆ · Storage for three tasks
# Each task's LoRA adapter is 1% of the base's size. How much storage do three tasks need on one
# base, in units of the base's size?

# %% tags=["answer"]
answer_09c = ...  # a number

# %%
check("09c", answer_09c)

# %% cellView="form" tags=["solution"]
#@title Solution
# The frozen base is stored once and shared; each task adds its adapter.
answer_09c = 1 + 3 * 0.01
check("09c", answer_09c)

# %% [markdown]
# ## Summary
# - Measure forgetting with three numbers before and after: the target, held-out general knowledge,
#   and a second skill nobody trained.
# - Full fine-tuning at a high lr on 256 narrow questions cut held-out fact recall from 100% to 38%
#   and opposites to 0%. LoRA kept 78%, a 5x lower lr 94%, half a batch of replayed pretraining
#   text 80%, early stopping on a general validation eval 75%.
# - One adapter per task on a frozen base is continual learning without forgetting: swap with
#   `set_adapter`, and the base's hash proves nothing else moved.
#
# **Try next:** raise `num_steps` or `lr` and watch the LoRA point move down too; try
# `replay_share = 0.25`; then drills 09a-09c and the seed's drill D5 in lesson 08.
