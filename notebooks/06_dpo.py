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
# # 06 · DPO: preference tuning, proven equal to TRL
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/06_dpo.ipynb)
#
# **What you will learn**
# - how RLHF's "fit a reward model, then run PPO" collapses into one classification loss: the
#   closed-form optimal policy, and the partition function that cancels in a pair (the seed's D3);
# - the DPO loss by hand, from summed log-probabilities of the response tokens;
# - the reference model as the same model with its LoRA adapter disabled (one model in memory),
#   and several DPO runs as several adapters on that one base;
# - a DPO run from the lesson-05 SFT model: rewards and margins over steps, held-out preference
#   accuracy and reward margin before and after, generations before and after;
# - what beta does: small beta lets the policy drift from the reference, large beta holds it close
#   (the KL to the reference, measured);
# - the same run with TRL's `DPOTrainer`, metric for metric.
#
# The tiny profile runs on a CPU in well under a minute.

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

from ftlab.runtime import device, headline, profile, report, seed_everything

env = report()

# %% [markdown]
# ## Config
# The full profile runs DPO on the ~1B model (`name`, as in lesson 05) with UltraFeedback pairs,
# sized so that its DPO runs (two of ours, and a shorter one of TRL's to compare with) fit the
# lesson's time on a T4: each of ours sees most of the thousand training pairs once. Held-out
# preference accuracy and the mean reward margin are what move within that.

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0
    name: str | None = None      # full profile: the hub model (None: TinyLlama-1.1B), as in lesson 05
    r: int = 8                   # LoRA rank of the DPO adapter (every linear layer)
    alpha: float = 16            # LoRA scale alpha / r = 2
    beta: float = 0.1            # DPO's pull towards the reference (TRL's default)
    beta_large: float = 1.0      # the beta explorer's second run: 10x stronger pull
    lr: float = 2e-3             # LoRA learning rate, constant
    num_steps: int = 24          # DPO optimizer steps of each ftlab run
    trl_steps: int = 24          # steps of the TRL run, compared with ftlab's step by step
    batch_size: int = 16         # preference pairs per micro-batch
    grad_accum: int = 1          # effective batch = batch_size * grad_accum pairs
    max_length: int | None = None  # tokens per prompt + response (None: no truncation)
    sft_steps: int = 100         # the short SFT run, only if lesson 05's adapter is not on disk
    sft_lr: float = 2e-3
    eval_size: int = 64          # held-out preference pairs scored before and after


cfg = Config()
if profile() == "full":  # a ~1B model on a T4/L4: small batches, accumulation, truncation
    # 2 x 96 + 16 steps of 8 pairs (~900 tokens each) x 8.8 GFLOP/token (policy 6N + reference 2N)
    # = 1.3e16 FLOP: ~14 min at the ~16 TFLOP/s a T4 sustains in fp16, ~6 min on an L4
    cfg = Config(r=16, alpha=32, lr=1e-4, num_steps=96, trl_steps=16, batch_size=2, grad_accum=4, max_length=512,
                 sft_steps=200, sft_lr=2e-4, eval_size=100)
seed_everything(cfg.seed)  # same LoRA init and same data every run
cfg

# %% [markdown]
# ## 1. From RLHF to DPO in a few lines
#
# RLHF maximises reward while staying close to a reference policy (the SFT model):
#
# $$\max_\pi \; \mathbb{E}_{y\sim\pi(\cdot|x)}[r(x,y)] - \beta\,\mathrm{KL}(\pi(\cdot|x)\,\|\,\pi_\text{ref}(\cdot|x)).$$
#
# This has a closed-form optimum: $\pi^*(y|x) = \pi_\text{ref}(y|x)\,e^{r(x,y)/\beta} / Z(x)$, with
# $Z(x) = \sum_y \pi_\text{ref}(y|x)\,e^{r(x,y)/\beta}$, a sum over every possible response: nobody
# can compute it. Take logs and solve for the reward:
#
# $$r(x,y) = \beta \log\frac{\pi^*(y|x)}{\pi_\text{ref}(y|x)} + \beta \log Z(x).$$
#
# A preference model (Bradley-Terry) only needs reward *differences*:
# $p(y_c \succ y_r) = \sigma(r(x,y_c) - r(x,y_r))$. Chosen and rejected share the prompt, so
# $\beta \log Z(x)$ **cancels**. Put the policy we train in place of $\pi^*$ and maximise the
# likelihood of the observed preferences:
#
# $$\mathcal{L}_\text{DPO} = -\log\sigma\Big(\beta\big[(\log\pi(y_c|x) - \log\pi_\text{ref}(y_c|x)) - (\log\pi(y_r|x) - \log\pi_\text{ref}(y_r|x))\big]\Big).$$
#
# No reward model, no sampling, no PPO: a classification loss on log-ratios. The *implicit reward*
# of a response is $\beta(\log\pi - \log\pi_\text{ref})$. Check the algebra on five answers with
# made-up rewards: the optimum for a beta, the rewards recovered from it, and Z cancelling.

