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
    FTLAB_PIN = "ftlab[quant] @ git+https://github.com/ftlab-course/ftlab@v0.7.0"
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

# %% [markdown]
# ### Drill 06c ★★★ · The response log-probability, from logits
# Before the lesson writes it: `response_logprob(logits, labels)` takes the logits (B, L, V) of a
# causal LM and labels (B, L) with -100 on the prompt, and returns (B,): for each row, the SUM of
# the log-probabilities of its response tokens. The logits at position t predict the token at
# t + 1. The check runs it on random inputs against a reference; the hints name the usual bugs
# (no shift, prompt tokens counted, a mean instead of a sum).

# %%
from ftlab.drills import check, describe

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
# The lesson's `sequence_logprobs`: the model's forward, then drill 06c's steps, written out.

# %%
def sequence_logprobs(model, input_ids, attention_mask, labels):
    """Summed log p(response tokens) of each row: (B,). Labels -100 on the prompt and padding."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
    logits, targets = logits[:, :-1], labels[:, 1:]       # position t predicts token t + 1: (B, L-1, V), (B, L-1)
    mask = targets != -100                                 # (B, L-1): True on response tokens
    logps = torch.log_softmax(logits.float(), dim=-1)      # (B, L-1, V)
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, L-1): log p(target)
    return (picked * mask).sum(dim=1)                      # (B,): masked positions add 0


# %% [markdown]
# ### Drill 06d ★★☆ · The DPO loss and its implicit rewards
# Now the loss of section 1, with what TRL logs beside it. Write `dpo_loss(policy_chosen,
# policy_rejected, ref_chosen, ref_rejected, beta)`: four (B,) tensors of summed log-probabilities
# (one per pair) and beta. Return `(loss, chosen_rewards, rejected_rewards)`: the mean over pairs of
# -log sigmoid(chosen reward - rejected reward), and the (B,) implicit rewards
# beta·(log pi - log pi_ref). The check compares all three with `ftlab.dpo.dpo_loss` on random batches.

# %% tags=["answer"]
def my_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    raise NotImplementedError  # your code here


answer_06d = my_dpo_loss

# %%
check("06d", answer_06d)

# %% cellView="form" tags=["solution"]
#@title Solution
# the rewards first (beta inside, on each log-ratio), then -log sigmoid of their difference, averaged
def solution_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(chosen_rewards - rejected_rewards).mean(), chosen_rewards, rejected_rewards


solution_06d = solution_dpo_loss
check("06d", solution_06d)

# %% [markdown]
# The lesson's `dpo_loss` (TRL's `loss_type="sigmoid"`):

# %%
import torch.nn.functional as F


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """DPO loss and implicit rewards. Inputs (B,) summed log-probs; returns (0-d loss, (B,), (B,))."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)        # (B,): beta * log(pi / pi_ref), chosen
    rejected_rewards = beta * (policy_rejected - ref_rejected)  # (B,): the same for rejected
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()  # 0-d: Bradley-Terry NLL, mean over pairs
    return loss, chosen_rewards.detach(), rejected_rewards.detach()  # rewards are metrics: no gradient


# %% [markdown]
# ### Drill 06e ★☆☆ · Predict, then run
# The DPO adapter starts at B = 0. The next cell scores four real pairs before any update. What
# DPO loss will it print for them? Answer before you run it.

# %% tags=["answer"]
answer_06e = ...  # the loss, a number

# %%
check("06e", answer_06e)

# %% cellView="form" tags=["solution"]
#@title Solution
# the policy IS the reference: every log-ratio is 0, every margin is 0, -log sigmoid(0) = log 2
solution_06e = math.log(2)
check("06e", solution_06e)

# %% [markdown]
# The check: the lesson's two functions against `ftlab.dpo` (the package's tested copy) on a real
# batch of four pairs, before any update and after pretending training moved the policy.
# TRL's sigmoid loss is a few lines inside `DPOTrainer._compute_loss`, a method that needs a
# trainer and TRL's batches, not a function to call alone; section 6 calls it on TRL's first batch
# and compares it with these two functions.

# %%
batch = {k: v.to(device()) for k, v in dpo.collate_pairs(train_pairs[:4], tokenizer.pad_token_id).items()}
with torch.no_grad():  # batch: 8 rows (B, L), the 4 chosen then the 4 rejected
    logps = sequence_logprobs(policy, **batch)  # (8,)
    with policy.disable_adapter():  # the reference: the same weights, LoRA off
        ref_logps = sequence_logprobs(policy, **batch)
    ftlab_logps = dpo.sequence_logprobs(policy, batch)
