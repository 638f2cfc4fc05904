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
# # 02 · LoRA from scratch, proven equal to peft
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/02_lora_from_scratch.ipynb)
#
# **What you will learn**
# - why a low-rank update is enough, in numbers: r(d + k) trainable parameters instead of d·k;
# - how a LoRA layer works, built step by step: a frozen weight, two thin factors `A` and `B`,
#   a scale `alpha / r`; why it changes nothing at the start, and why merging it costs nothing
#   at inference;
# - how to put LoRA into a pretrained language model, train it with `ftlab.train`, and prove that
#   your hand-written LoRA gives the *same logits* as peft, the library you use in a competition;
# - what the trained update looks like inside (its singular values), and how to choose `r` and
#   `alpha`.
#
# You write `MyLoRALinear` and `my_inject_lora` here, in the lesson's cells; `ftlab/lora.py` holds
# the tested copy the rest of the course imports. In the tiny profile the whole notebook runs in
# well under a minute on a CPU.

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

from ftlab.drills import check  # grades a drill: pass, a hint, or "not attempted"
from ftlab.runtime import headline, profile, report, seed_everything

env = report()  # versions, device, GPU, profile: paste this when you ask for help

# %% [markdown]
# ## Config

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0                # same adapter init and same data order on every run
    r: int = 8                   # LoRA rank: the update B @ A has at most r directions
    alpha: float = 16            # the update is scaled by alpha / r (alpha = 2r keeps the scale at 2)
    dropout: float = 0.0         # dropout on the LoRA input only (0.05 is common on big data)
    target_names: tuple = ("q_proj", "v_proj")  # which linear layers get an adapter
    num_steps: int = 80          # optimizer steps of the short LoRA run
    batch_size: int = 16         # examples per micro-batch
    grad_accum: int = 1          # effective batch = batch_size * grad_accum
    lr: float = 2e-3             # LoRA takes a higher lr than full fine-tuning (only a few params move)
    max_length: int = 64         # tokens per example, prompt + answer
    eval_kind: str = "fact"      # which held-out instructions to score
    eval_size: int = 40          # held-out instructions scored before and after
    exact_match: bool = True     # also score exact match: one right sentence per question, as in the micro-world
    toy_steps: int = 100         # Adam steps of the toy regression in section 2


cfg = Config()
if profile() == "full":  # TinyLlama-1.1B on a T4/L4: fewer, bigger steps, a smaller lr
    # Alpaca's answers are paragraphs, never matched word for word: the held-out answer loss measures the run
    cfg = Config(r=16, alpha=32, num_steps=40, batch_size=4, grad_accum=4, lr=2e-4, max_length=256,
                 eval_kind="alpaca", eval_size=16, exact_match=False)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. The low-rank idea, in numbers
# Fine-tuning changes a pretrained weight `W` (d x k) into `W + ΔW`. Full fine-tuning learns all
# d·k numbers of ΔW. LoRA bets that the change a task needs is **low-rank**: a few directions do
# the work. So it writes ΔW as a product of two thin matrices,
#
# $$\Delta W = \tfrac{\alpha}{r}\, B A, \qquad B \in \mathbb{R}^{d \times r},\; A \in \mathbb{R}^{r \times k},$$
#
# and trains only `A` and `B`: **r(d + k)** numbers instead of **d·k**. For a 4096 x 4096
# projection of a 7B model and r = 16 (the seed's drill D1), that is 16 · 8192 = 131,072 instead of
# 16.8 million: 0.78%.

# %%
import torch

from ftlab.lora import lora_params

d, k = 4096, 4096
print(f"{'r':>4} {'LoRA params':>12} {'full params':>12} {'share':>7}")
for r in (1, 4, 16, 64, 256):
    print(f"{r:>4} {lora_params(d, k, r):>12,} {d * k:>12,} {lora_params(d, k, r) / (d * k):>7.2%}")
assert lora_params(4096, 4096, 16) == 131_072  # D1

# %% [markdown]
# A product `B @ A` can never have rank above r, however large d and k are:

# %%
B, A = torch.randn(512, 16), torch.randn(16, 256)
print(f"B @ A is {tuple((B @ A).shape)} with rank {torch.linalg.matrix_rank(B @ A).item()} "
      f"(a random 512 x 256 matrix has rank {torch.linalg.matrix_rank(torch.randn(512, 256)).item()})")

