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
# # 03 · PEFT methods: seven ways to fine-tune one classifier
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/03_peft_methods.ipynb)
#
# **What you will learn**
# - how a linear probe, full fine-tuning, LoRA, Houlsby adapters, prompt tuning and IA3 compare on
#   one sentiment classifier: trainable parameters, accuracy, seconds and peak memory;
# - that *where* LoRA puts its rank matters more than *how much* rank: a small rank on every
#   linear layer beats a larger one on the attention's query and value alone;
# - how small an adapter is on disk, and what `merge_and_unload` does to inference time;
# - how one frozen base serves several tasks, one adapter each, swapped per request.
#
# Run the cells top to bottom. On a CPU the whole notebook takes about a minute.
#
# ## Set-up
# On Colab the first cell installs `ftlab` (keeping Colab's torch); anywhere else it does nothing.

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
# Every method gets the same data, epochs and schedule (10% warm-up, then a linear decay), its
# own learning rate, and trains the same *fresh classification head* (a pretrained encoder has
# no head for our labels), always counted.
#
# **The full profile on a T4, estimated.** DistilBERT-base has 43M weights outside its
# embeddings: at most 6 x 43M = 0.26 GFLOP per trained token. Nine runs of 2 epochs over 8,000
# reviews of about 40 padded tokens make 1.4 PFLOP, but steps of 1,300 tokens keep a T4 busy
# poorly: at about 30 ms for each of 4,200 steps, expect 4 minutes with the downloads. Full
# fine-tuning keeps 1.0 GiB of weights, gradients and AdamW state, far below the T4's 15 GiB.

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0                 # same head init and batch order on every run
    train_size: int = 2000        # training reviews (the whole tiny train split)
    test_size: int = 500          # test reviews scored
    max_length: int = 64          # tokens per review; longer ones are cut
    batch_size: int = 32          # reviews per optimizer step
    num_epochs: int = 4           # passes over the training set, the same for every method
    lr_head: float = 4e-3         # the fresh head (pre_classifier + classifier) in every PEFT method
    lr_probe: float = 1e-2        # the linear probe: one nn.Linear on frozen features
    lr_full: float = 5e-4         # full fine-tuning: every weight (head included) moves
    lr_lora: float = 4e-3         # LoRA factors
    lora_ranks: tuple = (4, 16)   # the rank sweep, on q_lin and v_lin (the usual targets)
    alpha_per_r: int = 8          # lora_alpha = alpha_per_r * r: the scale alpha / r is the same at every rank
    recipe_r: int = 2             # the LoRA recipe: this rank on every linear layer of every block
    bottleneck: int = 8           # Houlsby adapter width (2 * dim * bottleneck + bottleneck + dim params each)
    lr_adapter: float = 1e-2      # Houlsby adapters
    num_virtual_tokens: int = 8   # prompt tuning: learned input vectors put before every review
    lr_prompt: float = 3e-2       # prompt tuning's soft prompt
    lr_ia3: float = 1e-1          # IA3's scaling vectors (they start at 1.0, so large steps)
    margin: float = 0.03          # tiny-profile claim: LoRA within this of full fine-tuning's accuracy
    max_share: float = 0.05       # ... while training at most this share of the parameters


cfg = Config()
if profile() == "full":  # distilbert-base-uncased on SST-2, sized for a T4
    # usual values for DistilBERT-base (alpha = 2r, lr 3e-5 for full FT), not yet measured: expect to tune them
    cfg = Config(train_size=8000, test_size=872, num_epochs=2, lr_head=5e-4, lr_probe=1e-3,
                 lr_full=3e-5, lr_lora=5e-4, lora_ranks=(4, 8, 16), alpha_per_r=2, recipe_r=8, bottleneck=64,
                 lr_adapter=1e-3, num_virtual_tokens=20, lr_prompt=3e-2, lr_ia3=5e-3)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. The task and the model
# Sentiment of short reviews (1 positive, 0 negative). Tiny profile: the micro-world's plain
# ("The Zorbel stew was superb."), negated ("was not good") and contrasted reviews ("the crust was
# bland but the pie was superb"); its test split uses opinion words training never does. Full: SST-2.

