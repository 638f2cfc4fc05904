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
# # 08 · Drills: D1-D5 and a mixed review
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/08_drills.ipynb)
#
# **What you will learn**
# - the five questions every fine-tuning round asks in some form (D1-D5): counting LoRA
#   parameters, budgeting memory for QLoRA, why DPO needs no reward model, when prompt tuning is
#   enough, and how to diagnose forgetting;
# - a mixed review across the lessons: two functions you write and that are checked against the
#   library a competitor would use, and three questions with numbers;
# - how to grade yourself: a scoreboard at the end, and strict mode for a whole folder.
#
# This is a good last notebook before a competition. Do it with the solutions closed: each check
# answers at once, and a wrong answer gets a hint, not the answer. Every worked solution is
# followed by a small demonstration on real layers, so you see the number, not just the formula.

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
# The numbers the drills use. Change them after you have passed a drill, and redo the
# demonstration cells by hand: the formulas must still hold.

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0
    d: int = 4096            # D1: rows of the linear (d_out)
    k: int = 4096            # D1: columns (d_in)
    r: int = 16              # D1: LoRA rank
    n_params: float = 7e9    # D2: the model being budgeted
    blocksize: int = 64      # 08d: weights per NF4 block


cfg = Config()
seed_everything(cfg.seed)
cfg

# %%
import torch

from ftlab.drills import check, describe, scoreboard

# %% [markdown]
# ## Part 1 · The seed's drills
#
# ### Drill D1 ★☆☆ · LoRA parameters vs full fine-tuning
# A transformer linear is 4096 x 4096. You add LoRA with rank r = 16. How many trainable
# parameters does LoRA add, and what fraction of the original linear is that? Answer with a
# pair: `(parameters, fraction)`; the fraction may be `0.0123` or `"1.23%"`.

# %% tags=["answer"]
answer_d1 = (..., ...)  # (new parameters, fraction of the linear)

# %%
check("d1", answer_d1)

# %% cellView="form" tags=["solution"]
#@title Solution
# LoRA adds A (r x k) and B (d x r): r*(d + k) = 16 * 8192 = 131,072 parameters. The frozen
# linear has d*k = 16,777,216, so the ratio is 0.78%. Over q_proj and v_proj of every block of a
# 7B model that stays well under 1% of the model.
solution_d1 = (cfg.r * (cfg.d + cfg.k), cfg.r * (cfg.d + cfg.k) / (cfg.d * cfg.k))
check("d1", solution_d1)

# %% [markdown]
# The same count from peft, on a real 4096 x 4096 linear. It is built on the `meta` device
# (shapes, no memory), so this costs nothing even for big shapes.

# %%
from peft import LoraConfig, get_peft_model


class OneLinear(torch.nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.proj = torch.nn.Linear(d_in, d_out, bias=False)

    def forward(self, x):
        return self.proj(x)


with torch.device("meta"):
    peft_model = get_peft_model(OneLinear(cfg.k, cfg.d), LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r, target_modules=["proj"]))
lora_count = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
print(f"peft adds {lora_count:,} trainable parameters to a {cfg.d}x{cfg.k} linear "
      f"({lora_count / (cfg.d * cfg.k):.2%})")
assert lora_count == cfg.r * (cfg.d + cfg.k)

# %% [markdown]
# ### Drill D2 ★★☆ · QLoRA memory savings
# Full fine-tuning of a 7B model in fp16 with Adam needs roughly how many GB of GPU memory,
# before activations? And how many GB do QLoRA's 4-bit base weights take? Answer with a pair
# in GB: `(full_ft, qlora_base)`.

# %% tags=["answer"]
answer_d2 = (..., ...)  # (GB for full FT, GB for the 4-bit base)

# %%
check("d2", answer_d2)

