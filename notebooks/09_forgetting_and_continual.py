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
# - how to *measure* catastrophic forgetting: the target skill, held-out general knowledge, a
#   second skill and general text, before and after a fine-tune;
# - early stopping on validation loss: train past the best point, watch the validation loss turn
#   while the training loss keeps falling, and keep the best step's weights;
# - to compare recipes *at matched target skill*: full fine-tuning forgets more than LoRA, a 5x
#   lower learning rate or replay of general text while learning the same amount (drill D5);
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
# The tiny profile fine-tunes the 0.9M-parameter micro-world LM for 40 steps on a narrow task:
# answering questions about people's facts (`target_kind="fact"`; training rows ask about the
# training people, held-out rows about others). The full profile fine-tunes TinyLlama-1.1B for 150
# steps on writing dates in ISO format (`"date"`: "Write 7 March 1994 as an ISO date (YYYY-MM-DD)."
# -> "1994-03-07"), a format a base model does not produce by itself and a short fine-tune teaches.

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0                # same init and data order on every run
    target_kind: str = "fact"    # the narrow task (ftlab.forgetting.TASKS lists each profile's)
    lr: float = 1e-3             # learning rate (constant) of full FT, LoRA and replay
    low_lr_factor: float = 0.2   # the "lower lr" run uses lr * this (5x lower)
    num_steps: int = 40          # optimizer steps of every run
    batch_size: int = 16         # examples per batch
    max_length: int = 64         # tokens per SFT example
    optimizer: str = "adamw"     # "adamw", or "adamw8bit" (bitsandbytes: 2 bytes of state per weight, not 8)
    r: int = 8                   # LoRA rank on every linear layer
    alpha: float = 16            # LoRA scale alpha / r = 2
    replay_share: float = 0.5    # share of every batch that is general text in the replay run
    replay_docs: int = 400       # general texts available to replay
    replay_length: int = 40      # tokens kept of each replayed text
    text_docs: int = 32          # held-out general texts whose loss is reported
    eval_size: int = 40          # held-out target questions scored (reported)
    val_size: int = 24           # other held-out target questions: validation, for every decision
    eval_every: int = 2          # steps between validation evals (target score, validation loss)
    match_level: float = 0.3     # runs are compared when validation exact match first reaches this
    adapter_steps: int = 30      # steps of each task adapter (section 4)
    adapter_eval_size: int = 18  # questions per task in the adapter-swap table (answer loss)


cfg = Config()
if profile() == "full":  # TinyLlama-1.1B, full FT in fp32 weights + 8-bit AdamW: ~11 GiB, fits a T4 (see section 2)
    cfg = Config(target_kind="date", lr=1e-4, num_steps=150, batch_size=8, optimizer="adamw8bit", replay_length=64,
                 text_docs=64, eval_size=32, eval_every=25, match_level=0.5, adapter_steps=100, adapter_eval_size=8)
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
# The held-out target questions are split in two: `sets.target` is reported, `sets.target_val`
# (other questions) decides when to stop. The number we report never picks the weights (drill 09b).

# %%
import torch

from ftlab.evals import exact_match, response_loss
from ftlab.forgetting import forgetting_report, forgetting_sets
from ftlab.models import load_causal_lm

sets = forgetting_sets(cfg.target_kind, eval_size=cfg.eval_size, replay_docs=cfg.replay_docs,
                       text_docs=cfg.text_docs, val_size=cfg.val_size)
print(sets.describe())
m, tokenizer = load_causal_lm()


def report_of(model):
    return forgetting_report(model, tokenizer, sets.target, sets.general, sets.skill, text=sets.text)


def target_val_score(model):
    """Exact match on the validation questions: how far a run has learnt the target."""
    return exact_match(model, tokenizer, sets.target_val, max_new_tokens=16)


def show(report):
    return ", ".join(f"{k} {v:.2f} nats/token" if k == "text" else f"{k} {v:.0%}" for k, v in report.items())


before = report_of(m)
val_before = target_val_score(m)
print(f"base model: {show(before)}; target validation {val_before:.0%}")