pi_c, pi_r = logps.chunk(2)
ref_c, ref_r = ref_logps.chunk(2)
loss_start, _, _ = dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta)
print(f"step 0 (policy = reference): loss {loss_start:.5f}, log 2 = {math.log(2):.5f}")
pi_c = pi_c + torch.tensor([0.5, -0.2, 1.0, 0.0], device=pi_c.device)  # pretend training moved the policy
ours = dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta)  # (loss, chosen_rewards, rejected_rewards)
theirs = dpo.dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta)
for i, row in enumerate(train_rows[:4]):
    print(f"{row['kind']:10} log p(chosen) {pi_c[i]:7.2f} (ref {ref_c[i]:7.2f})   log p(rejected) {pi_r[i]:7.2f} "
          f"(ref {ref_r[i]:7.2f})   reward margin {ours[1][i] - ours[2][i]:+.3f}")
torch.testing.assert_close(logps, ftlab_logps, atol=1e-4, rtol=1e-5)
for a, b in zip(ours, theirs):
    torch.testing.assert_close(a, b)
assert abs(float(loss_start) - math.log(2)) < 1e-5, "with the policy equal to the reference the loss is log 2"
diff = max((logps - ftlab_logps).abs().max().item(), *((a - b).abs().max().item() for a, b in zip(ours, theirs)))
print(f"loss {ours[0]:.5f} (ftlab.dpo.dpo_loss {theirs[0]:.5f}); largest difference from ftlab.dpo, "
      f"log-probs, loss and rewards: {diff:.1e}")

# %% [markdown]
# ## 4. Training
# ### Before: what the SFT model already prefers
# The held-out metrics are TRL's `rewards/accuracies` and `rewards/margins`: the share of pairs
# where the implicit reward of chosen is higher than rejected's, and the mean of chosen's reward
# minus rejected's. Before training the policy *is* the reference and every reward is exactly 0. TRL
# counts `chosen_rewards > rejected_rewards`, strictly, so a tie counts 0: its accuracy at step 1 is
# 0% (the first line of the training log below shows it), and `dpo.preference_accuracy` counts it
# the same way. That 0% is not the model's opinion: it is what a tie happens to score (a count
# that gave a tie one half would read 50%, just as meaningless).
#
# The real baseline is the SFT model's own preference: the share of held-out pairs where it already
# gives chosen a higher summed log-probability than rejected (a tie counting 0, as in TRL). A
# caution in reading it: a summed log-probability adds one negative number per token, so it
# favours the **shorter** response whatever its quality (length bias); the cell prints how often
# chosen is the shorter one.

# %%
from ftlab.chat import generate


@torch.no_grad()
def pair_logprobs(model, pairs, pairs_per_batch=dpo.EVAL_PAIRS_PER_BATCH):
    """Summed log p(chosen) and log p(rejected) of each pair: two (N,) tensors (ftlab's memory-bounded version)."""
    chosen, rejected = [], []
    for i in range(0, len(pairs), pairs_per_batch):
        b = {k: v.to(device()) for k, v in dpo.collate_pairs(pairs[i:i + pairs_per_batch], tokenizer.pad_token_id).items()}
        c, r = dpo.sequence_logprobs(model, b).float().cpu().chunk(2)  # (n,), (n,)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


policy.eval()
with policy.disable_adapter():  # the SFT model
    sft_c, sft_r = pair_logprobs(policy, test_pairs)
sft_preference = float((sft_c > sft_r).float().mean())  # a tie counts 0, as TRL counts
n_tokens = lambda seq: sum(t != -100 for t in seq["labels"])  # noqa: E731  response tokens
chosen_shorter = sum(n_tokens(p["chosen"]) < n_tokens(p["rejected"]) for p in test_pairs) / len(test_pairs)
acc_before = dpo.preference_accuracy(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)
shown = [r["prompt"] for r in test_rows[:4]]
gen_before = generate(policy, tokenizer, shown)
print(f"the SFT model already prefers chosen on {sft_preference:.0%} of the held-out pairs "
      f"(chosen is the shorter response on {chosen_shorter:.0%} of them)")