# %%
import torch
from transformers.utils import logging as hf_logging

from ftlab.data import load_text_classification
from ftlab.data.reviews import take
from ftlab.models import count_parameters, load_text_encoder

hf_logging.disable_progress_bar()  # no "Loading weights" bar for each of the models below
# train_size reviews drawn at random; the first test_size test reviews
train_ds = take(load_text_classification("train"), cfg.train_size, seed=cfg.seed)
test_ds = take(load_text_classification("test"), cfg.test_size)
model, tokenizer = load_text_encoder(seed=cfg.seed)
n_params = count_parameters(model)  # the whole classifier: every share below is of this number
print(f"{len(train_ds):,} training and {len(test_ds):,} test reviews, e.g. {train_ds[0]}")
print(f"{type(model).__name__}: {n_params:,} parameters, {model.config.n_layers} blocks, "
      f"dim {model.config.dim}")
print("its new head:", model.pre_classifier, "-> ReLU ->", model.classifier)

# %% [markdown]
# Every linear layer of a block has a name, and LoRA and IA3 choose layers by name: `q_lin`,
# `k_lin`, `v_lin` (attention query, key, value), `out_lin` (attention output), `lin1` and `lin2`
# (feed-forward up and down). Adapters go after `out_lin` and `lin2`.

# %%
block = model.distilbert.transformer.layer[0]
for name, module in block.named_modules():
    if isinstance(module, torch.nn.Linear):
        print(f"{name:18} {module.in_features:>5} -> {module.out_features:<5}")

# %% [markdown]
# ## 2. One training loop, one scoreboard
# `fit` trains whatever is trainable with `ftlab.train` (lesson 00's loop): the method's own
# parameters at its learning rate, the fresh head at `lr_head`. `record` adds a row to the table.

# %%
import math

import pandas as pd

from ftlab.models.text import classifier_accuracy
from ftlab.runtime import device
from ftlab.train import TrainConfig, classification_loss, train


