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
# # 07 · Memory budget: what fits on a T4 or an L4, before you run it
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/07_memory_budget.ipynb)
#
# **What you will learn**
# - the four parts of training memory (weights, gradients, optimizer state, activations), and
#   how many bytes each costs per parameter or per token;
# - how to predict them with `ftlab.memory.estimate` for full fine-tuning, LoRA and QLoRA, and
#   why the prediction can be trusted: it is checked against a real training step, part by part;
# - the seed's drill D2 (84 GB for full fine-tuning of 7B) worked out with the calculator, and
#   what a bare parameter count leaves out;
# - which 0.5B-8B models fit a T4, an L4 or an A100 with each method, and what gradient
#   checkpointing buys.
#
# The budgeted architectures (Llama-3.2-1B, Llama-3-8B...) are built from their published shapes:
# nothing downloads them. The measurements train one step of a real model: the micro-world's tiny
# LM on a CPU (well under a minute in all), TinyLlama-1.1B on the GPU in the full profile.

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

from ftlab.runtime import amp_dtype, device, headline, profile, report, seed_everything

env = report()  # versions, device, GPU, profile: paste this when you ask for help

# %% [markdown]
# ## Config
# Two kinds of numbers. The **measured** step runs on the model the profile loads (the tiny LM on
# a CPU, the 1.1B TinyLlama on a GPU). The **budgeted** model is only a shape: the calculator
# needs its sizes, not its weights, so it is the same in both profiles.

# %%
from dataclasses import dataclass, field

from ftlab.models import DEFAULT_CAUSAL_LM, tiny_lm_path

HALF = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[str(amp_dtype()).removeprefix("torch.")]


@dataclass
class Config:
    seed: int = 0                        # same random token ids in the measured step on every run
    lm_path: str = str(tiny_lm_path())   # the model measured: a folder or a hub id
    batch_size: int = 8                  # sequences in the measured training step
    seq_len: int = 64                    # tokens per sequence in the measured step
    r: int = 16                          # LoRA rank everywhere in this lesson
    # measured configurations: (method, precision, gradient checkpointing, optimizer, LoRA targets)
    measured: list = field(default_factory=lambda: [
        ("full", "fp32", False, "adamw", ()),
        ("full", "fp32", True, "adamw", ()),
        ("lora", "fp32", False, "adamw", ("q_proj", "v_proj")),
        ("qlora", "bf16", True, "adamw8bit", "all-linear"),
    ])
    budget_model: str = "Llama-3.2-1B"   # the architecture budgeted in sections 1 and 5 (shapes only)
    budget_batch: int = 4                # sequences per micro-batch in the budgets and the table
    budget_seq: int = 512                # tokens per sequence in the budgets and the table
    gpus: tuple = ("T4", "L4", "A100-40GB")  # cards in the "what fits where" table


cfg = Config()
if profile() == "full":  # measure the 1.1B model on the GPU, with what fits a T4 and an L4 (full FT of 1.1B does not)
    cfg = Config(lm_path=DEFAULT_CAUSAL_LM, batch_size=4, seq_len=512, measured=[
        ("lora", HALF, True, "adamw", "all-linear"),
        ("qlora", HALF, True, "adamw8bit", "all-linear")])
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. Where the memory goes: four parts
# Training holds four things on the GPU:
#
# | part | what it is | bytes |
# |---|---|---|
# | **weights** | every parameter of the model | 4 per parameter in fp32, 2 in bf16/fp16, ~0.52 in NF4 |
# | **gradients** | one per *trainable* parameter | the parameter's own dtype |
# | **optimizer state** | AdamW's two running moments per trainable parameter | 8 (two fp32), ~2 with 8-bit AdamW, 0 with plain SGD |
# | **activations** | what the forward pass saves for the backward pass | grows with batch x sequence length |
#
# Start with the model section 3 measures (`cfg.lm_path`: the micro-world's tiny LM, TinyLlama-1.1B
# in the full profile), fully fine-tuned in fp32 with AdamW at the measured batch. The calculator
# needs its shapes, not its weights: it is built on the `meta` device, which holds no memory.

