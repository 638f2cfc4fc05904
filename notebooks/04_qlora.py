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
# # 04 · QLoRA: NF4 by hand, then a ~1B model on one T4
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/04_qlora.ipynb)
#
# **What you will learn**
# - how a weight is squeezed into 4 bits: blockwise absmax and the NF4 lookup, written here and
#   proven equal to bitsandbytes; why NF4's levels sit at normal quantiles (its error against
#   int4 and fp4, measured); double quantization, from 4.5 to ~4.127 bits per weight;
# - QLoRA by hand (a frozen 4-bit layer + the LoRA of lesson 02), proven equal to bitsandbytes + peft;
# - the real recipe: `BitsAndBytesConfig`, `prepare_model_for_kbit_training`, LoRA on every
#   linear, gradient checkpointing, paged 8-bit AdamW, a short SFT run;
# - memory predicted by `ftlab.memory` next to memory measured, and what fits a T4 or an L4;
# - how to merge a QLoRA adapter, and what goes wrong if you merge into the 4-bit weights.
#
# The tiny profile runs the whole recipe on a CPU in about a minute; the full profile fine-tunes a
# 1.1B model on a Colab T4.

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

env = report()

# %% [markdown]
# ## Config

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0
    blocksize: int = 64          # weights per absmax scale (NF4's default)
    r: int = 8                   # LoRA rank on every linear layer
    alpha: float = 16            # LoRA scale alpha / r = 2
    lr: float = 2e-3             # LoRA learns with a higher lr than full fine-tuning
    num_steps: int = 120         # optimizer steps of the SFT run
    batch_size: int = 16         # examples per micro-batch
    grad_accum: int = 1          # effective batch = batch_size * grad_accum
    max_length: int = 64         # tokens per example
    optimizer: str = "adamw"     # "paged_adamw_8bit" on a GPU; see section 2
    eval_kind: str = "fact"      # held-out questions scored before and after
    eval_size: int = 40
    eval_batch: int = 16         # rows per forward pass of the held-out response loss
    exact_match: bool = True     # short fact answers: exact match is a measure here
    gauss_size: int = 1 << 20    # Gaussian weights the 4-bit grids are compared on
    mem_batch: int = 8           # the batch the memory comparison measures (unpadded)
    mem_seq: int = 64


cfg = Config()
if profile() == "full":  # TinyLlama-1.1B on a T4: the calculator (section 3) says 4 x 512 fits with room.
    # Alpaca's answers are paragraphs: exact match reads 0% before and after, so only the loss is measured.
    cfg = Config(r=16, alpha=32, lr=2e-4, num_steps=120, batch_size=4, grad_accum=2, max_length=512,
                 optimizer="paged_adamw_8bit", eval_kind="alpaca", eval_size=32, eval_batch=4, exact_match=False,
                 mem_batch=4, mem_seq=512)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. Quantization from the ground up
#
# ### Absmax int8, and why blocks
# The simplest quantizer divides a tensor by its largest magnitude (its *absmax*) into [-1, 1] and
# rounds 127 times that to an integer. One outlier stretches the scale: every other value lands on a
# few levels near zero. Cut the flat weight into blocks of `blocksize`, each with its own absmax,
# and the damage stays in the outlier's block.

# %%
import torch

from ftlab import quant


def blockwise_absmax(w, blocksize):
    """w (numel a multiple of blocksize) -> absmax (n_blocks,), scaled (n_blocks, blocksize) in [-1, 1]."""
    blocks = w.detach().float().reshape(-1, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)                    # (n_blocks,): one scale per block
    # times the reciprocal, not a division: bitsandbytes' arithmetic, so a value on a boundary rounds alike
    scaled = blocks * (1.0 / absmax).unsqueeze(1)        # (n_blocks, blocksize)
    return absmax, scaled