# %% [markdown]
# ## 2. LoRALinear, step by step
# A LoRA layer wraps a pretrained `nn.Linear` (weight `W`, d_out x d_in, and a bias `b`) and does
# four things:
#
# 1. **freezes** the base layer: `W` and `b` get no gradient;
# 2. adds `A` (r x d_in), drawn the way `nn.Linear` (and peft) draw a weight, Kaiming-uniform;
# 3. adds `B` (d_out x r), all **zeros**;
# 4. in `forward`, returns `x Wᵀ + b + scale · dropout(x) Aᵀ Bᵀ` with `scale = alpha / r`. It
#    multiplies by `A` first: the intermediate is only r wide, and the d_out x d_in product `B A`
#    is never built. Dropout acts on the input of the LoRA path only; the frozen path sees `x`.
#
# After training, **merge** folds the update into the weight, `W' = W + scale · B A`, and gives
# back a plain `nn.Linear`. Write both formulas first; the class is then a few lines around them.

# %% [markdown]
# ### Drill 02a ★★☆ · Write the forward
# Write `lora_linear_forward(x, W, A, B, r, alpha, dropout=None)` for `x` of shape (..., d_in),
# the frozen `W` (d_out x d_in, no bias here), `A` (r x d_in) and `B` (d_out x r). `dropout` is
# `None` (no dropout) or a function to apply. The check runs it on random shapes, with and without
# a dropout mask, against peft's `lora.Linear` holding the same W, A, B.

# %% tags=["answer"]
def lora_linear_forward(x, W, A, B, r, alpha, dropout=None):
    raise NotImplementedError  # your code here


answer_02a = lora_linear_forward

# %%
check("02a", answer_02a)

# %% cellView="form" tags=["solution"]
#@title Solution
# The frozen path sees x; the low-rank path sees dropout(x), goes down to r through A, back up
# through B, and is scaled by alpha / r (a larger alpha, a larger update).
def solution_lora_linear_forward(x, W, A, B, r, alpha, dropout=None):
    h = x if dropout is None else dropout(x)              # (..., d_in)
    return x @ W.T + (alpha / r) * ((h @ A.T) @ B.T)      # (..., d_out)


solution_02a = solution_lora_linear_forward
check("02a", solution_02a)

# %% [markdown]
# ### Drill 02b ★★☆ · Write the merge
# Write `merge_weight(W, A, B, r, alpha)` for the same shapes. Return the merged weight
# (d_out x d_in). The check compares it with peft's `lora.Linear.merge()` holding the same W, A, B.

# %% tags=["answer"]
def merge_weight(W, A, B, r, alpha):
    raise NotImplementedError  # your code here


answer_02b = merge_weight

# %%
check("02b", answer_02b)

# %% cellView="form" tags=["solution"]
#@title Solution
# B @ A is (d_out x r)(r x d_in) = d_out x d_in, the shape of W. Only the update is scaled.
def solution_merge_weight(W, A, B, r, alpha):
    return W + (alpha / r) * (B @ A)


solution_02b = solution_merge_weight
check("02b", solution_02b)

# %% [markdown]
# ### The layer
# The two formulas in a module. It is called `MyLoRALinear` so as not to hide ftlab's
# `LoRALinear`, the tested copy the rest of the course imports (the same lines, plus checks of
# the arguments and care for half precision).

# %%
import copy
import math

from torch import nn


class MyLoRALinear(nn.Module):
    """base(x) + (alpha / r) * dropout(x) A^T B^T: a frozen linear layer plus a trainable rank-r update."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base.requires_grad_(False)               # W (d_out, d_in) and b: frozen
        self.scale = alpha / r
        device = base.weight.device
        self.A = nn.Parameter(torch.empty(r, base.in_features, device=device))    # (r, d_in)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))     # nn.Linear's own init, as peft's lora_A
        self.B = nn.Parameter(torch.zeros(base.out_features, r, device=device))   # (d_out, r): ΔW = 0
        self.dropout = nn.Dropout(dropout)                   # on the LoRA input only

    def forward(self, x):                                    # x (..., d_in)
        h = self.dropout(x) @ self.A.T                       # (..., r): the bottleneck
        return self.base(x) + self.scale * (h @ self.B.T)    # (..., d_out)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain nn.Linear with weight W + scale * B A (d_out, d_in): zero added latency."""
        merged = copy.deepcopy(self.base)                    # same shape, same bias, frozen
        merged.weight += self.scale * (self.B @ self.A)
        return merged

