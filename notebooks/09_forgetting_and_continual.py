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
    FTLAB_PIN = "ftlab[quant] @ git+https://github.com/ftlab-course/ftlab@v0.5.0"
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
# narrow task is answering questions about the *training* people's facts (`target_kind="fact"`).
# The full profile fine-tunes TinyLlama-1.1B for 150 steps on a narrow task generated for it:
# writing dates in ISO format (`"date"`: "Write 7 March 1994 as an ISO date (YYYY-MM-DD)." ->
# "1994-03-07"), a format a base model does not produce by itself and a short fine-tune teaches.

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0                # same init and data order on every run
    target_kind: str = "fact"    # the narrow task (ftlab.forgetting.TASKS lists each profile's)
    lr: float = 2e-3             # full fine-tuning's learning rate (constant): high enough to forget
    low_lr_factor: float = 0.2   # the "lower lr" run uses lr * this (5x lower)
    num_steps: int = 60          # optimizer steps of every run
    batch_size: int = 16         # examples per batch
    max_length: int = 64         # tokens per SFT example
    optimizer: str = "adamw"     # "adamw", or "adamw8bit" (bitsandbytes: 2 bytes of state per weight, not 8)
    r: int = 8                   # LoRA rank on every linear layer
    alpha: float = 16            # LoRA scale alpha / r = 2
    replay_share: float = 0.5    # share of every batch that is general text in the replay run
    replay_docs: int = 400       # general texts available to replay
    replay_length: int = 40      # tokens kept of each replayed text
    text_docs: int = 32          # held-out general texts whose loss is reported
    eval_every: int = 5          # early stopping: general eval every this many steps
    stop_keep: float = 0.8       # early stopping: stop once validation recall < this share of the base's
    eval_size: int = 40          # held-out target questions scored
    adapter_steps: int = 30      # steps of each task adapter (section 4)
    adapter_eval_size: int = 18  # questions per task in the adapter-swap table (answer loss)


cfg = Config()
if profile() == "full":  # TinyLlama-1.1B, full FT in fp32 weights + 8-bit AdamW: ~11 GiB, fits a T4 (see section 2)
    cfg = Config(target_kind="date", lr=1e-4, num_steps=150, batch_size=8, optimizer="adamw8bit",
                 replay_length=64, text_docs=64, eval_every=25, eval_size=32, adapter_steps=100, adapter_eval_size=8)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. Four numbers, before training
# - **target**: exact match on held-out questions of the narrow task (tiny: about people no
#   training row asks about; full: dates no training row uses);
# - **general**: cloze recall of knowledge the model read in pretraining and the fine-tune never
#   shows (tiny: the held-out people's facts, "Kevo lives in" -> " Nedunar"; full: well-known
#   facts a 1B base model completes, "The capital of France is" -> " Paris");
# - **skill**: a second pretraining skill the fine-tune never trains: opposites, as a cloze
#   ("The opposite of hot is" -> " cold"), in both directions;
# - **text**: the loss per token (nats) on held-out general text (tiny: pretraining documents;
#   full: Alpaca answers as plain text). It rises as soon as the model drifts, before any cloze flips.
#
# The general eval used for *early stopping* is a different set (tiny: the training people's
# facts; full: other well-known facts). The number we report never picks the weights (drill 09b).

# %%
import torch

from ftlab.evals import cloze_accuracy
from ftlab.forgetting import forgetting_report, forgetting_sets
from ftlab.models import load_causal_lm

sets = forgetting_sets(cfg.target_kind, eval_size=cfg.eval_size, replay_docs=cfg.replay_docs, text_docs=cfg.text_docs)
print(sets.describe())
m, tokenizer = load_causal_lm()


def report_of(model):
    return forgetting_report(model, tokenizer, sets.target, sets.general, sets.skill, text=sets.text)


def show(report):
    return ", ".join(f"{k} {v:.2f} nats/token" if k == "text" else f"{k} {v:.0%}" for k, v in report.items())


before = report_of(m)
val_before = cloze_accuracy(m, tokenizer, sets.general_val["prompt"], sets.general_val["answer"])
print(f"base model: {show(before)}; early-stopping set {val_before:.0%}")