# %%
import math

from ftlab import dpo
from ftlab.widgets import beta_explorer_data

# Five answers to "Where does Bo live?" under an SFT reference, and the reward a preference set
# implies for each (the micro-world's kinds of rejected answer). Illustrative numbers, not measured.
answers = ("Bo lives in Rome. (correct)", "Bo lives in Oslo. (wrong fact)", "I cannot answer that. (refusal)",
           "Where does Bo live? Bo Bo. (rambling)", "Bo lives in Rome, I think. (hedged)")
ref_probs = (0.40, 0.30, 0.10, 0.05, 0.15)  # pi_ref(y | x): sums to 1
rewards = (1.0, -1.0, -0.5, -1.0, 0.5)      # r(x, y)

policy_star, kl_star = dpo.optimal_policy(ref_probs, rewards, cfg.beta * 5)
beta_toy = cfg.beta * 5
recovered = [beta_toy * math.log(p / q) for p, q in zip(policy_star, ref_probs)]  # r - beta*log Z
log_z = math.log(sum(q * math.exp(r / beta_toy) for q, r in zip(ref_probs, rewards)))
print(f"beta = {beta_toy}: log Z = {log_z:.3f}")
for r, rec in zip(rewards, recovered):
    print(f"  true reward {r:+.2f}   beta*log(pi*/pi_ref) = {rec:+.3f}   + beta*log Z = {rec + beta_toy * log_z:+.3f}")
diff_true, diff_recovered = rewards[0] - rewards[1], recovered[0] - recovered[1]
print(f"reward difference of answers 1 and 2: true {diff_true:+.3f}, from log-ratios alone {diff_recovered:+.3f}")
assert abs(diff_true - diff_recovered) < 1e-9, "Z(x) should cancel in a difference"

# %% [markdown]
# ## 2. The models: the SFT policy and its reference
# DPO starts from an instruction-tuned model. Lesson 05 saves its SFT LoRA adapter to
# `ftlab.sft.default_adapter_dir()`; if it is not there (you opened this lesson first), a short
# SFT run makes one here, so the lesson stands on its own.
#
# The adapter is merged into the base (`merge_and_unload`), and DPO puts a **fresh** LoRA on top.
# Disabling that LoRA gives back the SFT model: the reference, with no second model in memory.
# The lesson's other DPO runs (a larger beta in section 5, TRL's in section 6) get adapters of
# their own on the same base, from the same starting weights (`dpo.adapter_start`,
# `dpo.fresh_adapter`): megabytes each, where a copy of the model would be gigabytes.

# %%
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ftlab import sft
from ftlab.data import load_instructions, load_preferences
from ftlab.models import load_causal_lm
from ftlab.train import causal_lm_loss, train

model, tokenizer = load_causal_lm(name=cfg.name)
adapter_dir = sft.adapter_for(model)  # lesson 05's adapter, if it was trained on this model
if adapter_dir is not None:
    print(f"loading lesson 05's SFT adapter from {adapter_dir}")
    sft_model = PeftModel.from_pretrained(model, adapter_dir)
