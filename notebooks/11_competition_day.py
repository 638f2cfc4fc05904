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
# # 11 · Competition day
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ftlab-course/ftlab/blob/main/notebooks/11_competition_day.ipynb)
#
# **What you will learn**
# - the whole day, in order: read the task card, budget memory and time, get a score in minutes,
#   hold out a validation split, pick the method on it, train with checkpoints, stop early,
#   predict, write the file, check it;
# - to watch the clock: every stage prints what it took and what is left of the budget;
# - to survive a Colab disconnect: checkpoints every few steps, then a fresh model and trainer
#   that resume where the old one stopped;
# - to decide on validation only, and to report the test score once, at the end.
#
# Two tasks no lesson has seen: **few-shot images** (classify 16 labelled pictures per class with
# a frozen backbone, then partial fine-tuning) and **short answers** (read a passage, answer with a
# word or span, a causal LM with LoRA). The solution uses only what you have on Colab on the day:
# torch, torchvision, transformers' `Trainer`, peft and datasets. From ftlab come only the task
# data (`ftlab.tasks`), the grader (`python -m ftlab.grade`), the set-up (`ftlab.runtime`) and the
# drills. A real competition hides the test labels; here the grader holds them, and this notebook
# never reads them.

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
# One cell holds every choice of the day; the full profile's values are for one Colab T4 and
# Beans / SQuAD 1.1, the tiny profile's for a CPU and the micro-world's two tasks. The model sizes
# are the model cards' published figures: the budget in section 1 is done with them, before
# anything is downloaded.

# %%
from dataclasses import dataclass


@dataclass
class Config:
    seed: int = 0
    budget_min: float = 5.0          # the clock's budget per task (the task card's)
    # few-shot images
    backbone: str = "tiny-cnn"       # the micro-world's ResNet-shaped CNN; full: torchvision's resnet50
    backbone_params: float = 0.31e6  # its parameter count without the head (full: 25.6M, torchvision's model card)
    image_size: int = 32             # the backbone's input size (full: 224)
    val_share: float = 0.25          # of train, held out for every decision (stratified)
    probe_steps: int = 300           # full-batch AdamW steps of the linear probe
    probe_lr: float = 1e-2
    unfreeze: tuple = ("layer4",)    # partial fine-tuning: the last stage and the head
    ft_epochs: int = 15
    ft_lr: float = 1e-3
    ft_batch: int = 16
    patience: int = 4                # evaluations without a better validation score, then stop
    # short answers
    lm: str = "tiny-llama"           # the micro-world's Llama (data/lm); full: TinyLlama/TinyLlama_v1.1
    lm_params: float = 0.9e6         # full: 1.1B (TinyLlama's model card)
    lm_layers: int = 2               # full: 22
    train_rows: int = 400            # of the train split used (full: a shuffled subset of 87,599)
    lm_val_rows: int = 80            # held out of those for validation
    max_length: int = 160            # tokens per training example; longer ones are dropped
    r: int = 8                       # LoRA rank on q, k, v, o
    alpha: int = 16
    lm_lr: float = 3e-3
    lm_epochs: float = 15
    lm_batch: int = 16
    grad_accum: int = 1
    every: int = 20                  # steps between evaluations and checkpoints
    disconnect: bool = True          # simulate a lost runtime half-way
    max_new_tokens: int = 8          # generation for the test answers
    margin_images: float = 0.50      # the solution must beat the floor by this much (asserted)
    margin_answers: float = 0.15


cfg = Config()
if profile() == "full":  # one T4, Beans and SQuAD 1.1 (section 1 budgets the time)
    cfg = Config(budget_min=60.0, backbone="resnet50", backbone_params=25.6e6, image_size=224, ft_epochs=15,
                 ft_lr=3e-4, ft_batch=16, lm="TinyLlama/TinyLlama_v1.1", lm_params=1.1e9, lm_layers=22,
                 train_rows=4000, lm_val_rows=200, max_length=384, r=16, alpha=32, lm_lr=2e-4, lm_epochs=1,
                 lm_batch=8, grad_accum=2, every=50, max_new_tokens=24, margin_images=0.25, margin_answers=0.15)
seed_everything(cfg.seed)
cfg

# %% [markdown]
# ## 0. The clock, and the brief
# A day goes wrong by running out of time more often than by a bad idea. The clock below starts
# now; `lap(stage)` prints how long the stage took and how much of the task's budget is left.
# Then read the task cards: the data, the metric, the file format and the budget.