# %%
g = torch.Generator().manual_seed(cfg.seed)
w = torch.randn(4096, generator=g) * 0.02
w[100] = 1.0  # one outlier, 50x the typical weight
rows = []
for label, bs in (("one absmax for the tensor", w.numel()), (f"one absmax per {cfg.blocksize}", cfg.blocksize)):
    absmax, scaled = blockwise_absmax(w, bs)
    codes = torch.round(127 * scaled)  # (n_blocks, bs): the int8 codes, -127..127
    err = (codes / 127 * absmax.unsqueeze(1) - w.view(-1, bs)).abs().mean().item()
    assert torch.equal(codes.flatten().to(torch.int8), quant.quantize_int8(w, bs)[0])  # ftlab's int8 codes
    rows.append((label, err))
    print(f"int8, {label:28}: mean error {err:.2e}")
assert rows[1][1] < rows[0][1] / 10, "blocks should cut the error by far more than 10x with an outlier"

# %% [markdown]
# ### Four bits: where should the 16 levels go?
# Trained weights are close to normally distributed. With 16 evenly spaced levels (int4), the outer
# levels are almost never used and the crowded middle is coarse. **NF4** puts its levels at normal
# quantiles (`torch.special.ndtri` in `quant.nf4_codebook()`), so each is used about equally often:
# 8 positive, 7 negative and an exact zero (zero weights and padding stay exact), scaled to [-1, 1].

# %%
quant.require_bitsandbytes("Lesson 04")  # the set-up cell installs it (ftlab[quant]); a clear error if not
import bitsandbytes.functional as bnbf

print("NF4 levels:", [round(v, 4) for v in quant.NF4_CODEBOOK.tolist()])
bnb_table = bnbf.get_4bit_type("nf4", device="cpu")
print("identical to bitsandbytes' table:", torch.equal(quant.NF4_CODEBOOK, bnb_table))
assert torch.equal(quant.NF4_CODEBOOK, bnb_table)

# %% [markdown]
# Measure it: the mean squared error of each 4-bit grid, blockwise with the same absmax, on
# Gaussian weights and on every projection weight of this lesson's model, relative to the
# weights' variance. At full scale that is ~1B weights: one float32 copy quantized in one go
# would hold ~20 GB of temporaries, more than Colab's 12.7 GB of RAM, so `quant.codebook_errors`
# streams, one matrix at a time in slices of `quant.CHUNK` values, adding up squared errors.

# %%
from ftlab.models import load_causal_lm

plain_model, tokenizer = load_causal_lm()
n_params = sum(p.numel() for p in plain_model.parameters())
grids = {"int4": quant.int4_codebook(), "fp4 (E2M1)": quant.fp4_codebook(), "NF4": quant.NF4_CODEBOOK}
gauss = torch.randn(cfg.gauss_size, generator=g)
projections = (m.weight for n, m in plain_model.named_modules() if isinstance(m, torch.nn.Linear) and "proj" in n)
on_gauss = quant.codebook_errors([gauss], grids, cfg.blocksize)
on_model = quant.codebook_errors(projections, grids, cfg.blocksize)  # one matrix at a time
errors = {name: (on_gauss[name], on_model[name]) for name in grids}
for name, (eg, er) in errors.items():
    print(f"{name:11} relative MSE: Gaussian {eg:.4f}   this model's weights {er:.4f}")
print(f"streamed {on_model.tensors} weight matrices ({on_model.numel:,} weights), {quant.CHUNK:,} values at a "
      f"time: at most {quant.working_set_bytes() / 2**20:.0f} MiB of temporaries, where one float32 copy of "
      f"them all would take {4 * on_model.numel / 2**30:.2f} GiB before any")
assert min(errors, key=lambda k: errors[k][0]) == "NF4", "NF4 should have the lowest error on Gaussian weights"

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
scaled = blockwise_absmax(gauss, cfg.blocksize)[1].flatten().numpy()
ax1.hist(scaled, bins=120, density=True, color="0.8", label="weights / block absmax")
for k, (name, cb) in enumerate(grids.items()):
    ax1.plot(cb.numpy(), np.full(cb.numel(), 0.25 + 0.25 * k), "|", ms=14, mew=2, label=name)