# %% [markdown]
# **Check.** At init `B` is zero, so the update is zero and the wrapped layer computes *exactly*
# what the pretrained one did: training starts from the pretrained model, not a perturbed one.
# Then the same "pretrained" layer under three wrappers, `MyLoRALinear`, ftlab's `LoRALinear` and
# peft's `lora.Linear`, with the same `A` (ours and ftlab's draw the same one under one seed) and
# a nonzero `B` (with `B = 0` any forward would pass): they must agree in training mode with
# dropout (one seed, one mask) and after merging.

# %%
from peft import LoraConfig
from peft.tuners.lora import Linear as PeftLoraLinear

from ftlab.lora import LoRALinear

torch.manual_seed(cfg.seed)
d_in, d_out, r, alpha, p = 64, 32, 4, 8, 0.1
pretrained, x = nn.Linear(d_in, d_out), torch.randn(10, d_in)  # a "pretrained" layer with a bias; a batch
torch.manual_seed(cfg.seed)
mine = MyLoRALinear(copy.deepcopy(pretrained), r, alpha, dropout=p)
torch.manual_seed(cfg.seed)
ours = LoRALinear(copy.deepcopy(pretrained), r=r, alpha=alpha, dropout=p)
torch.testing.assert_close(mine.A, ours.A, rtol=0, atol=0)  # the same Kaiming-uniform draw
same_at_init = torch.equal(mine(x), pretrained(x))
print(f"at init, MyLoRALinear returns the pretrained layer's output bit for bit: {same_at_init}")
assert same_at_init, "with B = 0 the LoRA layer must return the base output exactly"
theirs = PeftLoraLinear(copy.deepcopy(pretrained), "default", LoraConfig(r=r, lora_alpha=alpha, lora_dropout=p),
                        r=r, lora_alpha=alpha)
with torch.no_grad():
    mine.B.normal_()  # a trained-looking update
    for A, B in ((ours.A, ours.B), (theirs.lora_A["default"].weight, theirs.lora_B["default"].weight)):
        A.copy_(mine.A)
        B.copy_(mine.B)
outputs = {}
for name, layer in (("mine", mine), ("ftlab", ours), ("peft", theirs)):
    torch.manual_seed(1)  # one seed, so one dropout mask for all three
    outputs[name] = layer(x)  # (10, d_out)
theirs.merge()  # peft merges in place, into its copy of the base
merged = {"mine": mine.merge().weight, "ftlab": ours.merge().weight, "peft": theirs.get_base_layer().weight}
for name in ("ftlab", "peft"):
    print(f"MyLoRALinear vs {name:5}: forward max |diff| {(outputs['mine'] - outputs[name]).abs().max():.1e}, "
          f"merged weight max |diff| {(merged['mine'] - merged[name]).abs().max():.1e}")
    torch.testing.assert_close(outputs["mine"], outputs[name])
    torch.testing.assert_close(merged["mine"], merged[name])
with torch.no_grad():
    assert not torch.allclose(outputs["mine"], mine.eval()(x)), "dropout was on, so the check saw it"

# %% [markdown]
# ### A toy task: the adapter learns, the base stays frozen
# The task: a target layer that differs from the pretrained one by a **rank-2** change (the
# low-rank bet, made true on purpose). We train only `A` and `B` with Adam on the squared error,
# then check two things: the loss went to ~0, and not one number of `W` moved.
# We also try ranks 1, 2 and 4: a rank-1 adapter *cannot* represent a rank-2 change.

# %%
true_delta = 0.5 * torch.randn(d_out, 2) @ torch.randn(2, d_in) / d_in**0.5  # the task: rank 2
x_train = torch.randn(256, d_in)
with torch.no_grad():
    y_train = pretrained(x_train) + x_train @ true_delta.T
w_before = pretrained.weight.detach().clone()


def fit(layer, steps=cfg.toy_steps, lr=2e-2):
    """Adam on the mean squared error; returns the losses."""
    opt = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = (layer(x_train) - y_train).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