def collate(rows):
    """Tokenise a micro-batch of reviews, padded to its longest one."""
    batch = tokenizer([r["text"] for r in rows], padding=True, truncation=True,
                      max_length=cfg.max_length, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": torch.tensor([r["label"] for r in rows])}


def fit(model, lr, head_lr=None, data=None):
    """Train every parameter with requires_grad; the head (names with 'classifier') at head_lr."""
    data = train_ds if data is None else data
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if "classifier" not in n], "lr": lr},
              {"params": [p for n, p in named if "classifier" in n], "lr": head_lr or lr}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    steps = cfg.num_epochs * math.ceil(len(data) / cfg.batch_size)
    return train(model, data, TrainConfig(num_epochs=cfg.num_epochs, batch_size=cfg.batch_size,
                                          warmup_steps=steps // 10, lr_schedule="linear", seed=cfg.seed),
                 optimizer=optimizer, loss_fn=classification_loss, collate_fn=collate, progress=False)


def accuracy(model, ds, batch_size=256):
    """Share of ``ds`` the classifier labels right (ftlab.models.text.classifier_accuracy)."""
    return classifier_accuracy(model, tokenizer, ds["text"], ds["label"], batch_size, cfg.max_length)


results = {}


def record(method, model, history, acc=None):
    """Score ``model`` on the test reviews (unless ``acc`` is given) and keep one table row."""
    trainable = count_parameters(model, trainable_only=True)
    results[method] = {"trainable": trainable, "share": trainable / n_params,
                       "accuracy": accuracy(model, test_ds) if acc is None else acc, "seconds": history.seconds,
                       "peak MiB": (history.peak_memory_bytes or 0) / 2**20,
                       "grads+Adam MiB": trainable * 12 / 2**20}  # fp32 gradient + two moments
    print(f"{method}: accuracy {results[method]['accuracy']:.3f}, {trainable:,} trainable parameters "
          f"({results[method]['share']:.2%})")
    return results[method]

# %% [markdown]
# ## 3. Linear probe: freeze everything, train one linear layer
# Run the frozen encoder once, keep the hidden state of `[CLS]` (the token the head reads), and
# train one `nn.Linear(dim, 2)` on it: the probe measures what the pretrained features hold.

# %%
from torch.utils.data import TensorDataset

from ftlab.models.text import sentence_features


def cls_features(model, ds, batch_size=256):
    """(len(ds), dim) hidden states of [CLS] from the frozen encoder (the token the head reads)."""
    return sentence_features(model, tokenizer, ds["text"], "cls", batch_size, cfg.max_length)


train_x, test_x = cls_features(model, train_ds), cls_features(model, test_ds)
mean, std = train_x.mean(0), train_x.std(0) + 1e-6  # standardise: probes are sensitive to scale
probe = torch.nn.Linear(train_x.shape[1], 2).to(device())
history = train(probe, TensorDataset((train_x - mean) / std, torch.tensor(train_ds["label"])),
                TrainConfig(lr=cfg.lr_probe, num_epochs=cfg.num_epochs, batch_size=cfg.batch_size,
                            seed=cfg.seed), loss_fn=classification_loss, progress=False)
with torch.no_grad():
    pred = probe(((test_x - mean) / std).to(device())).argmax(-1).cpu()
probe_acc = (pred == torch.tensor(test_ds["label"])).float().mean().item()
_ = record("linear probe", probe, history, acc=probe_acc)

# %% [markdown]
# Barely above chance in the tiny profile: the tiny encoder was pretrained only to fill in masked
# words, and nothing asked its `[CLS]` vector to summarise a sentence (data/text/QUALITY.md: a
# probe on it is hardly better than one on random features). Real DistilBERT's features probe
# much better. Either way, to do well the encoder itself has to change, as every method below does.
#
# ## 4. Full fine-tuning: every weight moves
# The reference: the best accuracy we expect, at the highest cost in trainable parameters,
# gradients and optimizer state.

# %%
model, _ = load_text_encoder(seed=cfg.seed)
history = fit(model, cfg.lr_full)
full = record("full fine-tuning", model, history)

# %% [markdown]
# ## 5. LoRA with peft: the rank sweep, then where the rank goes
# LoRA (lesson 02) freezes each chosen weight `W` and learns `W + (alpha / r) B A` with `A`
# (r x d_in) and `B` (d_out x r, zeros at the start). First the usual set-up: `q_lin` and
# `v_lin` only, at the ranks of `cfg.lora_ranks`. `modules_to_save` makes peft train (and save)
# the head too. `alpha = alpha_per_r * r` keeps the scale `alpha / r` the same at every rank.

# %%
from peft import LoraConfig, get_peft_model

HEAD = ("pre_classifier", "classifier")  # trained in full and saved with every adapter
ALL_LINEAR = ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]


def lora_config(r, targets):
    return LoraConfig(r=r, lora_alpha=cfg.alpha_per_r * r, target_modules=targets,
                      modules_to_save=list(HEAD), task_type="SEQ_CLS")


for r in cfg.lora_ranks:
    model = get_peft_model(load_text_encoder(seed=cfg.seed)[0], lora_config(r, ["q_lin", "v_lin"]))
    record(f"LoRA r={r} (q, v)", model, fit(model, cfg.lr_lora, cfg.lr_head))

# %% [markdown]
# On `q_lin`/`v_lin` alone, more rank does not reliably buy accuracy, and the largest rank trains
# more than `cfg.max_share` of the model. What moves the needle is *where* the rank goes: the
# recipe below spreads r=2 over **every** linear layer of every block (fewer parameters than
# r=16 on two), so LoRA can change what attention looks at (`k_lin`), what it passes on
# (`out_lin`) and the feed-forward (`lin1`, `lin2`), not only queries and values.

# %%
lora_model = get_peft_model(load_text_encoder(seed=cfg.seed)[0], lora_config(cfg.recipe_r, ALL_LINEAR))
lora_model.print_trainable_parameters()  # peft's count includes the frozen copy of the head it keeps
lora = record(f"LoRA r={cfg.recipe_r} (all linear)", lora_model, fit(lora_model, cfg.lr_lora, cfg.lr_head))