ax1.set_title("where each grid puts its 16 levels")
ax1.legend(fontsize=7, loc="upper left")
names = list(errors)
x = np.arange(len(names))
ax2.bar(x - 0.2, [errors[n][0] for n in names], 0.4, label="Gaussian")
ax2.bar(x + 0.2, [errors[n][1] for n in names], 0.4, label="this model's weights")
ax2.set_xticks(x, names)
ax2.set_ylabel("MSE / variance")
ax2.set_title(f"4-bit error, blocks of {cfg.blocksize}")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# ### Drill 04b ★★☆ · An NF4 round trip
# Write `nf4_roundtrip(w, codebook)`: `w` is 1-D and a multiple of 64 long, `codebook` the 16 NF4
# levels (sorted). Cut `w` into blocks of 64, divide each by its absmax, snap every value to the
# nearest level, and return level x absmax with `w`'s shape. The check compares with bitsandbytes.

# %% tags=["answer"]
def nf4_roundtrip(w, codebook):
    raise NotImplementedError  # your code here


answer_04b = nf4_roundtrip

# %%
from ftlab.drills import check  # check(drill_id, answer): a pass, a hint, or "not attempted"

check("04b", answer_04b)

# %% cellView="form" tags=["solution"]
#@title Solution
# (blocks, 64) -> absmax per block -> scaled values in [-1, 1] -> distance to each of the 16
# levels (blocks, 64, 16) -> argmin -> level x absmax.
def solution_nf4_roundtrip(w, codebook):
    blocks = w.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    nearest = (blocks.unsqueeze(-1) / absmax.unsqueeze(-1) - codebook).abs().argmin(dim=-1)
    return (codebook[nearest] * absmax).reshape(w.shape)


solution_04b = solution_nf4_roundtrip
check("04b", solution_04b)

# %% [markdown]
# ### NF4 by hand equals bitsandbytes
# `blockwise_absmax` above, then the **NF4 lookup**: the index (0..15, 4 bits) of the level
# nearest each scaled value; dequantizing is level x absmax. The nearest level comes from the 15
# midpoints between levels (the count of midpoints below a value is its index): 04b's argmin
# without a (weights x 16) table, and a value exactly on a midpoint goes to the lower level, as
# in bitsandbytes (argmin's float distances can break that tie either way).

# %%
def nf4_quantize(w, blocksize, levels=quant.NF4_CODEBOOK):
    """w (numel a multiple of blocksize) -> codes (n_blocks, blocksize) uint8 in 0..15, absmax (n_blocks,)."""
    absmax, scaled = blockwise_absmax(w, blocksize)  # (n_blocks,), (n_blocks, blocksize)
    midpoints = (levels[:-1] + levels[1:]) / 2        # (15,): halfway between neighbouring levels
    codes = torch.bucketize(scaled, midpoints)        # (n_blocks, blocksize): midpoints below each value
    return codes.to(torch.uint8), absmax


def nf4_dequantize(codes, absmax, levels=quant.NF4_CODEBOOK):
    """codes (n_blocks, blocksize), absmax (n_blocks,) -> (n_blocks, blocksize): each level x its block's absmax."""
    return levels[codes.long()] * absmax.unsqueeze(1)


# %%
# One of the model's real weights three ways: by hand, with quant.quantize_nf4 (the tested copy) and with
# bitsandbytes, on the CPU whatever the model sits on (tests/test_quant.py holds bitsandbytes' CPU kernels
# to ftlab bit for bit).
cpu = torch.device("cpu")  # the one device of every comparison in this section
weight = plain_model.model.layers[0].mlp.up_proj.weight.detach().to(cpu)
codes, absmax = nf4_quantize(weight, cfg.blocksize)  # (n_blocks, 64), (n_blocks,)
mine = nf4_dequantize(codes, absmax).reshape(weight.shape).to(weight.dtype)
ours = quant.quantize_nf4(weight, cfg.blocksize)
packed, state = bnbf.quantize_4bit(weight, blocksize=cfg.blocksize, quant_type="nf4")
my_packed = (codes[:, 0::2] << 4) | codes[:, 1::2]  # (n_blocks, 32): two codes per byte, high nibble first
assert torch.equal(codes.flatten(), ours.codes.flatten()) and torch.equal(absmax, ours.absmax)
assert torch.equal(my_packed.flatten(), packed.flatten()) and torch.equal(absmax, state.absmax)
max_diff = {"ftlab": (mine.float() - quant.dequantize_nf4(ours).float()).abs().max().item(),
            "bitsandbytes": (mine.float() - bnbf.dequantize_4bit(packed, state).float()).abs().max().item()}