# %% [markdown]
# ## 2. Learning the target, then overfitting it: early stopping on validation loss
# Full fine-tuning at `lr`, trained on purpose for longer than it should be. Every `eval_every`
# steps an `eval_fn` computes the loss on the answers of the *validation* questions
# (`response_loss`, nats per answer token). `EarlyStopping(..., mode="min")` records it and copies
# the weights whenever it reaches a new minimum (into CPU memory: 4.4 GB of host RAM at full scale,
# which a T4 runtime's 12.7 GB holds and its GPU would not); `restore` puts the best ones back.
# The same run is also scored for section 3 (`MatchedSkill`, below).
#
# Every run starts from a fresh copy of the pretrained model. Full fine-tuning loads it in fp32
# (`dtype=torch.float32`): the optimizer updates fp32 weights while autocast runs the matmuls in
# fp16 (T4) or bf16 (L4). Weights stored in bf16 would round small updates away: near 0.02, bf16's
# numbers are 0.00012 apart, so the lr / 5 run's AdamW steps (about 2e-5) would round back to the
# same weight. For 1.1B weights that is 4.4 GB of weights and 4.4 GB of gradients, so the
# optimizer state has to be small: 8-bit AdamW keeps 2.2 GB where AdamW keeps 8.8 GB, and the
# memory plan `train` prints before step 1 says the run fits a T4. One model at a time:
# `fresh_model` frees the previous run's copy first.

# %%
import gc

from peft import LoraConfig, get_peft_model

from ftlab.forgetting import EarlyStopping, MatchedSkill, lm_examples, replay_mix
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


def matched_skill():
    """Scores a run with report_of when its validation exact match first reaches cfg.match_level."""
    return MatchedSkill(target_val_score, cfg.match_level, report_of, cfg.eval_every, cfg.num_steps)


train_ds = tokenize_dataset(sets.train, tokenizer, cfg.max_length)
replay_ds = lm_examples(sets.replay, tokenizer, cfg.replay_length)
collate = SFTCollator(tokenizer=tokenizer)
train_cfg = TrainConfig(lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size, seed=cfg.seed,
                        eval_every=cfg.eval_every)
optimizer = None if cfg.optimizer == "adamw" else (lambda params: make_optimizer(cfg.optimizer, params))  # None: train's AdamW
fit = dict(loss_fn=causal_lm_loss, collate_fn=collate, optimizer=optimizer, progress=False)
lora_config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
matched, seconds = {"full FT": matched_skill()}, {}

m = fresh_model()
stopper = EarlyStopping(lambda mm: response_loss(mm, tokenizer, sets.target_val), eval_every=cfg.eval_every,
                        num_steps=cfg.num_steps, mode="min")
stopper.snapshot(m)  # step 0
history = train(m, train_ds, train_cfg, eval_fn=lambda mm: {**matched["full FT"](mm), **stopper(mm)}, **fit)
seconds["full FT"] = history.seconds
test_loss_end = response_loss(m, tokenizer, sets.target)  # the reported questions, weights of the last step
end_report = report_of(m)  # the four numbers after every step: section 3 compares them with the matched point
best_step = stopper.restore(m)
test_loss_best = response_loss(m, tokenizer, sets.target)  # ... and of the best validation step
val_min, val_end = min(stopper.scores), stopper.scores[-1]
print(f"validation loss: lowest {val_min:.3f} nats/token at step {best_step}, {val_end:.3f} at step {stopper.steps[-1]}")
print(f"held-out test loss: last step's weights {test_loss_end:.3f}, restored step {best_step}'s {test_loss_best:.3f}")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(range(1, len(history.losses) + 1), history.losses, lw=1, alpha=0.7, label="training loss (each batch)")
ax.plot(stopper.steps, stopper.scores, "o-", ms=3, label="validation loss (held-out questions)")
ax.scatter([best_step], [val_min], s=120, marker="*", color="k", zorder=3, label=f"minimum: step {best_step}")
ax.axvline(best_step, color="k", ls=":", lw=1)
ax.set_xlabel("optimizer step")
ax.set_ylabel("loss (nats per answer token)")
ax.set_yscale("log")
ax.set_title("Full FT past its best point: the validation loss turns")
ax.legend(fontsize=8)
plt.close(fig)
fig

# %% [markdown]
# The training loss keeps falling: the model memorises the training people's answers. The
# validation loss falls while the model learns the *task* (answering in the right form), then turns
# up: from there on, each step fits the training questions at the cost of the held-out ones. That
# turn is overfitting, and early stopping keeps the weights at its bottom. The printed numbers show
# the restored weights also do better on the *test* questions, which never took part in the choice.

# %%
if profile() == "tiny":
    assert val_end >= val_min + 0.05, "the validation loss should turn up after its minimum"
    assert best_step < stopper.steps[-1] and test_loss_best < test_loss_end, "the best step should beat the last"
    assert history.losses[-1] < val_end, "the training loss should end below the validation loss"

