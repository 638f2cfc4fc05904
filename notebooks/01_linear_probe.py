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
# # 01 · Linear probing: a frozen ResNet and CLIP
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/01_linear_probe.ipynb)
#
# **What you will learn**: what a *linear probe* trains (a frozen pretrained backbone plus one new
# linear layer, `d_feat · K + K` parameters) and how far it beats random weights; to cache the
# backbone's features so every later head costs seconds, and that the optimiser hardly matters;
# why accuracy hides rare classes, what per-class recall and macro-F1 show, and one fix; partial
# and full fine-tuning, their accuracy, time and memory; CLIP zero-shot against a probe and a
# k-NN with 1 to 16 labels per class. The tiny profile runs in well under a minute on a CPU.
#
# **Set-up:** on Colab the first cell installs `ftlab` (keeping Colab's torch); elsewhere it does nothing.

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

env = report()  # versions, device, GPU, profile: paste this when you ask for help

# %% [markdown]
# ## Config
# The only cell where the profiles differ. Tiny: the micro-world's CNN (a 10-layer ResNet, 128
# features) pretrained on 8 drawn shapes, probed on 6 *other* shapes, half drawn as outlines.
# Full (sized for a T4's memory and minutes): ResNet-50 with ImageNet weights on CIFAR-10, and
# CLIP ViT-B/32 also on EuroSAT satellite tiles.

# %%
from dataclasses import dataclass, field


@dataclass
class Config:
    seed: int = 0                    # same heads, same data order, same k-shot draws every run
    backbone: str = "resnet50"       # a torchvision ResNet; the tiny profile maps every name to its CNN
    task: str = "target"             # the task to probe: drawn shapes (tiny), CIFAR-10 (full)
    train_size: int | None = None    # training images, drawn at random (None = all: 1,000 tiny)
    test_size: int | None = None     # test images (None = all: 500 tiny)
    batch_size: int = 64             # images per optimizer step when backbone layers train
    eval_batch_size: int = 256       # images per forward pass when extracting features or scoring a network
    head_lr: float = 1e-2            # AdamW learning rate of the new head
    head_batch_size: int = 128       # feature rows per step when only the head trains
    head_epochs: int = 60            # passes over the cached features: each step is one small matmul
    common: tuple = (1, 2, 3)        # section 5: the classes whose every training image is kept...
    rare_share: float = 0.03         # ... and the share kept of each other class (3%: about 5 tiny images)
    backbone_lr: float = 1e-3        # fine-tuning: learning rate of the pretrained layers (head_lr / 10)
    finetune_epochs: int = 5         # passes over the images when backbone layers train
    unfreeze: tuple = ("layer4",)    # the blocks partial fine-tuning trains (with the head)
    sweep_lrs: tuple = (1e-3, 1e-2, 1e-1)  # head learning rates tried on the cached features
    clip_tasks: tuple = ("target",)  # the tasks CLIP is tested on (zero-shot, probe, k-shot)
    templates: dict = field(default_factory=dict)  # task -> prompt templates, "{}" = the class name
    shots: tuple = (1, 2, 4, 8, 16)  # labelled examples per class on the k-shot curve
    shot_seeds: tuple = (0, 1, 2)    # k-shot draws averaged per point (1-shot is noisy)
    neighbors: int = 5               # how many stored examples vote in the k-NN
    num_workers: int = 0             # DataLoader processes decoding images (tiny images need none)


cfg = Config(templates={"target": ["a photo of a {}.", "a {} on a plain background",
                                   "a {} on a striped background", "a {} on a dotted background"]})
if profile() == "full":  # ResNet-50 and CLIP ViT-B/32 at 224x224: sized for a T4 in minutes
    cfg = Config(train_size=10_000, test_size=2_000, head_lr=1e-3, backbone_lr=1e-4, head_epochs=30,
                 sweep_lrs=(1e-4, 1e-3, 1e-2), finetune_epochs=1, num_workers=2, batch_size=16,
                 eval_batch_size=8, clip_tasks=("target", "eurosat"),
                 templates={"target": ["a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.",
                                       "a photo of the small {}.", "a photo of the big {}."],
                            "eurosat": ["a centered satellite photo of {}.", "a satellite photo of {}."]})
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 1. A pretrained backbone, frozen, with a new head
# A network trained on a big source task (ImageNet for ResNet-50; 8 filled shapes for the tiny
# CNN) has learned edges, corners, textures and parts, which a new task that looks at similar
# things can reuse: keep the backbone's weights and replace only its last layer, `fc`, with a
# fresh `nn.Linear(d_feat, K)` for our `K` classes. Here is the data the head will learn.

# %%
import matplotlib.pyplot as plt

from ftlab.data import load_image_classification
from ftlab.data.shapes import take, to_display
from ftlab.drills import check  # check(drill_id, answer): a pass, a fail with a hint, or "not attempted"