toy, toy_losses, toy_errors = {}, {}, {}
for r in (1, 2, 4):
    torch.manual_seed(cfg.seed)
    toy[r] = MyLoRALinear(pretrained, r=r, alpha=2 * r)  # the same frozen layer under each adapter
    toy_losses[r] = fit(toy[r])
    delta = toy[r].scale * toy[r].B @ toy[r].A  # ΔW = scale · B A, (d_out, d_in)
    toy_errors[r] = ((delta - true_delta).norm() / true_delta.norm()).item()
    print(f"r = {r}: loss {toy_losses[r][0]:.3f} -> {toy_losses[r][-1]:.1e}, "
          f"|ΔW - true ΔW| / |true ΔW| = {toy_errors[r]:.1e}")

base_moved = (pretrained.weight - w_before).abs().max().item()
print(f"largest change of any base weight: {base_moved}; base gradient: {pretrained.weight.grad}")
assert base_moved == 0.0 and pretrained.weight.grad is None, "the base must stay frozen"
assert toy_losses[4][-1] < toy_losses[4][0] / 1000 and toy_errors[4] < 2e-2, "the adapter should learn the change"
assert toy_errors[1] > 0.2, "rank 1 cannot represent a rank-2 change"

# %% [markdown]
# Rank 2 and above recover the change almost exactly; rank 1 stalls. That is the whole idea: if
# the change a task needs has rank ≤ r, a rank-r adapter can learn it.
#
# ### Merge: zero added latency
# After training, fold the update into the weight: `W' = W + scale · B A`. `merge()` returns a
# plain `nn.Linear` of the original shape, so inference costs exactly what the pretrained layer
# cost. Unmerged, LoRA runs two extra small matmuls per layer (and on a GPU, extra kernel launches).

# %%
import time

trained = toy[4]
merged = trained.merge()
print(merged)
max_diff = (merged(x_train) - trained(x_train)).abs().max().item()
print(f"merged vs LoRA output: max |diff| = {max_diff:.1e}")
assert type(merged) is nn.Linear and merged.weight.shape == pretrained.weight.shape
assert max_diff < 1e-5


def ms_per_call(layers: dict, x, repeats=5, calls=10) -> dict:
    """Median ms per forward pass of each layer; the layers take turns, so a busy CPU slows all alike."""
    times = {name: [] for name in layers}
    with torch.no_grad():
        for _ in range(repeats):
            for name, layer in layers.items():
                layer(x)  # warm-up
                start = time.perf_counter()
                for _ in range(calls):
                    layer(x)
                times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


big = nn.Linear(1024, 1024)  # a layer big enough to time
big_lora = MyLoRALinear(big, r=16, alpha=32)
ms = ms_per_call({"base": big, "LoRA unmerged": big_lora, "merged": big_lora.merge()}, torch.randn(128, 1024))
print("1024x1024, batch 128: " + ", ".join(f"{name} {t:.3f} ms ({t / ms['base']:.2f}x)" for name, t in ms.items()))

# %% [markdown]
# (Timings on a shared CPU are noisy; the merged layer *is* an `nn.Linear` of the same shape, so
# it does the same work as the base. `bench/lora_speed.py` measures this carefully.)
#
# ## 3. LoRA in a pretrained language model
# Model surgery: walk the model, replace every linear layer whose name matches with a LoRA layer,
# and freeze everything else. Names differ between architectures, so first ask the model what its
# linear layers are called. ftlab's `inject_lora(model, target_names, r, alpha)` does the surgery;
# given a wrong name, it raises an error that tells you:

# %%
from ftlab.lora import inject_lora, linear_layer_names, lora_layers
from ftlab.models import count_parameters, load_causal_lm

model, tokenizer = load_causal_lm()
n_params = count_parameters(model)
print(f"{type(model).__name__}: {n_params:,} parameters; linear layers: {linear_layer_names(model)}")
try:
    inject_lora(model, target_names=("query", "value"))  # BERT's names, not Llama's
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# Llama calls them `q_proj` and `v_proj` (DistilBERT: `q_lin`, `v_lin`). Adapting only these two
# is the original LoRA paper's choice; this lesson uses it to keep the first example small. It is
# not the best use of a budget. Lesson 03 measures why: a smaller rank on every linear layer,
# with fewer trainable parameters, matches full fine-tuning on every seed, while more rank on q
# and v alone swings with the seed and does not help, because the errors left need the other
# layers (the keys, the attention output, the feed-forward) to change too. Lesson 04 puts
# QLoRA's adapters on every linear layer for the same reason.
#
# The surgery is one screen: list the matching `nn.Linear` layers, freeze the whole model, and
# swap each for a LoRA layer, whose fresh `A` and `B` are the only trainable parameters.

