# %% [markdown]
# # 10 · Scaling out: the same training on several GPUs
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/10_scaling_out.ipynb)
#
# **What you will learn**
# - data parallelism vs model parallelism, and which one a fine-tuning run on a budget wants;
# - what DDP all-reduces, seen on two real processes: after the backward pass every process
#   holds the same gradient, the gradient of the whole batch;
# - why two processes with batch b take exactly the steps of one process with `grad_accum=2`;
# - what ZeRO-1/2/3 and FSDP shard, seen on two real processes (each holds half of every weight,
#   gradient and AdamW moment, and training still equals one process), and the memory per GPU for a
#   7B model on 1 to 64 GPUs;
# - how to launch `python -m ftlab.run` on a multi-GPU machine, and when QLoRA on one GPU beats
#   sharding over many.
#
# Everything here runs on a laptop CPU: the processes talk through **gloo**, the backend PyTorch
# uses without GPUs (NCCL plays the same part on GPUs). About 20 seconds.

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

env = report()  # versions, device, GPU, profile: paste this when you ask for help

# %% [markdown]
# ## Config
# This lesson trains nothing big: it runs a two-process demo on the CPU and budgets a real 7B
# model with the memory calculator (`ftlab.memory`, lesson 07), which needs no download.

# %%
from dataclasses import dataclass, field


@dataclass
class Config:
    seed: int = 0                  # same demo data on every run
    world_size: int = 2            # processes in the all-reduce demo (CPU, gloo)
    demo_batch: int = 8            # examples in the demo batch, split over the processes
    mlp: tuple = (8, 16, 4)        # d_in, d_hidden, d_out of the FSDP demo's MLP
    fsdp_steps: int = 3            # AdamW steps in the FSDP demo
    model: str = "Llama-2-7B"      # a KNOWN_MODELS architecture for the memory budget
    seq_len: int = 2048            # tokens per example in the budget
    batch_size: int = 1            # examples per micro-batch, PER GPU
    gpu: str = "A100-80GB"         # the card the sharded runs use
    gpus: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # x axis of the plot
    run_config: str = "sft_tiny.yaml"  # the configs/ file section 4 shows


cfg = Config()
if profile() == "full":  # a GPU machine: the same budget (arithmetic, not a run); the full SFT config
    cfg = Config(run_config="sft_full.yaml")
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. Data parallelism vs model parallelism
# A run outgrows one GPU in one of two ways, and each has its own cure.
#
# | | **data parallelism** (DDP, ZeRO, FSDP) | **model parallelism** (tensor, pipeline) |
# |---|---|---|
# | each GPU holds | the whole model (or, sharded, 1/N of its states, gathered layer by layer) | a slice of each matrix, or a block of layers |
# | each GPU computes | the whole model on **its own micro-batch** | **its part** of the model on the same batch |
# | what travels | gradients (DDP), plus weight shards (ZeRO-3/FSDP) | activations, every layer or every stage |
# | wants | any network; scales throughput | fast links (NVLink) inside one machine |
#
# Fine-tuning on a budget is almost always data parallel: the code of the single-GPU run
# stays the same, and the only new thing on the wire is the gradients. Sharded data parallelism
# (ZeRO-3, FSDP) already trains models whose states do not fit on one GPU, so "the model does not
# fit" is not, by itself, why people pick model parallelism. They pick it for what travels:
#
# - **Tensor parallelism** splits every matrix multiply across GPUs, so weights *and* activations
#   shrink per GPU and one step finishes sooner, even at batch 1 and long sequences, where data
#   parallelism has no batch to split. The price is an all-reduce of activations inside every
#   layer: it only pays on NVLink-class links, so it stays inside one machine (typically 8 GPUs).
# - **Pipeline parallelism** gives each GPU a block of layers; only the activations at the block
#   boundaries travel, little enough for the slower links *between* machines. The price is the
#   pipeline "bubble" (stages waiting), hidden by many micro-batches per step.
# - FSDP's cost grows the other way: it gathers every layer's full weights on every GPU twice per
#   step, so at hundreds of GPUs with a fixed global batch, that traffic is what limits it.
#
# Pre-training runs of very large models combine all three (tensor inside a machine, pipeline
# across machines, data parallel on top). A fine-tuning run on one to eight GPUs does not meet
# these limits: DDP for LoRA, FSDP when full fine-tuning's states do not fit.
#
# The memory calculator says why one GPU is not enough for full fine-tuning of a 7B model:

# %%
from ftlab.memory import GiB, estimate, known_config

config = known_config(cfg.model)
budget = dict(method="full", precision="bf16", master_weights=True, batch_size=cfg.batch_size,
              seq_len=cfg.seq_len, grad_checkpointing=True)
one_gpu = estimate(config, **budget)
print(one_gpu.table())

# %% [markdown]
# The total above is for one GPU: 16 bytes per parameter of weights, gradients and AdamW state
# (bf16 weights 2 + gradients 2 + fp32 master 4 + two fp32 moments 8) before a single activation.
# No card in the table fits it.

# %% [markdown]
# ## 2. What DDP all-reduces
# DDP (`torch.nn.parallel.DistributedDataParallel`, what `accelerate` wraps your model in)
# starts one process per GPU. Each holds a full copy of the model and runs forward and backward
# on **its own share of the batch**. During the backward pass it all-reduces the gradients:
# sums them over the processes and divides by their number. Every process then holds the
# gradient of the whole batch, takes the same optimizer step, and the weights stay identical
# without ever being sent.
#
# `ftlab.parallel.all_reduce_demo` shows it on two real CPU processes joined by gloo: a small
# linear model, a batch of 8 split 4 + 4. It records each process's gradient of its own share,
# then the gradient after DDP's backward.

# %%
import torch

from ftlab.parallel import all_reduce_demo

demo = all_reduce_demo(world_size=cfg.world_size, seed=cfg.seed, batch=cfg.demo_batch)
print(f"{'':28}" + "".join(f"{'rank ' + str(r):>12}" for r in range(cfg.world_size)))
print(f"{'|grad| of its own share':28}" + "".join(f"{g.norm():12.4f}" for g in demo["local"]))
print(f"{'|grad| after DDP backward':28}" + "".join(f"{g.norm():12.4f}" for g in demo["synced"]))
print(f"{'|grad| of the whole batch':28}{demo['full_batch'].norm():12.4f}  (one process)")
gap = (demo["synced"][0] - demo["full_batch"]).abs().max().item()
same = all(torch.equal(demo["synced"][0], g) for g in demo["synced"])
print(f"ranks hold the same gradient: {same}; largest difference from the whole-batch gradient: {gap:.1e}")
if profile() == "tiny":
    assert not torch.allclose(demo["local"][0], demo["local"][1]), "the two shares should differ"
    assert same and gap < 1e-5, "after the all-reduce every rank should hold the whole-batch gradient"

# %% [markdown]
# Before the all-reduce the two processes disagree (their shares differ); after it they agree to
# the bit, and with the whole-batch gradient to float32 rounding.

# %% [markdown]
# ## 3. Two processes = one process with `grad_accum=2`
# `ftlab.train` plans each optimizer step as a *window* of `grad_accum x processes`
# micro-batches, and process r takes `window[r::processes]`. With `grad_accum=1`, DDP's single
# all-reduce per step then sums exactly what one process accumulates over two micro-batches.
# The plan of the first two steps (example indices), both ways:

# %%
from ftlab.train import epoch_windows

two = epoch_windows(16, batch_size=2, grad_accum=1, world_size=2, seed=cfg.seed)[:2]
one = epoch_windows(16, batch_size=2, grad_accum=2, world_size=1, seed=cfg.seed)[:2]
for step, (w2, w1) in enumerate(zip(two, one), 1):
    print(f"step {step}: 2 processes: rank 0 {w2[0::2]}, rank 1 {w2[1::2]} | 1 process, grad_accum 2: {w1}")
if profile() == "tiny":
    assert two == one, "the two plans should hold the same micro-batches"

# %% [markdown]
# The same examples, so the same loss. `tests/test_ddp.py` proves it on the real thing: the
# tiny LM with LoRA trained by `python -m ftlab.run sft` for 4 steps, once with 2 processes
# (`torchrun --standalone --nproc_per_node 2`, gloo) and once with one process and
# `grad_accum=2`, `batch_size=4`, and requires the four losses to agree to a relative 1e-5 (on
# the machines it ran on they agreed bit for bit).
#
# One thing to carry to a real cluster: **`batch_size` is per process**. Moving a 1-GPU recipe
# with `grad_accum=8` to 8 GPUs without changing it multiplies the effective batch by 8; divide
# `grad_accum` by the number of GPUs to keep the learning rate's batch.