else:
    print(f"a short SFT run instead ({cfg.sft_steps} steps, prompt masked)")
    seed_everything(cfg.seed)
    sft_model = get_peft_model(model, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    sft_data = sft.tokenize_dataset(load_instructions("train"), tokenizer, max_length=cfg.max_length)
    train(sft_model, sft_data, lr=cfg.sft_lr, num_steps=cfg.sft_steps, batch_size=cfg.batch_size,
          seed=cfg.seed, loss_fn=causal_lm_loss, collate_fn=sft.SFTCollator(tokenizer=tokenizer), progress=False)
sft_merged = sft_model.merge_and_unload()  # the reference: W + scale * B @ A in one weight

lora_config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
seed_everything(cfg.seed)  # the DPO adapter's init (B = 0: the policy starts AS the reference)
policy = get_peft_model(sft_merged, lora_config, adapter_name="dpo")
start = dpo.adapter_start(policy)  # its starting weights: the other runs start from them too
policy.print_trainable_parameters()

# %% [markdown]
# ## 3. The loss by hand
# A pair becomes two sequences, prompt + chosen + EOS and prompt + rejected + EOS, with the prompt
# masked (-100) as in lesson 05. `sequence_logprobs` sums the log-probabilities of the response
# tokens; DPO needs four of these sums per pair.

# %%
train_rows, test_rows = list(load_preferences("train")), list(load_preferences("test"))[:cfg.eval_size]
train_pairs = dpo.tokenize_pairs(train_rows, tokenizer, max_length=cfg.max_length)
test_pairs = dpo.tokenize_pairs(test_rows, tokenizer, max_length=cfg.max_length)
print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs; kinds of rejected answer: "
      f"{sorted({r['kind'] for r in train_rows})}")
print(sft.show_labels(train_pairs[0]["chosen"], tokenizer))

# %%
batch = {k: v.to(device()) for k, v in dpo.collate_pairs(train_pairs[:4], tokenizer.pad_token_id).items()}
with torch.no_grad():
    pi_c, pi_r = dpo.sequence_logprobs(policy, batch).chunk(2)
    with policy.disable_adapter():  # the reference: the same weights, LoRA off
        ref_c, ref_r = dpo.sequence_logprobs(policy, batch).chunk(2)
pi_c = pi_c + torch.tensor([0.5, -0.2, 1.0, 0.0], device=pi_c.device)  # pretend training moved the policy
margin = (pi_c - ref_c) - (pi_r - ref_r)
by_hand = -torch.log(torch.sigmoid(cfg.beta * margin)).mean()
loss, chosen_rewards, rejected_rewards = dpo.dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta)
for i, row in enumerate(train_rows[:4]):
    print(f"{row['kind']:10} log p(chosen) {pi_c[i]:7.2f} (ref {ref_c[i]:7.2f})   log p(rejected) {pi_r[i]:7.2f} "
          f"(ref {ref_r[i]:7.2f})   margin {margin[i]:+.2f}")
print(f"loss by hand {by_hand:.5f}   ftlab.dpo.dpo_loss {loss:.5f}   (log 2 = {math.log(2):.5f} when every margin is 0)")
assert torch.allclose(by_hand, loss)

# %% [markdown]
# ## 4. Training
# ### Before: preference accuracy is a coin toss
# The held-out metrics are TRL's `rewards/accuracies` and `rewards/margins`: the share of pairs
# where the implicit reward of chosen beats rejected, and the mean of chosen's reward minus
# rejected's. Before training the policy *is* the reference, every reward is 0, and a tie counts
# as half: 50%, and a margin of 0. (The SFT model's own log-probabilities already favour chosen on
# many pairs; DPO's question is whether training moved the policy the right way, relative to where
# it started.) Both move early in a DPO run, even for a 1B model on a few hundred pairs: the
# first thing DPO learns is what tells chosen from rejected in general (length, tone, refusals,
# format), and that carries over to held-out prompts.

# %%
from ftlab.chat import generate

acc_before = dpo.preference_accuracy(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)
shown = [r["prompt"] for r in test_rows[:4]]
gen_before = generate(policy, tokenizer, shown)
print(f"held-out preference accuracy before DPO: {acc_before:.0%}")

# %% [markdown]
# ### DPO with ftlab
# `train_dpo` is `ftlab.train.train` with a DPO loss: each micro-batch runs the policy and the
# reference (adapter disabled) on 2B rows, chosen first. It logs TRL's four metrics every step.
# The data order is sequential (the file is already shuffled) so that TRL can see the same batches
# in section 6.

# %%
history, log = dpo.train_dpo(policy, train_pairs, lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size,
                             grad_accum=cfg.grad_accum, shuffle=False, seed=cfg.seed, beta=cfg.beta,
                             pad_token_id=tokenizer.pad_token_id)