# %% [markdown]
# ## 6. Houlsby adapters, by hand
# An adapter (Houlsby et al., 2019) is a small network in the frozen model: after a sub-layer's
# output projection it adds `up(gelu(down(h)))` to `h`, with `down` (bottleneck x dim) and `up`
# (dim x bottleneck). `up` starts at zero, so at first the model is exactly the pretrained one.
#
# ### Drill 03d ★★☆ · Write the adapter forward
# Write `adapter_forward(h, W_down, b_down, W_up, b_up)` for `h` (..., dim), `W_down` (bottleneck
# x dim), `W_up` (dim x bottleneck); the check compares it with ftlab's `BottleneckAdapter`.

# %% tags=["answer"]
def adapter_forward(h, W_down, b_down, W_up, b_up):
    raise NotImplementedError  # your code here


answer_03d = adapter_forward

# %%
check("03d", answer_03d)

# %% cellView="form" tags=["solution"]
#@title Solution
# Down to the bottleneck, GELU, back up, and add the input (the skip connection). With W_up and
# b_up at zero this returns h: a new adapter changes nothing.
import torch.nn.functional as F


def solution_adapter_forward(h, W_down, b_down, W_up, b_up):
    return h + F.linear(F.gelu(F.linear(h, W_down, b_down)), W_up, b_up)


solution_03d = solution_adapter_forward
check("03d", solution_03d)

# %% [markdown]
# The lesson's adapter. peft has no Houlsby adapters, so the reference is ftlab's
# [`BottleneckAdapter`](https://github.com/ftlab-course/ftlab/blob/main/ftlab/adapters.py), given
# a random `up` (a zero one would hide a wrong formula). Then `add_adapters` puts one after
# `out_lin` and one after `lin2` in every block; fresh, they must leave the logits as they were.

# %%
import torch.nn.functional as F

from ftlab.adapters import BottleneckAdapter, adapter_param_count, add_adapters


def houlsby_adapter(h, W_down, b_down, W_up, b_up):
    """Houlsby adapter on the last dimension: h (..., dim) -> (..., dim)."""
    z = F.gelu(h @ W_down.T + b_down)  # (..., bottleneck): down, then the non-linearity
    return h + z @ W_up.T + b_up  # (..., dim): back up, plus the skip connection


model, _ = load_text_encoder(seed=cfg.seed)
reference = BottleneckAdapter(model.config.dim, cfg.bottleneck)
torch.nn.init.normal_(reference.up.weight, std=0.1)
h = torch.randn(4, 7, model.config.dim)  # (reviews, tokens, dim)
with torch.no_grad():
    ours, theirs = houlsby_adapter(h, reference.down.weight, reference.down.bias, reference.up.weight,
                                   reference.up.bias), reference(h)
print(f"largest difference from ftlab's BottleneckAdapter: {(ours - theirs).abs().max().item():.1e}")
torch.testing.assert_close(ours, theirs)

batch = collate([test_ds[i] for i in range(8)])
inputs = {k: v.to(device()) for k, v in batch.items() if k != "labels"}
with torch.no_grad():
    before = model(**inputs).logits
    add_adapters(model, target_names=("out_lin", "lin2"), bottleneck=cfg.bottleneck, trainable_names=HEAD)
    after = model(**inputs).logits
print(f"largest change of the logits when the adapters go in: {(after - before).abs().max().item():.1e}")
assert torch.equal(before, after), "a fresh adapter must be the identity"
n_adapters = sum(isinstance(m, BottleneckAdapter) for m in model.modules())
print(f"{n_adapters} adapters x {adapter_param_count(model.config.dim, cfg.bottleneck):,} parameters")
houlsby = record(f"Houlsby adapters (b={cfg.bottleneck})", model, fit(model, cfg.lr_adapter, cfg.lr_head))