# %% [markdown]
# ## 3. Three cures, compared at matched target skill
# Comparing recipes after the same number of steps mixes what each learnt with what each forgot: a
# run that learnt nothing forgets nothing. So each run is scored at the same point of *learning*:
# `MatchedSkill` scores the validation questions every `eval_every` steps, and the first time exact
# match reaches `match_level` it measures the four numbers on those weights (the reported target on
# the test questions). A run that never gets there is reported as such. The runs:
# 1. **full FT** at `lr` (section 2's run);
# 2. **full FT, lr / 5**;
# 3. **LoRA** (r = 8, every linear layer) at the same `lr`: the base is frozen;
# 4. **full FT + replay**: half of every batch is general text (`replay_mix` builds the batches,
#    `shuffle=False` keeps them).

# %%
m = fresh_model()
matched["full FT, lr/5"] = matched_skill()
seconds["full FT, lr/5"] = train(m, train_ds, train_cfg, lr=cfg.lr * cfg.low_lr_factor,
                                 eval_fn=matched["full FT, lr/5"], **fit).seconds

m = fresh_model(dtype=None)  # LoRA: the frozen base stays in the loader's precision (half on a GPU)
seed_everything(cfg.seed)  # same LoRA init every run
m = get_peft_model(m, lora_config)
matched["LoRA"] = matched_skill()
seconds["LoRA"] = train(m, train_ds, train_cfg, eval_fn=matched["LoRA"], **fit).seconds

m = fresh_model()
mixed = replay_mix(train_ds, replay_ds, cfg.replay_share, cfg.batch_size, cfg.num_steps, seed=cfg.seed)
matched["full FT + replay"] = matched_skill()
seconds["full FT + replay"] = train(m, mixed, train_cfg, shuffle=False, eval_fn=matched["full FT + replay"], **fit).seconds
results = {"base": before} | {name: ms.report for name, ms in matched.items() if ms.report is not None}

# %% [markdown]
# "forgot" is general recall lost (base minus at the matched point, in points); "text +" is how
# much the loss on general text rose (nats per token). Then, for each cure, the share of full FT's
# forgetting it removed: (forgot by full FT - forgot with the cure) / forgot by full FT (drill 09a).

# %%
forgot = {name: before["general"] - r["general"] for name, r in results.items()}
drift = {name: r["text"] - before["text"] for name, r in results.items()}
print(f"validation exact match >= {cfg.match_level:.0%} (base {val_before:.0%}); the numbers below are at that step")
print(f"{'':18} {'at step':>8} {'target':>7} {'general':>8} {'skill':>6} {'text':>6} {'forgot':>7} {'text +':>7} {'train s':>8}")
for name, r in results.items():
    step = matched[name].reached_step if name in matched else 0
    print(f"{name:18} {step:>8} {r['target']:>7.0%} {r['general']:>8.0%} {r['skill']:>6.0%} {r['text']:>6.2f} "
          f"{forgot[name]:>7.0%} {drift[name]:>+7.2f} {seconds.get(name, 0):>8.1f}")
for name, ms in matched.items():
    if ms.report is None:
        print(f"{name:18} never reached {cfg.match_level:.0%} in {cfg.num_steps} steps (best {ms.best:.0%})")
for name in [n for n in results if n not in ("base", "full FT")]:
    cures = [(forgot.get("full FT", 0), forgot[name]), (drift.get("full FT", 0), drift[name])]
    print(f"{name:18} removed " + "; ".join(
        f"{(full - cure) / full:.0%} of the {what}" if full > 0 else f"nothing to remove in the {what}"
        for (full, cure), what in zip(cures, ("general-recall loss", "text-loss rise"))))

# %%
runs = [n for n in results if n != "base"]
fig, axes = plt.subplots(1, 2, figsize=(8, 2.8), sharey=True)
for ax, values, label in ((axes[0], forgot, "general recall lost (points)"), (axes[1], drift, "general-text loss rise (nats/token)")):
    ax.barh(runs, [values[n] * (100 if values is forgot else 1) for n in runs])
    ax.set_xlabel(label)
axes[0].invert_yaxis()
fig.suptitle(f"Forgetting at matched target skill (validation exact match {cfg.match_level:.0%})", fontsize=10)
fig.tight_layout()
plt.close(fig)
fig

# %%
if profile() == "tiny":
    assert all(ms.report is not None for ms in matched.values()), "every recipe should reach the matched level"
    assert drift["LoRA"] < drift["full FT"], "at the same target skill, full FT should drift more than LoRA"
    assert drift["full FT, lr/5"] < drift["full FT"], "at the same target skill, a 5x lower lr should drift less"
    for name in ("full FT, lr/5", "LoRA", "full FT + replay"):
        assert forgot[name] <= forgot["full FT"], f"{name} should forget no more general recall than full FT"