# %% cellView="form" tags=["solution"]
#@title Solution
# Full FT, bytes per parameter: fp16 weights 2 + fp16 gradients 2 + Adam's two fp32 moments 8 = 12.
# 12 x 7e9 = 84 GB. (Mixed precision usually also keeps fp32 master weights, +4: 16 x 7e9 = 112 GB.)
# QLoRA: the frozen base is stored in 4 bits = 0.5 byte per parameter -> 3.5 GB, plus small scales.
# The base has no gradients and no optimizer state; only the LoRA factors (<1%) carry Adam.
solution_d2 = (12 * cfg.n_params / 1e9, 0.5 * cfg.n_params / 1e9)
check("d2", solution_d2)

# %%
rows = [("weights (fp16; NF4 under QLoRA)", 2, 0.5), ("gradients", 2, 0), ("Adam moments (fp32)", 8, 0),
        ("LoRA + its Adam (~0.5% of params, x16 bytes)", 0, 0.005 * 16)]
print(f"{'part':46} {'full FT GB':>10} {'QLoRA GB':>9}")
for name, full_b, q_b in rows:
    print(f"{name:46} {full_b * cfg.n_params / 1e9:10.1f} {q_b * cfg.n_params / 1e9:9.1f}")
full_gb = sum(r[1] for r in rows) * cfg.n_params / 1e9
qlora_gb = sum(r[2] for r in rows) * cfg.n_params / 1e9
print(f"{'total (before activations)':46} {full_gb:10.1f} {qlora_gb:9.1f}")
assert full_gb > 16 > qlora_gb, "QLoRA on 7B fits a 16 GB T4 before activations; full FT does not"

# %% [markdown]
# ### Drill D3 ★★☆ · Why DPO needs no reward model
# RLHF fits a reward model r(x, y), then optimises the policy against it with PPO. DPO skips
# both steps. The step that makes this valid: with a KL penalty to a reference policy, the best
# policy is pi*(y|x) ∝ pi_ref(y|x) exp(r(x,y)/beta), so r = beta log(pi*/pi_ref) + beta log Z(x),
# where the partition function Z(x) sums over every possible answer and no one can compute it.
# Work out the reward difference the drill asks for, and see what happens to Z. Answer with a number.

# %%
print(describe("d3"))

# %% tags=["answer"]
answer_d3 = ...  # a number

# %%
check("d3", answer_d3)

# %% cellView="form" tags=["solution"]
#@title Solution
# r(x, y1) - r(x, y2) = beta (log-ratio 1 - log-ratio 2) + beta log Z(x) - beta log Z(x): Z(x)
# depends on the prompt alone, so it cancels. The Bradley-Terry probability of preferring y_c over
# y_r only uses that difference, so DPO needs neither Z nor a reward model: what is left is a
# logistic loss on log-ratios.
solution_d3 = 0.5 * (1.2 - 0.2)
check("d3", solution_d3)

# %% [markdown]
# See it cancel: give every prompt its own constant added to both of its rewards (that is what
# log Z(x) is). The DPO loss does not move. Drill 08b below asks you to write this loss.

# %%
from ftlab.drills.lesson08 import dpo_loss_solution

g = torch.Generator().manual_seed(cfg.seed)
pc, pr, rc, rr = (-20 * torch.rand(6, generator=g, dtype=torch.float64) for _ in range(4))
log_z = 5 * torch.randn(6, generator=g, dtype=torch.float64)  # one per prompt
plain = dpo_loss_solution(pc, pr, rc, rr, beta=0.1)
shifted = dpo_loss_solution(pc + log_z, pr + log_z, rc, rr, beta=0.1)
print(f"DPO loss {plain:.6f}; with a per-prompt constant added to both answers: {shifted:.6f}")
assert torch.allclose(plain, shifted)

# %% [markdown]
# ### Drill D4 ★★☆ · When prompt tuning beats LoRA
# Lester et al. find prompt tuning competitive with full fine-tuning only for some base models.
# Which ones? Answer with one letter, then say to yourself why before you open the solution.

# %%
print(describe("d4"))

# %% tags=["answer"]
answer_d4 = ...  # "a", "b", "c" or "d"

# %%
check("d4", answer_d4)