# %% [markdown]
# ## 2. Five ways to fine-tune on the narrow task
# Same data, same steps, same seed. Only the recipe changes:
# 1. **full FT** at `lr`;
# 2. **full FT, lr / 5**;
# 3. **LoRA** (r = 8, every linear layer) at the same `lr`: the base is frozen;
# 4. **full FT + replay**: half of every batch is general text (`replay_mix` builds the batches,
#    `shuffle=False` keeps them);
# 5. **full FT + early stopping**: an `eval_fn` scores general recall on the validation facts every
#    `eval_every` steps and keeps the weights of the last eval at or above `stop_keep` times the
#    base's score (`EarlyStopping`; its copy of the weights lives in CPU memory: 4.4 GB of host
#    RAM at full scale, which a T4 runtime's 12.7 GB holds and its GPU would not).
#
# Every run starts from a fresh copy of the pretrained model. Full fine-tuning loads it in fp32
# (`dtype=torch.float32`): the optimizer updates fp32 weights while autocast runs the matmuls in
# fp16 (T4) or bf16 (L4). Weights stored in bf16 would round small updates away: near 0.02, bf16's
# numbers are 0.00012 apart, so the lr / 5 run's AdamW steps (about 2e-5) would round back to the
# same weight. For 1.1B weights that is
# 4.4 GB of weights and 4.4 GB of gradients, so the optimizer state has to be small: 8-bit AdamW
# keeps 2.2 GB where AdamW keeps 8.8 GB, and the memory plan `train` prints before step 1 says
# the run fits a T4. One model at a time: `fresh_model` frees the previous run's copy first.

# %%
import gc

from peft import LoraConfig, get_peft_model

from ftlab.forgetting import EarlyStopping, lm_examples, replay_mix
from ftlab.measure import make_optimizer
from ftlab.sft import SFTCollator, tokenize_dataset
from ftlab.train import TrainConfig, causal_lm_loss, train


def fresh_model(dtype=torch.float32):
    """The pretrained model, loaded again; the previous run's copy (the global ``m``) is freed first."""
    global m
    m = None
    if torch.cuda.is_available():  # the GPU memory comes back once the old copy's objects are collected
        gc.collect()
        torch.cuda.empty_cache()
    return load_causal_lm(dtype=dtype)[0]


train_ds = tokenize_dataset(sets.train, tokenizer, cfg.max_length)
replay_ds = lm_examples(sets.replay, tokenizer, cfg.replay_length)
collate = SFTCollator(tokenizer=tokenizer)
train_cfg = TrainConfig(lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size, seed=cfg.seed)
optimizer = None if cfg.optimizer == "adamw" else (lambda params: make_optimizer(cfg.optimizer, params))  # None: train's AdamW
fit = dict(loss_fn=causal_lm_loss, collate_fn=collate, optimizer=optimizer, progress=False)
lora_config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
results, seconds = {"base": before}, {}

m = fresh_model()
seconds["full FT"] = train(m, train_ds, train_cfg, **fit).seconds
results["full FT"] = report_of(m)

m = fresh_model()
seconds["full FT, lr/5"] = train(m, train_ds, train_cfg, lr=cfg.lr * cfg.low_lr_factor, **fit).seconds
results["full FT, lr/5"] = report_of(m)

m = fresh_model(dtype=None)  # LoRA: the frozen base stays in the loader's precision (half on a GPU)
seed_everything(cfg.seed)  # same LoRA init every run
m = get_peft_model(m, lora_config)
seconds["LoRA"] = train(m, train_ds, train_cfg, **fit).seconds
results["LoRA"] = report_of(m)

m = fresh_model()
mixed = replay_mix(train_ds, replay_ds, cfg.replay_share, cfg.batch_size, cfg.num_steps, seed=cfg.seed)
seconds["full FT + replay"] = train(m, mixed, train_cfg, shuffle=False, **fit).seconds
results["full FT + replay"] = report_of(m)

m = fresh_model()
stopper = EarlyStopping(lambda mm: cloze_accuracy(mm, tokenizer, sets.general_val["prompt"], sets.general_val["answer"]),
                        floor=cfg.stop_keep * val_before, eval_every=cfg.eval_every, num_steps=cfg.num_steps)
stopper.snapshot(m)  # step 0
seconds["full FT + early stop"] = train(m, train_ds, train_cfg, eval_every=cfg.eval_every, eval_fn=stopper, **fit).seconds
stopped_at = stopper.restore(m)
results["full FT + early stop"] = report_of(m)
print("early stopping: validation recall at steps", dict(zip(stopper.steps, [f"{s:.0%}" for s in stopper.scores])),
      f"(floor {stopper.floor:.0%}) -> weights of step {stopped_at}")