# %% [markdown]
# ## 4. Launching the script on several GPUs
# `python -m ftlab.run <task> --config configs/<file>.yaml` runs a lesson's training (tasks
# `sft` and `classifier`) outside a notebook, with the same `ftlab.train` loop. One config file
# holds every knob; `--set key=value` overrides one. This profile's SFT config:

# %%
from pathlib import Path

import ftlab

configs = Path(ftlab.__file__).resolve().parent.parent / "configs"
print((configs / cfg.run_config).read_text() if configs.is_dir()
      else f"(configs/{cfg.run_config} is in the repository: clone it to launch runs from a shell)")

# %% [markdown]
# The commands, each tested on this machine with 2 CPU processes (`tests/test_ddp.py`,
# `tests/test_run.py`):
#
# ```bash
# # one process (CPU or one GPU)
# python -m ftlab.run sft --config configs/sft_tiny.yaml
# # 2 processes on a CPU, gloo (what the test runs; --standalone picks a free port)
# torchrun --standalone --nproc_per_node 2 -m ftlab.run sft --config configs/sft_tiny.yaml
# # the same through accelerate (it calls torchrun)
# accelerate launch --multi_gpu --num_processes 2 -m ftlab.run sft --config configs/sft_tiny.yaml
# # a machine with 8 GPUs: DDP over NCCL, batch_size per GPU
# accelerate launch --num_processes 8 -m ftlab.run sft --config configs/sft_full.yaml --set grad_accum=1
# ```
#
# A pitfall we met: `accelerate launch --cpu --num_processes 2` (accelerate 1.15) starts **one**
# process, not two. On a CPU use `torchrun` or `--multi_gpu`. Each run prints
# `2 process(es) x batch 8 x grad_accum 1 = 16 examples per step`: check that line first.

# %% [markdown]
# ## 5. What ZeRO and FSDP shard
# DDP copies everything to every GPU, so adding GPUs adds speed but never memory. ZeRO (and
# PyTorch's FSDP, which implements its stage 3) splits the model states over the N GPUs
# instead; each GPU gathers what it needs just in time.
#
# | | weights | gradients | optimizer state (with fp32 master) | per GPU, mixed-precision AdamW |
# |---|---|---|---|---|
# | DDP | full | full | full | 2Ψ + 2Ψ + 12Ψ |
# | ZeRO-1 | full | full | 1/N | 2Ψ + 2Ψ + 12Ψ/N |
# | ZeRO-2 (FSDP `SHARD_GRAD_OP`) | full | 1/N | 1/N | 2Ψ + 14Ψ/N |
# | ZeRO-3 = FSDP `FULL_SHARD` | 1/N | 1/N | 1/N | 16Ψ/N |
#
# `ftlab.parallel.fsdp_demo` runs ZeRO-3 for real with PyTorch's FSDP2 on the same two gloo
# processes: each builds the same MLP, calls `fully_shard(layer)` on every `Linear`, then
# `fully_shard(model)`, and trains `cfg.fsdp_steps` AdamW steps on its half of the batch. Every
# parameter becomes a `DTensor` whose local part is this rank's slice along dim 0. Before a
# layer's forward (and again in backward) FSDP all-gathers its full weight; after its backward it
# reduce-scatters the gradient: sums over the ranks, divides by their number, and hands each rank
# the slice it owns, so the optimizer updates only that slice.

# %%
d_in, d_hidden, d_out = cfg.mlp
mlp_total = d_in * d_hidden + d_hidden + d_hidden * d_out + d_out  # two Linear layers: weights + biases
print(f"MLP {d_in} -> {d_hidden} -> {d_out}: {mlp_total} parameters, FSDP over {cfg.world_size} processes")

# %% [markdown]
# ### Drill 10d ★☆☆ · Predict, then run: what one FSDP process holds
# After a backward pass and an AdamW step, how many float values of model state (weights +
# gradients + AdamW's two moments, all fp32) does **one** of the processes hold? Answer with a number.