# %%
def my_inject_lora(model: nn.Module, target_names, r: int, alpha: float, dropout: float = 0.0) -> nn.Module:
    """Swap every nn.Linear whose last name is in target_names for a MyLoRALinear; freeze the rest."""
    model.requires_grad_(False)                      # every pretrained weight: frozen
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in target_names]
    if not targets:
        raise ValueError(f"no nn.Linear is named {list(target_names)}: see linear_layer_names(model)")
    for name, linear in targets:                     # listed first: never edit a tree while walking it
        parent, _, child = name.rpartition(".")      # "model.layers.0.self_attn", "q_proj"
        setattr(model.get_submodule(parent), child, MyLoRALinear(linear, r, alpha, dropout))
    return model                                     # trainable: the new A and B only


# The check below runs on the tiny model in both profiles (a second anywhere), at this rank:
tiny_lm = load_causal_lm(profile="tiny")[0]
check_r, check_alpha, check_targets = 8, 16, ["q_proj", "v_proj"]
q_shape, v_shape = (tuple(tiny_lm.model.layers[0].self_attn.get_submodule(t).weight.shape) for t in check_targets)
print(f"tiny model: {len(tiny_lm.model.layers)} blocks, each with q_proj {q_shape} and v_proj {v_shape} "
      f"(d_out, d_in); LoRA r = {check_r} on both")

# %% [markdown]
# ### Drill 02c ★☆☆ · Predict, then run
# How many trainable parameters will peft's `print_trainable_parameters()` show for LoRA with that
# rank on `q_proj` and `v_proj` of the tiny model? Work it out from the shapes above.

# %% tags=["answer"]
answer_02c = ...  # a number

# %%
check("02c", answer_02c)

# %% cellView="form" tags=["solution"]
#@title Solution
# r (d_in + d_out) for each wrapped layer, q_proj and v_proj in every block; everything else is frozen.
solution_02c = len(tiny_lm.model.layers) * check_r * (sum(q_shape) + sum(v_shape))
check("02c", solution_02c)

# %% [markdown]
# **Check.** The same surgery three ways on fresh copies of the tiny model: `my_inject_lora`,
# ftlab's `inject_lora` and peft's `get_peft_model`. Each layer of the three gets the same `A`
# and a nonzero `B`; the trainable counts and the logits must agree.

# %%
from peft import get_peft_model

torch.manual_seed(cfg.seed)
mine_lm = my_inject_lora(tiny_lm, check_targets, check_r, check_alpha)
ours_lm = inject_lora(load_causal_lm(profile="tiny")[0], check_targets, r=check_r, alpha=check_alpha)
peft_lm = get_peft_model(load_causal_lm(profile="tiny")[0],
                         LoraConfig(r=check_r, lora_alpha=check_alpha, target_modules=check_targets))
peft_lm.print_trainable_parameters()
counts = {"mine": count_parameters(mine_lm, trainable_only=True),
          "ftlab": count_parameters(ours_lm, trainable_only=True), "peft": peft_lm.get_nb_trainable_parameters()[0]}
print("trainable:", counts)
assert len(set(counts.values())) == 1
input_ids = torch.randint(0, tiny_lm.config.vocab_size, (2, 16), device=tiny_lm.device)  # (batch, tokens)
with torch.no_grad():
    logits_base = peft_lm(input_ids=input_ids).logits  # B = 0 so far: the pretrained model's logits
    for name, m in mine_lm.named_modules():
        if isinstance(m, MyLoRALinear):
            m.B.normal_(std=0.1)  # a trained-looking update
            peft_layer = peft_lm.base_model.model.get_submodule(name)
            for A, B in ((ours_lm.get_submodule(name).A, ours_lm.get_submodule(name).B),
                         (peft_layer.lora_A["default"].weight, peft_layer.lora_B["default"].weight)):
                A.copy_(m.A)
                B.copy_(m.B)
    logits = {name: lm.eval()(input_ids=input_ids).logits for name, lm in
              (("mine", mine_lm), ("ftlab", ours_lm), ("peft", peft_lm))}  # (batch, tokens, vocab)
print(f"the update moved the logits by up to {(logits['mine'] - logits_base).abs().max():.2f}")
assert (logits["mine"] - logits_base).abs().max() > 0.1, "B != 0 must change the logits, or the check proves nothing"
for name in ("ftlab", "peft"):
    print(f"my_inject_lora vs {name:5}: max |logit diff| {(logits['mine'] - logits[name]).abs().max():.1e}")
    torch.testing.assert_close(logits["mine"], logits[name])