# %% [markdown]
# ## 7. Prompt tuning and IA3 with peft
# **Prompt tuning** freezes every weight and learns `num_virtual_tokens` input vectors that peft
# puts before each review's word embeddings, a "soft prompt" (peft does not know DistilBERT's name
# for its width, `dim`, so we pass the sizes). The head now reads the first *virtual* token.
#
# **IA3** multiplies activations element-wise by one learned vector per wrapped layer: attention's
# keys and values, and the input of the feed-forward's second layer. The vectors start at 1.0.

# %%
from peft import IA3Config, PromptTuningConfig

base = load_text_encoder(seed=cfg.seed)[0]
prompt_config = PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=cfg.num_virtual_tokens,
                                   token_dim=base.config.dim, num_layers=base.config.n_layers,
                                   num_attention_heads=base.config.n_heads, num_transformer_submodules=1,
                                   modules_to_save=list(HEAD))
model = get_peft_model(base, prompt_config)
prompt = record(f"prompt tuning ({cfg.num_virtual_tokens} tokens)", model, fit(model, cfg.lr_prompt, cfg.lr_head))

ia3_config = IA3Config(task_type="SEQ_CLS", target_modules=["k_lin", "v_lin", "lin2"],
                       feedforward_modules=["lin2"], modules_to_save=list(HEAD))
model = get_peft_model(load_text_encoder(seed=cfg.seed)[0], ia3_config)
ia3 = record("IA3", model, fit(model, cfg.lr_ia3, cfg.lr_head))

# %% [markdown]
# **Prefix tuning** learns, instead of input vectors, `m` key and `m` value vectors for *every*
# attention layer, read as `m` extra past tokens: `m x 2 x L x d` numbers, `d` the width of one
# layer's keys (the model width, or less when keys and values share heads, as in Llama's
# grouped-query attention). DistilBERT takes no past keys and values, so it sits out of the table.
#
# ### Drill 03e ★★☆ · Predict, then run: prefix tuning on TinyLlama-1.1B
# TinyLlama-1.1B: 22 layers of width 2048, 4 key/value heads of width 64. How many parameters
# does prefix tuning with m = 8 train? The cell after the solution counts them.

# %% tags=["answer"]
answer_03e = ...  # your prediction

# %%
check("03e", answer_03e)

# %% cellView="form" tags=["solution"]
#@title Solution
# d is the key width: 4 key/value heads x 64 = 256, not the model width. Keys and values (2),
# in each of the 22 layers, for each of the 8 prefix positions.
solution_03e = 8 * 2 * 22 * (4 * 64)
check("03e", solution_03e)

# %% [markdown]
# peft's `PrefixTuningConfig` on the real TinyLlama-1.1B architecture, built on the `meta` device
# (shapes only, nothing downloaded), in both profiles:

# %%
from peft import PrefixTuningConfig
from transformers import AutoModelForCausalLM

from ftlab.memory import known_config

m = 8  # prefix positions (drill 03e's m)
llama_config = known_config("TinyLlama-1.1B")
with torch.device("meta"):
    decoder = AutoModelForCausalLM.from_config(llama_config)
prefix_model = get_peft_model(decoder, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=m))
prefix_trainable = count_parameters(prefix_model, trainable_only=True)
L, d = llama_config.num_hidden_layers, llama_config.num_key_value_heads * llama_config.head_dim
print(f"prefix tuning, m = {m}: peft trains {prefix_trainable:,} parameters; m x 2 x L x d = {m} x 2 x {L} x {d} "
      f"= {m * 2 * L * d:,} ({prefix_trainable / count_parameters(prefix_model):.4%} of the model); prompt "
      f"tuning's m x d_model would be {m * llama_config.hidden_size:,}")
assert prefix_trainable == m * 2 * L * d
del prefix_model, decoder

# %% [markdown]
# ## 8. The comparison
# `share` is of the classifier's parameters; `grads+Adam MiB` is what training keeps per trainable
# parameter in fp32 (a gradient and AdamW's two moments, 12 bytes). `peak MiB` is what
# `ftlab.train` measured: on a GPU each run's own peak; on a CPU the whole process's peak so far,
# which only grows down the table (compare GPU numbers, not CPU ones).