# %% tags=["answer"]
from ftlab.drills import check

answer_10d = ...  # values on one process

# %%
check("10d", answer_10d)

# %% cellView="form" tags=["solution"]
#@title Solution
# ZeRO-3 shards all four: each of the world_size processes holds 1/world_size of the weights, the
# gradients and both moments (DDP would hold 4 x mlp_total on every process).
solution_10d = 4 * mlp_total // cfg.world_size
check("10d", solution_10d)

# %%
from ftlab.parallel import fsdp_demo

fsdp_run = fsdp_demo(world_size=cfg.world_size, seed=cfg.seed, batch=cfg.demo_batch, d_in=d_in,
                     d_hidden=d_hidden, d_out=d_out, steps=cfg.fsdp_steps)
print(f"{'values held, of ' + str(mlp_total) + ' parameters':34}" + "".join(f"{'rank ' + str(r):>9}"
                                                                             for r in range(cfg.world_size)))
for part, label in (("params", "weights"), ("grads", "gradients"), ("moments", "AdamW moments (2 per weight)")):
    print(f"{label:34}" + "".join(f"{n:9d}" for n in fsdp_run[part]))
held = [sum(fsdp_run[k][r] for k in ("params", "grads", "moments")) for r in range(cfg.world_size)]
print(f"{'all model state':34}" + "".join(f"{n:9d}" for n in held) + f"   (DDP: {4 * mlp_total} each)")
print("loss per step, " + ", ".join(f"{a:.6f} / {b:.6f}" for a, b in
                                    zip(fsdp_run["losses"], fsdp_run["single_losses"])) + "  (FSDP / 1 process)")
fsdp_gap = max((fsdp_run["full"][0][n] - w).abs().max().item() for n, w in fsdp_run["single"].items())
same_full = all(torch.equal(f[n], fsdp_run["full"][0][n]) for f in fsdp_run["full"] for n in f)
print(f"gathered weights equal on every rank: {same_full}; largest difference from 1 process on the "
      f"whole batch after {cfg.fsdp_steps} steps: {fsdp_gap:.1e}")
half = mlp_total // cfg.world_size
assert fsdp_run["total"] == mlp_total and fsdp_run["params"] == fsdp_run["grads"] == [half] * cfg.world_size
assert fsdp_run["moments"] == [2 * half] * cfg.world_size, "AdamW's moments should be sharded too"
assert same_full and fsdp_gap < 1e-5, "FSDP on 2 processes should train exactly like 1 process"

# %% [markdown]
# Each rank holds exactly its 1/N of every kind of state, yet the weights it gathers after
# training equal one process's to float32 rounding. The price is traffic: where DDP all-reduces
# the gradients once per step, FSDP reduce-scatters them and also all-gathers every layer's
# weights in the forward and again in the backward (the ZeRO paper counts 1.5x DDP's volume).
#
# `estimate(..., world_size=N, sharding=...)` gives the memory of one of the N GPUs. Activations
# are not sharded: each GPU runs its own micro-batch.

# %%
SHARDINGS = ("ddp", "zero1", "zero2", "zero3")
per_gpu = {s: [estimate(config, **budget, world_size=n, sharding=s) for n in cfg.gpus] for s in SHARDINGS}
print(f"{cfg.model}, full fine-tuning, bf16 + fp32 master, AdamW, batch {cfg.batch_size} x {cfg.seq_len} "
      "tokens, gradient checkpointing: peak GiB per GPU")
print(f"{'GPUs':>6}" + "".join(f"{s:>9}" for s in SHARDINGS))
for i, n in enumerate(cfg.gpus):
    print(f"{n:>6}" + "".join(f"{per_gpu[s][i].peak / GiB:9.1f}" for s in SHARDINGS))

# %%
from matplotlib.figure import Figure

from ftlab.memory import GPUS

fig = Figure(figsize=(7, 4))
ax = fig.subplots()
for s in SHARDINGS:
    ax.plot(cfg.gpus, [e.peak / GiB for e in per_gpu[s]], marker="o", label=s)