print(f"step 1: {log[0]}\nstep {log[-1]['step']}: {log[-1]}")

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
steps = [e["step"] for e in log]
axes[0].plot(steps, [e["loss"] for e in log])
axes[0].axhline(math.log(2), ls=":", c="grey", label="log 2")
axes[0].set(xlabel="step", ylabel="DPO loss", title="loss")
axes[0].legend()
axes[1].plot(steps, [e["rewards/chosen"] for e in log], label="chosen")
axes[1].plot(steps, [e["rewards/rejected"] for e in log], label="rejected")
axes[1].set(xlabel="step", ylabel="beta * log(pi / pi_ref)", title="implicit rewards")
axes[1].legend()
axes[2].plot(steps, [e["rewards/margins"] for e in log], label="margin")
axes[2].plot(steps, [e["rewards/accuracies"] for e in log], label="accuracy")
axes[2].set(xlabel="step", title="margins and batch accuracy")
axes[2].legend()
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# Most of the margin comes from pushing the **rejected** answers down; the chosen reward moves
# much less. That is typical of DPO: it is easier to make a bad answer unlikely than a good one likelier.

# %%
margins_after = dpo.preference_margins(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)  # one per pair
acc_after = dpo.margin_accuracy(margins_after)
reward_margin = cfg.beta * float(margins_after.mean())  # TRL's rewards/margins on the held-out pairs
per_kind = dpo.accuracy_by_kind(margins_after, [test_rows[i]["kind"] for i in test_pairs.kept_rows])
print(f"held-out preference accuracy: {acc_before:.0%} -> {acc_after:.0%} "
      f"({', '.join(f'{k} {v:.0%}' for k, v in per_kind.items())}); mean reward margin 0 -> {reward_margin:+.3f}; "
      f"{history.seconds:.1f} s of training")
if profile() == "tiny":  # measured: 50% -> 75% (rambling 100%, refusal 100%, wrong_fact 36%)
    assert acc_after >= 0.65 and acc_after > acc_before + 0.15, "DPO should raise held-out preference accuracy"
    assert reward_margin > 0.1, "chosen's implicit reward should rise above rejected's on held-out pairs"

# %% [markdown]
# Look at the kinds (the tiny profile's held-out pairs come in three). Refusals and rambling are
# *styles*: the preference learned on training questions carries
# over to questions about people DPO never saw. A wrong fact is not a style: "Bo lives in Oslo" is
# wrong only because of who Bo is. On held-out people DPO does no better than chance there:
# pushing down the values that were rejected for *other* people also pushes down values that are
# right for these. Preference data teaches what it contains, not facts the model cannot check.
#
# Generations, greedy, before and after. Watch for damage: with beta 0.1 and this learning rate
# the policy drifts far from the reference (section 5 measures how far), and some answers that
# were fine get worse. Pushing rejected log-probabilities down without limit is DPO's classic
# over-optimisation; beta is the leash. The SFT model already answers these in the right
# format, so greedy text changes little; what DPO changed is how much probability the rejected
# kinds of answer (wrong facts, refusals, rambling) still get.

# %%
gen_after = generate(policy, tokenizer, shown)
for row, b, a in zip(test_rows, gen_before, gen_after):
    print(f"Q: {row['prompt']}\n   before: {b!r}\n   after:  {a!r}\n   chosen: {row['chosen']!r}  rejected ({row['kind']}): {row['rejected']!r}")

# %% [markdown]
# ## 5. What beta does
# In the closed form, small beta lets the optimum pile onto the highest-reward answer, far from the
# reference; large beta keeps it near the reference. Move the slider: the KL grows as beta shrinks.

# %%
from ftlab.widgets import beta_explorer

for b in (0.1, 1.0, 10.0):
    print(f"closed form, beta {b:>4}: KL(pi* || pi_ref) = {beta_explorer_data(b, ref_probs, rewards, answers)['kl']:.3f} nats")

# %% [markdown]
# Measure it on the real model: the same DPO run with beta 10x larger, and the KL of each trained
# policy to the reference (per token, over the held-out pairs' responses). The second run trains a
# second adapter on the same base, from the same start; `set_adapter` switches between them, and
# disabling adapters still gives the reference.

# %%
dpo.fresh_adapter(policy, "large_beta", start)  # a new adapter, the active one from now on
_, log_large = dpo.train_dpo(policy, train_pairs, lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size,
                             grad_accum=cfg.grad_accum, shuffle=False, seed=cfg.seed, beta=cfg.beta_large,
                             pad_token_id=tokenizer.pad_token_id, progress=False)