# %%
table = pd.DataFrame(results).T[["trainable", "share", "accuracy", "seconds", "peak MiB", "grads+Adam MiB"]]
table.style.format({"trainable": "{:,.0f}", "share": "{:.2%}", "accuracy": "{:.3f}", "seconds": "{:.1f}",
                    "peak MiB": "{:,.0f}", "grads+Adam MiB": "{:.2f}"})

# %%
from matplotlib.figure import Figure

fig = Figure(figsize=(7, 4))
ax = fig.subplots()
for method, row in results.items():
    ax.scatter(row["trainable"], row["accuracy"])
    ax.annotate(method, (row["trainable"], row["accuracy"]), fontsize=7, xytext=(4, -3), textcoords="offset points")
ax.set(xscale="log", xlabel="trainable parameters (log scale)", ylabel="test accuracy",
       title=f"{profile()} profile: accuracy against what each method trains")
fig

# %% [markdown]
# One seed is one draw. `scripts/peft_seeds.py` runs this comparison for seeds 0, 1 and 2 (only
# `seed` changes: the fresh head and the batch order) and writes the accuracies to
# [docs/peft_seeds.md](https://github.com/ftlab-course/ftlab/blob/main/docs/peft_seeds.md). In the
# tiny profile they show:
#
# - **LoRA r=2 on every linear layer matches full fine-tuning** on every seed, training less than
#   `cfg.max_share` of the parameters; the cell below asserts it within `cfg.margin`.
# - **Rank on q and v alone swings with the seed**, and more of it does not reliably help. The errors are
#   mostly negated reviews ("was not good"): attention must tie "not" to its word.
# - **Houlsby adapters and IA3 can come close, not reliably.** Every method must first leave the
#   loss plateau at log 2 (the fresh head guessing); those that change attention less sometimes
#   spend most of the training there.
# - **Prompt tuning stays near chance**, its known weakness on small models (Lester et al., 2021:
#   soft prompts catch up with fine-tuning only around ten billion parameters). On
#   DistilBERT-base (full profile) it learns, and still trails LoRA.
# - The probe confirms section 3: the frozen features hold little sentiment.

# %%
if profile() == "tiny":  # the lesson's claim, checked every time the notebook runs
    assert lora["share"] <= cfg.max_share, f"the LoRA recipe trains {lora['share']:.1%} > {cfg.max_share:.0%}"
    assert lora["accuracy"] >= full["accuracy"] - cfg.margin, \
        f"LoRA {lora['accuracy']:.3f} is more than {cfg.margin} below full fine-tuning {full['accuracy']:.3f}"
    assert full["accuracy"] >= results["linear probe"]["accuracy"] + 0.2, "fine-tuning should beat the probe by far"
print(f"LoRA {lora['accuracy']:.3f} vs full fine-tuning {full['accuracy']:.3f} "
      f"(margin {cfg.margin}), with {lora['share']:.1%} of the parameters")

# %% [markdown]
# ## 9. An adapter on disk
# `save_pretrained` on a peft model writes only the adapter: the LoRA factors, the head
# (`modules_to_save`) and an `adapter_config.json` naming the base model. Compare the whole model.

# %%
from pathlib import Path

out_dir = Path(tempfile.mkdtemp(prefix="ftlab03_"))


def folder_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


lora_model.save_pretrained(out_dir / "sentiment")
load_text_encoder(seed=cfg.seed)[0].save_pretrained(out_dir / "full_model")
adapter_bytes, model_bytes = folder_bytes(out_dir / "sentiment"), folder_bytes(out_dir / "full_model")
print(sorted(f.name for f in (out_dir / "sentiment").iterdir()))
print(f"adapter {adapter_bytes / 1024:,.0f} KiB vs full model {model_bytes / 1024:,.0f} KiB "
      f"({adapter_bytes / model_bytes:.1%})")
if profile() == "tiny":
    assert adapter_bytes < 0.1 * model_bytes, "an adapter should be a small fraction of the model"

# %% [markdown]
# ## 10. Merge: `merge_and_unload`
# Unmerged, every wrapped layer computes `W x` and then the extra `B (A x)`: two more small
# matmuls per wrapped layer. `merge_and_unload()` adds `scale * B A` into each `W` once and hands
# back the plain transformers model, so inference costs what the base model costs. The
# predictions must not change.