# %% [markdown]
# What the tiny profile shows (the assertions hold for seeds 0, 1 and 2): every recipe reaches the
# level within a few steps, and at that point the forgetting is small for all of them; full FT
# loses a few facts and pays more in the loss on general text than LoRA and the lower lr (replay
# reaches the level as early as full FT and drifts about as much). Most of full FT's forgetting
# comes *after* the task is learnt, from the steps that only memorise the training questions: the
# steps section 2's early stopping throws away. The next cell measures it on section 2's run:
# the same weights at the matched step and after the last step. Training on costs general recall,
# the second skill and the loss on general text, and it does not even keep the target: the test
# questions about unseen people fall back as the model memorises the training people.
# In the full profile the base knows fewer of its clozes to begin with, so read the "text +"
# column too: it is the first number to move when a fine-tune pulls a 1B model away from general
# text.

# %%
end_forgot, end_drift = before["general"] - end_report["general"], end_report["text"] - before["text"]
if "full FT" in results:
    print(f"full FT at the matched step {matched['full FT'].reached_step}: target {results['full FT']['target']:.0%}, "
          f"forgot {forgot['full FT']:.0%} of general recall, text {drift['full FT']:+.2f} nats/token")
else:  # the table above says how close it came
    print(f"full FT never reached {cfg.match_level:.0%}: no matched step to compare with")
print(f"full FT after all {cfg.num_steps} steps:  target {end_report['target']:.0%}, forgot {end_forgot:.0%} "
      f"of general recall, text {end_drift:+.2f} nats/token, skill {before['skill']:.0%} -> {end_report['skill']:.0%}")
if profile() == "tiny":
    assert end_forgot >= forgot["full FT"] + 0.15, "training on past the learnt task should forget far more"
    assert end_drift >= drift["full FT"] + 0.5, "training on past the learnt task should drift far more"

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
at = {name: (f"{r['general']:.0%} / {r['text']:.2f}" if (r := matched[name].report) else "not reached") for name in matched}
_ = headline(f"{profile()}: narrow fine-tune on {cfg.target_kind!r}; val loss min step {best_step}, test loss "
             f"{test_loss_end:.2f} -> {test_loss_best:.2f} restored; at val EM {cfg.match_level:.0%}, general recall / "
             f"text loss base {before['general']:.0%} / {before['text']:.2f} -> " + ", ".join(f"{k} {v}" for k, v in at.items())
             + f"; full FT after all {cfg.num_steps} steps forgot {end_forgot:.0%}, text {end_drift:+.2f}"
             + "; adapters swap, base hash identical")

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
# You train past the best point and keep the weights of the step with the lowest loss. The loss on
# which examples should pick that step? One letter.
#
# - (a) The training examples.
# - (b) The held-out target test questions whose score goes in the results table.
# - (c) Other held-out target questions, kept apart as a validation set.
# - (d) The general-knowledge facts.

# %% tags=["answer"]
answer_09b = ...  # "a", "b", "c" or "d"

# %%
check("09b", answer_09b)

# %% cellView="form" tags=["solution"]
#@title Solution
# Section 2 picks the step on sets.target_val and reports sets.target: the test never chose anything.
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
# - Train past the best point and the validation loss turns while the training loss keeps falling:
#   early stopping keeps the weights of its minimum, chosen on validation questions, never on the
#   test questions you report (drill 09b).
# - Compare recipes at matched target skill, not after equal steps: at the same validation score,
#   full fine-tuning drifted further from general text than LoRA or a 5x lower lr, and no cure
#   forgot more general recall than it (the table in section 3 has the numbers). Most of the
#   forgetting came after the task was learnt: full FT trained on lost far more than at the
#   matched step.
# - At full scale, full fine-tuning of a 1.1B model with fp32 weights and gradients and 8-bit
#   AdamW needs ~11 GiB and fits a T4; with plain AdamW it would not, and the memory plan before
#   step 1 says so. LoRA needs a fraction of that.
# - One adapter per task on a frozen base is continual learning without forgetting: swap with
#   `set_adapter`, and the base's hash proves nothing else moved.
#
# **Try next:** raise `match_level` and see which recipe stops reaching it; raise `lr` and watch
# the validation loss turn sooner; try `replay_share = 0.25`; then drills 09a-09c and the seed's drill D5 in lesson 08.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