train_ds = take(load_image_classification(cfg.task, "train"), cfg.train_size, seed=cfg.seed)
test_ds = take(load_image_classification(cfg.task, "test"), cfg.test_size, seed=cfg.seed)
classes = train_ds.classes
K = len(classes)
print(f"{len(train_ds):,} training and {len(test_ds):,} test images, {K} classes: {classes}")

fig, axes = plt.subplots(1, 8, figsize=(12, 2), layout="constrained")
for ax, i in zip(axes, range(8)):
    image, label = train_ds[i]
    ax.imshow(to_display(image))
    ax.set_title(classes[label], fontsize=9)
    ax.axis("off")
plt.close(fig)
fig

# %% [markdown]
# Two exercises first, each in four cells: the question, your answer in place of `...` (or of
# `raise NotImplementedError`), a check, and a **Solution** to open after trying. ★☆☆ quick,
# ★★☆ needs some thought, ★★★ write a longer function.
#
# ### Drill 01a ★☆☆ · Predict, then run: how many parameters will the probe train?
# The probe trains one new `nn.Linear(d_feat, K)` on a frozen backbone. ResNet-50's features are
# 2048 numbers wide, and the full profile probes CIFAR-10's 10 classes. How many parameters
# train? Answer with a number; the cells below print it.

# %% tags=["answer"]
answer_01a = ...  # your answer

# %%
check("01a", answer_01a)

# %% cellView="form" tags=["solution"]
#@title Solution
# The head is nn.Linear(2048, 10): a 10 x 2048 weight matrix plus 10 biases. Nothing else trains.
solution_01a = 2048 * 10 + 10
check("01a", solution_01a)

# %% [markdown]
# ### Drill 01e ★☆☆ · Write `trainable_count`
# What a method costs in gradient and optimiser memory, and how easily it over-fits, follows from
# what the optimiser updates: the parameters with `requires_grad=True`, counted in numbers, not
# tensors. Write `trainable_count(model)`; the check compares it with the reference on small
# ResNet-shaped models (BatchNorm layers, some blocks frozen).

# %% tags=["answer"]
def trainable_count(model):
    raise NotImplementedError  # your code here


answer_01e = trainable_count

# %%
check("01e", answer_01e)

# %% cellView="form" tags=["solution"]
#@title Solution
# p.numel() is the number of elements of one tensor; frozen parameters and BatchNorm's running
# statistics (buffers, not parameters) are not updated by the optimiser, so they do not count.
def solution_trainable_count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


solution_01e = solution_trainable_count
check("01e", solution_01e)

# %% [markdown]
# ### The probe, written out
# `freeze` sets `requires_grad=False` on every backbone parameter. That stops gradients, not
# BatchNorm: in train mode (`train()` calls `model.train()`) it would normalise with each batch's
# statistics and move its running mean and variance, so a frozen BatchNorm switches itself to
# eval mode before every forward. `build_linear_probe` then swaps `fc` for a fresh
# `nn.Linear(d_feat, K)`, the one part that trains: `d_feat · K` weights plus `K` biases.

# %%
import torch
import torch.nn as nn
import torchvision

from ftlab.models.vision import load_vision_backbone