# %%
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ftlab import memory
from ftlab.models import count_parameters

torch.set_num_threads(1)  # the step below is tiny: one thread is as fast, and shares the CPU
with torch.device("meta"):  # shapes only: nothing is loaded or allocated
    lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg.lm_path))
n_params = count_parameters(lm)
print(f"{n_params:,} parameters x 4 bytes = {4 * n_params / 2**20:,.2f} MiB of fp32 weights, as much again "
      f"for gradients, twice that for AdamW's two moments")
tiny_full = memory.estimate(lm, method="full", precision="fp32", optimizer="adamw",
                            batch_size=cfg.batch_size, seq_len=cfg.seq_len)
print(tiny_full.table())

# %% [markdown]
# In the tiny profile this model is all activations: its weights are small, and a vocabulary of
# 768 makes the logits cheap. A real model is the other way round. Take the shapes of Llama-3.2-1B from
# `memory.KNOWN_MODELS` (hidden 2048, 16 layers, 32 query heads sharing 8 key/value heads,
# vocabulary 128,256) and walk the parts one by one.
#
# **Weights** cost bytes-per-parameter times parameters. bf16 halves fp32; NF4 (lesson 04) stores
# 4 bits per weight plus ~0.13 bit of block scales, but only for the decoder's linear layers: the
# QLoRA recipe keeps the embedding (and the tied head) in fp32.

# %%
GiB = memory.GiB
config = memory.known_config(cfg.budget_model)
budget = dict(batch_size=cfg.budget_batch, seq_len=cfg.budget_seq, r=cfg.r, target_modules="all-linear")
print(f"{cfg.budget_model}: {memory.shape_from_config(config).n_params / 1e9:.3f}B parameters")
for label, kw in [("full, fp32", dict(method="full", precision="fp32")),
                  ("full, bf16", dict(method="full", precision="bf16")),
                  ("full, bf16 + fp32 master copy", dict(method="full", precision="bf16", master_weights=True)),
                  ("QLoRA: NF4 linears, fp32 embedding", dict(method="qlora", precision="bf16"))]:
    est = memory.estimate(config, **kw, **budget)
    print(f"  weights, {label:36} {est.weights / GiB:6.2f} GiB = {est.weights / est.n_params:5.2f} bytes/param")

# %% [markdown]
# **Gradients** exist only for what trains. Full fine-tuning trains all 1.24B parameters; LoRA with
# r = 16 on all seven projections of each layer trains r x (d_in + d_out) per projection, 11.3M in
# all (0.9%). **Optimizer state** follows the same count: AdamW keeps two fp32 moments (8 bytes),
# bitsandbytes' 8-bit AdamW two 8-bit ones with a scale per 256 (2.03 bytes), SGD none.

# %%
full_bf16 = memory.estimate(config, method="full", precision="bf16", **budget)
lora_bf16 = memory.estimate(config, method="lora", precision="bf16", **budget)
print(f"gradients: full {full_bf16.gradients / GiB:.2f} GiB ({full_bf16.trainable:,} trainable), "
      f"LoRA {lora_bf16.gradients / GiB:.3f} GiB ({lora_bf16.trainable:,} trainable, fp32)")
for optimizer in ("adamw", "adamw8bit", "sgd"):
    est = memory.estimate(config, method="full", precision="bf16", optimizer=optimizer, **budget)
    print(f"  optimizer state of full FT with {optimizer:9}: {est.optimizer / GiB:5.2f} GiB "
          f"= {est.optimizer / est.n_params:.2f} bytes/param")