for name in ("T4", "L4", "A100-80GB"):
    ax.axhline(GPUS[name] / GiB - 0.5, ls="--", lw=0.8, color="grey")
    ax.text(cfg.gpus[-1], GPUS[name] / GiB - 0.5, f" {name}", va="center", fontsize=8)
ax.set_xscale("log", base=2)
ax.set_xticks(cfg.gpus, [str(n) for n in cfg.gpus])
ax.set_xlabel("data-parallel GPUs")
ax.set_ylabel("peak memory per GPU (GiB)")
ax.set_title(f"{cfg.model} full fine-tuning: memory per GPU")
ax.legend()
fig

# %% [markdown]
# DDP stays flat at ~102 GiB however many GPUs you add. ZeRO-1 drops fast, then flattens at the
# 4Ψ of bf16 weights and gradients it still copies; ZeRO-2 flattens at 2Ψ; ZeRO-3 / FSDP keeps
# dividing until the activations (and, not modelled here, one gathered layer) are what is left.

# %%
def gpus_needed(sharding, gpu=cfg.gpu, most=1024):
    """The fewest data-parallel GPUs of this card that fit the run (None: not even `most`)."""
    n = 1
    while n <= most:
        if estimate(config, **budget, world_size=n, sharding=sharding).fits(gpu):
            return n
        n *= 2
    return None


needed = {s: gpus_needed(s) for s in SHARDINGS}
print(f"fewest {cfg.gpu} for full fine-tuning of {cfg.model}: " +
      ", ".join(f"{s} {n if n else 'never'}" for s, n in needed.items()))
if profile() == "tiny":
    assert needed["ddp"] is None and needed["zero3"] == 2, needed

# %% [markdown]
# ## 6. When QLoRA on one GPU beats sharding
# The alternative to more GPUs is fewer trainable bytes: QLoRA (lesson 04) freezes the base in
# 4 bits and trains LoRA adapters, so there are almost no gradients or optimizer state to shard.

# %%
from ftlab.runtime import card

qlora = estimate(config, method="qlora", precision="bf16", target_modules="all-linear", r=16,
                 batch_size=cfg.batch_size, seq_len=cfg.seq_len, grad_checkpointing=True)
fsdp = estimate(config, **budget, world_size=needed["zero3"], sharding="fsdp")
print(f"QLoRA r=16, all linears, on ONE GPU: {qlora.peak / GiB:5.1f} GiB  "
      f"(T4: {'fits' if qlora.fits('T4') else 'no'}, L4: {'fits' if qlora.fits('L4') else 'no'})")
print(f"full FT, FSDP over {needed['zero3']} x {cfg.gpu}: {fsdp.peak / GiB:5.1f} GiB per GPU")
here = card()  # the GPU of this runtime (real, or simulated by FTLAB_SIMULATE_GPU); None on a CPU
if here is not None:
    capacity = here.memory_key if here.memory_key in GPUS else here.memory_bytes
    n_here = gpus_needed("fsdp", capacity)
    print(f"on this runtime's {here.name}: QLoRA {'fits' if qlora.fits(capacity) else 'does not fit'}; full FT "
          f"with FSDP needs {n_here if n_here else 'more than 1024'} of them")
if profile() == "tiny":
    assert qlora.fits("L4") and not one_gpu.fits(cfg.gpu)

# %% [markdown]
# QLoRA on one GPU wins when:
# - **the model fits in 4 bits on your card** (7B in ~7 GiB: a T4 or L4) and an adapter is
#   enough for the task (instruction following, format, a domain), which lessons 03-05 measured;
# - **you pay per GPU-hour**: one L4 costs a fraction of two A100s, and it has no all-reduce or
#   all-gather traffic to wait on;
# - you want to keep the base untouched (lesson 09: adapters forget less).
#
# Sharding wins when you need **full fine-tuning** (continued pretraining, a new language, large
# distribution shifts), when the **data is large** and throughput matters more than cost (N GPUs
# run ~N times the examples per second), or when the model is too big for one GPU even in 4 bits
# (70B is ~35 GiB in NF4). And they combine: QLoRA + FSDP trains a 70B adapter on two 24 GiB cards.