def trainable_count(model):
    """What the optimiser updates: the elements of every parameter with requires_grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def keep_frozen_batchnorm_in_eval(bn, args):
    """A forward pre-hook on each BatchNorm: while its parameters are frozen, it runs in eval mode."""
    if bn.training and not any(p.requires_grad for p in bn.parameters()):
        bn.eval()  # normalise with the pretrained running statistics, and leave them as they are


def freeze(net):
    """requires_grad=False on every parameter of net, in place; frozen BatchNorms keep their statistics."""
    for p in net.parameters():
        p.requires_grad = False
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # a ResNet's only normalisation layers
            m.register_forward_pre_hook(keep_frozen_batchnorm_in_eval)
    return net


def build_linear_probe(num_classes, backbone=cfg.backbone, pretrained=True):
    """A frozen ResNet with a fresh head: [B, 3, H, W] -> [B, num_classes]."""
    net = freeze(load_vision_backbone(name=backbone, pretrained=pretrained))  # fc: [d_feat -> source classes]
    net.fc = nn.Linear(net.fc.in_features, num_classes)  # weight [K, d_feat], bias [K]
    for p in net.fc.parameters():
        p.requires_grad = True  # a new layer's default, written out: the head is what trains
    return net


seed_everything(cfg.seed)  # the head's random initial weights: the same in the check below
model = build_linear_probe(K)
d_feat = model.fc.in_features
total = sum(p.numel() for p in model.parameters())
names = [n for n, p in model.named_parameters() if p.requires_grad]
print(f"trainable: {names}, {trainable_count(model):,} of {total:,} parameters ({trainable_count(model) / total:.2%}): "
      f"d_feat * K + K = {d_feat} * {K} + {K} = {d_feat * K + K:,}")

with torch.device("meta"):  # ResNet-50's shapes only: no weight allocated, none initialised
    resnet50 = freeze(torchvision.models.resnet50())
    resnet50.fc = nn.Linear(resnet50.fc.in_features, 10)
print(f"ResNet-50 probed for 10 classes (drill 01a): {resnet50.fc.in_features} * 10 + 10 = "
      f"{trainable_count(resnet50):,} of {sum(p.numel() for p in resnet50.parameters()):,}")

# %%
# The check: against ftlab.probe.build_linear_probe (the tested copy, same seed) and torch's flattening of
# the trainable parameters; a train-mode forward gives the same logits and leaves BatchNorm's statistics.
from ftlab import probe

seed_everything(cfg.seed)
reference_probe = probe.build_linear_probe(K, backbone=cfg.backbone)
flat = torch.nn.utils.parameters_to_vector([p for p in model.parameters() if p.requires_grad])  # [d_feat*K + K]
assert names == probe.trainable_names(reference_probe) == ["fc.weight", "fc.bias"]
assert trainable_count(model) == probe.trainable_count(reference_probe) == flat.numel() == d_feat * K + K
assert trainable_count(resnet50) == 2048 * 10 + 10
ours, theirs = model.state_dict(), reference_probe.state_dict()
assert list(ours) == list(theirs)
weight_diff = max((ours[k].double() - theirs[k].double()).abs().max().item() for k in ours)
images = torch.stack([train_ds[i][0] for i in range(8)])  # [8, 3, H, W]
stats_before = model.bn1.running_mean.clone()
with torch.no_grad():  # train mode, as ftlab.train.train will: frozen BatchNorms must keep their statistics
    logits, reference_logits = model.train()(images), reference_probe.train()(images)  # [8, K] each
torch.testing.assert_close(logits, reference_logits, atol=0.0, rtol=0.0)
torch.testing.assert_close(model.bn1.running_mean, stats_before, atol=0.0, rtol=0.0)
print(f"same trainable names and count as ftlab ({probe.trainable_count(reference_probe):,}) and as torch "
      f"({flat.numel():,}); max |difference|: weights {weight_diff:.1e}, train-mode logits "
      f"{(logits - reference_logits).abs().max().item():.1e}")
del reference_probe

# %% [markdown]
# ## 2. Run the backbone once: cached features
# The frozen backbone maps each image to the same `d_feat` numbers every time, so a new head need
# not run it again. `extract_features` stores the features on disk under a key made of the
# backbone, a hash of its weights and one of the images: change a weight or a pixel and the key
# changes, so a stale file is never read. `use_cache=False` always runs the backbone, to time it.

# %%
from ftlab.probe import extract_features

extract = dict(batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers)
model.to(device())
f_train = extract_features(model, train_ds, **extract)
f_test = extract_features(model, test_ds, **extract)
uncached = extract_features(model, train_ds, use_cache=False, **extract)  # runs the backbone
cached = extract_features(model, train_ds, **extract)                     # reads the file
backbone_seconds = uncached.seconds
print(f"train features: {f_train}\ntest features:  {f_test}")
print(f"one backbone pass over {len(uncached):,} images: {uncached.seconds:.2f} s; "
      f"from the cache: {cached.seconds:.3f} s ({cached.path.name})")
assert cached.from_cache and torch.allclose(cached.features, uncached.features, atol=1e-4, rtol=1e-3)

# %% [markdown]
# ## 3. Pretrained features vs random features
# Train the head with `ftlab.train`, the loop of every lesson, on the cached features: each step
# is one small matrix product. The control, the same architecture with random weights
# (`pretrained=False`) probed the same way, shows what pretraining is worth. Put back on the
# backbone, the trained head classifies raw images as well (it computes the same features).

# %%
import torch._dynamo  # noqa: F401  (torch's optimizers import it on first use, ~3 s: paid here, not in the timings)

from ftlab.probe import accuracy, train_head

head_settings = dict(lr=cfg.head_lr, num_epochs=cfg.head_epochs, batch_size=cfg.head_batch_size,
                     lr_schedule="cosine", seed=cfg.seed)
probe_history = train_head(model.fc, f_train, **head_settings)
probe_acc = accuracy(model.fc, f_test)
end_to_end = accuracy(model, test_ds, batch_size=cfg.eval_batch_size)  # the whole network on the images

random_model = build_linear_probe(K, pretrained=False).to(device())
r_train = extract_features(random_model, train_ds, **extract)
train_head(random_model.fc, r_train, **head_settings)
random_acc = accuracy(random_model.fc, extract_features(random_model, test_ds, **extract))

print(f"probe on pretrained features: {probe_acc:.1%}   (whole network on the test images: {end_to_end:.1%})")
print(f"probe on random features:     {random_acc:.1%}   (chance {1 / K:.1%})")
print(f"what pretraining is worth:    {100 * (probe_acc - random_acc):+.1f} points")
if profile() == "tiny":
    assert probe_acc >= 0.85, "the pretrained probe should score at least 85%"
    assert probe_acc - random_acc >= 0.15, "pretrained features should beat random ones by 15+ points"
    assert abs(end_to_end - probe_acc) < 0.01, "the head on the backbone should score as on cached features"

# %% [markdown]
# ## 4. The optimiser is not the story
# Three fits of the same head on the same features: AdamW through `ftlab.train` (above), L-BFGS
# on the logistic loss (full batch, no learning rate) and ridge regression onto one-hot labels in
# closed form (one linear solve). If they agree, the features decide what a probe can do. Then a
# learning-rate sweep: with the features cached, the backbone never runs.

# %%
import time

from ftlab.probe import logistic_probe_accuracy, ridge_probe

fits = {"AdamW, ftlab.train": probe_acc, "L-BFGS, logistic loss": logistic_probe_accuracy(
            f_train.features, f_train.labels, f_test.features, f_test.labels),
        "closed form, ridge regression": accuracy(ridge_probe(f_train, K), f_test)}
print(f"{'head fitted with':<34}{'test accuracy':>14}\n" + "\n".join(f"{k:<34}{v:>14.1%}" for k, v in fits.items()))
if profile() == "tiny":
    assert max(fits.values()) - min(fits.values()) <= 0.03, "three fits of the same probe should agree within 3 points"

start = time.perf_counter()
sweep = {}
for lr in cfg.sweep_lrs:
    feats = extract_features(model, train_ds, **extract)  # a cache hit: no backbone pass
    seed_everything(cfg.seed)  # every head starts from the same random weights
    head = torch.nn.Linear(d_feat, K)
    train_head(head, feats, **{**head_settings, "lr": lr})
    sweep[lr] = accuracy(head, f_test)
print(f"\nlearning-rate sweep, {len(sweep)} heads in {time.perf_counter() - start:.1f} s "
      f"(one backbone pass took {backbone_seconds:.1f} s): "
      + ", ".join(f"lr {lr:g} {acc:.1%}" for lr, acc in sweep.items()))

# %% [markdown]
# ## 5. Rare classes: accuracy hides them, macro-F1 does not
# Real label sets are skewed, and accuracy, counting every image once, mostly measures the
# common classes. Per class `c`, from the confusion matrix `cm[true, predicted]`: *precision* =
# TP / (TP + FP) (of the images called `c`, the share that are), *recall* = TP / (TP + FN) (of the
# real `c`, the share found), F1 = 2PR / (P + R); *macro-F1* is the plain mean of F1 over classes.
#
# ### Drill 01g ★☆☆ · Predict, then run: macro-F1 of always answering the common class
# 100 test images: 90 of class A, 5 of B, 5 of C. A classifier always answers A: accuracy 90%.
# Its macro-F1 (a number in 0..1)? The cell after the check prints it.

# %% tags=["answer"]
answer_01g = ...  # your answer

# %%
check("01g", answer_01g)

# %% cellView="form" tags=["solution"]
#@title Solution
# A: precision 90/100, recall 90/90, F1 = 2 * 0.9 * 1 / 1.9 = 0.947. B and C are never predicted: F1 0.
solution_01g = (2 * 0.9 * 1 / 1.9 + 0 + 0) / 3
check("01g", solution_01g)

# %%
def confusion_matrix(pred, y, K, weight=None):
    """[N] predictions and labels (image i counted weight[i] times, default 1) -> [K, K], rows true."""
    w = torch.ones(len(y), dtype=torch.float64) if weight is None else weight.double()  # [N]
    return torch.zeros(K, K, dtype=torch.float64).index_put_((y, pred), w, accumulate=True)


def f1_per_class(cm):
    """[K, K] confusion matrix -> (precision, recall, F1), each [K]; 0 where nothing to divide."""
    tp = cm.diagonal()                                                   # [K] right answers
    precision = tp / cm.sum(0).clamp(min=1e-12)                          # [K] column sums: called c
    recall = tp / cm.sum(1).clamp(min=1e-12)                             # [K] row sums: truly c
    return precision, recall, 2 * precision * recall / (precision + recall).clamp(min=1e-12)


def macro_f1(pred, y, K, weight=None):
    return f1_per_class(confusion_matrix(pred, y, K, weight))[2].mean().item()


y_01g, always_a = torch.tensor([0] * 90 + [1] * 5 + [2] * 5), torch.zeros(100, dtype=torch.long)  # A, B, C = 0, 1, 2
print(f"always A: accuracy {(always_a == y_01g).double().mean():.1%}, macro-F1 {macro_f1(always_a, y_01g, 3):.3f}")

# %%
# The check: against ftlab.probe's copy and F1 = 2TP / (2TP + FP + FN) on random predictions with random
# weights per image (used next), and against drill 01g's value worked by hand.
gen = torch.Generator().manual_seed(cfg.seed)
y, pred = torch.randint(0, K, (2, 300), generator=gen)  # [300] each
w = torch.rand(300, generator=gen, dtype=torch.float64)  # [300]
cm = confusion_matrix(pred, y, K, w)
ours, shortcut = f1_per_class(cm), 2 * cm.diagonal() / (cm.sum(0) + cm.sum(1))  # shortcut: [K]
for a, b in zip(ours + (ours[2],), probe.f1_scores(probe.confusion_matrix(pred, y, K, w)) + (shortcut,)):
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0.0)
assert abs(macro_f1(pred, y, K, w) - probe.macro_f1(pred, y, K, w)) < 1e-12
assert abs(macro_f1(always_a, y_01g, 3) - (2 * 0.9 / 1.9) / 3) < 1e-12
print(f"same precision, recall, F1 as ftlab; max |F1 - 2TP/(2TP+FP+FN)|: {(ours[2] - shortcut).abs().max():.1e}")

# %% [markdown]
# Now a skewed training set: every image of the `cfg.common` classes, `cfg.rare_share` of the
# others'. A test set drawn alike would hold two or three images per rare class, too few to
# score, so each test image counts with a weight instead: its class's share of the training set
# over its count in the test set (the *skewed mix*; unweighted, the test set is balanced). The
# fix: weigh each image's cross-entropy by `N / (K · n_c)`, inversely to its class's count `n_c`.

# %%
from ftlab.probe import class_weights, imbalanced_subset

skewed = imbalanced_subset(f_train, cfg.common, cfg.rare_share, seed=cfg.seed)
n_c = torch.bincount(skewed.labels, minlength=K)  # [K] training images per class
mix = (n_c / n_c.sum() / torch.bincount(f_test.labels, minlength=K).clamp(min=1))[f_test.labels]  # [N_test]
rare = [c for c in range(K) if c not in cfg.common]
print(f"skewed training set, images per class: {n_c.tolist()}")
imbalance = {}
for name, class_weight in (("plain", None), ("weighted", class_weights(skewed.labels, K))):
    seed_everything(cfg.seed)  # the same fresh head for both
    head = torch.nn.Linear(d_feat, K)
    train_head(head, skewed, class_weight=class_weight, **head_settings)
    with torch.no_grad():
        pred = head(f_test.features.to(head.weight.device)).argmax(1).cpu()  # [N_test]
    cm = confusion_matrix(pred, f_test.labels, K, mix)  # [K, K] in the skewed mix
    imbalance[name] = dict(acc=(cm.trace() / cm.sum()).item(), f1=macro_f1(pred, f_test.labels, K, mix),
                           rare=f1_per_class(cm)[1][rare].mean().item(), balanced=macro_f1(pred, f_test.labels, K))
print(f"{'head':<10}{'accuracy':>10}{'macro-F1':>10}{'rare recall':>13}{'macro-F1, balanced test':>25}")
for name, r in imbalance.items():
    print(f"{name:<10}{r['acc']:>10.1%}{r['f1']:>10.1%}{r['rare']:>13.1%}{r['balanced']:>25.1%}")
plain, weighted = imbalance["plain"], imbalance["weighted"]
if profile() == "tiny":
    assert plain["acc"] >= plain["f1"] + 0.10, "in the skewed mix, accuracy should read 10+ points above macro-F1"
    assert weighted["rare"] >= plain["rare"] + 0.10, "weighting should find 10+ points more of the rare classes"
    assert weighted["balanced"] >= plain["balanced"] + 0.05, "weighting should raise balanced macro-F1 5+ points"
    assert weighted["f1"] >= plain["f1"], "weighting should not lower macro-F1 in the skewed mix"

# %% [markdown]
# In the skewed mix accuracy stays high whatever the rare classes do: they are a few percent of
# it. Their recall shows them missed; macro-F1 says so in one number. Weights `∝ 1/n_c` train the
# head as if all classes were equally common: they find far more rare images and gain most on the
# balanced test, while in the skewed mix new false alarms on the many common images take back
# part of it. Resampling rare images `1/n_c` times more often does the same.
#
# ## 6. Partial and full fine-tuning
# A probe cannot change the features. When the task looks unlike the source (outlines instead of
# filled shapes; CIFAR-10's 32-pixel photos blown up to 224), training the last block lets them
# adapt. Two rules keep that from wrecking what pretraining built: **differential learning
# rates** (the pretrained block moves `head_lr / backbone_lr` times more slowly, printed below,
# than the fresh head, whose early gradients are large and random), and frozen blocks keep their
# BatchNorm statistics. Full fine-tuning trains everything at the same two rates: the upper reference.
#
# ### Drill 01f ★★☆ · Parameter groups for differential learning rates
# A torch optimizer takes a list of *parameter groups*, each with its own learning rate. Write
# `param_groups(model, lr)` returning `[(names, lr), ...]`: the head `fc` at `lr`, every other
# trainable parameter at `lr / 10`, frozen parameters in no group. The check runs it on small
# ResNet-shaped models with `layer4` unfrozen (in some, `layer3` too).

# %% tags=["answer"]
def param_groups(model, lr):
    raise NotImplementedError  # your code here


answer_01f = param_groups

# %%
check("01f", answer_01f)

# %% cellView="form" tags=["solution"]
#@title Solution
# Read requires_grad rather than naming blocks: the same function then serves partial
# fine-tuning (layer4 unfrozen) and full fine-tuning (everything unfrozen).
def solution_param_groups(model, lr):
    head = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("fc.")]
    body = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")]
    return [(head, lr), (body, lr / 10)]


solution_01f = solution_param_groups
check("01f", solution_01f)

# %% [markdown]
# The same rule as the optimizer wants it, with the tensors: the head at `head_lr`, the unfrozen
# blocks at `backbone_lr` (`head_lr / 10`), and no weight decay, which would pull the pretrained
# weights towards zero rather than where pretraining left them.

# %%
def differential_lr_groups(model, head_lr, backbone_lr):
    """Parameter groups for torch.optim: the trainable head at head_lr, the other trainable ones at backbone_lr."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # frozen: in no group
    head = [p for n, p in trainable if n.startswith("fc.")]      # fc.weight [K, d_feat], fc.bias [K]
    body = [p for n, p in trainable if not n.startswith("fc.")]  # partial FT: layer4's; full FT: all blocks'
    groups = [{"params": head, "lr": head_lr, "weight_decay": 0.0}]
    if body:
        groups.append({"params": body, "lr": backbone_lr, "weight_decay": 0.0})
    return groups


