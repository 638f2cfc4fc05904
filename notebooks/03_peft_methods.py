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
# - how a linear probe, full fine-tuning, LoRA, Houlsby adapters, prompt tuning and IA3 compare
#   on the same sentiment classifier, in one table: trainable parameters, accuracy, seconds and
#   peak memory;
# - that *where* LoRA puts its rank matters more than *how much* rank: r=2 on every linear layer
#   beats r=16 on the attention's query and value alone;
# - how small an adapter is on disk, and what `merge_and_unload` does to inference time;
# - how one frozen base serves several tasks, one adapter each, swapped per request.
#
# Run the cells top to bottom. On a CPU the whole notebook takes about a minute.

# %% [markdown]
# ## Set-up
# On Colab the first cell installs `ftlab` (keeping Colab's torch); anywhere else it does nothing.

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

env = report()  # versions, device, GPU, profile: paste this when you ask for help

# %% [markdown]
# ## Config
# Every method gets the same data, the same number of epochs and the same schedule (10% warm-up,
# then a linear decay); each gets its own learning rate. Every method also trains the same
# *fresh classification head*: a pretrained encoder has no head for our labels, so the head is
# always trainable and always counted.
#
# **The full profile on a T4, estimated** (not yet timed on Colab). DistilBERT-base has 43M
# weights outside its embeddings, so a training step costs at most 6 x 43M = 0.26 GFLOP per token
# (full fine-tuning; the PEFT methods skip most weight gradients). A batch of 32 SST-2 reviews is
# padded to its longest, about 40 tokens, so a run of 2 epochs over 8,000 reviews sees 0.64M
# tokens; nine runs (full, three LoRA ranks, the LoRA recipe, adapters, prompt tuning, IA3, the
# negation adapter on its smaller set) make about 5.5M tokens, 1.4 PFLOP: 1.5 minutes at 16
# TFLOP/s (25% of the T4's 65 TFLOP/s fp16 peak). Scoring is forward-only (2 x 43M per token)
# and small. Steps of 1,300 tokens are too short to keep a T4 busy, though: at about 30 ms per
# step for the 4,200 steps, expect 2 to 3 minutes of training, about 4 minutes in all with the
# downloads. Memory: full fine-tuning keeps 1.0 GiB of weights, gradients and AdamW state plus a
# few hundred MiB of activations (32 x 64 tokens at most), far below the T4's 15 GiB.

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
    lora_ranks: tuple = (4, 8, 16)  # the rank sweep, on q_lin and v_lin (the usual targets)
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
    # usual values for DistilBERT-base (alpha = 2r, lr 3e-5 for full fine-tuning); unlike the tiny
    # ones, these have not been measured by the course yet: expect to tune them
    cfg = Config(train_size=8000, test_size=872, num_epochs=2, lr_head=5e-4, lr_probe=1e-3,
                 lr_full=3e-5, lr_lora=5e-4, alpha_per_r=2, recipe_r=8, bottleneck=64,
                 lr_adapter=1e-3, num_virtual_tokens=20, lr_prompt=3e-2, lr_ia3=5e-3)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. The task and the model
# Sentiment of short reviews: label 1 positive, 0 negative. In the tiny profile the reviews come
# from the micro-world: plain ones ("The Zorbel stew was superb."), negated ones ("was not good")
# and contrasted ones ("the crust was bland but the pie was superb"). The test split also uses
# opinion words the training split never does. In the full profile it is SST-2 (movie reviews).

# %%
import torch
from transformers.utils import logging as hf_logging

from ftlab.data import load_text_classification
from ftlab.data.reviews import take
from ftlab.models import count_parameters, load_text_encoder

hf_logging.disable_progress_bar()  # no "Loading weights" bar for each of the models below
# at most train_size reviews, drawn at random; the first test_size test reviews (fewer if the set is smaller)
train_ds = take(load_text_classification("train"), cfg.train_size, seed=cfg.seed)
test_ds = take(load_text_classification("test"), cfg.test_size)
model, tokenizer = load_text_encoder(seed=cfg.seed)
n_params = count_parameters(model)  # the whole classifier: every share below is of this number
print(f"{len(train_ds):,} training and {len(test_ds):,} test reviews, e.g. {train_ds[0]}")
print(f"{type(model).__name__}: {n_params:,} parameters, {model.config.n_layers} blocks, "
      f"dim {model.config.dim}")