# %%
import time


class Clock:
    """A stopwatch with a budget: lap() prints each stage's time and the time left."""

    def __init__(self, task: str, budget_min: float):
        self.task, self.budget_s = task, budget_min * 60
        self.start = self.last = time.perf_counter()
        self.laps = {}

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.laps[stage], self.last = now - self.last, now
        left = self.budget_s - (now - self.start)
        status = "" if left > 0 else "  OVER BUDGET: submit what you have"
        print(f"[clock {self.task}] {stage}: {self.laps[stage]:.1f} s; {left / 60:.1f} of "
              f"{self.budget_s / 60:.0f} min left{status}")
        return left

    @property
    def used_s(self) -> float:
        return self.last - self.start


from ftlab.tasks import task_card

print(task_card("fewshot_images"))
print()
print(task_card("short_answers"))

# %% [markdown]
# ## 1. Budget memory and time, by hand
# Before loading anything, check that the plan fits. Bytes per parameter (lesson 07): a frozen
# weight in fp16 takes 2; a trainable one adds its fp32 copy, gradient and AdamW's two moments
# (about 16 bytes in all). LoRA trains about 1% of a 1B model's weights (drill 11b counts one).
# Time: a forward and backward pass costs about 6 FLOPs per parameter per token when every weight
# trains, about 4 when only adapters do (no weight gradients), at the card's practical throughput
# for a whole training step (`ftlab.runtime.card()`; on a CPU we plan for a T4).

# %%
from ftlab.runtime import CARDS, card

gpu = card() or CARDS["t4"]  # the runtime's card (a simulated one in a rehearsal); plan for a T4 on a CPU
usable_gib = gpu.memory_bytes / 2**30 - 0.5  # the CUDA context takes about 0.5 GiB
lora_share = 0.01
plans = {
    "images: probe (frozen, fp32)": cfg.backbone_params * 4,
    "images: partial FT, all trainable (worst case)": cfg.backbone_params * 16,
    "answers: LoRA on an fp16 base": cfg.lm_params * 2 + cfg.lm_params * lora_share * 16,
    "answers: full FT (for comparison)": cfg.lm_params * 16,
}
for what, nbytes in plans.items():
    print(f"{what:48s} {nbytes / 2**30:8.3f} GiB of weights and states: "
          f"{'fits' if nbytes / 2**30 < usable_gib else 'does NOT fit'} the {gpu.name}'s {usable_gib:.1f} GiB usable (+ activations)")
tokens = (cfg.train_rows - cfg.lm_val_rows) * cfg.lm_epochs * cfg.max_length * 0.6  # ~60% of max_length on average
flops = 4 * cfg.lm_params * tokens
lm_minutes = flops / (gpu.train_tflops * 1e12) / 60
print(f"Time plan: {cfg.lm} LoRA on short_answers, {tokens:,.0f} tokens x 4 x {cfg.lm_params:.2g} parameters = "
      f"{flops:.2g} FLOPs, about {lm_minutes:.1f} min at the {gpu.name}'s practical {gpu.train_tflops:g} TFLOP/s")
assert plans["answers: LoRA on an fp16 base"] / 2**30 < usable_gib, "the plan must fit before we start"

# %% [markdown]
# ## Task A · Few-shot images
# ### A1. The data, and a validation split
# The loader gives `train` (labelled) and `test` (ids and images only). Hold out a stratified
# quarter of train as validation: every decision below (which method, which epoch) looks at it,
# and never at the test set. With 16 images per class the validation set is small, so each image
# in it moves the score by several points: read small differences as noise.

# %%
import torch
from torchvision.transforms import v2

from ftlab.tasks import load_task

clock = Clock("fewshot_images", cfg.budget_min)
images = load_task("fewshot_images")
classes = images["train"].features["label"].names
split = images["train"].train_test_split(test_size=cfg.val_share, seed=cfg.seed, stratify_by_column="label")
train_img, val_img = split["train"], split["test"]
print(f"{len(classes)} classes {classes}; train {len(train_img)}, validation {len(val_img)}, "
      f"test {len(images['test'])} (no labels)")