# %% [markdown]
# **Activations** are the tensors each layer saves so the backward pass can compute gradients:
# the normalised inputs, q, k, v and the attention output, the MLP's intermediate values (8192
# wide here), and at the end the fp32 log-probabilities over the whole vocabulary. They scale
# with batch x sequence length. **Gradient checkpointing** keeps only each layer's input and
# recomputes the layer during the backward pass (about one more forward pass of compute): the
# per-layer term collapses, the logits do not.

# %%
from ftlab.plots import plot_memory

seq_sweep = {}
for seq in (256, 512, 1024, 2048):
    for ckpt in (False, True):
        seq_sweep[f"{seq}\n{'ckpt' if ckpt else 'no ckpt'}"] = memory.estimate(
            config, method="qlora", precision="bf16", optimizer="adamw8bit", r=cfg.r, target_modules="all-linear",
            batch_size=cfg.budget_batch, seq_len=seq, grad_checkpointing=ckpt)
for label, est in seq_sweep.items():
    parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in est.details.items())
    print(f"{label.replace(chr(10), ', '):18} activations {est.activations / GiB:6.2f} GiB  ({parts})")
fig = plot_memory(seq_sweep, gpu_lines=("T4", "L4"),
                  title=f"QLoRA on {cfg.budget_model}, batch {cfg.budget_batch}: tokens per sequence")
fig

# %% [markdown]
# Doubling the sequence doubles the activations. Checkpointing cuts them about 4x at every length
# here; what is left is mostly the logits (fp32 over 128,256 tokens), which checkpointing cannot
# touch. Now the three methods side by side, at the budget's batch and sequence length:

# %%
methods = {name: memory.estimate(config, batch_size=cfg.budget_batch, seq_len=cfg.budget_seq, **recipe)
           for name, recipe in memory.RECIPES.items()}
for name, est in methods.items():
    print(f"{name:6} total {est.total / GiB:5.1f} GiB  T4: {'fits' if est.fits('T4') else 'no'}, "
          f"L4: {'fits' if est.fits('L4') else 'no'}   ({memory.RECIPES[name]})")
if profile() == "tiny":
    assert not methods["full"].fits("T4") and methods["lora"].fits("T4") and methods["qlora"].fits("T4")
    assert methods["qlora"].static < methods["lora"].static < methods["full"].static / 5
fig = plot_memory(methods, gpu_lines=("T4", "L4"),
                  title=f"{cfg.budget_model}, batch {cfg.budget_batch} x {cfg.budget_seq} tokens, no checkpointing")
fig

# %% [markdown]
# Full fine-tuning is dominated by optimizer state and the fp32 master copy: 16 bytes per
# parameter, 18.4 GiB before a single activation. LoRA and QLoRA remove almost all of the
# static part, and then **activations are the budget**. QLoRA's activations are even a little
# larger than LoRA's: its recipe upcasts the embedding and norms to fp32, so the residual
# stream is fp32. The hatched cap is the loss's gradient over the vocabulary, a short-lived
# buffer at the start of the backward pass that `fits` also counts. It grows with batch x
# sequence x vocabulary, so at 2048 tokens it is as large as all that checkpointing keeps
# (the sequence-length plot): that is why fused and chunked cross-entropy losses exist.

# %% [markdown]
# ## 2. The seed's D2, with the calculator
# D2 asks: full fine-tuning of a 7B model in fp16 with Adam needs how much memory, and what does
# QLoRA's 4-bit base take? Given only a parameter count, `estimate` does the back-of-envelope
# sum. Per parameter: fp16 weight 2 bytes, fp16 gradient 2, Adam's two fp32 moments 8: 12 bytes.

# %%
GB = 1e9
d2_full = memory.estimate(7e9, method="full", precision="fp16", optimizer="adamw")
d2_master = memory.estimate(7e9, method="full", precision="fp16", optimizer="adamw", master_weights=True)
d2_base = memory.estimate(7e9, method="qlora", precision="bf16", trainable=0)
print(f"full FT, fp16 + Adam:               {d2_full.total / GB:5.1f} GB  "
      f"(weights {d2_full.weights / GB:.0f} + gradients {d2_full.gradients / GB:.0f} + Adam {d2_full.optimizer / GB:.0f})")