print(f"implicit-reward accuracy before DPO: every margin 0, so {acc_before:.0%} "
      f"(dpo.preference_accuracy counts a tie 0, as TRL does)")
assert acc_before == 0.0, "before DPO the policy is the reference: every margin is a tie"

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

# %% [markdown]
# Why can `rewards/chosen` go negative while the margin grows? The loss sees only the
# **difference** of the two rewards. Lowering both, rejected faster, lowers the loss as well as
# raising chosen would; and the probability taken from a chosen answer can go to answers that are
# in no pair at all. A falling chosen reward is not a failure in itself; a margin that grows
# because *both* collapse is the over-optimisation to watch (the generations below). The last step:

# %%
print(f"step {log[-1]['step']}: rewards/chosen {log[-1]['rewards/chosen']:+.3f}, "
      f"rewards/rejected {log[-1]['rewards/rejected']:+.3f}, margin {log[-1]['rewards/margins']:+.3f}")
margins_after = dpo.preference_margins(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)  # one per pair
acc_after = dpo.margin_accuracy(margins_after)  # TRL's count: chosen's reward strictly higher
reward_margin = cfg.beta * float(margins_after.mean())  # TRL's rewards/margins on the held-out pairs
per_kind = dpo.accuracy_by_kind(margins_after, [test_rows[i]["kind"] for i in test_pairs.kept_rows])
# the policy's own gap log p(chosen) - log p(rejected): the margin is that gap minus the SFT model's,
# so it comes from numbers already computed, without scoring the pairs again
gap_sft = (sft_c - sft_r)[:len(margins_after)]  # (N,): the pairs the margins scored (a rehearsal scores fewer)
gap_dpo = margins_after + gap_sft  # (N,)
preference_after = float((gap_dpo > 0).float().mean())  # counted as sft_preference is
print(f"the model's own preference for chosen: SFT {sft_preference:.0%} -> DPO {preference_after:.0%}; "
      f"mean gap log p(chosen) - log p(rejected): {gap_sft.mean():+.2f} -> {gap_dpo.mean():+.2f} nats")
print(f"held-out implicit-reward accuracy after DPO: {acc_after:.0%} "
      f"({', '.join(f'{k} {v:.0%}' for k, v in per_kind.items())}); mean reward margin 0 -> {reward_margin:+.3f}; "
      f"{history.seconds:.1f} s of training")
if profile() == "tiny":  # measured: 75% (rambling 100%, refusal 100%, wrong_fact 36%), margin +4.6
    assert acc_after >= 0.65, "DPO should raise held-out preference accuracy"
    assert preference_after >= sft_preference >= 0.9, "measured 100% before and after: SFT already ranks them"
    assert reward_margin > 0.1, "chosen's implicit reward should rise above rejected's on held-out pairs"

# %% [markdown]
# Read the two kinds of number apart. The model's own preference is absolute: does it give chosen
# the higher log-probability? Where the SFT model already does on most pairs (every pair in the
# tiny profile), there is little left to gain there. The implicit-reward accuracy and margin are
# *relative to the start*: the margin is beta times how much the gap log p(chosen) - log p(rejected)
# grew, so they measure what DPO itself did.
#
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
acc_large = float((dpo.preference_margins(policy, test_pairs, pad_token_id=tokenizer.pad_token_id) > 0).float().mean())
gen_large = generate(policy, tokenizer, shown)
policy.set_adapter("dpo")  # back to the beta = cfg.beta run
kl[cfg.beta] = dpo.kl_to_reference(policy, test_pairs, pad_token_id=tokenizer.pad_token_id)
for b in (cfg.beta, cfg.beta_large):
    print(f"beta {b:>4}: KL to the reference {kl[b]:.4f} nats/token")
print(f"held-out accuracy: beta {cfg.beta} {acc_after:.0%}, beta {cfg.beta_large} {acc_large:.0%}")
for q, a in zip(shown, gen_large):
    print(f"beta {cfg.beta_large} answers {q!r}: {a!r}")
if profile() == "tiny":  # measured: held-out accuracy 75% (beta 0.1) vs 86% (beta 1.0)
    assert kl[cfg.beta] > 2 * kl[cfg.beta_large], "a small beta should drift further from the reference"
    assert acc_large > acc_after, "here the larger beta should also do better on the held-out pairs"
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
# After the run, TRL's own loss code (`DPOTrainer._compute_loss`) scores TRL's first batch once
# more, and the lesson's `sequence_logprobs` and `dpo_loss` of section 3 must give the same loss.

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