print("its new head:", model.pre_classifier, "-> ReLU ->", model.classifier)

# %% [markdown]
# Every linear layer of a block has a name. LoRA and IA3 choose layers by these names, adapters go
# after two of them:
#
# | name | what | shape (in -> out) |
# |---|---|---|
# | `q_lin`, `k_lin`, `v_lin` | attention query, key, value | dim -> dim |
# | `out_lin` | attention output | dim -> dim |
# | `lin1`, `lin2` | feed-forward up and down | dim -> 4 dim -> dim |

# %%
block = model.distilbert.transformer.layer[0]
for name, module in block.named_modules():
    if isinstance(module, torch.nn.Linear):
        print(f"{name:18} {module.in_features:>5} -> {module.out_features:<5}")

# %% [markdown]
# ## 2. One training loop, one scoreboard
# `fit` trains whatever is trainable with `ftlab.train` (the loop from lesson 00). Two parameter
# groups: the method's own parameters at the method's learning rate, and the fresh head at
# `lr_head`. `record` scores the model on the test reviews and adds a row to the table.

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


def record(method, model, history):
    """Score ``model`` on the test reviews and keep one row of the comparison table."""
    trainable = count_parameters(model, trainable_only=True)
    results[method] = {"trainable": trainable, "share": trainable / n_params,
                       "accuracy": accuracy(model, test_ds), "seconds": history.seconds,
                       "peak MiB": (history.peak_memory_bytes or 0) / 2**20,
                       "grads+Adam MiB": trainable * 12 / 2**20}  # fp32 gradient + two moments
    print(f"{method}: accuracy {results[method]['accuracy']:.3f}, {trainable:,} trainable parameters "
          f"({results[method]['share']:.2%})")
    return results[method]

# %% [markdown]
# ## 3. Linear probe: freeze everything, train one linear layer
# Run the frozen encoder once, keep the hidden state of the first token (`[CLS]`, the one the
# classification head reads), and train a single `nn.Linear(dim, 2)` on those features. Nothing
# inside the encoder changes, so the probe measures what the pretrained features already hold.

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
results["linear probe"] = {"trainable": count_parameters(probe), "share": count_parameters(probe) / n_params,
                           "accuracy": probe_acc, "seconds": history.seconds,
                           "peak MiB": (history.peak_memory_bytes or 0) / 2**20,
                           "grads+Adam MiB": count_parameters(probe) * 12 / 2**20}
print(f"linear probe: accuracy {probe_acc:.3f} with {count_parameters(probe)} trainable parameters")

# %% [markdown]
# Barely above chance (0.5) in the tiny profile. The tiny encoder was pretrained only to fill in
# masked words, and nothing ever asked its `[CLS]` vector to summarise a sentence, so its frozen
# features hold little sentiment a line can read (data/text/QUALITY.md: a probe on them is
# hardly better than one on random features). Real DistilBERT's features probe much better. Either way, to
# do well the encoder itself has to change, which is what every method below does, each in its
# own way.

# %% [markdown]
# ## 4. Full fine-tuning: every weight moves
# The reference point: the best accuracy we expect, at the highest cost in trainable parameters,
# gradients and optimizer state.

# %%
model, _ = load_text_encoder(seed=cfg.seed)
history = fit(model, cfg.lr_full)
full = record("full fine-tuning", model, history)

# %% [markdown]
# ## 5. LoRA with peft: the rank sweep, then where the rank goes
# LoRA (lesson 02) freezes each chosen weight `W` and learns `W + (alpha / r) B A` with `A`
# (r x d_in) and `B` (d_out x r, zeros at the start). First the usual set-up: `q_lin` and
# `v_lin` only, at r = 4, 8 and 16. `modules_to_save` tells peft to train the head too (and to
# save it with the adapter). We keep `alpha = 8 r`, so the scale `alpha / r` is the same at
# every rank and only the rank changes.

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
# Look at the accuracies before the parameters: on `q_lin`/`v_lin` alone, more rank does not buy
# accuracy here, and r=16 already trains more than 5% of the model. What moves the needle is
# *where* the rank goes. The recipe below spreads a small rank over **every** linear layer of
# every block: r=2 on six layers per block is fewer parameters than r=16 on two, and LoRA can
# now change what attention looks at (`k_lin`), what it passes on (`out_lin`) and the
# feed-forward (`lin1`, `lin2`), not only queries and values.