# %% [markdown]
# Now the lesson's model, with ftlab's `inject_lora` (the tested copy) and the config's targets:

# %%
seed_everything(cfg.seed)  # the same A on every run
model = inject_lora(model, cfg.target_names, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout)
layers = lora_layers(model)
shapes = [(m.out_features, m.in_features) for m in layers.values()]
trainable = count_parameters(model, trainable_only=True)
expected = sum(lora_params(d_out, d_in, cfg.r) for d_out, d_in in shapes)
print(model.model.layers[0].self_attn)
print(f"{len(layers)} LoRA layers, shapes (d_out, d_in) {sorted(set(shapes))}")
print(f"trainable: {trainable:,} = sum of r(d_in + d_out) = {expected:,}, "
      f"{trainable / n_params:.2%} of the {n_params:,} frozen parameters")
assert trainable == expected  # a re-run cell never stacks LoRA on LoRA: inject_lora leaves them and warns

# %% [markdown]
# ### Train briefly
# The same task as lesson 00: answer questions in the chat format. Lesson 00 trained every block
# of the tiny LM; here only the LoRA factors train, 1.6% of the parameters in the tiny profile.
# The examples come from `ftlab.sft`: chat prompt + answer + EOS, padded, with the prompt and the
# padding labelled -100 so that only the answer is trained (lesson 05 shows why that matters).
# As in lesson 00, the held-out **answer loss** (nats per token of the wanted answers) measures
# the run at any scale; exact match only where answers are one right sentence (the micro-world).

# %%
from ftlab.data import load_instructions
from ftlab.evals import exact_match, response_loss
from ftlab.sft import SFTCollator, tokenize_dataset
from ftlab.train import TrainConfig, causal_lm_loss, train

train_ds = tokenize_dataset(load_instructions("train"), tokenizer, max_length=cfg.max_length)
collate = SFTCollator(tokenizer=tokenizer)  # a list of examples -> padded (B, L) tensors
test_ds = load_instructions("test").filter(lambda row: row["kind"] == cfg.eval_kind)
test_rows = list(test_ds.select(range(cfg.eval_size)))
# B = 0: still the pretrained model
loss_before = response_loss(model, tokenizer, test_rows, max_length=cfg.max_length)
em_before = exact_match(model, tokenizer, test_rows) if cfg.exact_match else None
history = train(model, train_ds,
                TrainConfig(lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size,
                            grad_accum=cfg.grad_accum, seed=cfg.seed),
                loss_fn=causal_lm_loss, collate_fn=collate)
loss_after = response_loss(model, tokenizer, test_rows, max_length=cfg.max_length)
em_after = exact_match(model, tokenizer, test_rows) if cfg.exact_match else None
print(f"{len(test_rows)} held-out questions: answer loss {loss_before:.2f} -> {loss_after:.2f} nats/token"
      + (f", exact match {em_before:.0%} -> {em_after:.0%}" if cfg.exact_match else ""))
if profile() == "tiny":
    assert loss_after <= loss_before - 0.5, "LoRA on q/v should make the wanted answers far more likely"
    assert em_after >= em_before + 0.4, "LoRA on q/v should teach the answer format"

# %%
from ftlab.plots import plot_history

fig = plot_history(history)  # loss per optimizer step
fig

# %% [markdown]
# ## 4. The same files as peft
# Section 3 proved our surgery equal to peft's on fresh factors; now the trained ones, through
# the files. `save_adapter` writes peft's format: `adapter_config.json` and
# `adapter_model.safetensors` with peft's key names (`lora_A` r x d_in, `lora_B` d_out x r).
# peft loads it with `PeftModel.from_pretrained` and must give the **same logits** as our trained
# model; `load_adapter` loads an adapter peft saved (or ours) into a plain model. An adapter is
# tiny next to the model it adapts.

# %%
import json
from pathlib import Path

from peft import PeftModel

from ftlab.lora import load_adapter, save_adapter

model.eval()
test_batch = collate(tokenize_dataset(test_rows[:8], tokenizer, max_length=cfg.max_length))
batch = {k: v.to(model.device) for k, v in test_batch.items() if k != "labels"}


def max_logit_diff(a, b):
    with torch.no_grad():
        return (a(**batch).logits.float() - b(**batch).logits.float()).abs().max().item()