# %%
# The check, with cfg.unfreeze unfrozen: the same groups, learning rates and weight decay as
# ftlab.probe.differential_lr_groups, and torch's AdamW holding exactly the trainable parameters.
partial_probe = probe.unfreeze(build_linear_probe(K), *cfg.unfreeze)
name_of = {id(p): n for n, p in partial_probe.named_parameters()}
groups = differential_lr_groups(partial_probe, cfg.head_lr, cfg.backbone_lr)
described = [[(sorted(name_of[id(p)] for p in g["params"]), g["lr"], g["weight_decay"]) for g in gs] for gs in
             (groups, probe.differential_lr_groups(partial_probe, head_lr=cfg.head_lr, backbone_lr=cfg.backbone_lr))]
assert described[0] == described[1] and {n.split(".")[0] for n in described[0][1][0]} == set(cfg.unfreeze)
optimizer = torch.optim.AdamW(groups)  # torch's view: what it holds, at which lr
assert [g["lr"] for g in optimizer.param_groups] == [cfg.head_lr, cfg.backbone_lr]
in_optimizer = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
assert in_optimizer == trainable_count(partial_probe) == probe.trainable_count(partial_probe)
print(f"same groups as ftlab: {[(sorted({n.split('.')[0] for n in names}), lr) for names, lr, _ in described[0]]}")
print(f"AdamW holds {in_optimizer:,} parameters, {sum(p.numel() for p in partial_probe.parameters()) - in_optimizer:,} "
      f"stay frozen; head lr / backbone lr = {cfg.head_lr / cfg.backbone_lr:g}")