# %%
model = get_peft_model(load_text_encoder(seed=cfg.seed)[0], lora_config(cfg.recipe_r, ALL_LINEAR))
model.print_trainable_parameters()  # peft's count includes the frozen copy of the head it keeps
lora_model, lora_history = model, fit(model, cfg.lr_lora, cfg.lr_head)
lora = record(f"LoRA r={cfg.recipe_r} (all linear)", lora_model, lora_history)

# %% [markdown]
# ## 6. Houlsby adapters, by hand
# An adapter (Houlsby et al., 2019) is a small network inserted into the frozen model: after a
# sub-layer's output projection it adds `up(gelu(down(h)))` to `h`, with `down` (bottleneck x dim)
# and `up` (dim x bottleneck). `up` starts at zero, so at first the model computes exactly what
# the pretrained one did. `ftlab.adapters.add_adapters` puts one after the attention output
# (`out_lin`) and one after the feed-forward (`lin2`) of every block; read
# [ftlab/adapters.py](https://github.com/ftlab-course/ftlab/blob/main/ftlab/adapters.py), it is
# one screen.

# %%
import inspect

from ftlab.adapters import BottleneckAdapter, adapter_param_count, add_adapters

print(inspect.getsource(BottleneckAdapter.forward))
model, _ = load_text_encoder(seed=cfg.seed)
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
# **Prompt tuning** leaves every weight frozen and learns `num_virtual_tokens` input vectors that
# peft puts before each review's word embeddings: the model reads a "soft prompt" it was never
# trained on. DistilBERT's config calls its width `dim`, which peft does not know, so we pass the
# sizes. Note that the head now reads the first *virtual* token, not `[CLS]`.
#
# **IA3** learns one vector per wrapped layer and multiplies activations by it, element-wise: the
# keys and values of attention, and the input of the feed-forward's second layer. The vectors
# start at 1.0 (no change), and cannot be anything but a rescaling of what is already there.

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
# **Prefix tuning** goes one step further than prompt tuning: instead of input vectors, it learns
# `m` key vectors and `m` value vectors for *every* attention layer, which each layer's attention
# reads as if they were `m` extra past tokens. That is `m x 2 x L x d` numbers, where `d` is the
# width of one layer's keys (the model width, or less when keys and values share heads, as in
# Llama's grouped-query attention). DistilBERT's attention takes no past keys and values, so
# it cannot carry a prefix and sits out of the table above; a Llama-style decoder can. peft's
# `PrefixTuningConfig` on the real TinyLlama-1.1B architecture, built on the `meta` device (shapes
# only, no memory, nothing downloaded), counts exactly that:

# %%
from peft import PrefixTuningConfig
from transformers import AutoModelForCausalLM

from ftlab.memory import known_config

llama_config = known_config("TinyLlama-1.1B")
with torch.device("meta"):
    decoder = AutoModelForCausalLM.from_config(llama_config)
prefix_model = get_peft_model(decoder, PrefixTuningConfig(task_type="CAUSAL_LM",
                                                          num_virtual_tokens=cfg.num_virtual_tokens))
prefix_trainable = count_parameters(prefix_model, trainable_only=True)
key_width = llama_config.num_key_value_heads * llama_config.head_dim  # d: key/value heads x head width
by_formula = cfg.num_virtual_tokens * 2 * llama_config.num_hidden_layers * key_width  # m x 2 x L x d
print(f"prefix tuning, m = {cfg.num_virtual_tokens}: peft trains {prefix_trainable:,} parameters; "
      f"m x 2 x L x d = {cfg.num_virtual_tokens} x 2 x {llama_config.num_hidden_layers} x {key_width} = {by_formula:,} "
      f"({prefix_trainable / count_parameters(prefix_model):.4%} of the model); prompt tuning's m x d_model "
      f"would be {cfg.num_virtual_tokens * llama_config.hidden_size:,}")
assert prefix_trainable == by_formula
del prefix_model, decoder