# %%
import time

batches = [{k: v.to(device()) for k, v in collate(test_ds.select(range(i, min(i + 64, len(test_ds))))).items()
            if k != "labels"} for i in range(0, len(test_ds), 64)]


@torch.no_grad()
def inference_seconds(model, repeats=3):
    """Best of ``repeats`` timed passes over the test set (the least disturbed), and the logits."""
    model.eval()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        start = time.perf_counter()
        logits = torch.cat([model(**batch).logits for batch in batches])
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        times.append(time.perf_counter() - start)
    return min(times), logits


unmerged_s, logits_before = inference_seconds(lora_model)
merged = lora_model.merge_and_unload()
merged_s, logits_after = inference_seconds(merged)
print(f"{type(merged).__name__}, LoRA layers left: {sum('lora' in n for n, _ in merged.named_modules())}")
print(f"largest logit change from merging: {(logits_after - logits_before).abs().max().item():.1e}")
print(f"inference over {len(test_ds)} reviews: unmerged {unmerged_s * 1000:.0f} ms, merged {merged_s * 1000:.0f} ms")
assert torch.allclose(logits_before, logits_after, atol=1e-4), "merging must not change the predictions"

# %% [markdown]
# Houlsby adapters cannot merge: the GELU sits between `down` and `up`, so they stay extra layers
# at inference. Zero added latency after merging is one reason LoRA became the default.
#
# ## 11. One base, one adapter per task
# A second task on the same reviews: **is the review negated?** ("not", "no", "never", "n't"...),
# labelled from the text, the two classes balanced. We load the sentiment adapter saved in
# section 9, add a second adapter, `negation`, train only it, and switch between the two with
# `set_adapter`. The base weights exist once in memory.

# %%
from datasets import Dataset
from peft import PeftModel

NEGATORS = {"not", "no", "never", "nobody", "nothing", "n't"}


def negation_task(ds):
    """The same reviews, labelled 1 if negated; balanced by keeping as many plain ones as negated."""
    labels = [int(any(w.strip(".,!?;") in NEGATORS or w.endswith("n't") for w in t.lower().split()))
              for t in ds["text"]]
    negated = [i for i, y in enumerate(labels) if y]
    plain = [i for i, y in enumerate(labels) if not y][:len(negated)]
    keep = sorted(negated + plain)
    return Dataset.from_dict({"text": [ds["text"][i] for i in keep], "label": [labels[i] for i in keep]})


neg_train, neg_test = negation_task(train_ds), negation_task(test_ds)
print(f"negation task: {len(neg_train)} training and {len(neg_test)} test reviews, half negated")

multi = PeftModel.from_pretrained(load_text_encoder(seed=cfg.seed)[0], out_dir / "sentiment",
                                  adapter_name="sentiment")
multi.add_adapter("negation", lora_config(cfg.recipe_r, ALL_LINEAR))
multi.set_adapter("negation")  # the active adapter; only its parameters are trainable
neg_history = fit(multi, cfg.lr_lora, cfg.lr_head, data=neg_train)

# %%
scores = {}
for adapter in ("sentiment", "negation"):
    multi.set_adapter(adapter)
    scores[f"adapter: {adapter}"] = {"sentiment task": accuracy(multi, test_ds),
                                     "negation task": accuracy(multi, neg_test)}
scores = pd.DataFrame(scores).T
print(f"one base of {n_params:,} parameters, two adapters of {lora['trainable']:,} each")
print(scores.round(3).to_string())
if profile() == "tiny":
    assert abs(scores.loc["adapter: sentiment", "sentiment task"] - lora["accuracy"]) < 1e-9, \
        "the adapter reloaded from disk must score what it scored before saving"
    assert scores.loc["adapter: negation", "negation task"] >= 0.9, "the negation adapter should learn its task"
    own, other = scores.values.diagonal(), scores.values[::-1].diagonal()  # [sentiment, negation] task
    assert (own >= other + 0.2).all(), "each task needs its own adapter"