# TRL's own loss code on TRL's first batch, with TRL's trained adapter, against the lesson's section-3 functions
trl_batch = next(iter(trainer.get_train_dataloader()))  # the first cfg.batch_size pairs (sequential)
our_batch = {k: v.to(device()) for k, v in dpo.collate_pairs(train_pairs[:cfg.batch_size], tokenizer.pad_token_id).items()}
policy.eval()
with torch.no_grad():
    trl_loss = float(trainer._compute_loss(trainer.model, trl_batch, return_outputs=False))
    pi_c, pi_r = sequence_logprobs(policy, **our_batch).chunk(2)  # adapter "default": TRL's, trained
    with policy.disable_adapter():
        ref_c, ref_r = sequence_logprobs(policy, **our_batch).chunk(2)
    lesson_loss = float(dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta)[0])
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
trl_loss_gap = abs(lesson_loss - trl_loss)
print(f"TRL's loss code on its first batch, after training: {trl_loss:.5f}; the lesson's section-3 functions: "
      f"{lesson_loss:.5f} (difference {trl_loss_gap:.1e}). Step 1: TRL logged {trl_log[0]['loss']:.5f}, "
      f"section 3 printed {loss_start:.5f}")
assert abs(trl_log[0]["loss"] - float(loss_start)) < 1e-3, "both start at log 2"
assert trl_loss_gap < (1e-4 if profile() == "tiny" else 2e-2) * max(1.0, trl_loss), "the lesson's loss should be TRL's"
if profile() == "tiny":
    assert len(trl_log) == cfg.trl_steps == len(log) and gap < 1e-3, "ftlab's DPO should follow TRL's step by step"
_ = headline(f"{profile()}: DPO beta={cfg.beta} from the SFT model: the model prefers chosen on {sft_preference:.0%} -> "
             f"{preference_after:.0%} of held-out pairs, its gap log p(c) - log p(r) {gap_sft.mean():+.1f} -> "
             f"{gap_dpo.mean():+.1f} nats, implicit-reward accuracy {acc_after:.0%}, mean reward margin {reward_margin:+.3f}; KL to ref {kl[cfg.beta]:.3f} (beta {cfg.beta}) "
             f"vs {kl[cfg.beta_large]:.3f} (beta {cfg.beta_large}); ftlab = TRL DPOTrainer over {len(side_by_side)} "
             f"steps (gap {'< 1e-5' if gap < 1e-5 else f'{gap:.0e}'})")

# %% [markdown]
# ## Drills
# (Drills 06c, 06d and 06e are in section 3.)

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
# ## Summary
# - DPO is RLHF's KL-regularised objective solved in closed form: the reward is
#   beta·log(pi/pi_ref) up to a prompt-only term Z(x) that cancels in a pair, so preference tuning
#   is a classification loss on log-ratios, with no reward model and no sampling (drill 06a).
# - The loss needs four summed response log-probabilities per pair (drills 06b to 06e); the reference
#   is the same model with the DPO adapter disabled, after merging the SFT adapter into the base.
# - Before DPO every implicit reward is 0: TRL's accuracy (and ftlab's) reads 0%, since a tie counts
#   0; that is not a baseline. The SFT model's own preference is (section 4), and
#   summed log-probabilities favour shorter responses. Rejected answers are pushed down more than
#   chosen ones are pulled up; chosen rewards can go negative while the margin grows.
# - Several DPO runs are several adapters on one base (`dpo.fresh_adapter`, `set_adapter`), and
#   the evaluations score a few pairs per forward pass: a T4 holds one copy of the model, never three.
# - beta is a leash: 10x larger beta left the policy far closer to the reference (the KL above),
#   and in the tiny profile it also did better on the held-out pairs (section 5 prints both
#   accuracies); beta 0.1 at this learning rate over-optimised.
# - ftlab's loop and TRL's `DPOTrainer` give the same loss and rewards step by step; use TRL in
#   practice (`DPOConfig(beta=..., **trainer_precision())`, a peft model, conversational records).
#
# **Try next:** set `beta=0.01` and watch the KL and the generations; train the SFT adapter itself
# with DPO (TRL keeps a "ref" copy; in ftlab pass `ref_model=` a frozen copy); in the full profile,
# try `loss_type="ipo"` in `DPOConfig`. Lesson 07 sizes these runs for a T4 or an L4.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