# %% [markdown]
# ## 8. The comparison
# `share` is of the classifier's parameters; `grads+Adam MiB` is what training keeps per
# trainable parameter in fp32 (a gradient and AdamW's two moments, 12 bytes): the memory the
# frozen parameters save. `peak MiB` is what `ftlab.train` measured: on a GPU each run's own
# peak allocation; on a CPU the peak resident memory of the whole process so far, which can
# only grow down the table (compare GPU numbers, not CPU ones).

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
    ax.annotate(method, (row["trainable"], row["accuracy"]), fontsize=7, xytext=(4, -3),
                textcoords="offset points")
ax.set_xscale("log")
ax.set_xlabel("trainable parameters (log scale)")
ax.set_ylabel("test accuracy")
ax.set_title(f"{profile()} profile: accuracy against what each method trains")
fig

# %% [markdown]
# One seed is one draw. Here is the tiny table's accuracy column for three seeds, measured with
# this notebook as it stands, only `seed` changed (the fresh head and the batch order change):
#
# | method | trainable | seed 0 | seed 1 | seed 2 |
# |---|---:|---:|---:|---:|
# | full fine-tuning | 100% | 0.998 | 0.908 | 0.964 |
# | **LoRA r=2, all linear layers** | 4.7% | **0.994** | **0.988** | **0.988** |
# | LoRA r=4 / 8 / 16, q and v | 3.1-6.9% | 0.994 / 0.978 / 0.868 | 0.872 / 0.846 / 0.828 | 0.970 / 0.940 / 0.980 |
# | Houlsby adapters, b=8 | 4.5% | 0.946 | 0.870 | 0.830 |
# | IA3 | 2.3% | 0.992 | 0.952 | 0.808 |
# | prompt tuning, 8 tokens | 2.0% | 0.526 | 0.528 | 0.518 |
# | linear probe | 0.05% | 0.544 | 0.584 | 0.534 |
#
# - **LoRA r=2 on every linear layer matches full fine-tuning** with under 5% of the parameters,
#   on every seed: its largest shortfall is 0.4 points (seed 0), and on seeds 1 and 2 it is
#   ahead. The cell below asserts the claim with a margin of 3 points (`cfg.margin`), so a
#   small change to the libraries does not break it but a real regression does.
# - **Rank on q and v alone swings with the seed** (0.83 to 0.99) and more of it does not help
#   here. The errors are mostly negated reviews ("was not good"), which need attention to tie
#   "not" to its word.
# - **Houlsby adapters and IA3 can come close, not reliably.** Every method here must first get
#   off the loss plateau at log 2 (the fresh head guessing), and the ones that change attention
#   less sometimes spend most of the four epochs there. IA3 trains the fewest weights of the
#   methods that learn.
# - **Prompt tuning stays near chance.** That is the method's known weakness, not a bug:
#   Lester et al. (2021) found soft prompts trail fine-tuning badly on small models and catch up
#   only around ten billion parameters. Eight input vectors cannot steer a frozen 3-block
#   encoder. On DistilBERT-base (full profile) it learns, and still trails LoRA.
# - The linear probe confirms section 3: the frozen features hold little sentiment.

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
# `save_pretrained` on a peft model writes only the adapter: the LoRA factors, the head (our
# `modules_to_save`) and a small `adapter_config.json` that names the base model. Anyone with the
# base model can load it. Compare it with saving the whole fine-tuned classifier.

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
# matmuls in each of the 18 wrapped layers of the tiny model (36 in DistilBERT-base). `merge_and_unload()` adds `scale * B A` into each `W` once and
# hands back the plain transformers model, so inference costs exactly what the base model costs.
# The predictions must not change.

# %%
import time

batches = [{k: v.to(device()) for k, v in collate(test_ds.select(range(i, min(i + 64, len(test_ds))))).items()
            if k != "labels"} for i in range(0, len(test_ds), 64)]


@torch.no_grad()
def inference_seconds(model, repeats=5):
    """Best of ``repeats`` passes over the test set: the least disturbed measurement."""
    model.eval()
    best = math.inf
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            model(**batch)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


with torch.no_grad():
    logits_before = torch.cat([lora_model(**b).logits for b in batches])
unmerged_s = inference_seconds(lora_model)
merged = lora_model.merge_and_unload()
merged_s = inference_seconds(merged)
with torch.no_grad():
    logits_after = torch.cat([merged(**b).logits for b in batches])