# %%
_ = headline(f"{profile()}: DDP gradients equal on {cfg.world_size} gloo ranks (gap {gap:.0e}); FSDP "
             f"weights equal 1 process (gap {fsdp_gap:.0e}) holding {fsdp_run['params'][0]}/{mlp_total} each; "
             f"{cfg.model} full FT per GPU: DDP {per_gpu['ddp'][-1].peak / GiB:.0f} GiB, "
             f"FSDP x{cfg.gpus[-1]} {per_gpu['zero3'][-1].peak / GiB:.1f} GiB; "
             f"QLoRA on one GPU {qlora.peak / GiB:.1f} GiB")

# %% [markdown]
# ## Drills
# ★☆☆ quick, ★★☆ needs a calculation.

# %% [markdown]
# ### Drill 10a ★☆☆ · Effective batch on several GPUs
# You launch `accelerate launch --num_processes 4 -m ftlab.run sft ...` with `batch_size: 8` and
# `grad_accum: 4` in the config. How many examples does one optimizer step average over?
# Answer with a number.

# %% tags=["answer"]
answer_10a = ...  # your answer

# %%
check("10a", answer_10a)

# %% cellView="form" tags=["solution"]
#@title Solution
# batch_size is per process: each of the 4 processes accumulates grad_accum=4 micro-batches of 8,
# and DDP's all-reduce averages over the processes.
solution_10a = 8 * 4 * 4
check("10a", solution_10a)

# %% [markdown]
# ### Drill 10b ★☆☆ · What DDP all-reduces
# Which tensors does DDP sum over the processes in every training step? Answer with one letter.
#
# - (a) the weights, after every optimizer step
# - (b) the gradients, during backward
# - (c) the activations, after the forward
# - (d) the AdamW moments, before the step

# %% tags=["answer"]
answer_10b = ...  # "a", "b", "c" or "d"

# %%
check("10b", answer_10b)

# %% cellView="form" tags=["solution"]
#@title Solution
# Section 2: the gradients differ per rank before the backward's all-reduce and are equal after
# it. The weights start equal and stay equal because every rank applies the same update.
solution_10b = "b"
check("10b", solution_10b)

# %% [markdown]
# ### Drill 10c ★★☆ · ZeRO-2 per GPU
# The ZeRO paper's example: 7.5B parameters, mixed-precision AdamW (K = 12 bytes of optimizer
# state per parameter, fp32 master weights included), 64 GPUs. With ZeRO-2, how many GB
# (10^9 bytes) of model states does each GPU hold? Answer with a number.

# %% tags=["answer"]
answer_10c = ...  # GB per GPU

# %%
check("10c", answer_10c)

# %% cellView="form" tags=["solution"]
#@title Solution
# ZeRO-2 keeps the fp16 weights whole (2 Psi) and shards gradients and optimizer state:
# 2 Psi + (2 + 12) Psi / 64. The calculator agrees:
solution_10c = 2 * 7.5 + (2 + 12) * 7.5 / 64
print(estimate(7.5e9, method="full", precision="fp16", master_weights=True, world_size=64,
               sharding="zero2").total / 1e9)
check("10c", solution_10c)

# %% [markdown]
# ## Summary
# - Data parallelism copies the model to every GPU and splits the batch; DDP all-reduces the
#   **gradients** in the backward pass, so every rank holds the whole-batch gradient (section 2).
# - `batch_size` is per process: 2 processes x batch b take exactly the steps of 1 process with
#   `grad_accum=2` (bit-identical losses in `tests/test_ddp.py`).
# - DDP never saves memory: a 7B full fine-tune needs ~102 GiB on every GPU. ZeRO-1/2/3 and FSDP
#   shard optimizer state, gradients and weights; FSDP over 2 A100-80GB fits it. FSDP2's
#   `fully_shard` on 2 gloo processes holds half of every state per rank and trains like 1 process.
# - QLoRA fits the same 7B on one L4 (~7 GiB): cheaper whenever an adapter is enough.
#
# **Try next:** set `cfg.model = "Llama-3-8B"` and `cfg.seq_len = 4096`: at what point do the
# activations, which no sharding divides, dominate ZeRO-3's curve? Run
# `torchrun --standalone --nproc_per_node 2 -m ftlab.run classifier --config configs/classifier_tiny.yaml`
# and compare it with `--set grad_accum=2` on one process. Drills 10a-10d above.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