# ImageNet's statistics: both backbones were pretrained on images normalised with them.
transform = v2.Compose([v2.PILToTensor(), v2.Resize(cfg.image_size, antialias=True), v2.CenterCrop(cfg.image_size),
                        v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def pixels(rows) -> torch.Tensor:
    return torch.stack([transform(im.convert("RGB")) for im in rows["image"]])


x_train, y_train = pixels(train_img), torch.tensor(train_img["label"])
x_val, y_val = pixels(val_img), torch.tensor(val_img["label"])
_ = clock.lap("A1 data and split")

# %% [markdown]
# ### A2. The floor: a valid file in a minute
# First make sure you can submit at all. `python -m ftlab.grade TASK --template FILE` writes every
# test id with one constant prediction; grading it gives the floor, the score of knowing nothing.
# Every later submission goes through the same check. `ftlab.grade.main` is that command line,
# called here without starting a new Python (in a cell, `!python -m ftlab.grade ...` does the same).

# %%
import atexit
import contextlib
import io
import shutil

from ftlab.grade import main as grader

work = tempfile.mkdtemp(prefix="competition_day_")  # on Colab, a Google Drive folder survives a disconnect
atexit.register(shutil.rmtree, work, ignore_errors=True)  # gone when the kernel stops: download your files first


def run_grader(*args: str) -> str:
    """Run `python -m ftlab.grade ARGS`; print and return what it says, raise if it refuses."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = grader([*args, "--profile", profile()])
    print(out.getvalue().strip())
    if status != 0:
        raise RuntimeError(f"the grader refused: {err.getvalue().strip()}")
    return out.getvalue()


def grade(task: str, path: str) -> float:
    """Score a submission file; the grader prints the score as its last line."""
    return float(run_grader(task, path).strip().splitlines()[-1])


floor_path = os.path.join(work, "fewshot_images_template.csv")
run_grader("fewshot_images", "--template", floor_path)
floor_images = grade("fewshot_images", floor_path)
_ = clock.lap("A2 floor")

# %% [markdown]
# ### A3. A baseline in minutes: a linear probe on the frozen backbone
# Run every image through the pretrained backbone once, keep the features, and train only a
# linear head on them (lesson 01). It costs one forward pass per image and gives a real score
# fast.

# %%
import torch.nn as nn
import torch.nn.functional as F

from ftlab.runtime import device

if cfg.backbone == "resnet50":
    from torchvision.models import ResNet50_Weights, resnet50

    def load_backbone():
        return resnet50(weights=ResNet50_Weights.DEFAULT)
else:  # the micro-world's CNN: torchvision's ResNet layout (conv1 .. layer4, fc), pretrained on other shapes
    from ftlab.models import load_vision_backbone

    def load_backbone():
        return load_vision_backbone("tiny")

dev = device()


@torch.no_grad()
def features(net, x, batch=64):
    net.eval()
    return torch.cat([net(x[i:i + batch].to(dev)).float().cpu() for i in range(0, len(x), batch)])


seed_everything(cfg.seed)
backbone = load_backbone()
width = backbone.fc.in_features
backbone.fc = nn.Identity()  # the backbone now returns features
backbone.to(dev)
print(f"backbone: {sum(p.numel() for p in backbone.parameters()):,} parameters (the budget assumed "
      f"{cfg.backbone_params:,.0f})")
f_train, f_val = features(backbone, x_train), features(backbone, x_val)
probe = nn.Linear(width, len(classes))
opt = torch.optim.AdamW(probe.parameters(), lr=cfg.probe_lr, weight_decay=0.01)
for _ in range(cfg.probe_steps):  # full batch: the features fit in memory
    loss = F.cross_entropy(probe(f_train), y_train)
    opt.zero_grad()
    loss.backward()
    opt.step()
with torch.no_grad():
    probe_val = (probe(f_val).argmax(1) == y_val).sum().item() / len(y_val)  # exact fractions: ties are ties
print(f"linear probe on {width} frozen features: validation accuracy {probe_val:.1%} "
      f"(floor {floor_images:.1%})")
_ = clock.lap("A3 probe")

# %% [markdown]
# ### A4. Partial fine-tuning, early stopping on validation accuracy
# Unfreeze the last stage (`layer4`) and train it with the head, starting the head from the probe
# (a head that starts random sends large, noisy gradients into the pretrained layers). The frozen
# stages' BatchNorm layers stay in eval mode, so batches of a few images cannot overwrite their
# pretrained statistics. The `Trainer` evaluates on the validation split every epoch, keeps a checkpoint of each, stops when
# validation accuracy has not improved for `patience` evaluations, and reloads the best one.

# %%
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments

from ftlab.runtime import capped, trainer_precision


class Classifier(nn.Module):
    """The backbone and a head, in the form Trainer wants: forward(pixel_values, labels) -> loss, logits."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.backbone.modules():  # a frozen BatchNorm keeps its pretrained statistics:
            if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
                module.eval()  # batches of 16 few-shot images would overwrite them
        return self

    def forward(self, pixel_values, labels=None):
        logits = self.head(self.backbone(pixel_values))
        return {"loss": F.cross_entropy(logits, labels) if labels is not None else None, "logits": logits}


def as_rows(x, y):
    return [{"pixel_values": xi, "labels": int(yi)} for xi, yi in zip(x, y)]


def accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


seed_everything(cfg.seed)
net = load_backbone()
net.fc = nn.Identity()
head = nn.Linear(width, len(classes))
head.load_state_dict(probe.state_dict())  # start from the probe
for name, p in net.named_parameters():
    p.requires_grad = name.startswith(cfg.unfreeze)
model_img = Classifier(net, head)
trainable = sum(p.numel() for p in model_img.parameters() if p.requires_grad)
total = sum(p.numel() for p in model_img.parameters())
print(f"training {trainable:,} of {total:,} parameters ({trainable / total:.0%}): {', '.join(cfg.unfreeze)} and the head")

img_steps_per_epoch = -(-len(x_train) // cfg.ft_batch)
img_planned = cfg.ft_epochs * img_steps_per_epoch
img_args = TrainingArguments(
    output_dir=os.path.join(work, "images"), max_steps=capped(img_planned),
    per_device_train_batch_size=cfg.ft_batch, per_device_eval_batch_size=64, learning_rate=cfg.ft_lr,
    weight_decay=0.01, lr_scheduler_type="constant", eval_strategy="steps", eval_steps=img_steps_per_epoch,
    save_strategy="steps", save_steps=img_steps_per_epoch, save_total_limit=2, load_best_model_at_end=True,
    metric_for_best_model="accuracy", greater_is_better=True, logging_strategy="no", report_to=[],
    seed=cfg.seed, disable_tqdm=True, use_cpu=not torch.cuda.is_available(), **trainer_precision())
img_trainer = Trainer(model=model_img, args=img_args, train_dataset=as_rows(x_train, y_train),
                      eval_dataset=as_rows(x_val, y_val), compute_metrics=accuracy,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience)])
img_trainer.remove_callback(PrinterCallback)
img_trainer.train()
curve = [(log["step"], log["eval_accuracy"]) for log in img_trainer.state.log_history if "eval_accuracy" in log]
ft_val = img_trainer.evaluate()["eval_accuracy"]  # the reloaded best checkpoint
print("validation accuracy by step:", ", ".join(f"{s}: {a:.0%}" for s, a in curve))
print(f"stopped at step {img_trainer.state.global_step} of {img_args.max_steps}; best checkpoint "
      f"{os.path.basename(img_trainer.state.best_model_checkpoint or '')}: {ft_val:.1%} (probe {probe_val:.1%})")
assert abs(ft_val - max(a for _, a in curve)) < 1e-9, "the reloaded model should score the best evaluation"
shutil.rmtree(img_args.output_dir)  # the best weights are in memory now; a ResNet-50 checkpoint is 100 MB of disk
_ = clock.lap("A4 partial fine-tuning")

# %% [markdown]
# ### A5. Pick on validation, predict, write, check
# Submit whichever method scored higher on validation (a tie goes to the simpler probe). Predict
# the test images in batches, write `id,prediction` with the class names, and grade the file.

# %%
import csv

use_ft = round(ft_val, 6) > round(probe_val, 6)
final = model_img if use_ft else nn.Sequential(backbone, probe)
final.to(dev).eval()
predictions = []
with torch.no_grad():
    for start in range(0, len(images["test"]), 64):
        x = pixels(images["test"][start:start + 64]).to(dev)
        logits = final(x)["logits"] if use_ft else final(x)
        predictions += [classes[k] for k in logits.argmax(1).tolist()]


def write_submission(path, ids, predictions):
    with open(path, "w", newline="") as f:  # csv quotes a prediction that holds a comma
        writer = csv.writer(f)
        writer.writerow(["id", "prediction"])
        writer.writerows(zip(ids, predictions))


images_path = os.path.join(work, "fewshot_images.csv")
write_submission(images_path, images["test"]["id"], predictions)
method_images = "partial fine-tuning" if use_ft else "linear probe"
score_images = grade("fewshot_images", images_path)
_ = clock.lap("A5 predict, write, grade")
time_images = clock.used_s
print(f"submitted the {method_images}: test accuracy {score_images:.1%}, floor {floor_images:.1%}, "
      f"in {time_images:.0f} s of the {cfg.budget_min:g}-minute budget")

# %% [markdown]
# ## Task B · Short answers
# ### B1. The data, and a validation split
# Each row has a passage, a question and a short answer taken from the passage. The prompt ends in
# `Answer:`; the model learns to write the answer and stop (its end-of-sequence token). Only the
# answer's tokens carry loss (lesson 05). Rows longer than `max_length` tokens are dropped from
# training rather than cut, which could cut the answer out.

# %%
from transformers import AutoModelForCausalLM, AutoTokenizer

clock = Clock("short_answers", cfg.budget_min)
qa = load_task("short_answers")
rows = qa["train"].shuffle(seed=cfg.seed).select(range(min(cfg.train_rows, len(qa["train"]))))
qa_split = rows.train_test_split(test_size=cfg.lm_val_rows, seed=cfg.seed)
train_qa, val_qa = qa_split["train"], qa_split["test"]

if cfg.lm == "tiny-llama":  # the micro-world's Llama, a Hugging Face checkpoint in ftlab's data folder
    from ftlab.runtime import data_path

    lm_source = str(data_path("lm"))
else:
    lm_source = cfg.lm
tokenizer = AutoTokenizer.from_pretrained(lm_source)
if tokenizer.pad_token is None:  # Llama tokenizers often have none; padding is masked anyway
    tokenizer.pad_token = tokenizer.eos_token
tokenizer.padding_side = "right"  # for training; generation pads on the left


def prompt(row) -> str:
    return f"{row['context']}\nQuestion: {row['question']}\nAnswer:"


def encode(row):
    p = tokenizer(prompt(row))["input_ids"]  # with the BOS token, as at generation
    a = tokenizer(" " + row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": p + a, "attention_mask": [1] * (len(p) + len(a)), "labels": [-100] * len(p) + a}


def tokenized(ds):
    ds = ds.map(encode, remove_columns=ds.column_names)
    return ds.filter(lambda ex: len(ex["input_ids"]) <= cfg.max_length)


train_tok, val_tok = tokenized(train_qa), tokenized(val_qa)
print(f"train {len(train_tok)} of {len(train_qa)} rows (<= {cfg.max_length} tokens), validation {len(val_tok)}, "
      f"test {len(qa['test'])} (no answers)")
print("a training prompt:\n" + prompt(train_qa[0]) + " " + train_qa[0]["answer"])
_ = clock.lap("B1 data and split")

# %% [markdown]
# ### B2. The floor, and the model as it comes
# The template predicts the most common training answer everywhere. Then the pretrained model,
# asked as it is: greedy generation after `Answer:`, its first line taken as the answer.

# %%
import string


def normalize(text: str) -> str:
    """SQuAD's normalisation (lower case; no punctuation or a/an/the; single spaces), as the grader does."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


@torch.no_grad()
def answer(model, ds, batch=32) -> list[str]:
    """Greedy answers for every row of ds, batched with left padding."""
    model.eval()
    tokenizer.padding_side = "left"
    out = []
    try:
        for start in range(0, len(ds), batch):
            chunk = ds[start:start + batch]
            texts = [prompt(dict(zip(chunk, values))) for values in zip(*chunk.values())]
            enc = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
            gen = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            for seq in gen[:, enc["input_ids"].shape[1]:]:
                text = tokenizer.decode(seq, skip_special_tokens=True).strip()
                out.append(text.split("\n")[0].strip())
    finally:
        tokenizer.padding_side = "right"
    return out


def exact(predicted, rows) -> float:
    return sum(normalize(p) == normalize(a) for p, a in zip(predicted, rows["answer"])) / len(predicted)


floor_qa_path = os.path.join(work, "short_answers_template.csv")
run_grader("short_answers", "--template", floor_qa_path)
floor_answers = grade("short_answers", floor_qa_path)

from ftlab.runtime import amp_dtype

lm_dtype = amp_dtype()  # the frozen base in fp16 on a T4, bf16 on an L4, fp32 on a CPU; LoRA's weights stay fp32
base = AutoModelForCausalLM.from_pretrained(lm_source, dtype=lm_dtype).to(dev)
zero_shot_val = exact(answer(base, val_qa), val_qa)
print(f"the model as it comes: validation exact match {zero_shot_val:.1%} (floor on test {floor_answers:.1%})")
del base
_ = clock.lap("B2 floor and zero-shot")

# %% [markdown]
# ### B3. LoRA with checkpoints, a disconnect, and a resume
# Colab can drop the runtime at any time, and everything in memory goes with it. So the `Trainer`
# saves a checkpoint every `every` steps (the adapter, the optimizer, the scheduler, the random
# state and the step) into `output_dir`; on Colab, make that a Google Drive folder. Below, the
# runtime "dies" half-way: a callback stops training, and we throw the model and trainer away.
# Then, as after a reconnect, we build everything again from scratch and call
# `train(resume_from_checkpoint=True)`: it finds the last checkpoint and carries on from its step.
#
# The validation metric is exact match under teacher forcing: the answer's tokens are all the
# model's top choice given the right tokens before them. If they are, greedy generation writes
# exactly that answer and stops, so it is the generation score without generating (B4 checks it).

# %%
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorForSeq2Seq, TrainerCallback


def top_token(logits, labels):
    return logits.argmax(-1)  # keep the argmax, not the full logits, through evaluation


def teacher_forced_exact(pred):
    guess, labels = pred.predictions[:, :-1], pred.label_ids[:, 1:]  # the logit at t predicts token t+1
    scored = labels != -100
    return {"exact_match": float(((guess == labels) | ~scored).all(axis=1).mean())}


class Disconnect(TrainerCallback):
    """Stops training at a given step, as a lost Colab runtime would."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.at_step:
            control.should_training_stop = True


qa_dir = os.path.join(work, "answers")
shutil.rmtree(qa_dir, ignore_errors=True)  # a re-run starts a fresh day
lm_planned = int(cfg.lm_epochs * -(-len(train_tok) // (cfg.lm_batch * cfg.grad_accum)))
max_steps = capped(lm_planned)
every = max(1, min(cfg.every, max_steps // 4))
disconnect_at = every * max(1, (max_steps // every) // 2)
lm_args = TrainingArguments(
    output_dir=qa_dir, max_steps=max_steps, per_device_train_batch_size=cfg.lm_batch,
    gradient_accumulation_steps=cfg.grad_accum, per_device_eval_batch_size=32, learning_rate=cfg.lm_lr,
    lr_scheduler_type="constant", warmup_steps=0, eval_strategy="steps", eval_steps=every,
    save_strategy="steps", save_steps=every, save_total_limit=2, load_best_model_at_end=True,
    metric_for_best_model="exact_match", greater_is_better=True, logging_steps=every, report_to=[],
    seed=cfg.seed, disable_tqdm=True, use_cpu=not torch.cuda.is_available(), **trainer_precision())


def build_trainer(callbacks):
    """Everything a fresh runtime has to rebuild: the base model, the LoRA, the Trainer."""
    seed_everything(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(lm_source, dtype=lm_dtype)
    model = get_peft_model(model, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    trainer = Trainer(model=model, args=lm_args, train_dataset=train_tok, eval_dataset=val_tok,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
                      compute_metrics=teacher_forced_exact, preprocess_logits_for_metrics=top_token,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience), *callbacks])
    trainer.remove_callback(PrinterCallback)
    return trainer


trainer = build_trainer([Disconnect(disconnect_at)] if cfg.disconnect else [])
trainer.model.print_trainable_parameters()
trainer.train()
saved = sorted(os.listdir(qa_dir))
print(f"runtime lost at step {trainer.state.global_step} of {max_steps}; checkpoints on disk: {saved}")
_ = clock.lap("B3 training until the disconnect")

# %%
del trainer  # everything in memory is gone; only qa_dir survives
trainer = build_trainer([])
resume = trainer.train(resume_from_checkpoint=True)  # the newest checkpoint in output_dir
val_curve = [(log["step"], log["eval_exact_match"]) for log in trainer.state.log_history if "eval_exact_match" in log]
losses = [(log["step"], log["loss"]) for log in trainer.state.log_history if "loss" in log]
first_new = min(s for s, _ in losses if s > disconnect_at) if any(s > disconnect_at for s, _ in losses) else None
print("validation exact match by step:", ", ".join(f"{s}: {v:.0%}" for s, v in val_curve))
print(f"resumed from step {disconnect_at}; the first step logged after it: {first_new}; "
      f"ended at step {trainer.state.global_step} of {max_steps}")
best_val = trainer.evaluate()["eval_exact_match"]
print(f"best checkpoint {os.path.basename(trainer.state.best_model_checkpoint or '')}: validation exact match "
      f"{best_val:.1%} (zero-shot {zero_shot_val:.1%})")
assert trainer.state.global_step > disconnect_at, "the resumed run must carry on past the disconnect"
assert abs(best_val - max(v for _, v in val_curve)) < 1e-9, "the reloaded model should score the best evaluation"
_ = clock.lap("B3 resume and finish")

# %% [markdown]
# ### B4. Predict, write, check
# Generate the test answers greedily, write them, and grade the file. First a check of the
# validation metric: generation on the validation rows scores at least the teacher-forced exact
# match the `Trainer` reported (it can score more, when the normalisation forgives a token).

# %%
lm = trainer.model.to(dev)
val_generated = exact(answer(lm, val_qa), val_qa)
print(f"validation exact match: teacher-forced {best_val:.1%}, generated {val_generated:.1%}")
assert val_generated >= best_val - 1e-9, "greedy generation scores at least the teacher-forced exact match"
test_answers = answer(lm, qa["test"])
answers_path = os.path.join(work, "short_answers.csv")
write_submission(answers_path, qa["test"]["id"], test_answers)
print("first test answers:", test_answers[:5])
score_answers = grade("short_answers", answers_path)
_ = clock.lap("B4 predict, write, grade")
time_answers = clock.used_s

# %% [markdown]
# ## The day's scoreboard
# Each task's floor (the template), the baseline that took minutes, and the submission. A
# solution is only worth its time if it clears the floor by a margin: the config states one per
# task (`margin_images`, `margin_answers`), and the cell below prints and asserts them. A run
# shortened by a rehearsal's step cap is not held to them.

# %%
board = [
    ("fewshot_images", floor_images, f"probe val {probe_val:.1%}", f"{method_images}, val {max(probe_val, ft_val):.1%}",
     score_images, time_images),
    ("short_answers", floor_answers, f"zero-shot val {zero_shot_val:.1%}", f"LoRA r={cfg.r}, val {best_val:.1%}",
     score_answers, time_answers),
]
print(f"{'task':16s} {'floor':>7s}  {'baseline':22s} {'submitted':34s} {'test':>7s} {'seconds':>8s}")
for task, floor, baseline, method, score, seconds in board:
    print(f"{task:16s} {floor:7.1%}  {baseline:22s} {method:34s} {score:7.1%} {seconds:8.0f}")
margins = {"fewshot_images": (score_images - floor_images, cfg.margin_images),
           "short_answers": (score_answers - floor_answers, cfg.margin_answers)}
for task, (gained, required) in margins.items():
    print(f"{task}: {gained:+.1%} over the floor, the margin required {required:+.1%}")
shortened = img_args.max_steps < img_planned or max_steps < lm_planned
if shortened:  # a rehearsal: stand-in weights and two steps cannot score
    print("the training runs were shortened (a rehearsal's step cap): the margins are not asserted")
else:
    for task, (gained, required) in margins.items():
        assert gained >= required, f"{task}: the submission should clear the floor by {required:.0%}, not {gained:.1%}"
    assert best_val > zero_shot_val, "LoRA should beat the model as it comes on validation"

# %%
_ = headline(f"{profile()}: fewshot_images {method_images} test accuracy {score_images:.1%} vs floor "
             f"{floor_images:.1%} (probe val {probe_val:.1%}, fine-tuned val {ft_val:.1%}); short_answers LoRA "
             f"test exact match {score_answers:.1%} vs floor {floor_answers:.1%} (zero-shot val {zero_shot_val:.1%}, "
             f"LoRA val {best_val:.1%}); resumed after a disconnect at step {disconnect_at} "
             f"({time_images:.0f} s + {time_answers:.0f} s)")

# %% [markdown]
# ## Drills

# %% [markdown]
# ### Drill 11a ★★☆ · Which method fits?
# An 8B causal LM (Llama-3-8B), a Colab T4 (15.6 GB usable), 3,000 instruction examples, 3 hours.
# Which plan can run at all? One letter.
#
# - (a) Full fine-tuning in bf16 with 8-bit AdamW.
# - (b) LoRA r=16 on a bf16 (16-bit) base.
# - (c) QLoRA: LoRA r=16 on a 4-bit NF4 base, with gradient checkpointing.
# - (d) None: an 8B model cannot be trained on a T4.

# %% tags=["answer"]
from ftlab.drills import check

answer_11a = ...  # "a", "b", "c" or "d"

# %%
check("11a", answer_11a)

# %% cellView="form" tags=["solution"]
#@title Solution
# 16-bit weights alone are 8e9 x 2 = 16 GB; NF4 is about 0.55 bytes per weight (~4.4 GB) + 4.2 GB of fp32 embedding and head.
answer_11a = "c"
check("11a", answer_11a)

# %% [markdown]
# ### Drill 11b ★★☆ · The size of a LoRA
# TinyLlama-1.1B has 22 layers, hidden size 2048, and grouped-query attention: `k_proj` and
# `v_proj` map 2048 to 256, `q_proj` and `o_proj` 2048 to 2048. How many parameters does LoRA
# with r = 16 on `q_proj` and `v_proj` train?

# %% tags=["answer"]
answer_11b = ...  # a number

# %%
check("11b", answer_11b)

# %% cellView="form" tags=["solution"]
#@title Solution
# A LoRA on a d_out x d_in layer trains r x (d_in + d_out): q is 16 x (2048 + 2048), v 16 x (2048 + 256).
answer_11b = 22 * (16 * (2048 + 2048) + 16 * (2048 + 256))
check("11b", answer_11b)

# %% [markdown]
# ### Drill 11c ★★☆ · How much data fits in the time left?
# 50 minutes are left. You keep 15 for predicting, writing and checking the file. One optimizer
# step (batch 16) takes 1.5 s. How many training examples can the run see?

# %% tags=["answer"]
answer_11c = ...  # a number of examples

# %%
check("11c", answer_11c)

# %% cellView="form" tags=["solution"]
#@title Solution
# (50 - 15) min x 60 s / 1.5 s per step = 1,400 steps, x 16 examples each.
answer_11c = (50 - 15) * 60 / 1.5 * 16
check("11c", answer_11c)

# %% [markdown]
# ### Drill 11d ★☆☆ · Which score picks the checkpoint?
# Your run saved a checkpoint every 50 steps. Which score should choose the one you submit? One
# letter.
#
# - (a) The training loss: the lowest one.
# - (b) The validation metric, on rows held out of train.
# - (c) The grader's score on the test set, after submitting each checkpoint.
# - (d) The last checkpoint, always.

# %% tags=["answer"]
answer_11d = ...  # "a", "b", "c" or "d"

# %%
check("11d", answer_11d)

# %% cellView="form" tags=["solution"]
#@title Solution
# The validation split exists for exactly this; the test set is scored once, at the end.
answer_11d = "b"
check("11d", answer_11d)

# %% [markdown]
# ## Summary
# - Start from a valid file: the template and the grader give the floor in a minute, and prove the
#   format before any training.
# - Budget before loading: bytes per parameter for memory, about 4 to 6 FLOPs per parameter per
#   token for time. The clock then tells you where the day goes (see each stage's lap).
# - Hold out validation rows from train, and let them choose everything: probe or fine-tune, the
#   epoch, the checkpoint. With 16 images per class, a quick linear probe is a strong baseline
#   that fine-tuning has to beat on validation before you submit it.
# - Save checkpoints every few steps to a place that outlives the runtime; after a disconnect,
#   rebuild and call `trainer.train(resume_from_checkpoint=True)`.
# - Teacher-forced exact match is a cheap validation metric for short answers: when every answer
#   token is the model's top choice, greedy generation writes that answer.
#
# **Try next:** add augmentation (`v2.RandomResizedCrop`, flips) to the image transform and see if
# partial fine-tuning overtakes the probe; unfreeze `layer3` too; raise `r` or `lm_epochs` and
# watch the clock; then drills 11a-11d.
#
# **Field guide:** the course on one page for competition day (which method, default
# hyper-parameters, memory by hand, what to do when training goes wrong): [docs/field_guide.md](https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md).