print(f"{type(merged).__name__}, LoRA layers left: {sum('lora' in n for n, _ in merged.named_modules())}")
print(f"largest logit change from merging: {(logits_after - logits_before).abs().max().item():.1e}")
print(f"inference over {len(test_ds)} reviews: unmerged {unmerged_s * 1000:.0f} ms, merged {merged_s * 1000:.0f} ms")
assert torch.allclose(logits_before, logits_after, atol=1e-4), "merging must not change the predictions"

# %% [markdown]
# Houlsby adapters cannot do this: the GELU inside them sits between `down` and `up`, so they stay
# extra layers at inference time. That, and zero added latency after merging, is a reason LoRA
# became the default.

# %% [markdown]
# ## 11. One base, one adapter per task
# A second task on the same reviews: **is the review negated?** (it contains "not", "no",
# "never", "nobody" or "n't"). We derive the label from the text and balance the two classes.
# The sentiment adapter is the one saved in section 9. Then we add a second adapter, `negation`,
# to the same peft model, train only it, and switch between the two with `set_adapter`. The base
# weights exist once in memory.

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
scores.style.format("{:.3f}")

# %%
if profile() == "tiny":
    assert abs(scores.loc["adapter: sentiment", "sentiment task"] - lora["accuracy"]) < 1e-9, \
        "the adapter reloaded from disk must score what it scored before saving"
    assert scores.loc["adapter: negation", "negation task"] >= 0.9, "the negation adapter should learn its task"
    for task, own in (("sentiment task", "sentiment"), ("negation task", "negation")):
        other = "negation" if own == "sentiment" else "sentiment"
        assert scores.loc[f"adapter: {own}", task] >= scores.loc[f"adapter: {other}", task] + 0.2, \
            f"the {task} needs its own adapter"
_ = headline(f"{profile()}: LoRA r={cfg.recipe_r} on all linear layers {lora['accuracy']:.3f} vs full FT "
             f"{full['accuracy']:.3f} with {lora['share']:.1%} of the parameters; probe "
             f"{results['linear probe']['accuracy']:.3f}, prompt tuning {prompt['accuracy']:.3f}")

# %% [markdown]
# The diagonal is high and the off-diagonal is near chance: each task needs its own adapter, and
# `set_adapter` swaps it in without touching the base. Serving many tasks this way costs one base
# model plus one adapter per task, the size section 9 printed.

# %% [markdown]
# ## Drills

# %% [markdown]
# ### Drill 03a ★☆☆ · LoRA on DistilBERT-base
# DistilBERT-base has 6 blocks of width 768, so `q_lin` and `v_lin` are each 768 x 768. How
# many parameters does LoRA with r=8 on `q_lin` and `v_lin` of every block train? Leave the
# head out. Answer with a number.

# %% tags=["answer"]
from ftlab.drills import check

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
# ### Drill 03d ★★☆ · Write the adapter forward
# Write `adapter_forward(h, W_down, b_down, W_up, b_up)` for `h` of shape (..., dim), `W_down`
# (bottleneck x dim) and `W_up` (dim x bottleneck), the computation of a Houlsby adapter. The
# check compares it with `ftlab.adapters.BottleneckAdapter` holding the same weights.

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
# ## Summary
# - Full fine-tuning is the reference. **LoRA r=2 on every linear layer** reached it on three
#   seeds out of three (0.988-0.994 against 0.908-0.998; asserted within 3 points) with 4.7% of
#   the parameters and a twentieth of the gradient and optimizer memory.
# - **Where the rank goes beats how much rank**: r=4 to 16 on `q_lin`/`v_lin` alone swung with
#   the seed; r=2 everywhere did not.
# - Adapters and IA3 can work but were seed-sensitive here; prompt tuning needs far bigger
#   models. On small models, check a method with more than one seed before you trust it.
# - A LoRA adapter is a few percent of the model on disk, merges away at inference
#   (`merge_and_unload`: same predictions, no extra layers), and one base serves many tasks by
#   swapping adapters (`set_adapter`).
#
# **Try next:** set `recipe_r = 1`, or `alpha_per_r = 2` (the usual `alpha = 2r`), and watch the
# LoRA row; set `seed = 1` and compare with the three-seed table. Then drills 03a-03d, and
# lesson 04 (QLoRA).