kl = {cfg.beta_large: dpo.kl_to_reference(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)}
acc_large = dpo.preference_accuracy(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)
gen_large = generate(policy, tokenizer, shown)
policy.set_adapter("dpo")  # back to the beta = cfg.beta run
kl[cfg.beta] = dpo.kl_to_reference(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)
for b in (cfg.beta, cfg.beta_large):
    print(f"beta {b:>4}: KL to the reference {kl[b]:.4f} nats/token")
print(f"held-out accuracy: beta {cfg.beta} {acc_after:.0%}, beta {cfg.beta_large} {acc_large:.0%}")
for q, a in zip(shown, gen_large):
    print(f"beta {cfg.beta_large} answers {q!r}: {a!r}")
if profile() == "tiny":
    assert kl[cfg.beta] > 2 * kl[cfg.beta_large], "a small beta should drift further from the reference"
beta_explorer(ref_probs, rewards, answers, beta=cfg.beta, measured=kl)

# %% [markdown]
# ## 6. The same run with TRL's `DPOTrainer`
# TRL reads conversational records (`ftlab.sft.trl_records`, lesson 05's, which writes preference
# rows as well as SFT rows) and builds the same token ids. Given a peft model, TRL 1.16 keeps a
# frozen copy of its starting adapter as the reference; ours starts at B = 0, so that copy is the
# SFT model, exactly what disabling the adapter gives. TRL trains the
# adapter named "default": a third adapter on the same base, from the same start. Same batches
# (`train_sampling_strategy="sequential"`), same optimizer (AdamW, constant lr, clipping at 1.0),
# precision from the card (`trainer_precision()`: fp16 on a T4, bf16 on an L4, fp32 on a CPU;
# DPOConfig alone defaults to bf16, which a T4 only emulates, slowly). The full profile compares
# the first `trl_steps` steps: enough to see the two loops agree, at a fraction of a run's cost.

# %%
from datasets import Dataset
from transformers import PrinterCallback
from trl import DPOConfig, DPOTrainer

from ftlab.runtime import capped, trainer_precision
from ftlab.sft import trl_records

dpo.fresh_adapter(policy, "default", start)  # TRL's adapter; "dpo" and "large_beta" stay as they are
if "ref" in policy.peft_config:  # TRL's frozen copy of "default" from an earlier run of this cell
    policy.delete_adapter("ref")
# capped(n) is n (FTLAB_MAX_STEPS shortens it in a rehearsal, as it does every ftlab.train run)
trl_args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.batch_size,
                     gradient_accumulation_steps=cfg.grad_accum, max_steps=capped(cfg.trl_steps), learning_rate=cfg.lr,
                     lr_scheduler_type="constant", beta=cfg.beta, max_length=cfg.max_length,
                     train_sampling_strategy="sequential", logging_steps=1, save_strategy="no", report_to=[],
                     disable_tqdm=True, seed=cfg.seed, use_cpu=device().type == "cpu", **trainer_precision())
trainer = DPOTrainer(model=policy, args=trl_args, processing_class=tokenizer,
                     train_dataset=Dataset.from_list(trl_records(train_rows)))
trainer.remove_callback(PrinterCallback)  # we print the comparison ourselves
trainer.train()
policy.set_adapter("dpo")  # our beta = cfg.beta run again
trl_log = [h for h in trainer.state.log_history if "rewards/margins" in h]
print(f"{'step':>4} {'':9} {'loss':>7} {'chosen':>8} {'rejected':>8} {'margin':>7} {'acc':>5}")
side_by_side = list(zip(log, trl_log))
for ours, theirs in side_by_side[::6] + side_by_side[-1:]:
    for name, e in (("ftlab", ours), ("TRL", theirs)):
        print(f"{ours['step']:4} {name:9} {e['loss']:7.4f} {e['rewards/chosen']:8.4f} {e['rewards/rejected']:8.4f} "
              f"{e['rewards/margins']:7.4f} {e['rewards/accuracies']:5.2f}")
gap = max(abs(o[k] - t[k]) for o, t in side_by_side for k in ("loss", *dpo.METRICS))
print(f"largest difference over {len(side_by_side)} steps and 5 metrics: {gap:.2e}")
if profile() == "tiny":
    assert len(trl_log) == cfg.trl_steps == len(log) and gap < 1e-3, "ftlab's DPO should follow TRL's step by step"