# %% cellView="form" tags=["solution"]
#@title Solution
# A soft prompt is m x d trainable embeddings acting only at the input. It can only *steer* what
# the frozen model already does in context, and in-context ability grows sharply with scale.
# Around 10B+ parameters prompt tuning closes the gap; at competition sizes (1-7B) use LoRA,
# which changes every attention projection. Lesson 03 measures this on a tiny encoder.
solution_d4 = "b"
check("d4", solution_d4)

# %% [markdown]
# ### Drill D5 ★★☆ · Diagnosing catastrophic forgetting
# You fully fine-tune an 8B model on 500 medical Q&A pairs. It now answers medical questions but
# has lost basic arithmetic. What happened? Answer with one letter, then name two fixes before
# you open the solution.

# %%
print(describe("d5"))

# %% tags=["answer"]
answer_d5 = ...  # "a", "b", "c" or "d"

# %%
check("d5", answer_d5)

# %% cellView="form" tags=["solution"]
#@title Solution
# Catastrophic forgetting: 500 narrow examples, every weight trainable, and the optimizer overwrote
# what encoded everything else. Fixes, cheapest first: LoRA (the base stays frozen; disable the
# adapter and the old model is back), a 5-10x lower learning rate, replay general data in every
# batch, and early stopping on a *general* eval, not only the medical loss. Lesson 09 measures each.
solution_d5 = "b"
check("d5", solution_d5)

# %% [markdown]
# ## Part 2 · Mixed review
#
# ### Drill 08a ★★☆ · Write the LoRA forward
# Write `lora_forward(x, W, A, B, scale)` for `x` of shape (..., d_in), the frozen `W`
# (d_out x d_in), `A` (r x d_in), `B` (d_out x r). It must return what peft's LoRA layer returns.
# The check runs it on random shapes and compares with `peft.tuners.lora.Linear` holding the same
# W, A, B.

# %% tags=["answer"]
def lora_forward(x, W, A, B, scale):
    raise NotImplementedError  # your code here


answer_08a = lora_forward

# %%
check("08a", answer_08a)

# %% cellView="form" tags=["solution"]
#@title Solution
# The frozen path plus the scaled low-rank path. Multiply x by A first: (x A^T) is only r wide,
# so the update costs r*(d_in + d_out) per token and never builds the d_out x d_in product B A.
def solution_lora_forward(x, W, A, B, scale):
    return x @ W.T + scale * ((x @ A.T) @ B.T)


solution_08a = solution_lora_forward
check("08a", solution_08a)

# %% [markdown]
# ### Drill 08b ★★☆ · Write the DPO loss
# Write `dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`: each argument
# but beta is a 1-D tensor of summed response log-probabilities, one per pair. Return the mean
# loss, a scalar tensor. The check compares it with the formula on random batches.

# %% tags=["answer"]
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    raise NotImplementedError  # your code here


answer_08b = dpo_loss

# %%
check("08b", answer_08b)

# %% cellView="form" tags=["solution"]
#@title Solution
# The implicit reward of an answer is beta * (log pi - log pi_ref). The loss is the logistic loss
# of the chosen-minus-rejected reward difference. F.logsigmoid(z) is log(sigmoid(z)) without
# overflow or log(0) for large |z|.
import torch.nn.functional as F


def solution_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


solution_08b = solution_dpo_loss
check("08b", solution_08b)

# %% [markdown]
# ### Drill 08c ★☆☆ · Tokens per optimizer step
# Two GPUs under DDP, a per-device batch of 4 sequences, `grad_accum=8`, sequences of 512 tokens.
# How many tokens does one optimizer step learn from? Answer with a number.

# %% tags=["answer"]
answer_08c = ...  # your answer

# %%
check("08c", answer_08c)

# %% cellView="form" tags=["solution"]
#@title Solution
# Each GPU accumulates 8 micro-batches of 4 before the step, and DDP averages the gradients of
# both GPUs: 4 x 8 x 2 = 64 sequences, x 512 tokens each.
solution_08c = 4 * 8 * 2 * 512
check("08c", solution_08c)

# %% [markdown]
# ### Drill 08d ★★☆ · What NF4 really costs
# NF4 stores a 4-bit code per weight and one fp32 `absmax` scale per block of 64 weights. Without
# double quantization, how many bits does each parameter cost, scales included?