print(f"  ... with fp32 master weights:     {d2_master.total / GB:5.1f} GB  (+4 bytes/param: 16 in all)")
print(f"QLoRA's 4-bit base:                 {d2_base.weights / GB:5.2f} GB  "
      f"(0.5 byte/param = 3.5 GB, plus {(d2_base.weights - 3.5 * GB) / GB:.2f} GB of block scales)")
assert d2_full.total == 84 * GB and d2_master.total == 112 * GB
assert 3.5 * GB < d2_base.weights < 3.7 * GB

# %% [markdown]
# Which one is "the" answer? 84 GB assumes the weights themselves are fp16 and updated in place.
# Mixed-precision training (what `torch.autocast` with a GradScaler, or DeepSpeed, does) keeps an
# fp32 master copy for the update and uses fp16 copies for the matmuls: 112 GB. Both are "before
# activations", and both are far past an 80 GB A100.
#
# A bare count misses two things that a config supplies. Here is the real 7B shape (Llama-2-7B,
# 6.74B parameters) at one sequence of 512 tokens:

# %%
llama2 = memory.known_config("Llama-2-7B")
real_full = memory.estimate(llama2, method="full", precision="fp16", optimizer="adamw", batch_size=1, seq_len=512)
real_qlora = memory.estimate(llama2, method="qlora", precision="bf16", optimizer="adamw8bit", r=cfg.r,
                             target_modules="all-linear", batch_size=1, seq_len=512)
print(f"Llama-2-7B full FT:  static {real_full.static / GB:5.1f} GB (12 x 6.74B) + activations "
      f"{real_full.activations / GB:.1f} GB")
print(f"Llama-2-7B QLoRA:    weights {real_qlora.weights / GB:.2f} GB (NF4 linears + fp32 embedding and head), "
      f"activations {real_qlora.activations / GB:.1f} GB, total {real_qlora.total / GB:.1f} GB")
assert real_full.static == 12 * real_full.n_params and real_qlora.fits("T4")

# %% [markdown]
# The QLoRA base is 4.55 GB, not 3.5: the embedding and the untied output head (32,000 x 4,096
# each) are not quantized, and the recipe keeps them in fp32. Drill 07e asks what that costs for
# Llama-3-8B, whose vocabulary is four times larger.

# %% [markdown]
# ## 3. Predicted vs measured, on a real training step
# A calculator is worth what its checks are worth. Its other half, `ftlab.measure`, builds and
# measures: `measure.measure` runs one real step (forward, backward, optimizer step) and measures
# the same four parts: the static ones by counting the tensors (parameters, `.grad`, the
# optimizer's state), the activations by recording every tensor the forward pass saves for
# backward (`torch.autograd.graph.saved_tensors_hooks`), which works on a CPU. On a GPU it also
# reports `torch.cuda.max_memory_allocated`.
#
# `measure.training_model` loads the model the way the lessons train it (peft LoRA, the QLoRA
# recipe with bitsandbytes NF4, SDPA attention, optional checkpointing). The token ids are random:
# memory depends on the shapes, not on the text.
#
# On a GPU (or a simulated one) each set-up first prints its memory plan: the calculator at the
# model's real size against the card's usable memory, as every training run in the course does.

# %%
from ftlab import measure

checks = {}
for method, precision, ckpt, optimizer, targets in cfg.measured:
    label = f"{method} {precision}{' ckpt' if ckpt else ''}"
    # load as the lessons train it, one step on an unpadded batch, and the estimate for the same set-up
    predicted, measured = measure.measure_setup(cfg.lm_path, method, precision, ckpt, cfg.batch_size, cfg.seq_len,
                                                targets, optimizer, r=cfg.r, seed=cfg.seed, device=device())
    checks[label] = (predicted, measured)
    print(f"--- {label}, {optimizer}, LoRA targets {targets or '-'}: {measured.trainable:,} trainable")
    print(memory.side_by_side(predicted, measured))
    if "max_memory_allocated" in measured.details:  # a real GPU: what the allocator saw, next to the calculator
        print(f"max_memory_allocated during the step: {measured.details['max_memory_allocated'] / GiB:.2f} GiB; "
              f"the calculator's peak {predicted.peak / GiB:.2f} GiB (+ the CUDA context, not counted by torch)")