print(f"{tuple(weight.shape)} weight: the same 4-bit codes and absmax as ftlab and bitsandbytes; dequantized, "
      + ", ".join(f"max difference to {k} {v:.1e}" for k, v in max_diff.items()))
assert max(max_diff.values()) <= 1e-6

# %% [markdown]
# ### Drill 04a ★☆☆ · Bytes of one NF4 weight
# **Predict, then run:** a 4096 x 4096 weight in NF4 with blocksize 64 and **no** double
# quantization. How many bytes does bitsandbytes store, codes and scales together?

# %% tags=["answer"]
answer_04a = ...  # bytes

# %%
check("04a", answer_04a)

# %% cellView="form" tags=["solution"]
#@title Solution
# Two 4-bit codes per byte: 4096*4096/2 bytes. One fp32 absmax (4 bytes) per block of 64 weights.
n = 4096 * 4096
solution_04a = n // 2 + 4 * (n // 64)
check("04a", solution_04a)

# %% [markdown]
# ### Double quantization
# The fp32 absmax costs 32/64 = 0.5 bit per weight, an eighth on top of the 4 bits. QLoRA's
# *double quantization* quantizes the scales too: subtract their mean, then 8 bits each in blocks
# of 256 with one fp32 scale per block, 8/64 + 32/(64·256) bit per weight.

# %%
double = quant.quantize_nf4(weight, cfg.blocksize, double_quant=True)
for label, q in (("fp32 absmax", ours), ("double-quantized", double)):
    err = (quant.dequantize_nf4(q) - weight).pow(2).mean().item()
    print(f"{label:17}: {q.bits_per_parameter():.3f} bits per weight, MSE {err:.3e}")
bits = {dq: quant.bits_per_parameter(64, double_quant=dq) for dq in (False, True)}  # a large weight's limit
print(f"a 4096 x 4096 weight: {bits[False] * 4096**2 / 8:,.0f} bytes ({bits[False]} bits per weight), "
      f"double-quantized {bits[True] * 4096**2 / 8:,.0f} ({bits[True]:.3f})")

# %% [markdown]
# ### QLoRA by hand
# QLoRA is lesson 02's LoRA on a frozen 4-bit base: `ftlab.lora.LoRALinear` around
# `quant.NF4Linear`, which stores only the packed codes and scales and dequantizes on every
# forward. `quant.qlora_layer_pair` builds it, and bitsandbytes' `Linear4bit` under peft's LoRA
# `Linear`, from one float32 copy of a layer, with the same A and B, on one device. Compare them.

# %%
linear = plain_model.model.layers[0].self_attn.q_proj
mine, theirs = quant.qlora_layer_pair(linear, cfg.r, cfg.alpha, cfg.blocksize, device=cpu)
x = torch.randn(4, 10, linear.in_features, generator=g).to(cpu)
diff = (mine(x) - theirs(x)).abs().max().item()
trainable = [n for n, p in mine.named_parameters() if p.requires_grad]
print(f"hand-written QLoRA layer vs bitsandbytes + peft: max difference {diff:.1e}; trainable: {trainable}")
print(f"the frozen base stores {mine.base.quantized_bytes:,} bytes instead of {linear.weight.numel() * 4:,} (fp32)")
assert diff <= 1e-5 and trainable == ["A", "B"]
unquantized_bytes = sum(p.numel() * p.element_size() for p in plain_model.parameters())
del plain_model, linear, mine, theirs, projections  # free the unquantized model before the real run

# %% [markdown]
# ## 2. The real recipe
# What you run in a competition, step by step:
#
# 1. `load_causal_lm(quantization="nf4")`: transformers with `BitsAndBytesConfig(load_in_4bit=True,
#    bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=amp_dtype())`;
#    the matmuls run in bf16 on an L4, fp16 on a T4, fp32 on a CPU.
# 2. `prepare_model_for_kbit_training` upcasts the few unquantized weights (embeddings, norms) to
#    fp32 for stable training and turns on gradient checkpointing, the non-reentrant kind
#    (`use_reentrant=False`) PyTorch recommends.
# 3. peft LoRA on **every** linear (`target_modules="all-linear"`): with the base frozen in 4 bits,
#    the adapters do all the learning.
# 4. Paged 8-bit AdamW: optimizer state in 8 bits, paged to CPU memory if the GPU runs short. On a
#    CPU bitsandbytes' optimizers are ~10x slower here, so the tiny profile uses torch's AdamW.