del partial_probe, optimizer

# %%
from ftlab.train import train


def fine_tune(blocks):
    """A fresh probe, the named blocks unfrozen (none = all), trained on the images."""
    seed_everything(cfg.seed)  # the same fresh head as every other run
    net = probe.unfreeze(build_linear_probe(K), *blocks)
    optimizer = torch.optim.AdamW(differential_lr_groups(net, head_lr=cfg.head_lr, backbone_lr=cfg.backbone_lr))
    history = train(net, train_ds, optimizer=optimizer, num_epochs=cfg.finetune_epochs,
                    batch_size=cfg.batch_size, lr_schedule="cosine", seed=cfg.seed, progress=False)
    return net, history, accuracy(net, test_ds, batch_size=cfg.eval_batch_size)


partial_model, partial_history, partial_acc = fine_tune(cfg.unfreeze)
full_model, full_history, full_acc = fine_tune(())  # every block: the upper reference
rows = [("linear probe (head only)", model, probe_acc, backbone_seconds + probe_history.seconds, probe_history),
        (f"partial FT ({' + '.join(cfg.unfreeze)} + head)", partial_model, partial_acc,
         partial_history.seconds, partial_history),
        ("full FT (everything)", full_model, full_acc, full_history.seconds, full_history)]
print(f"{'method':<30}{'trainable':>12}{'share':>8}{'grad+Adam':>12}{'accuracy':>10}{'seconds':>9}{'peak memory':>13}")
for name, net, acc, seconds, history in rows:
    n = trainable_count(net)
    state_mib = 3 * 4 * n / 2**20  # fp32 gradient + Adam's two moments, per trainable weight
    peak = "n/a" if history.peak_memory_bytes is None else f"{history.peak_memory_bytes / 2**20:,.0f} MiB"
    print(f"{name:<30}{n:>12,}{n / total:>8.1%}{state_mib:>8.2f} MiB{acc:>10.1%}{seconds:>9.1f}{peak:>13}")