adapter_dir = save_adapter(model, Path(tempfile.mkdtemp(prefix="ftlab_02_")) / "lora_adapter")
config = json.loads((adapter_dir / "adapter_config.json").read_text())
print({key: config[key] for key in ("peft_type", "r", "lora_alpha", "target_modules")})
for file in sorted(adapter_dir.iterdir()):
    print(f"  {file.name:28} {file.stat().st_size / 1e3:8.1f} kB")
print(f"  (the whole model in fp32: {n_params * 4 / 1e6:,.1f} MB)")

from_file = PeftModel.from_pretrained(load_causal_lm()[0], adapter_dir).eval()
back = load_adapter(load_causal_lm()[0], adapter_dir).eval()
peft_diff, back_diff = max_logit_diff(model, from_file), max_logit_diff(model, back)
print(f"our trained model vs peft loading our file: max |logit diff| = {peft_diff:.1e}; "
      f"vs ftlab loading it: {back_diff:.1e}")
if profile() == "tiny":
    assert max(peft_diff, back_diff) <= 1e-5, "the same factors must give the same logits"
del from_file, back  # free the copies (on a GPU, 2 GB each at full scale)

# %% [markdown]
# ## 5. Inside ΔW: the singular values
# Each layer's update is `ΔW = scale · B A`. Its singular values say how many directions it
# really uses. It can have at most r nonzero ones (by construction), and after a short run most
# of its size sits in the first one or two: the change the task needed really is low-rank.

# %%
from ftlab.plots import plot_singular_values

with torch.no_grad():
    spectra = {name: torch.linalg.svdvals(m.delta_weight().float()).cpu() for name, m in layers.items()}
energy = torch.stack([s[:cfg.r].square() / s.square().sum() for s in spectra.values()])  # (layers, r)
print(f"share of ||ΔW||² in the top singular value: {energy[:, 0].mean():.0%} on average over "
      f"{len(spectra)} layers; top 2: {energy[:, :2].sum(1).mean():.0%}; top r = {cfg.r}: {energy.sum(1).mean():.4%}")