# %%
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from ftlab.measure import param_bytes
from ftlab.models import count_parameters

model, tokenizer = load_causal_lm(quantization="nf4")
print(f"compute dtype {amp_dtype()}; base weights: {param_bytes(model) / 2**20:.2f} MiB in 4-bit "
      f"vs {unquantized_bytes / 2**20:.2f} MiB unquantized")
model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                        gradient_checkpointing_kwargs={"use_reentrant": False})
lora_config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
seed_everything(cfg.seed)  # the adapters' random init: the same on every run of this cell
model = get_peft_model(model, lora_config)
trainable = count_parameters(model, trainable_only=True)
print(f"trainable: {trainable:,} LoRA parameters on "
      f"{len([n for n, _ in model.named_modules() if n.endswith('lora_A')])} linear layers")


# %% [markdown]
# ### Before: what the 4-bit base makes of the questions
# Held-out questions (in the tiny profile those of lessons 00 and 02: people no training question
# mentions), two measures: the **response loss**, the mean loss per answer token in nats with the
# prompt masked as in training (`ftlab.evals.response_loss`), which moves first at any scale; and
# **exact match** of the generated answer, where answers are short facts (the tiny profile).
# Alpaca's answers are paragraphs that 24 generated tokens never equal (0% before and after), so
# the full profile's config turns exact match off.

# %%
from ftlab.data import load_instructions
from ftlab.chat import chat_prompt, generate
from ftlab.evals import exact_match, response_loss

test_rows = list(load_instructions("test").filter(lambda row: row["kind"] == cfg.eval_kind).select(range(cfg.eval_size)))
shown = [r["prompt"] for r in test_rows[:3]]


def held_out(m):
    """The lesson's held-out scores of model `m`: response loss (nats per answer token, lower is
    better) and, if the config measures it, exact match."""
    scores = {"loss": response_loss(m, tokenizer, test_rows, max_length=cfg.max_length, batch_size=cfg.eval_batch)}
    if cfg.exact_match:
        scores["exact match"] = exact_match(m, tokenizer, test_rows)
    return scores


def described(s):
    text = f"response loss {s['loss']:.3f} nats/token"
    return text + (f", exact match {s['exact match']:.0%}" if "exact match" in s else "")


def change(b, a):
    text = f"response loss {b['loss']:.2f} -> {a['loss']:.2f} nats/token"
    return text + (f", exact match {b['exact match']:.0%} -> {a['exact match']:.0%}" if "exact match" in b else "")


before_text = generate(model, tokenizer, shown)
before = held_out(model)
for prompt, out in zip(shown, before_text):
    print(f"Q: {prompt}\n   before: {out!r}")
print(f"held-out, before: {described(before)}")

# %% [markdown]
# ### A short SFT run
# Chat prompt + answer + EOS from `ftlab.sft`, the prompt and padding labelled -100 so that only the
# answer is trained (lesson 05); `measure.make_optimizer` builds the recipe's optimizer by name.

# %%
from functools import partial

from ftlab.measure import make_optimizer
from ftlab.sft import SFTCollator, tokenize_dataset
from ftlab.train import TrainConfig, causal_lm_loss, train

train_ds = tokenize_dataset(load_instructions("train"), tokenizer, max_length=cfg.max_length)
history = train(model, train_ds,
                TrainConfig(lr=cfg.lr, num_steps=cfg.num_steps, batch_size=cfg.batch_size,
                            grad_accum=cfg.grad_accum, seed=cfg.seed),
                loss_fn=causal_lm_loss, collate_fn=SFTCollator(tokenizer=tokenizer),
                optimizer=partial(make_optimizer, cfg.optimizer))

# %%
after_text = generate(model, tokenizer, shown)
after = held_out(model)
for r, out in zip(test_rows[:3], after_text):
    print(f"Q: {r['prompt']}\n   after: {out!r}\n   wanted: {r['response']!r}")