print(f"(probe seconds: one backbone pass over the training images + training the head; "
      f"peak memory: {full_history.memory_kind})")
if profile() == "tiny":
    assert partial_acc >= probe_acc, "unfreezing layer4 should not do worse than the probe"

# %% [markdown]
# On a GPU, peak memory is each run's own maximum and grows with what trains: gradients and Adam's
# moments exist only for trainable weights, activations are kept only down to the lowest trainable
# layer. On a CPU it is the process's peak so far, which only grows: compare `grad+Adam` instead.
#
# ## 7. CLIP: zero-shot, probe, k-NN and k-shot
# CLIP was trained to match images with their captions. To classify without a labelled image,
# embed one prompt per class ("a photo of a heart.") with the text encoder and pick the class
# whose prompt is closest to the image; averaging several templates per class (*prompt
# ensembling*) gives one embedding per class, a linear head made from text (`zero_shot_head`).
# We compare it with a probe on CLIP's features and a k-NN, with all labels, then k per class.

# %%
from ftlab.models import load_clip
from ftlab.probe import k_shot_curve, knn_accuracy, zero_shot_head

clip_model, processor = load_clip()
clip_model.to(device())
results = {}
for task in cfg.clip_tasks:
    task_train = train_ds if task == cfg.task else load_image_classification(task, "train")
    task_test = test_ds if task == cfg.task else load_image_classification(task, "test")
    names = task_test.classes
    c_train = extract_features(clip_model, task_train, **extract)
    c_test = extract_features(clip_model, task_test, **extract)
    templates = cfg.templates[task]
    results[task] = {
        "classes": len(names),
        "zero-shot, one prompt": accuracy(zero_shot_head(clip_model, processor, names, templates[:1]), c_test),
        "zero-shot, all prompts": accuracy(zero_shot_head(clip_model, processor, names, templates), c_test),
        "probe, all labels": logistic_probe_accuracy(c_train.features, c_train.labels, c_test.features, c_test.labels),
        "k-NN, all labels": knn_accuracy(c_train, c_test, cfg.neighbors),
        "curve": k_shot_curve(c_train, c_test, cfg.shots, cfg.shot_seeds, cfg.neighbors),
    }
    if task == cfg.task:  # the ResNet's features on the same k-shot draws, for comparison
        results[task]["resnet curve"] = k_shot_curve(f_train, f_test, cfg.shots, cfg.shot_seeds, cfg.neighbors)