# %% tags=["answer"]
answer_08d = ...  # bits per parameter

# %%
check("08d", answer_08d)

# %% cellView="form" tags=["solution"]
#@title Solution
# 4 bits for the code, plus 32 bits of absmax shared by 64 weights: 32 / 64 = 0.5 bit each.
# Double quantization stores those scales in 8 bits (plus one fp32 per 256 scales): about
# 8/64 + 32/(64*256) = 0.127 bit, so ~4.127 bits per parameter in all.
solution_08d = 4 + 32 / cfg.blocksize
check("08d", solution_08d)

# %% [markdown]
# Measured on bitsandbytes' own quantizer: count the bytes it stores for a 1024 x 1024 weight,
# with and without double quantization (`compress_statistics`).

# %%
import bitsandbytes.functional as bnbf

w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(cfg.seed))
for double in (False, True):
    packed, state = bnbf.quantize_4bit(w, blocksize=cfg.blocksize, quant_type="nf4", compress_statistics=double)
    stored = packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size()
    if double:
        stored += state.state2.absmax.numel() * 4 + state.offset.numel() * 4
    bits = 8 * stored / w.numel()
    print(f"double quantization {'on ' if double else 'off'}: {bits:.3f} bits per parameter")
    assert abs(bits - (4.127 if double else 4.5)) < 0.005

# %% [markdown]
# ### Drill 08e ★★★ · A NaN loss at step one
# An SFT run in fp32 with batch size 1 masks the prompt with -100 and truncates at `max_length`.
# The loss is NaN at the very first step. Why? Answer with one letter.

# %%
print(describe("08e"))

# %% tags=["answer"]
answer_08e = ...  # "a", "b", "c" or "d"

# %%
check("08e", answer_08e)

# %% cellView="form" tags=["solution"]
#@title Solution
# If the prompt alone fills max_length, truncation cuts off every response token and every label
# is -100. Cross-entropy with mean reduction then divides 0 by 0 tokens: NaN, before any update.
# Truncate the prompt instead of the response, or drop such examples (ftlab.sft refuses them).
solution_08e = "c"
check("08e", solution_08e)

# %%
labels = torch.full((1, 8), -100)  # every label masked
loss = F.cross_entropy(torch.randn(1, 8, 32).transpose(1, 2), labels, ignore_index=-100)
print(f"cross-entropy with every label masked: {loss.item()}")
assert torch.isnan(loss)

# %% [markdown]
# ## Your scoreboard
# Your own answers (the `answer_...` variables), graded again. The solution cells do not count:
# they store theirs in `solution_...`.

# %%
results = scoreboard(globals(), lesson="08_drills")
_ = headline(f"{len(results)} drills in lesson 08 ({sum(r.passed for r in results)} answered right in this run); "
             "every worked solution passes")

# %% [markdown]
# ## Summary
# - **D1**: LoRA adds r(d + k) parameters per linear: 131,072 for 4096 x 4096 at r = 16, 0.78%.
# - **D2**: full FT in fp16 with Adam is 12 bytes per parameter (84 GB for 7B, 112 GB with fp32
#   master weights); QLoRA's 4-bit base is 3.5 GB, and only the adapter carries optimizer state.
# - **D3**: the partition function cancels in a preference pair, so DPO is a classification loss
#   on log-ratios; no reward model is fit.
# - **D4**: prompt tuning needs a base with strong in-context ability (~10B+); below that, LoRA.
# - **D5**: forgetting is fixed with LoRA, a lower learning rate, replay and early stopping on a
#   general eval.
# - The review: LoRA's forward equals peft's, the DPO loss is one `logsigmoid`, tokens per step
#   multiply, NF4 costs 4.5 bits (4.127 with double quantization), and an all-masked example is NaN.
#
# **Try next:** grade a whole folder of your notebooks in strict mode, where anything but a pass
# fails: `FTLAB_DRILLS=strict pytest --nbmake notebooks/` (see the README). Then change `cfg.r` or
# `cfg.blocksize` and predict each demonstration's number before you run it.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