# %%
static_err = max(abs(p.static / m.static - 1) for p, m in checks.values())
act_err = max(abs(p.activations / m.activations - 1) for p, m in checks.values())
print(f"largest error over {len(checks)} configurations: static {static_err:.2%}, activations {act_err:.2%}")
if profile() == "tiny":  # the calculator's promise, checked on every run
    assert static_err <= 0.01, "static parts should match counted tensors within 1%"
    assert act_err <= 0.10, "activations should match the saved tensors within 10%"
fig = plot_memory({f"{label}\n{kind}": est for label, pair in checks.items() for kind, est in zip(("pred", "meas"), pair)},
                  gpu_lines=(), show_peak=False, title=f"predicted vs measured: {cfg.batch_size} x {cfg.seq_len} tokens")
fig

# %% [markdown]
# In the tiny profile the prediction is exact, part by part, in all four configurations (the
# activation model was derived op by op from the Llama layer; `tests/test_memory.py` checks nine
# configurations). Two things are *not* in these numbers: the ~0.5 GiB the CUDA context takes
# before PyTorch allocates anything (`fits` adds it), and the allocator's fragmentation, which
# is why a real run wants some headroom rather than 0.1 GiB to spare.

# %% [markdown]
# ## 4. What fits where
# Every model from 0.5B to 8B, the three recipes, three cards. The recipes: **full** is
# mixed-precision bf16 with fp32 master weights and AdamW (16 bytes/param); **lora** is a bf16
# base with r = 16 adapters on all linear projections and AdamW; **qlora** is the same on an NF4
# base with 8-bit AdamW (lesson 04's recipe). All at batch 4 x 512 tokens. A cell says `yes` (fits
# as is), `ckpt` (fits only with gradient checkpointing) or `no`. (On a T4, bf16 becomes fp16: the
# same bytes.)

# %%
from ftlab.memory import fit_table, format_fit_table

rows = fit_table(list(memory.KNOWN_MODELS), gpus=cfg.gpus, batch_size=cfg.budget_batch, seq_len=cfg.budget_seq)
print(format_fit_table(rows))
fits = {(row["model"], row["method"]): row["fits"] for row in rows}
if profile() == "tiny":
    assert fits[("Qwen2.5-0.5B", "full")]["T4"] == "yes"          # 0.5B: even full FT fits a T4
    assert fits[("Llama-3.2-1B", "full")]["T4"] == "no"           # 1B full FT: 18 GiB before activations
    assert fits[("Llama-3.2-1B", "qlora")]["T4"] == "yes"
    assert all(fits[(m, "full")]["A100-40GB"] == "no" for m in ("Llama-3.2-3B", "Llama-2-7B", "Llama-3-8B"))
    assert fits[("Llama-3-8B", "qlora")]["T4"] == "ckpt"          # the QLoRA promise: 8B on a free T4

# %% [markdown]
# Read it by rows:
# - **Full fine-tuning** fits a T4 only at 0.5B, and an L4 up to about 1B: 16 bytes per parameter
#   is 16 GB per billion before activations. At 3B and up it does not fit a 40 GB A100 at all.
# - **LoRA** takes 3B onto a T4 with checkpointing, 7-8B onto an L4 with checkpointing. The frozen
#   bf16 base (2 bytes/param) is now the largest static part.
# - **QLoRA** puts every model here on a free T4, with checkpointing: the seed's promise, in numbers.