for task, r in results.items():
    print(f"{task} ({r['classes']} classes, chance {1 / r['classes']:.1%}), CLIP image features:")
    for key in ("zero-shot, one prompt", "zero-shot, all prompts", "probe, all labels", "k-NN, all labels"):
        print(f"  {key:<24}{r[key]:>7.1%}")
    print(f"  {'':<8}" + "".join(f"{k:>4}-shot" for k in r["curve"]["shots"]))
    for method in ("probe", "knn"):
        print(f"  {method:<8}" + "".join(f"{v:>9.1%}" for v in r["curve"][method]))

# %%
from ftlab.plots import plot_k_shot

fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.2), layout="constrained", squeeze=False)
for ax, (task, r) in zip(axes[0], results.items()):
    curves = {"CLIP": {"probe": r["curve"]["probe"], "k-NN": r["curve"]["knn"], "shots": r["curve"]["shots"]}}
    if "resnet curve" in r:
        curves["ResNet"] = {"probe": r["resnet curve"]["probe"], "shots": r["resnet curve"]["shots"]}
    plot_k_shot(curves, zero_shot={"CLIP zero-shot": r["zero-shot, all prompts"]}, chance=1 / r["classes"],
                ax=ax, title=f"{task}: accuracy vs labelled images per class")
plt.close(fig)
fig

# %% [markdown]
# With one labelled image per class a probe has almost nothing to fit, while zero-shot knows what
# each class name looks like: the prompt is worth many labels. The curves climb with k; where they
# cross zero-shot depends on how well CLIP's pretraining covered the task. The tiny CLIP is weak on
# outlines of new shapes (its probe on all labels vs its zero-shot, printed below), while the CNN
# pretrained on shapes passes zero-shot within a few labels per class. At full scale, compare
# CIFAR-10 (everyday photos, close to CLIP's web images) with EuroSAT (satellite tiles, far).

# %%
zs = results[cfg.task]["zero-shot, all prompts"]
curve = results[cfg.task]["curve"]
p_1, p_k, k_min, k_max = curve["probe"][0], curve["probe"][-1], curve["shots"][0], curve["shots"][-1]
if profile() == "tiny":
    assert zs >= 1 / K + 0.25, "CLIP zero-shot should beat chance by 25+ points"
    assert zs >= p_1 + 0.15, "with one label per class, zero-shot should beat the probe"
    assert p_k >= p_1 + 0.08, "the probe should improve from 1 to 16 labels per class"
print(f"CLIP on {cfg.task}: probe on all {len(train_ds):,} labels {results[cfg.task]['probe, all labels']:.1%}, "
      f"zero-shot {zs:.1%}")