tail = max((s[cfg.r:].max() / s[0]).item() for s in spectra.values())
print(f"largest singular value beyond r, relative to the first: {tail:.1e}")
assert tail < 1e-4, "a rank-r update has at most r nonzero singular values"
shown = dict(list(spectra.items())[:: max(1, len(spectra) // 8)])  # at most ~8 lines
fig = plot_singular_values({name.replace("model.layers.", "L").replace(".self_attn", ""): s
                            for name, s in shown.items()}, r=cfg.r)
fig

# %% [markdown]
# ## 6. Choosing r and alpha
# - **r** sets the capacity and the cost: r(d_in + d_out) parameters per layer. Bigger is not
#   always better: the update above already puts most of its weight in a couple of directions.
# - **alpha** sets the step size of the update through `scale = alpha / r`. A common rule is
#   alpha = 2r (scale 2). With plain LoRA, raising r at a fixed alpha *shrinks* the scale as 1/r,
#   so large ranks learn slowly; **rsLoRA** (`use_rslora=True` in peft, `rslora=True` here) uses
#   alpha / √r instead, which keeps the update's size stable as r grows.
#
# The table comes from a pure function, `ftlab.lora.rank_alpha_summary`; the explorer below is a
# view over it. "Energy kept" is how much of the trained update in the first LoRA layer a rank-r
# truncation would keep (the best any rank-r matrix can do).

# %%
from ftlab.lora import rank_alpha_summary
from ftlab.widgets import rank_alpha_explorer

first_spectrum = next(iter(spectra.values()))
print(f"{'r':>4} {'alpha':>6} {'scale':>7} {'rsLoRA scale':>13} {'trainable':>10} {'share':>7} {'energy kept':>12}")
for r in (1, 2, 4, 8, 16, 32):
    s = rank_alpha_summary(r, 2 * r, shapes, n_params, singular_values=first_spectrum)
    print(f"{r:>4} {s['alpha']:>6} {s['scale']:>7.3g} {s['scale_rslora']:>13.3g} {s['trainable_params']:>10,} "
          f"{s['trainable_fraction']:>7.2%} {s['energy_kept']:>12.1%}")
rank_alpha_explorer(shapes, n_params, singular_values=first_spectrum, r=cfg.r, alpha=cfg.alpha)

# %% [markdown]
# ## 7. Merge for inference
# `merge_lora(model)` swaps every `LoRALinear` for its merged `nn.Linear`: the model is the
# original architecture again, with the same outputs and the same parameter count. This is peft's
# `merge_and_unload()`.

# %%
from ftlab.lora import merge_lora

with torch.no_grad():
    logits_lora = model(**batch).logits
    merge_lora(model)
    merge_diff = (model(**batch).logits - logits_lora).abs().max().item()
print(model.model.layers[0].self_attn.q_proj)
print(f"after merging: {count_parameters(model):,} parameters (was {n_params:,}), "
      f"max |logit diff| {merge_diff:.1e}")
assert count_parameters(model) == n_params and not lora_layers(model)
if profile() == "tiny":  # float32 rounding only: (W + ΔW)x adds in another order than Wx + ΔWx
    assert merge_diff <= 1e-4

# %%
_ = headline(f"{profile()}: LoRA r={cfg.r} on {'+'.join(cfg.target_names)}, {trainable:,} trainable params "
             f"= {trainable / n_params:.1%}, held-out answer loss {loss_before:.2f} -> {loss_after:.2f} nats/token"
             + (f", exact match {em_before:.0%} -> {em_after:.0%}" if cfg.exact_match else "")
             + f", same logits as peft (max diff {peft_diff:.0e}; {history.seconds:.0f} s)")

# %% [markdown]
# ## Drills
# Each check answers at once: pass, a hint, or "not attempted". Open a solution only after trying.

# %% [markdown]
# ### Drill 02d ★☆☆ · The rsLoRA scale
# alpha = 16, r = 64, `use_rslora=True`. What number multiplies `B @ A`?

# %% tags=["answer"]
answer_02d = ...  # a number

# %%
check("02d", answer_02d)

# %% cellView="form" tags=["solution"]
#@title Solution
# rsLoRA scales by alpha / sqrt(r) (plain LoRA: alpha / r = 0.25).
solution_02d = 16 / 64**0.5
check("02d", solution_02d)

# %% [markdown]
# ### Drill 02e ★★☆ · Both factors at zero?
# LoRA starts `A` random and `B` at zero. You initialise **both** to zeros instead. What happens?
#
# - (a) It trains as usual: the output starts unchanged, which is all that matters.
# - (b) The output starts unchanged, but neither A nor B ever gets a nonzero gradient, so the adapter never learns.
# - (c) The loss is NaN at the first step.
# - (d) Only B learns, so the update is still low-rank and training works.
#
# Answer with a letter, e.g. `"a"`. (Try it: `fit` a `LoRALinear` after `layer.A.data.zero_()`.)

# %% tags=["answer"]
answer_02e = ...  # "a", "b", "c" or "d"

# %%
check("02e", answer_02e)

# %% cellView="form" tags=["solution"]
#@title Solution
# dL/dB = g^T (x A^T) is 0 when A = 0, and dL/dA = (g B)^T x is 0 when B = 0: stuck at a saddle.
solution_02e = "b"
check("02e", solution_02e)

# %% [markdown]
# ## Summary
# - LoRA trains ΔW = (alpha / r) · B A: r(d + k) numbers per layer instead of d·k (0.78% for
#   4096 x 4096 at r = 16). `B = 0` makes the start exactly the pretrained model.
# - The base never moves; a rank-r adapter learns any change of rank ≤ r (the toy), and merging
#   gives back a plain `nn.Linear`: zero added latency at inference.
# - On the tiny LM, LoRA on `q_proj` and `v_proj` (1.6% of the parameters) taught the answer
#   format (answer loss and exact match above). Your `MyLoRALinear` and `my_inject_lora` equal
#   ftlab's and peft's (forward, merge, trainable count, logits), and the trained adapter gives
#   the same logits in peft through peft's file format.
# - The trained update has at most r nonzero singular values, and most of its size in the first
#   few: pick r by budget, and alpha (or rsLoRA) for the scale.
#
# **Try next:** set `target_names` to all seven projections (`q_proj`, `k_proj`, `v_proj`,
# `o_proj`, `gate_proj`, `up_proj`, `down_proj`) and compare the answer loss and trainable share; try
# r = 1 and r = 32 with the explorer's numbers in mind. Drills 02a-02e; then lesson 03 compares
# LoRA with full fine-tuning, adapters, prompt tuning and IA3.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