# %% [markdown]
# ## 3. One table, one plot
# "forgot" is general recall lost (base minus after, in points); "text +" is how much the loss on
# general text rose (nats per token). Then, for each cure, the share of full FT's forgetting it
# removed: (forgot by full FT - forgot with the cure) / forgot by full FT (drill 09a).

# %%
forgot = {name: before["general"] - r["general"] for name, r in results.items()}
drift = {name: r["text"] - before["text"] for name, r in results.items()}
print(f"{'':22} {'target':>7} {'general':>8} {'skill':>6} {'text':>6} {'forgot':>7} {'text +':>7} {'train s':>8}")
for name, r in results.items():
    print(f"{name:22} {r['target']:>7.0%} {r['general']:>8.0%} {r['skill']:>6.0%} {r['text']:>6.2f} "
          f"{forgot[name]:>7.0%} {drift[name]:>+7.2f} {seconds.get(name, 0):>8.1f}")
for name in ("full FT, lr/5", "LoRA", "full FT + replay", "full FT + early stop"):
    cures = [(forgot["full FT"], forgot[name]), (drift["full FT"], drift[name])]
    print(f"{name:22} removed " + "; ".join(
        f"{(full - cure) / full:.0%} of the {what}" if full > 0 else f"nothing to remove in the {what}"
        for (full, cure), what in zip(cures, ("general-recall loss", "text-loss rise"))))

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
    assert drift["full FT"] >= 1.0, "full FT at this lr should pull the model away from general text"
    for name in ("full FT, lr/5", "LoRA", "full FT + replay", "full FT + early stop"):
        assert drift[name] <= 0.6 * drift["full FT"], f"{name} should keep general text far better than full FT"

# %% [markdown]
# What the tiny profile shows (seed 0; seeds 1 and 2 agree within a few points for the first four
# runs, and the assertions above hold with their 0.3-0.4 margins on all three): full FT at this lr
# loses most of the held-out facts and the opposites, while its target stays low: at this lr it
# memorised the training people instead of learning to answer. LoRA learns less *and* forgets
# less; a 5x lower lr does both better still, because 60 steps at 2e-3 is simply too hot for full
# fine-tuning; replay and early stopping each keep most of the facts. In the full profile the base
# knows fewer of its clozes to begin with, so read the "text +" column too: it is the first
# number to move when a fine-tune pulls a 1B model away from general text.

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

tasks = tuple(sets.tasks)
task_ds = {t: tokenize_dataset(rows, tokenizer, cfg.max_length, verbose=False) for t, rows in sets.tasks.items()}


@torch.no_grad()
def answer_loss(model, t):
    """Mean loss per answer token (nats) on the task's first questions: lower = the task is known better."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate(task_ds[t][:cfg.adapter_eval_size]).items()}
    model.eval()
    return float(causal_lm_loss(model, batch)) / count_causal_lm_items(batch)


base = fresh_model(dtype=None)  # frozen: the loader's precision
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
_ = headline(f"{profile()}: narrow fine-tune on {cfg.target_kind!r}, general recall base {before['general']:.0%} -> "
             f"full FT {results['full FT']['general']:.0%}, lr/5 {results['full FT, lr/5']['general']:.0%}, "
             f"LoRA {results['LoRA']['general']:.0%}, replay {results['full FT + replay']['general']:.0%}, "
             f"early stop {results['full FT + early stop']['general']:.0%}; "
             f"general-text loss base {before['text']:.2f} -> full FT {results['full FT']['text']:.2f}, "
             f"LoRA {results['LoRA']['text']:.2f} nats/token; adapters swap, base hash identical")

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
# - Measure forgetting with four numbers before and after: the target, held-out general knowledge,
#   a second skill nobody trained, and the loss on general text.
# - Full fine-tuning at a high lr on a narrow task forgets: in the tiny profile it lost most of the
#   held-out facts and the opposites (the table above has the numbers). LoRA, a 5x lower lr, half a
#   batch of replayed general text, and early stopping on a general *validation* eval each keep
#   most of it.
# - At full scale, full fine-tuning of a 1.1B model with fp32 weights and gradients and 8-bit
#   AdamW needs ~11 GiB and fits a T4; with plain AdamW it would not, and the memory plan before
#   step 1 says so. LoRA needs a fraction of that.
# - One adapter per task on a frozen base is continual learning without forgetting: swap with
#   `set_adapter`, and the base's hash proves nothing else moved.
#
# **Try next:** raise `num_steps` or `lr` and watch the LoRA point move down too; try
# `replay_share = 0.25`; then drills 09a-09c and the seed's drill D5 in lesson 08.