print(f"held-out: {change(before, after)}; "
      f"training loss {history.steps[0].loss:.2f} -> {history.final_loss:.2f} in {history.seconds:.0f} s")
if profile() == "tiny":  # measured: exact match 0% -> 55% (seeds 0-4 without the prompt masked: 37-50%)
    assert after["exact match"] >= before["exact match"] + 0.25, "QLoRA should teach the 4-bit model the answer format"
    assert after["loss"] < before["loss"] / 2, "the held-out answers should become far more likely"

# %% [markdown]
# ## 3. Memory: predicted, then measured
# `ftlab.memory.estimate` predicts each part of training memory from the config alone (lesson 07
# explains every term); `ftlab.measure.measure` counts the same parts in one real training step of
# *this* model: weights, gradients, optimizer state and every tensor saved for backward, on an
# unpadded batch so that both see the same tokens.

# %%
from ftlab import memory
from ftlab.measure import measure

ids = torch.randint(3, model.config.vocab_size, (cfg.mem_batch, cfg.mem_seq), generator=g).to(device())
batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
measured = measure(model, batch, make_optimizer("adamw", model.parameters(), lr=0.0))
precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype()]
predicted = memory.estimate(model.config, method="qlora", precision=precision, optimizer="adamw", r=cfg.r,
                            target_modules="all-linear", batch_size=cfg.mem_batch, seq_len=cfg.mem_seq,
                            grad_checkpointing=True, adam_state="param")
print(memory.side_by_side(predicted, measured))
if profile() == "tiny":
    assert abs(predicted.static / measured.static - 1) < 0.01
    assert abs(predicted.activations / measured.activations - 1) < 0.10

# %% [markdown]
# The same calculator on the full profile's model and on Llama-3.2-1B: what fits a T4 and an L4. A
# card's usable memory is its total less the ~0.5 GiB the CUDA context takes before any tensor.

# %%
print("usable: " + ", ".join(f"{card} {(memory.GPUS[card] - memory.CUDA_CONTEXT) / 2**30:.1f} GiB of "
                             f"{memory.GPUS[card] / 2**30:.1f}" for card in ("T4", "L4")))
print(f"{'model':16} {'card':4} {'batch x seq':>11} {'total GiB':>9} {'peak GiB':>8}  fits")
for name in ("TinyLlama-1.1B", "Llama-3.2-1B"):
    for card, prec in (("T4", "fp16"), ("L4", "bf16")):
        for b, s in ((4, 512), (8, 1024)):
            est = memory.estimate(memory.known_config(name), method="qlora", precision=prec, optimizer="adamw8bit",
                                  r=16, target_modules="all-linear", batch_size=b, seq_len=s, grad_checkpointing=True)
            print(f"{name:16} {card:4} {f'{b} x {s}':>11} {est.total / 2**30:9.2f} {est.peak / 2**30:8.2f}  "
                  f"{'yes' if est.fits(card) else 'no'} ({est.headroom(card) / 2**30:+.1f} GiB)")

# %% [markdown]
# ## 4. Save the adapter
# Only the LoRA factors are saved (peft's format: `adapter_config.json` + `adapter_model.safetensors`).
# Anyone with the base model loads them on top of it.

# %%
import os
from pathlib import Path

adapter_dir = Path(tempfile.mkdtemp()) / "qlora_adapter"
model.save_pretrained(adapter_dir)
adapter_bytes = sum(f.stat().st_size for f in adapter_dir.iterdir())
base_bytes = n_params * 2  # the base in 16-bit, as you would ship it
print(sorted(os.listdir(adapter_dir)))
print(f"adapter {adapter_bytes / 2**10:.0f} KiB vs base {base_bytes / 2**20:.2f} MiB in 16-bit "
      f"({adapter_bytes / base_bytes:.1%})")