_ = headline(f"{profile()}: DPO beta={cfg.beta} from the SFT model: held-out preference accuracy {acc_before:.0%} -> "
             f"{acc_after:.0%}, mean reward margin {reward_margin:+.3f}; KL to ref {kl[cfg.beta]:.3f} (beta {cfg.beta}) "
             f"vs {kl[cfg.beta_large]:.3f} (beta {cfg.beta_large}); ftlab = TRL DPOTrainer over {len(side_by_side)} "
             f"steps (gap {'< 1e-5' if gap < 1e-5 else f'{gap:.0e}'})")

# %% [markdown]
# ## Drills

# %%
from ftlab.drills import check, describe

# %% [markdown]
# ### Drill 06a ★★☆ · Where the partition function goes
# The seed's D3, as the derivation of section 1. Which statement is right?

# %%
print(describe("06a"))

# %% tags=["answer"]
answer_06a = ...  # "a", "b", "c" or "d"

# %%
check("06a", answer_06a)

# %% cellView="form" tags=["solution"]
#@title Solution
# r(x, y) = beta*log(pi*/pi_ref) + beta*log Z(x); Bradley-Terry uses r(x, y_c) - r(x, y_r), and the
# two beta*log Z(x) terms (same prompt x) subtract to zero. Section 1 checked it numerically.
solution_06a = "b"
check("06a", solution_06a)

# %% [markdown]
# ### Drill 06b ★☆☆ · One DPO loss by hand
# beta = 0.1. The policy gives chosen a summed log-probability of -12 and rejected -20; the
# reference gives chosen -15 and rejected -18. What is this pair's DPO loss (a number)?

# %% tags=["answer"]
answer_06b = ...  # the loss, e.g. 0.69

# %%
check("06b", answer_06b)

# %% cellView="form" tags=["solution"]
#@title Solution
# log-ratios: chosen -12 - (-15) = +3, rejected -20 - (-18) = -2; margin = 0.1 * (3 - (-2)) = 0.5
solution_06b = -math.log(1 / (1 + math.exp(-0.5)))
check("06b", solution_06b)

# %% [markdown]
# ### Drill 06c ★★★ · The response log-probability
# Write `response_logprob(logits, labels)`: logits (B, L, V) of a causal LM, labels (B, L) with -100
# on the prompt. Return the (B,) summed log-probabilities of the response tokens (the logits at
# position t predict the token at t + 1). The check compares with a reference on random inputs.

# %% tags=["answer"]
def response_logprob(logits, labels):
    raise NotImplementedError  # your code here


answer_06c = response_logprob

# %%
check("06c", answer_06c)

# %% cellView="form" tags=["solution"]
#@title Solution
# shift (drop the last logit and the first label), log_softmax over the vocabulary, pick each
# target's log-prob, zero the masked positions, sum per row.
def solution_response_logprob(logits, labels):
    logps = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = labels[:, 1:]
    mask = targets != -100
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1)


solution_06c = solution_response_logprob
check("06c", solution_06c)

# %% [markdown]
# ## Summary
# - DPO is RLHF's KL-regularised objective solved in closed form: the reward is
#   beta·log(pi/pi_ref) up to a prompt-only term Z(x) that cancels in a pair, so preference tuning
#   is a classification loss on log-ratios, with no reward model and no sampling (drill 06a).
# - The loss needs four summed response log-probabilities per pair (drills 06b, 06c); the reference
#   is the same model with the DPO adapter disabled, after merging the SFT adapter into the base.
# - From the SFT model, held-out preference accuracy rose from 50% (a tie: the policy is the
#   reference) and the mean reward margin from 0 to the numbers printed in section 4; rejected
#   answers are pushed down more than chosen ones are pulled up.
# - Several DPO runs are several adapters on one base (`dpo.fresh_adapter`, `set_adapter`), and
#   the evaluations score a few pairs per forward pass: a T4 holds one copy of the model, never three.
# - beta is a leash: 10x larger beta left the policy far closer to the reference (the KL above),
#   and here it also generalised better; beta 0.1 at this learning rate over-optimised.
# - ftlab's loop and TRL's `DPOTrainer` give the same loss and rewards step by step; use TRL in
#   practice (`DPOConfig(beta=..., **trainer_precision())`, a peft model, conversational records).
#
# **Try next:** set `beta=0.01` and watch the KL and the generations; train the SFT adapter itself
# with DPO (TRL keeps a "ref" copy; in ftlab pass `ref_model=` a frozen copy); in the full profile,
# try `loss_type="ipo"` in `DPOConfig`. Lesson 07 sizes these runs for a T4 or an L4.