_ = headline(f"{profile()}: LoRA r={cfg.recipe_r} on all linear layers {lora['accuracy']:.3f} vs full FT "
             f"{full['accuracy']:.3f} with {lora['share']:.1%} of the parameters; probe "
             f"{results['linear probe']['accuracy']:.3f}, prompt tuning {prompt['accuracy']:.3f}")

# %% [markdown]
# The diagonal is high and the off-diagonal near chance: each task needs its own adapter, and
# `set_adapter` swaps it in without touching the base: one base model plus one small adapter per task.
#
# ## Drills
#
# ### Drill 03a ★☆☆ · LoRA on DistilBERT-base
# DistilBERT-base has 6 blocks of width 768, so `q_lin` and `v_lin` are each 768 x 768. How
# many parameters does LoRA with r=8 on `q_lin` and `v_lin` of every block train? Leave the
# head out. Answer with a number.

# %% tags=["answer"]
answer_03a = ...  # your answer

# %%
check("03a", answer_03a)

# %% cellView="form" tags=["solution"]
#@title Solution
# A wrapped d_out x d_in layer gets A (r x d_in) and B (d_out x r): r * (d_in + d_out).
# Two wrapped layers per block, six blocks.
solution_03a = 6 * 2 * 8 * (768 + 768)
check("03a", solution_03a)

# %% [markdown]
# ### Drill 03b ★★☆ · IA3 on DistilBERT-base
# Section 7's IA3 config on DistilBERT-base: `target_modules=["k_lin", "v_lin", "lin2"]`,
# `feedforward_modules=["lin2"]`. The feed-forward is 768 -> 3072 -> 768. How many parameters
# does IA3 train, head left out? Hint: for a feed-forward module IA3 scales the layer's *input*.

# %% tags=["answer"]
answer_03b = ...  # your answer

# %%
check("03b", answer_03b)

# %% cellView="form" tags=["solution"]
#@title Solution
# One scale per unit: k_lin's and v_lin's outputs (768 each) and lin2's input (3072), per block.
solution_03b = 6 * (768 + 768 + 3072)
check("03b", solution_03b)

# %% [markdown]
# ### Drill 03c ★★☆ · Five tasks, one GPU
# You must serve five classification tasks from one GPU, with accuracy close to fine-tuning, and
# requests for the five arrive mixed. Which set-up? Answer with one letter, e.g. `"a"`.
#
# - (a) Fully fine-tune five copies of DistilBERT and load all five.
# - (b) Train one LoRA adapter per task on the same frozen base; load all five and switch with `set_adapter`.
# - (c) Train one LoRA adapter per task and merge each into the base with `merge_and_unload`.
# - (d) Prompt-tune five soft prompts on the frozen base.

# %% tags=["answer"]
answer_03c = ...  # "a", "b", "c" or "d"

# %%
check("03c", answer_03c)

# %% cellView="form" tags=["solution"]
#@title Solution
# Section 11 did this with two tasks: one base in memory, one small adapter (and head) per task,
# set_adapter per request. Merging bakes one task into the weights; five copies cost five bases.
solution_03c = "b"
check("03c", solution_03c)

# %% [markdown]
# ## Summary
# - **LoRA r=2 on every linear layer** reached full fine-tuning on three seeds out of three
#   (docs/peft_seeds.md) with a few percent of the parameters and of the optimizer memory.
# - **Where the rank goes beats how much rank**: more rank on `q_lin`/`v_lin` alone swung with
#   the seed; r=2 everywhere did not.
# - Adapters and IA3 can work but were seed-sensitive here; prompt tuning needs far bigger
#   models. On small models, check a method with more than one seed before you trust it.
# - A LoRA adapter is a few percent of the model on disk, merges away (`merge_and_unload`: same
#   predictions), and one base serves many tasks by swapping adapters (`set_adapter`).
#
# **Try next:** set `recipe_r = 1`, or `alpha_per_r = 2` (the usual `alpha = 2r`), and watch the
# LoRA row; set `seed = 1` and compare with docs/peft_seeds.md. Then drills 03a-03c, and lesson
# 04 (QLoRA).
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