# %% [markdown]
# ## 5. Merging: into 16-bit weights, not back into 4 bits
# A merged model (W + scale·B·A in one weight) runs without peft and with no extra latency. The
# adapter was trained on top of the *dequantized 4-bit* weights, so there are three ways to merge:
# 1. into the dequantized 4-bit base, kept in 16-bit: exactly the function you trained;
# 2. into the original 16-bit base (the usual practice), which differs by the quantization error;
# 3. into the 4-bit base: merge, then quantize W + scale·B·A again: every weight gets a fresh
#    rounding error, and part of the learned update is rounded with it.
#
# Measure each against the QLoRA model itself: the KL divergence of the next-token distributions
# on held-out questions (0 = the same model), and the held-out scores of section 2.

# %%
from peft import PeftModel

from ftlab.runtime import capped_rows

lora_prefix = "base_model.model."
dequantized = {}
noise_over_update = []
for name, module in model.named_modules():
    if hasattr(module, "base_layer") and hasattr(getattr(module.base_layer, "weight", None), "quant_state"):
        W4 = bnbf.dequantize_4bit(module.base_layer.weight.data, module.base_layer.weight.quant_state)
        dequantized[name.removeprefix(lora_prefix) + ".weight"] = W4  # in its own dtype: 16-bit at full scale
        W4, delta = W4.float(), module.get_delta_weight("default").float()
        requant = quant.dequantize_nf4(quant.quantize_nf4(W4 + delta, cfg.blocksize))
        noise_over_update.append(((requant - (W4 + delta)).norm() / delta.norm()).item())
print(f"re-quantizing W + update: rounding error / update size = {np.median(noise_over_update):.2f} "
      f"(median over {len(noise_over_update)} layers)")


def merged_model(base_weights, requantize=False):
    """The base (full precision in tiny, 16-bit in full) with `base_weights` swapped in and the
    adapter merged into it; with `requantize`, every merged projection is rounded to NF4 again."""
    base, _ = load_causal_lm(dtype=torch.float32 if profile() == "tiny" else amp_dtype())
    state = base.state_dict()
    state.update({k: v.to(state[k].device, state[k].dtype) for k, v in base_weights.items() if k in state})
    base.load_state_dict(state)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()
    if requantize:
        with torch.no_grad():
            for n, m in merged.named_modules():
                if isinstance(m, torch.nn.Linear) and "proj" in n:
                    m.weight.copy_(quant.dequantize_nf4(quant.quantize_nf4(m.weight, cfg.blocksize)))
    return merged


# the held-out prompts in batches of cfg.eval_batch (an fp32 log-softmax over the vocabulary at every
# position is large at full scale); capped_rows applies the run's evaluation cap, if one is set
kl_rows = capped_rows(test_rows, cfg.eval_batch)
batches = [tokenizer([chat_prompt(tokenizer, r["prompt"]) for r in kl_rows[i:i + cfg.eval_batch]],
                     return_tensors="pt", padding=True, add_special_tokens=False)
           for i in range(0, len(kl_rows), cfg.eval_batch)]


@torch.no_grad()
def next_token_logprobs(m):
    """Log-probabilities of the next token at every prompt position, batch by batch."""
    m.eval()
    return [m(**enc.to(device())).logits.float().log_softmax(-1)[enc["attention_mask"].bool().to(device())]
            for enc in batches]


def kl_to(reference, logprobs):
    """Mean KL(reference || model) per prompt position, over all batches."""
    total = sum(torch.nn.functional.kl_div(lp, ref, log_target=True, reduction="sum")
                for lp, ref in zip(logprobs, reference))
    return total.item() / sum(ref.shape[0] for ref in reference)


reference = next_token_logprobs(model)
kl = {}
for label, weights, requantize in (("1. into the dequantized 4-bit base", dequantized, False),
                                   ("2. into the original 16-bit base", {}, False),
                                   ("3. into 4 bits (merge, re-quantize)", dequantized, True)):
    merged = merged_model(weights, requantize)  # one at a time: at full scale each is a 1B model
    kl[label] = kl_to(reference, next_token_logprobs(merged))
    print(f"{label:38} KL to the QLoRA model {kl[label]:.2e}   {described(held_out(merged))}")
    del merged
print(f"{'(the QLoRA model itself)':38} {'':25} {described(after)}")
labels = list(kl)
if profile() == "tiny":
    assert kl[labels[0]] < 1e-4, "merging into the dequantized base is the trained model"
    assert kl[labels[2]] > 10 * kl[labels[0]] and kl[labels[1]] > 10 * kl[labels[0]]