# %% [markdown]
# ## 5. Explore it
# The explorer below has a dropdown or slider for every input of `estimate`. What it shows comes
# from `ftlab.widgets.memory_explorer_data`, a plain function; here it is called directly with
# the lesson's setting, so you see the numbers even where widgets do not render.

# %%
from ftlab.widgets import memory_explorer, memory_explorer_data

explored = memory_explorer_data(cfg.budget_model, method="qlora", precision="fp16", optimizer="adamw8bit", r=cfg.r,
                                batch_size=cfg.budget_batch, seq_len=cfg.budget_seq, grad_checkpointing=True)
print(explored["text"])
fig = plot_memory({f"{cfg.budget_model}\nQLoRA, ckpt": explored["estimate"]}, gpu_lines=("T4", "L4"))
fig

# %% [markdown]
# Now move the sliders: the largest batch that fits a T4 at each sequence length, what 8-bit
# AdamW saves on full fine-tuning of 0.5B, where LoRA on 3B stops fitting an L4.

# %%
memory_explorer(cfg.budget_model, method="qlora", precision="fp16", optimizer="adamw8bit", r=cfg.r,
                batch_size=cfg.budget_batch, seq_len=cfg.budget_seq, grad_checkpointing=True)

# %%
_ = headline(f"{profile()}: calculator vs measured over {len(checks)} configs, static within {static_err:.1%}, "
             f"activations within {act_err:.1%}; {cfg.budget_model} QLoRA at {cfg.budget_batch}x{cfg.budget_seq} "
             f"with checkpointing {explored['total_gib']:.1f} GiB, largest T4 batch {explored['max_batch']['T4']}")

# %% [markdown]
# ## Drills
# Five drills. The seed's D2 is drill `d2` in lesson 08; you have just worked it with the
# calculator, so these go around it.

# %% [markdown]
# ### Drill 07a ★☆☆ · Bytes per parameter of mixed-precision full fine-tuning
# You fully fine-tune in bf16 with AdamW, and the optimizer updates an fp32 master copy of the
# weights. How many bytes per parameter does training hold, before activations? Answer with a number.

# %% tags=["answer"]
from ftlab.drills import check

answer_07a = ...  # bytes per parameter

# %%
check("07a", answer_07a)

# %% cellView="form" tags=["solution"]
#@title Solution
# bf16 weight 2 + fp32 master weight 4 + bf16 gradient 2 + AdamW's two fp32 moments 8 = 16 bytes.
# The calculator agrees: master_weights=True on a bare count.
est = memory.estimate(1e9, method="full", precision="bf16", optimizer="adamw", master_weights=True)
solution_07a = est.total / est.n_params
check("07a", solution_07a)

# %% [markdown]
# ### Drill 07b ★☆☆ · 8-bit AdamW's state
# bitsandbytes' `AdamW8bit` stores Adam's moments in 8 bits. How many bytes of optimizer state
# per trainable parameter, ignoring the small per-block scales? Answer with a number.

# %% tags=["answer"]
answer_07b = ...  # bytes per trainable parameter

# %%
check("07b", answer_07b)

# %% cellView="form" tags=["solution"]
#@title Solution
# Two moments (the mean and the mean of squares), 1 byte each: 2 bytes. With one fp32 scale per
# block of 256 values per moment it is 2 + 2 * 4 / 256 = 2.03, which the calculator uses.
est = memory.estimate(1e9, method="full", precision="bf16", optimizer="adamw8bit")
print(f"calculator: {est.optimizer / est.n_params:.4f} bytes/param")
solution_07b = 2
check("07b", solution_07b)

# %% [markdown]
# ### Drill 07c ★★☆ · The largest batch that fits on a T4
# QLoRA on Llama-3.2-1B (r = 16 on all linears, fp16, 8-bit AdamW), sequences of 1024 tokens, no
# checkpointing. The calculator says: static parts 1.55 GiB, activations 3.31 GiB per sequence.
# A T4 has 15.0 GiB and the CUDA context takes 0.5 GiB of it. What is the largest batch size that
# fits? Answer with a whole number.