_ = headline(f"{profile()}: probe trains {d_feat * K + K:,} parameters, scores {probe_acc:.1%} vs random backbone {random_acc:.1%}; "
             f"partial FT {partial_acc:.1%}, full FT {full_acc:.1%}; rare classes: accuracy {plain['acc']:.1%} but "
             f"macro-F1 {plain['f1']:.1%}, class-weighted {weighted['f1']:.1%}; CLIP zero-shot {zs:.1%} "
             f"vs {k_min}-shot probe {p_1:.1%}, {k_max}-shot {p_k:.1%}")

# %% [markdown]
# ## Drills
# Three more, in the same four cells: two choices and CLIP's zero-shot head.
#
# ### Drill 01b ★☆☆ · What trains after `build_linear_probe`?
# Right after `model = build_linear_probe(10)`, which parameters have `requires_grad=True`?
# Answer with one letter, e.g. `"a"`.
#
# - (a) Every parameter: the backbone and the new `fc`.
# - (b) Only `fc.weight` and `fc.bias`.
# - (c) `layer4` and `fc`.
# - (d) `fc` and every BatchNorm layer (weights and running statistics).

# %% tags=["answer"]
answer_01b = ...  # "a", "b", "c" or "d"

# %%
check("01b", answer_01b)

# %% cellView="form" tags=["solution"]
#@title Solution
# build_linear_probe freezes the whole backbone, then replaces fc with a fresh nn.Linear, whose
# parameters require gradients by default. Section 1 printed the trainable names: fc.weight, fc.bias.
answer_01b = "b"
check("01b", answer_01b)

# %% [markdown]
# ### Drill 01c ★★☆ · Probe, partial or full fine-tuning?
# You have 50 labelled photos for each of 8 bird species (photos much like ImageNet's) and a
# Colab T4 for 15 minutes. What do you train first? One letter.
#
# - (a) Fine-tune all of ResNet-50 with AdamW at lr 1e-3.
# - (b) A linear probe on frozen ResNet-50 features, cached once.
# - (c) Train a ResNet-50 from random weights on the 400 images.
# - (d) Unfreeze `layer4` and train it and the head with the same lr 1e-2.

# %% tags=["answer"]
answer_01c = ...  # "a", "b", "c" or "d"

# %%
check("01c", answer_01c)

# %% cellView="form" tags=["solution"]
#@title Solution
# 400 images are few and the photos are close to ImageNet: the pretrained features already
# separate the species. A probe on cached features trains in seconds and sets the baseline;
# unfreeze layer4 (with a backbone lr ~10x below the head's) only if the probe falls short.
answer_01c = "b"
check("01c", answer_01c)

# %% [markdown]
# ### Drill 01d ★★★ · Zero-shot logits with prompt ensembling
# Write `zero_shot_logits(image_emb, text_emb)`. `image_emb` is `[N, D]` (unit-length CLIP image
# embeddings); `text_emb` is `[T, K, D]`: the unit text embedding of each of `T` templates filled
# with each of `K` class names. Average over the templates, make each class embedding unit length
# again, and return the cosine similarities `[N, K]`. It is checked on random inputs.

# %% tags=["answer"]
def zero_shot_logits(image_emb, text_emb):
    raise NotImplementedError  # your code


# %%
check("01d", zero_shot_logits)

# %% cellView="form" tags=["solution"]
#@title Solution
import torch.nn.functional as F


def zero_shot_logits(image_emb, text_emb):
    class_emb = F.normalize(text_emb.mean(0), dim=-1)  # [K, D]: one unit vector per class
    return image_emb @ class_emb.T                     # [N, K]: cosine similarities


check("01d", zero_shot_logits)

# %% [markdown]
# ## Summary
# - A linear probe trains `d_feat · K + K` parameters and nothing else; on pretrained features it
#   scores far above the same network with random weights (the headline has this run's numbers).
# - Run the frozen backbone once and cache its features: a sweep of heads then costs seconds, and
#   AdamW, L-BFGS and a closed-form solve land within a point or two of each other.
# - When some classes are rare, accuracy reads high while they are missed: look at per-class
#   recall and macro-F1, and weigh the loss by `1 / n_c` (or resample) to find them.
# - Partial fine-tuning of the last block, at a backbone learning rate well below the head's, buys
#   a few points more; full fine-tuning is the upper reference, at the most gradient and Adam memory.
# - CLIP classifies from prompts alone; a few labels per class are worth less than a good prompt,
#   and how many it takes to beat zero-shot depends on how far the task is from CLIP's pretraining.
#
# **Try next:** start partial fine-tuning from the trained probe head (`partial_model.fc` loaded
# with `model.fc`'s weights: "LP-FT"); set `backbone_lr = head_lr` and watch partial fine-tuning
# lose accuracy; unfreeze `("layer3", "layer4")`; set `cfg.rare_share = 0.1`; add your own prompt
# templates to `cfg.templates`. Drills 01a-01g are above; lesson 02 writes LoRA by hand.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