_ = headline(f"{profile()}: NF4 = bitsandbytes bit for bit; QLoRA r={cfg.r} on all linears: held-out "
             f"{change(before, after)}; memory predicted/measured {predicted.total / measured.total:.3f}")

# %% [markdown]
# ## Drills
# Drills 04b and 04a sat in section 1; these two need the whole recipe.

# %% [markdown]
# ### Drill 04c ★★☆ · Merging a QLoRA adapter
# You trained a LoRA adapter on an NF4 base and want one merged model to ship. What do you do?

# %%
from ftlab.drills import describe  # the drill's title, prompt and options

print(describe("04c"))

# %% tags=["answer"]
answer_04c = ...  # "a", "b", "c" or "d"

# %%
check("04c", answer_04c)

# %% cellView="form" tags=["solution"]
#@title Solution
# Section 5 measured it: the adapter learned its update on top of the dequantized NF4 weights, so
# merging into exactly those (kept in 16-bit) is the QLoRA model itself (KL about 0). The original
# 16-bit base differs from them by the quantization error, and re-quantizing W + scale*B@A rounds
# part of the update away. Quantize again only if you must serve in 4-bit.
solution_04c = "c"
check("04c", solution_04c)

# %% [markdown]
# ### Drill 04d ★★★ · What dominates QLoRA's peak
# Llama-3.2-1B with the QLoRA recipe at batch 16 x 512 with checkpointing: the calculator's
# peak is 15.7 GiB, too much for a T4. Which part is the biggest?

# %%
print(describe("04d"))

# %% tags=["answer"]
answer_04d = ...  # "a", "b", "c" or "d"

# %%
check("04d", answer_04d)

# %% cellView="form" tags=["solution"]
#@title Solution
# Ask the calculator for the parts: the loss's fp32 log-softmax over 128,256 tokens at 16 x 511
# positions is ~3.9 GiB, and its backward makes two more such buffers (the "peak" line).
est = memory.estimate(memory.known_config("Llama-3.2-1B"), method="qlora", precision="fp16", optimizer="adamw8bit",
                      r=16, target_modules="all-linear", batch_size=16, seq_len=512, grad_checkpointing=True)
print({k: f"{v / 2**30:.2f} GiB" for k, v in {**est.details, "weights": est.weights, "transient": est.transient}.items()})
solution_04d = "c"
check("04d", solution_04d)

# %% [markdown]
# ## Summary
# - Blockwise absmax keeps an outlier from flattening a whole tensor; NF4's normal-quantile levels
#   beat int4 and fp4 on normally distributed weights, and double quantization takes the scales
#   from 0.5 to ~0.127 bit per weight (drill 04a counts a layer's bytes).
# - The lesson's `blockwise_absmax` and NF4 lookup (drill 04b) equal `ftlab.quant` and bitsandbytes
#   bit for bit (codes, scales, dequantized weights), and `LoRALinear(NF4Linear(...))` equals
#   `Linear4bit` + peft's LoRA: QLoRA is LoRA on a frozen 4-bit base, nothing more.
# - The recipe: 4-bit load, `prepare_model_for_kbit_training` with non-reentrant checkpointing,
#   LoRA on all linears, paged 8-bit AdamW. The 4-bit model learned to answer: its held-out
#   response loss fell (and, on the tiny profile's short answers, exact match rose).
# - The calculator predicted this run's memory part by part; for a 1B model at 4 x 512 on a T4
#   it leaves gigabytes to spare, and the loss over a large vocabulary runs out first (drill 04d).
# - Merge adapters into 16-bit weights, ideally the dequantized 4-bit ones the adapter was trained
#   on (KL 0: the same model; drill 04c). Merging back into 4 bits re-rounds every weight.
#
# **Try next:** set `r=64` or `target_modules=["q_proj","v_proj"]` and compare the held-out scores
# and trainable share; in the full profile, raise `batch_size` until `estimate(...).fits("T4")` says
# no, then check it against `torch.cuda.max_memory_allocated()`. Lesson 05 masks the prompt out.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