# %% tags=["answer"]
answer_07c = ...  # sequences per micro-batch

# %%
check("07c", answer_07c)

# %% cellView="form" tags=["solution"]
#@title Solution
# (15.0 - 0.5 - 1.55) / 3.31 = 3.9: three sequences fit, a fourth does not. max_batch_size does
# the same search with the full estimate (it also counts the loss's short-lived buffers).
from ftlab.memory import max_batch_size

qlora_1b = dict(method="qlora", precision="fp16", optimizer="adamw8bit", r=16, target_modules="all-linear", seq_len=1024)
print("calculator:", max_batch_size("Llama-3.2-1B", "T4", **qlora_1b),
      "| with checkpointing:", max_batch_size("Llama-3.2-1B", "T4", grad_checkpointing=True, **qlora_1b))
solution_07c = int((15.0 - 0.5 - 1.55) // 3.31)
check("07c", solution_07c)

# %% [markdown]
# ### Drill 07d ★★☆ · What gradient checkpointing saves
# Which part of training memory does gradient checkpointing cut? Answer with one letter.

# %%
from ftlab.drills import describe

print(describe("07d"))

# %% tags=["answer"]
answer_07d = ...  # "a", "b", "c" or "d"

# %%
check("07d", answer_07d)

# %% cellView="form" tags=["solution"]
#@title Solution
# Activations. Each decoder layer keeps only its input; the backward pass re-runs the layer's
# forward to get the rest. Weights, gradients and optimizer state do not change (section 1's plot).
solution_07d = "c"
check("07d", solution_07d)

# %% [markdown]
# ### Drill 07e ★★★ · What a bare parameter count misses in QLoRA
# Llama-3-8B has a vocabulary of 128,256, hidden size 4,096, and an output head that is *not* tied
# to the embedding. The QLoRA recipe quantizes the decoder's linear layers to NF4 and keeps the
# embedding and the head in fp32. How many GB (1e9 bytes) do those two take? Answer with a number.

# %% tags=["answer"]
answer_07e = ...  # GB

# %%
check("07e", answer_07e)

# %% cellView="form" tags=["solution"]
#@title Solution
# Two matrices of 128,256 x 4,096 = 525M parameters each, 4 bytes each: 4.2 GB, about as much as
# the NF4 decoder itself. A bare count (8e9 x 0.52 bytes = 4.1 GB) misses half of the base.
solution_07e = 2 * 128256 * 4096 * 4 / 1e9
llama3 = memory.estimate(memory.known_config("Llama-3-8B"), method="qlora", precision="bf16", trainable=0)
print(f"calculator, Llama-3-8B QLoRA weights: {llama3.weights / 1e9:.2f} GB; bare count: "
      f"{memory.estimate(8.03e9, method='qlora', trainable=0).weights / 1e9:.2f} GB")
check("07e", solution_07e)

# %% [markdown]
# ## Summary
# - Training memory is four parts: weights, gradients and optimizer state (per parameter: 16 bytes
#   for mixed-precision full fine-tuning with AdamW) and activations (per token, per layer).
# - LoRA and QLoRA shrink the first three to almost nothing but the frozen base; then activations
#   are the budget, and gradient checkpointing cuts them ~4x for one extra forward pass.
# - `ftlab.memory.estimate` predicted a real training step exactly here, part by part; D2's
#   84 GB (112 GB with master weights) and QLoRA's 3.5 GB base come out of it, and a config shows
#   what a bare count misses (fp32 embeddings, activations).
# - QLoRA with checkpointing puts every model up to 8B on a free T4; full fine-tuning fits a T4
#   only at 0.5B.
#
# **Try next:** in the explorer, find the longest sequence at which Llama-3.2-3B with LoRA still
# fits a T4 at batch 1; then set `measured` in the config to your own configurations and check the
# calculator against them. Drills 07a-07e above, and D2 in lesson 08.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
