"""The one training loop every lesson uses: ``train(model, train_ds, lr=..., num_steps=...)``.

A lesson hands :func:`train` a model, a dataset and a loss; it gets back a :class:`History`
(losses, learning rates, gradient norms, eval metrics, wall time, peak memory) that
:func:`ftlab.plots.plot_history` draws. Inside, in order of appearance in the lessons:

- a progress bar (tqdm) and a one-line summary of wall time and peak memory (every lesson);
- gradient accumulation with the loss normalised over the whole window, not per micro-batch
  (lesson 05: micro-batches of an SFT run hold different numbers of target tokens);
- mixed precision (bf16, or fp16 with a GradScaler) and gradient clipping (lessons 04, 07);
- a NaN guard that stops at the first non-finite loss and says which step;
- evaluation every N steps, checkpoints, and a resume that ends bit-exactly where an
  uninterrupted run ends (on the CPU), because the loop owns the data order;
- the same code under ``accelerate launch`` on several processes (lesson 10).

The loss contract is the one idea to remember: ``loss_fn(model, batch)`` returns the SUM of the
per-item losses of a micro-batch (items are target tokens, or examples) and
``count_fn(batch)`` says how many items that is. A step's loss is then
``sum over the window / items in the window``: the same number one big batch would give.

Decisions worth knowing (each is tested in ``tests/test_train.py``):

- Steps are numbered from 1. The learning-rate schedules are the formulas of
  ``transformers.get_scheduler`` (so with warmup the first step runs at lr 0, as in HF/TRL).
- ``train`` seeds python, numpy and torch with ``cfg.seed`` at the start: re-running a cell
  repeats the run. The data order comes from its own generator seeded with (seed, epoch).
- An epoch is cut into windows of ``grad_accum * processes`` micro-batches; its last window
  may be shorter (it still averages over its own items). Windows never span two epochs.
- ``precision="fp16"`` on the CPU warns and runs fp32 (CPUs have no fp16 autocast/GradScaler
  in accelerate); ``"bf16"`` runs on the CPU. With a simulated T4 (``FTLAB_SIMULATE_GPU=t4``)
  the CPU runs fp16 autocast and a GradScaler for real, as the T4 would.
- fp16 needs fp32 master weights: a GradScaler cannot unscale fp16 gradients. Trainable fp16
  parameters are upcast to fp32 for the run (the optimizer updates those) and cast back to fp16
  when it ends, so the model leaves in the dtype it came in.
- Before step 1 on a GPU (real or simulated), the memory calculator predicts the run at the
  model's real size and a run that cannot fit the card stops with the numbers and what to try.
- ``FTLAB_MAX_STEPS`` (``ftlab.runtime.max_steps``) caps the steps of every run: the rehearsal.
- A checkpoint (:mod:`ftlab.checkpoint`) holds the trainable parameters and buffers (not frozen
  weights: rebuild the model the same way before resuming), optimizer, schedule position,
  GradScaler, RNGs of every process and the history. ``checkpoint_dir`` that already holds
  checkpoints needs ``resume=True``. A resumed run applies the lr, schedule, warmup and number of
  steps it is given (and prints which changed); only the data settings must stay the same.
- ``loss_fn`` may return ``(loss_sum, metrics)``: the one extension point for per-step metrics,
  summed and averaged over the window's items like the loss (``ftlab.dpo.train_dpo`` uses it).
- With fp16, a step whose gradients overflow is skipped by the GradScaler (its grad_norm is
  recorded as inf) and is not an error; in fp32/bf16 a non-finite gradient norm is.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import send_to_device
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from ftlab.checkpoint import (  # the first four stay importable from ftlab.train, where they lived
    MODEL_FILE,  # noqa: F401
    STATE_FILE,  # noqa: F401
    CheckpointError,  # noqa: F401
    trainable_state_dict,  # noqa: F401
    check_writable,
    latest_checkpoint,
    newest_readable,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from ftlab.runtime import amp_dtype, capped, device, seed_everything, simulated_gpu

IGNORE_INDEX = -100  # label value that the loss skips (prompt tokens, padding): the HF convention

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "linear", "cosine")

# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Every knob of :func:`train`, with its unit. Print it in a lesson's config cell.

    ``train(model, ds, lr=1e-3, num_steps=50)`` builds one from keywords; ``train(model, ds, cfg,
    lr=3e-4)`` copies ``cfg`` with ``lr`` replaced.
    """

    lr: float = 1e-3  # peak learning rate (reached after warmup)
    num_steps: int | None = None  # optimizer steps to take; wins over num_epochs when set
    num_epochs: int = 1  # passes over train_data, used when num_steps is None
    batch_size: int = 16  # examples per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step: effective batch = batch_size * grad_accum * processes
    weight_decay: float = 0.0  # AdamW decoupled weight decay, on matrices only (not biases or norms)
    warmup_steps: int = 0  # optimizer steps of linear warmup from 0 to lr
    lr_schedule: str = "constant"  # after warmup: "constant", "linear" (to 0) or "cosine" (to 0)
    max_grad_norm: float | None = 1.0  # clip the global gradient norm to this; None = no clipping
    precision: str = "auto"  # "auto" (ftlab.runtime.amp_dtype()), "fp32", "bf16" or "fp16"
    shuffle: bool = True  # a new order of the examples every epoch
    seed: int = 0  # seeds the data order and, at the start, python/numpy/torch (dropout)
    eval_every: int | None = None  # call eval_fn every this many steps (and always at the end)
    checkpoint_every: int | None = None  # with checkpoint_dir: save every this many steps (and at the end)

    def __post_init__(self):
        self.validate()

    def validate(self) -> TrainConfig:
        """Raise a ValueError that names the field, its value and what is valid."""
        _check_number("lr", self.lr, "the peak learning rate, a number > 0 (typical: 1e-5 to 1e-3)")
        _check_int("num_epochs", self.num_epochs, 1, "passes over the data")
        if self.num_steps is not None:
            _check_int("num_steps", self.num_steps, 1, "optimizer steps, or None to use num_epochs")
        _check_int("batch_size", self.batch_size, 1, "examples per micro-batch")
        _check_int("grad_accum", self.grad_accum, 1,
                   "micro-batches per optimizer step (1 = no accumulation); "
                   "effective batch = batch_size * grad_accum")
        _check_int("warmup_steps", self.warmup_steps, 0, "optimizer steps of warmup (0 = none)")
        _check_int("seed", self.seed, 0, "the seed of data order and RNGs")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1, "a number of optimizer steps, or None")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} is not valid: use a finite number >= 0 "
                             "(0 = no decay; 0.01 to 0.1 is typical).")
        if not isinstance(self.shuffle, bool):  # shuffle="no" is a true value: it would shuffle
            raise ValueError(f"shuffle={self.shuffle!r} is not valid: use True (a new order every epoch) "
                             "or False (the dataset's order).")
        if self.max_grad_norm is not None:
            _check_number("max_grad_norm", self.max_grad_norm,
                          "the clipping threshold, a number > 0 (1.0 is usual), or None for no clipping")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r} is not a schedule; use one of {LR_SCHEDULES}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not valid; use one of {PRECISIONS} "
                             "('auto' picks bf16 on Ampere+ GPUs, fp16 on a T4, fp32 on the CPU).")
        return self


def _check_int(name, value, minimum, meaning):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid: it is {meaning}, an int >= {minimum}.")


def _check_number(name, value, meaning):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not valid: it is {meaning}.")


def make_config(cfg: TrainConfig | None = None, **overrides) -> TrainConfig:
    """``cfg`` (or the defaults) with ``overrides`` applied; an unknown name is a TypeError."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"train() got unknown setting(s) {unknown}. Valid TrainConfig fields: "
                        f"{', '.join(names)}.")
    if cfg is not None and not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig or None, got {type(cfg).__name__}.")
    return dataclasses.replace(cfg or TrainConfig(), **overrides)


# ---------------------------------------------------------------------------------------------
# Losses: each returns the SUM over the items of a micro-batch; a count function says how many.


def causal_lm_loss(model, batch: Mapping) -> torch.Tensor:
    """Summed next-token cross-entropy of an HF causal LM (lessons 05, 06). Returns a 0-d tensor.

    ``batch``: ``input_ids`` (B, L), ``attention_mask`` (B, L), ``labels`` (B, L) aligned with
    ``input_ids`` as in Hugging Face (the model is NOT given the labels; we shift here):
    the logits at position t predict ``labels[:, t + 1]``. Labels equal to -100 (prompt,
    padding) are skipped. Divide by :func:`count_causal_lm_items` for the mean per token.
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}
    logits = model(**inputs).logits  # (B, L, V)
    logits = logits[:, :-1, :].float()  # (B, L-1, V): position t predicts token t+1
    targets = labels[:, 1:]  # (B, L-1)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def count_causal_lm_items(batch: Mapping) -> int:
    """Target tokens of a causal-LM micro-batch: labels after the shift that are not -100."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def classification_loss(model, batch) -> torch.Tensor:
    """Summed cross-entropy of a classifier (lessons 01, 03). Returns a 0-d tensor.

    ``batch`` is ``(x, y)`` (x: the model's input, y: (B,) class ids), or a dict with
    ``labels`` (B,) and the inputs. One input is passed positionally (``model(x)``, so a plain
    ``nn.Module`` works), several as keywords (``model(**inputs)``, an HF model). The output is
    the logits (B, C) or an object with ``.logits``.
    """
    if isinstance(batch, (tuple, list)):
        x, labels = batch
        out = model(x)
    else:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}
        out = model(*inputs.values()) if len(inputs) == 1 else model(**inputs)
    logits = getattr(out, "logits", out)  # (B, C)
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def count_examples(batch) -> int:
    """Examples in a micro-batch: the length of ``labels`` (or of the first tensor)."""
    if isinstance(batch, Mapping):
        if "labels" in batch:
            return len(batch["labels"])
        batch = [v for v in batch.values() if isinstance(v, torch.Tensor)]
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    return len(batch)


def _is_causal_lm_batch(batch) -> bool:
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    return isinstance(labels, torch.Tensor) and labels.dim() == 2


def default_loss(model, batch) -> torch.Tensor:
    """:func:`causal_lm_loss` when ``labels`` are (B, L) token ids, else :func:`classification_loss`."""
    if _is_causal_lm_batch(batch):
        return causal_lm_loss(model, batch)
    return classification_loss(model, batch)


def default_count(batch) -> int:
    """The count that goes with :func:`default_loss`: target tokens, or examples."""
    return count_causal_lm_items(batch) if _is_causal_lm_batch(batch) else count_examples(batch)


_COUNT_FOR_LOSS = {causal_lm_loss: count_causal_lm_items, classification_loss: count_examples,
                   default_loss: default_count}


# ---------------------------------------------------------------------------------------------
# Data order: the loop owns it, so that a resumed run sees exactly the batches it would have seen.


def default_collate(examples: list):
    """Stack examples into a micro-batch: dicts of numbers/lists/tensors become dicts of tensors.

    A dict field of lists of equal length L becomes a (B, L) tensor; strings stay lists.
    Anything else (tuples of tensors, ...) goes to ``torch.utils.data.default_collate``.
    """
    first = examples[0]
    if not isinstance(first, Mapping):
        return torch.utils.data.default_collate(examples)
    batch = {}
    for key in first:
        values = [ex[key] for ex in examples]
        if isinstance(values[0], str):
            batch[key] = values
            continue
        try:
            batch[key] = (torch.stack(values) if isinstance(values[0], torch.Tensor)
                          else torch.tensor(values))
        except (RuntimeError, ValueError, TypeError) as err:
            raise ValueError(
                f"Cannot stack field {key!r} of {len(values)} examples into one tensor ({err}). "
                "Examples of different lengths need a collate_fn that pads them "
                "(for text: ftlab.sft's padding collator, or transformers.DataCollatorWithPadding)."
            ) from err
    return batch


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def epoch_windows(num_examples: int, *, batch_size: int, grad_accum: int = 1, world_size: int = 1,
                  shuffle: bool = True, seed: int = 0, epoch: int = 0) -> list[list[list[int]]]:
    """One epoch's plan: a list of optimizer-step windows, each a list of micro-batches of indices.

    The order is a permutation drawn from a ``torch.Generator`` seeded with (seed, epoch), so
    every process, and a resumed run, computes the same plan. A window holds
    ``world_size * grad_accum`` consecutive micro-batches; process r takes ``window[r::world_size]``
    (lesson 10: two processes with batch b take the same steps as one with grad_accum 2).
    The last window of an epoch may be shorter; with several processes the micro-batches are
    padded (repeating the first ones, as accelerate's ``even_batches`` does) to a multiple of
    ``world_size``, because DDP needs every process to run the same number of backward passes.
    """
    if shuffle:
        generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        order = torch.randperm(num_examples, generator=generator).tolist()
    else:
        order = list(range(num_examples))
    batches = [order[i:i + batch_size] for i in range(0, num_examples, batch_size)]
    batches += [batches[i % len(batches)] for i in range(-len(batches) % world_size)]
    size = world_size * grad_accum
    return [batches[i:i + size] for i in range(0, len(batches), size)]


def _check_dataset(train_data) -> int:
    if isinstance(train_data, DataLoader):
        raise TypeError(
            "train() takes the dataset itself, not a DataLoader: pass train_data=dataset with "
            "batch_size=... and collate_fn=.... The loop builds its own DataLoader each epoch so "
            "that it owns the data order, which is what makes an exact resume possible."
        )
    if isinstance(train_data, IterableDataset) or not (
            hasattr(train_data, "__len__") and hasattr(train_data, "__getitem__")):
        raise TypeError(
            f"train_data must be indexable with a length (a torch Dataset, a datasets.Dataset or a "
            f"list), got {type(train_data).__name__}. Streaming/iterable datasets cannot be "
            "shuffled and resumed exactly; materialise a slice of it first."
        )
    if len(train_data) == 0:
        raise ValueError("train_data is empty (0 examples): there is nothing to train on. "
                         "Check the split or the filter that produced it.")
    return len(train_data)


# ---------------------------------------------------------------------------------------------
# History


@dataclass
class StepRecord:
    """One optimizer step."""

    step: int  # 1-based optimizer step
    loss: float  # mean loss per item over the step's whole window (all micro-batches, all processes)
    lr: float  # learning rate this step used
    grad_norm: float  # global gradient norm before clipping (inf/nan when fp16 overflowed and the step was skipped)
    items: int  # items the loss was averaged over (target tokens or examples)
    seconds: float  # wall time of this step
    metrics: dict[str, float] = field(default_factory=dict)  # loss_fn's extra metrics, means per item


@dataclass
class EvalRecord:
    """One call of ``eval_fn``."""

    step: int
    metrics: dict[str, float]


@dataclass
class History:
    """What a run did, for plots and for the lesson's report (``print(history.summary())``)."""

    steps: list[StepRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the train() call that returned this history
    peak_memory_bytes: int | None = None  # GPU: max allocated; CPU: process peak RSS; None: n/a
    memory_kind: str = "n/a"  # what peak_memory_bytes measures
    device: str = ""
    precision: str = ""  # "fp32", "bf16" or "fp16": what actually ran
    resumed_from_step: int = 0  # 0 for a fresh run
    config: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float | None:
        """The loss of the last step (None before any step)."""
        return self.steps[-1].loss if self.steps else None

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]

    def metric(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one eval metric, for plotting."""
        pairs = [(e.step, e.metrics[name]) for e in self.evals if name in e.metrics]
        if not pairs:
            known = sorted({k for e in self.evals for k in e.metrics})
            raise KeyError(f"no eval metric {name!r} in this history; it has {known or 'no evals'}.")
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> History:
        data = dict(data)
        data["steps"] = [StepRecord(**s) for s in data.get("steps", [])]
        data["evals"] = [EvalRecord(**e) for e in data.get("evals", [])]
        return cls(**data)

    def summary(self) -> str:
        """One line: steps, wall time, final loss, peak memory, device and precision."""
        ran = len(self.steps) - self.resumed_from_step
        resumed = f", resumed at step {self.resumed_from_step}" if self.resumed_from_step else ""
        per_step = f", {self.seconds / ran:.3g} s/step" if ran > 0 else ""
        loss = f"{self.final_loss:.4f}" if self.final_loss is not None else "n/a"
        memory = ("n/a" if self.peak_memory_bytes is None
                  else f"{self.peak_memory_bytes / 2**20:,.0f} MiB ({self.memory_kind})")
        return (f"train: {ran} steps in {self.seconds:.1f} s{per_step}{resumed} | final loss {loss} | "
                f"peak memory {memory} | {self.device}, {self.precision}")


def _peak_memory(dev: torch.device) -> tuple[int | None, str]:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev), "GPU max allocated"
    try:
        import resource
    except ImportError:  # Windows
        return None, "n/a"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return rss * (1 if sys.platform == "darwin" else 1024), "process peak RSS"


# ---------------------------------------------------------------------------------------------
# Set-up helpers


def _mixed_precision(precision: str, dev: torch.device) -> str:
    """accelerate's name ("no", "bf16", "fp16") for our precision setting on this device."""
    if precision == "auto":
        return {torch.float32: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype()]
    if precision == "fp16" and dev.type != "cuda" and simulated_gpu() is None:
        # accelerate would silently run fp32 here (no fp16 autocast or GradScaler on the CPU);
        # we say so instead. bf16 is the reduced precision that works on a CPU.
        warnings.warn("precision='fp16' needs a CUDA GPU (autocast + GradScaler); on the CPU this run "
                      "falls back to fp32. Use precision='bf16' to try reduced precision on the CPU.",
                      stacklevel=3)
        return "no"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def _make_accelerator(mixed_precision: str) -> Accelerator:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        # accelerate keeps one AcceleratorState per process, and a second Accelerator with another
        # precision raises "AcceleratorState has already been initialized". A notebook re-runs
        # cells, so in a single process we start from a clean state each call. (Under
        # `accelerate launch`, the state belongs to the launcher and we leave it alone.)
        # accelerate has no public reset: these private calls are the ones its own test base class
        # (accelerate.test_utils.AccelerateTestCase) makes between tests, for the same reason.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=device().type == "cpu")
    if mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # Only a simulated T4 gets here (see _mixed_precision). accelerate leaves fp16 off on a
        # CPU, but torch runs fp16 autocast and a GradScaler there: switch both on, so the run
        # takes the T4's code path (and fails where a T4 would). (Attributes, not an API: no public
        # setting turns them on for a CPU.)
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu")
    return accelerator


def _fp32_master_weights(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """Upcast trainable fp16 parameters to fp32 in place; return those that were upcast.

    Under fp16 autocast the GradScaler multiplies the loss so small gradients survive fp16, then
    unscales them before the step, which torch refuses to do on fp16 gradients ("Attempting to
    unscale FP16 gradients"): the weights the optimizer updates must be fp32 ("master weights").
    Autocast still runs the matmuls in fp16. :func:`_restore_dtype` casts them back afterwards.
    """
    upcast = [p for p in params if p.dtype == torch.float16]
    for p in upcast:
        p.data = p.data.float()
    return upcast


def _convolutions_in_fp32(model: torch.nn.Module, mixed_precision: str, dev: torch.device) -> list:
    """fp16 autocast on the CPU (a simulated T4 only): convolutions run in fp32. Returns hook handles.

    torch's CPU fp16 convolution backward is a slow reference kernel (a ResNet-50 step at 224x224
    takes minutes per image), so there each convolution runs with autocast off, in fp32, and
    passes fp16 on, as a T4's fp16 convolution would; every other op keeps fp16 autocast. A real
    GPU (or bf16, or fp32) registers nothing.
    """
    if mixed_precision != "fp16" or dev.type != "cpu":
        return []

    def before(module, args):
        module._ftlab_autocast = torch.is_autocast_enabled("cpu")
        if module._ftlab_autocast:
            torch.set_autocast_enabled("cpu", False)
            return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def after(module, args, output):
        if module.__dict__.pop("_ftlab_autocast", False):
            torch.set_autocast_enabled("cpu", True)
            return output.half()

    convs = [m for m in model.modules()  # fp32 weights only: a frozen fp16 conv stays as it is
             if isinstance(m, torch.nn.modules.conv._ConvNd) and m.weight.dtype == torch.float32]
    return [h for m in convs for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]


def _restore_dtype(upcast: list[torch.nn.Parameter]) -> None:
    for p in upcast:
        p.data = p.data.half()
        if p.grad is not None:
            p.grad = None


def _build_optimizer(optimizer, params: list[torch.nn.Parameter], cfg: TrainConfig):
    """AdamW by default: decay on matrices (dim >= 2), none on biases and norm weights (as nanoGPT)."""
    if optimizer is None:
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer  # used as built: its own learning rate(s) are the peak
    if callable(optimizer):  # a factory or a class, e.g. bitsandbytes.optim.AdamW8bit
        built = optimizer(params)
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(f"optimizer factory returned {type(built).__name__}, not a torch Optimizer.")
        for group in built.param_groups:
            group["lr"] = cfg.lr
        return built
    raise TypeError("optimizer must be None (AdamW), a torch.optim.Optimizer, or a callable "
                    f"params -> Optimizer; got {type(optimizer).__name__}.")


def lr_multiplier(step: int, *, schedule: str = "constant", warmup_steps: int = 0,
                  total_steps: int = 1) -> float:
    """Factor on the peak lr after ``step`` optimizer steps (0-based): warmup, then the schedule.

    Linear warmup from 0 over ``warmup_steps``, then "constant" (1), "linear" (down to 0 at
    ``total_steps``) or "cosine" (half a cosine down to 0). The same formulas as
    ``transformers.get_scheduler``'s "constant_with_warmup", "linear" and "cosine", so runs match
    the HF/TRL trainers (tested). Plot it: ``[lr_multiplier(s, ...) for s in range(total)]``.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 -> 1 after warmup
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"schedule={schedule!r} is not a schedule; use one of {LR_SCHEDULES}.")


def _make_scheduler(optimizer, cfg: TrainConfig, total_steps: int, done: int = 0) -> LambdaLR:
    """The schedule of ``cfg`` over ``total_steps``, after ``done`` scheduler steps (a resumed run).

    Each group's ``initial_lr`` is its peak lr. Built at ``done`` (``last_epoch=done - 1``: torch
    takes one step on construction) rather than loaded from the checkpoint, so a resumed run runs
    the lr, warmup and schedule it was given: a cosine stretched to more steps continues from
    where the new curve is at step ``done``, not from the old curve's 0.
    """
    # a partial (not a lambda) of a module-level function: LambdaLR's state_dict stays plain data
    return LambdaLR(optimizer, partial(lr_multiplier, schedule=cfg.lr_schedule,
                                       warmup_steps=cfg.warmup_steps, total_steps=total_steps),
                    last_epoch=done - 1)


def _format_eval(record: EvalRecord) -> str:
    return f"step {record.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.metrics.items())


def _evaluate(model, eval_fn, step: int) -> EvalRecord:
    """``eval_fn(model)`` in eval mode (dropout off) without gradients; training mode restored.

    ``model`` is the unwrapped model (not the DDP wrapper): evaluation runs no collective.
    """
    model.eval()
    try:
        with torch.no_grad():
            metrics = eval_fn(model)
    finally:
        model.train()
    if not isinstance(metrics, Mapping):
        raise TypeError(f"eval_fn must return a dict of metric name -> number, got {type(metrics).__name__}.")
    return EvalRecord(step=step, metrics={str(k): float(v) for k, v in metrics.items()})


_NAN_CAUSES = ("Common causes: the learning rate is too high (try 10x lower, or warmup_steps); "
               "fp16 overflow (use precision='bf16' or 'fp32'); an example whose labels are all -100 "
               "under a mean-reduced loss (0/0); log(0) or division by zero in a hand-written loss.")


# ---------------------------------------------------------------------------------------------
# The loop


def _split_loss(out) -> tuple[torch.Tensor, Mapping]:
    """``loss_fn``'s result -> ``(loss_sum, metric_sums)``: a 0-d tensor, or a pair (tensor, dict)."""
    loss_sum, metrics = out if isinstance(out, tuple) and len(out) == 2 else (out, {})
    if not isinstance(loss_sum, torch.Tensor) or loss_sum.dim() != 0:
        shape = tuple(loss_sum.shape) if isinstance(loss_sum, torch.Tensor) else type(loss_sum).__name__
        raise TypeError(f"loss_fn must return a 0-d tensor, the SUM of the micro-batch's per-item "
                        f"losses (or a pair (that tensor, a dict of metric sums)); got {shape}. "
                        "(Use reduction='sum'.)")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"loss_fn returned (loss_sum, {type(metrics).__name__}); the second element "
                        "must be a dict of metric name -> SUM over the micro-batch's items.")
    for name, value in metrics.items():
        if isinstance(value, bool) or not (isinstance(value, (int, float))
                                           or (isinstance(value, torch.Tensor) and value.numel() == 1)):
            raise TypeError(f"loss_fn's metric {name!r} is {type(value).__name__}"
                            f"{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}; a metric "
                            "is one number (or a 1-element tensor), the SUM over the micro-batch's items.")
    return loss_sum, metrics


def _window_step(model, micro_batches, *, step, loss_fn, count_fn, accelerator
                 ) -> tuple[float, int, dict[str, float]]:
    """Forward and backward over one window. Returns (mean loss per item, items N, metric means).

    Each micro-batch contributes ``loss_sum / N`` where N counts the items of the WHOLE window
    (all micro-batches, all processes), so the accumulated gradient is the gradient of the
    window's mean loss: what one big batch gives. Averaging per-micro-batch means instead
    would weigh a micro-batch of 3 target tokens like one of 300. Metrics that ``loss_fn``
    returns (sums over items, like the loss) are averaged the same way.
    """
    world = accelerator.num_processes
    local = sum(int(count_fn(b)) for b in micro_batches)
    total = int(accelerator.reduce(torch.tensor(local, device=accelerator.device), "sum").item())
    if total == 0:
        raise ValueError(
            f"step {step}: every label in this step's {len(micro_batches) * world} micro-batch(es) "
            "is -100 (ignored), so there is no item to average the loss over: a mean loss here "
            "would be 0/0 = NaN. Check the label masking and truncation (a prompt longer than "
            "the max length masks the whole example; ftlab.sft's truncation avoids that)."
        )
    loss_sum_total, metric_sums = 0.0, {}
    for i, batch in enumerate(micro_batches):
        batch = send_to_device(batch, accelerator.device)
        last = i == len(micro_batches) - 1
        # DDP: all-reduce the gradients once per window, on the last backward
        with nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                loss_sum, metrics = _split_loss(loss_fn(model, batch))
            value = loss_sum.item()
            bad = not math.isfinite(value)
            if world > 1:  # all processes stop together, or the others wait forever in DDP's all-reduce
                bad = accelerator.reduce(torch.tensor(float(bad), device=accelerator.device), "sum").item() > 0
            if bad:
                raise FloatingPointError(
                    f"step {step}, micro-batch {i + 1} of {len(micro_batches)}: the loss is {value}"
                    f"{' here (or on another process)' if world > 1 else ''}. "
                    f"Training stopped before the optimizer used it (the weights are those after "
                    f"step {step - 1}). {_NAN_CAUSES}"
                )
            if not loss_sum.requires_grad:
                raise RuntimeError("The loss does not depend on any trainable parameter (no grad_fn): "
                                   "is everything frozen, or did loss_fn detach or call .item()?")
            # DDP averages gradients over the processes; multiplying by `world` turns that into a sum
            accelerator.backward(loss_sum * (world / total))
        loss_sum_total += value
        for name, v in metrics.items():
            metric_sums[name] = metric_sums.get(name, 0.0) + float(v)
    names = sorted(metric_sums)  # every process returns the same names, reduced in one order
    # float32, as before the metrics existed (the MPS backend has no float64)
    sums = accelerator.reduce(torch.tensor([loss_sum_total] + [metric_sums[n] for n in names],
                                           device=accelerator.device), "sum").tolist()
    return sums[0] / total, total, {n: v / total for n, v in zip(names, sums[1:])}


def train(model: torch.nn.Module, train_data, cfg: TrainConfig | None = None, *,
          loss_fn: Callable | None = None, count_fn: Callable | None = None,
          collate_fn: Callable | None = None, eval_fn: Callable | None = None,
          optimizer=None, checkpoint_dir: str | os.PathLike | None = None,
          resume: bool | str | os.PathLike = False, progress: bool = True, **overrides) -> History:
    """Train ``model`` in place on ``train_data``; return its :class:`History`.

    Args:
        model: any ``nn.Module``; only parameters with ``requires_grad`` are optimized (freeze a
            backbone, or inject LoRA, before calling). Left on ``ftlab.runtime.device()``, in the
            mode (train/eval) it came in.
        train_data: a torch ``Dataset``, a ``datasets.Dataset`` or a list of examples. The loop
            draws micro-batches of ``batch_size`` examples, shuffled every epoch from ``seed``.
        cfg: a :class:`TrainConfig`; ``**overrides`` replace its fields (``lr=3e-4``).
        loss_fn: ``loss_fn(model, batch) -> 0-d tensor``, the SUM of per-item losses of a
            micro-batch. Default :func:`default_loss` (causal LM for (B, L) labels, else
            classification). It may return ``(loss_sum, metrics)`` instead, ``metrics`` a dict of
            name -> SUM over the same items (a number or 1-element tensor): each step records
            their mean per item over its window in ``history.steps[i].metrics`` (lesson 06's
            reward metrics come this way).
        count_fn: ``count_fn(batch) -> int``, items in the micro-batch. Default: the count that
            goes with the built-in losses, else :func:`count_examples`.
        collate_fn: list of examples -> batch. Default :func:`default_collate`.
        eval_fn: ``eval_fn(model) -> dict[str, float]``, called every ``eval_every`` steps and at
            the end, under ``torch.no_grad()`` with ``model.eval()``.
        optimizer: None (AdamW with ``lr`` and ``weight_decay``), an optimizer instance (used as
            is, its own lr; it must hold the trainable parameters, so build it after injecting
            adapters), or a factory ``params -> Optimizer`` (its lr is set to ``lr``).
        checkpoint_dir: where ``step_NNNNNN`` checkpoints go (every ``checkpoint_every`` steps and
            at the end; :mod:`ftlab.checkpoint`). It must be writable (checked before step 1) and
            hold no checkpoints unless ``resume`` is set.
        resume: True continues from the newest readable checkpoint in ``checkpoint_dir`` (or
            starts fresh if there is none); a path continues from that checkpoint folder. The
            run's lr, schedule, warmup and number of steps are the ones given to this call.
        progress: show the tqdm bar and eval lines. The summary line is always printed.

    Raises:
        ValueError: a bad setting or empty data; a step whose labels are all -100.
        FloatingPointError: a non-finite loss (or gradient norm, outside fp16); the message names
            the step, and ``err.history`` holds the steps before it.
    """
    cfg = make_config(cfg, **overrides).validate()
    num_examples = _check_dataset(train_data)
    if count_fn is None:
        count_fn = _COUNT_FOR_LOSS.get(loss_fn, count_examples if loss_fn else default_count)
    loss_fn = loss_fn or default_loss
    collate_fn = collate_fn or default_collate
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume is True and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=... (where to look for the latest checkpoint).")
    if not isinstance(resume, (bool, str, os.PathLike)):
        raise TypeError(f"resume={resume!r} is not valid: use False, True (the newest checkpoint in "
                        "checkpoint_dir) or the path of a step_NNNNNN checkpoint folder.")
    if not resume and checkpoint_dir is not None and latest_checkpoint(checkpoint_dir) is not None:
        raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} already holds checkpoints (latest: "
                         f"{latest_checkpoint(checkpoint_dir).name}). Pass resume=True to continue "
                         "from it, or delete the folder / choose another one to start over.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The model has no parameter with requires_grad=True: nothing to train. "
                         "Unfreeze a head, or inject LoRA adapters, first.")
    _check_optimizer_holds(optimizer, params)
    if checkpoint_dir is not None:
        check_writable(checkpoint_dir, rank=int(os.environ.get("RANK", "0")))

    seed_everything(cfg.seed)  # re-running the cell repeats the run (dropout, data order)
    mixed_precision = _mixed_precision(cfg.precision, device())
    accelerator = _make_accelerator(mixed_precision)
    dev = accelerator.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start_time = time.perf_counter()

    upcast = _fp32_master_weights(params) if mixed_precision == "fp16" else []
    if upcast and accelerator.is_main_process:
        print(f"train: {len(upcast)} trainable fp16 tensors kept in fp32 for the run (master weights: "
              "the GradScaler needs fp32 gradients); cast back to fp16 at the end.")
    base_optimizer = _build_optimizer(optimizer, params, cfg)
    peak_lrs = [group.get("initial_lr", group["lr"]) for group in base_optimizer.param_groups]
    world, rank = accelerator.num_processes, accelerator.process_index
    plan_args = dict(batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, world_size=world,
                     shuffle=cfg.shuffle, seed=cfg.seed)
    data_plan = {"num_examples": num_examples, **plan_args}
    steps_per_epoch = len(epoch_windows(num_examples, **plan_args))
    total_steps = cfg.num_steps or cfg.num_epochs * steps_per_epoch
    scheduler_steps = total_steps  # the schedule keeps its shape when the rehearsal cap cuts the run
    total_steps = capped(total_steps, "train steps")
    try:
        # Read the checkpoint (every file, checked) before the model is touched: an unreadable
        # file or a run that does not fit fails here, with the model as it came in.
        if resume is True:
            ckpt = newest_readable(checkpoint_dir, rank=rank, data_plan=data_plan,
                                   announce=accelerator.is_main_process)
            if ckpt is None and accelerator.is_main_process:
                print(f"train: no checkpoint in {checkpoint_dir} yet; starting at step 0.")
        else:
            ckpt = read_checkpoint(resume, rank=rank, data_plan=data_plan) if resume else None
        if ckpt is not None and ckpt.step > scheduler_steps:
            raise ValueError(f"Checkpoint {ckpt.path} is at step {ckpt.step}, past this run's {scheduler_steps} "
                             "steps (num_steps, or num_epochs x steps per epoch). Ask for at least "
                             f"{ckpt.step} steps to continue it.")
        _check_memory(model, train_data, num_examples, collate_fn, plan_args, base_optimizer, mixed_precision,
                      announce=accelerator.is_main_process, micro_batches=scheduler_steps * cfg.grad_accum)
    except BaseException:
        _restore_dtype(upcast)
        raise
    # The schedule this run was given, at the position the checkpoint reached (0 when fresh). Built
    # before prepare, which patches optimizer.step under fp16 (torch warns about a later scheduler).
    for group, peak in zip(base_optimizer.param_groups, peak_lrs):
        group["initial_lr"] = peak
    scheduler = _make_scheduler(base_optimizer, cfg, scheduler_steps,
                                done=ckpt.scheduler_steps if ckpt is not None else 0)
    was_training = model.training
    model.train()
    raw_model, own_forward = model, model.__dict__.get("forward")
    model, optimizer = accelerator.prepare(model, base_optimizer)  # device, DDP, autocast on forward
    conv_hooks = _convolutions_in_fp32(raw_model, mixed_precision, dev)
    model.zero_grad(set_to_none=True)  # stale gradients from a cell run earlier would be added

    step, history = 0, History()
    try:
        if ckpt is not None:
            restore(ckpt, accelerator=accelerator, raw_model=raw_model, optimizer=optimizer)
            step, history = ckpt.step, History.from_dict(ckpt.state["history"])
            changed = _changed_settings(ckpt.config, asdict(cfg))
            if changed and accelerator.is_main_process:
                print(f"train: resuming {ckpt.path.name} with changed settings, applied from step {step + 1}: "
                      f"{changed}")
    except BaseException:
        _unprepare(raw_model, own_forward)
        _restore_dtype(upcast)
        raw_model.train(was_training)
        raise
    history.resumed_from_step = step
    history.config = asdict(cfg)
    history.device = str(dev)
    history.precision = {"no": "fp32"}.get(mixed_precision, mixed_precision)
    last_saved = step if ckpt is not None else None

    def save(at_step):
        return save_checkpoint(checkpoint_dir, at_step, accelerator=accelerator, raw_model=raw_model,
                               optimizer=optimizer, scheduler=scheduler, history=history.to_dict(),
                               data_plan=data_plan, config=asdict(cfg))

    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not progress or not accelerator.is_local_main_process)
    try:
        while step < total_steps:
            epoch, first_window = divmod(step, steps_per_epoch)
            windows = epoch_windows(num_examples, epoch=epoch, **plan_args)[first_window:]
            shares = [window[rank::world] for window in windows]  # this process's micro-batches
            # An explicit generator keeps DataLoader from drawing from the global RNG (exact resume)
            loader = DataLoader(train_data, batch_sampler=[mb for share in shares for mb in share],
                                collate_fn=collate_fn, generator=torch.Generator())
            batches = iter(loader)
            for share in shares:
                if step >= total_steps:
                    break
                step_start = time.perf_counter()
                step += 1
                micro_batches = [next(batches) for _ in share]  # the whole window first: N before backward
                lr = optimizer.param_groups[0]["lr"]
                loss, items, metrics = _window_step(model, micro_batches, step=step, loss_fn=loss_fn,
                                                    count_fn=count_fn, accelerator=accelerator)
                grad_norm = float(accelerator.clip_grad_norm_(params, cfg.max_grad_norm or math.inf))
                if not math.isfinite(grad_norm) and accelerator.scaler is None:
                    raise FloatingPointError(
                        f"step {step}: the loss ({loss:.4g}) is finite but the gradient norm is "
                        f"{grad_norm}; the optimizer step was not taken. {_NAN_CAUSES}")
                optimizer.step()  # with fp16, the GradScaler skips a step whose gradients overflowed
                if not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                history.steps.append(StepRecord(step=step, loss=loss, lr=lr, grad_norm=grad_norm, items=items,
                                                seconds=time.perf_counter() - step_start, metrics=metrics))
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0:
                    history.evals.append(_evaluate(raw_model, eval_fn, step))
                    if progress and accelerator.is_main_process:
                        bar.write(_format_eval(history.evals[-1]))
                if checkpoint_dir is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save(step)
                    last_saved = step
        if eval_fn is not None and (not history.evals or history.evals[-1].step != step):
            history.evals.append(_evaluate(raw_model, eval_fn, step))
            if progress and accelerator.is_main_process:
                bar.write(_format_eval(history.evals[-1]))
        if checkpoint_dir is not None and last_saved != step:
            save(step)
    except FloatingPointError as err:
        err.history = history  # what happened up to the bad step, for a plot
        raise
    finally:
        bar.close()
        for hook in conv_hooks:
            hook.remove()
        _unprepare(raw_model, own_forward)
        _restore_dtype(upcast)
        raw_model.train(was_training)

    history.seconds = time.perf_counter() - start_time
    history.peak_memory_bytes, history.memory_kind = _peak_memory(dev)
    if accelerator.is_main_process:
        print(history.summary())
    return history


# Settings a resumed run may change (they are applied from the next step on); the data settings
# may not (see ftlab.checkpoint.read_checkpoint), because the data order would not continue.
RESUMABLE_CHANGES = ("lr", "num_steps", "num_epochs", "warmup_steps", "lr_schedule", "weight_decay",
                     "max_grad_norm", "precision", "eval_every", "checkpoint_every")


def _changed_settings(saved: Mapping, now: Mapping) -> str:
    """``"lr 0.001 -> 0.002, ..."`` for the settings that differ from the run that saved a checkpoint."""
    return ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in RESUMABLE_CHANGES
                     if k in saved and saved[k] != now[k])


def _check_optimizer_holds(optimizer, params: list[torch.nn.Parameter]) -> None:
    """An optimizer instance must hold the trainable parameters; say so before step 1 if it does not.

    The usual cause: the optimizer was built from ``model.parameters()`` before ``inject_lora``
    (or before freezing), so it holds the old weights and would update nothing that trains.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [p for p in params if id(p) not in held]
    if len(missing) == len(params):
        raise ValueError(
            f"The optimizer holds none of the model's {len(params)} trainable parameters, so no step would "
            "change the model. It was probably built before inject_lora / get_peft_model (or before "
            "freezing): build the optimizer after injecting the adapters, from the parameters that "
            "train, e.g. torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=...), "
            "or pass optimizer=None (AdamW) or a factory (params -> optimizer).")
    if missing:
        warnings.warn(f"The optimizer holds {len(params) - len(missing)} of the model's {len(params)} "
                      f"trainable parameters; the other {len(missing)} get gradients but are never updated. "
                      "Build the optimizer from [p for p in model.parameters() if p.requires_grad].",
                      stacklevel=3)


def _unprepare(raw_model: torch.nn.Module, own_forward) -> None:
    """Undo what ``accelerator.prepare`` attached to the model, so the next ``train`` starts clean.

    prepare wraps ``model.forward`` in autocast and marks the model ``_is_accelerate_prepared``
    (a marked model is not prepared again: no device placement, no autocast, no DDP). This edits
    ``__dict__`` because no public API does the job (checked with accelerate 1.15):
    ``accelerator.unwrap_model(model, keep_fp32_wrapper=False)`` follows ``__wrapped__`` past
    the autocast wrapper into HF's own decorators (it compares each function with the saved bound
    method, which never matches), so a LlamaForCausalLM comes back with the undecorated
    ``forward`` pinned on the instance; and it leaves the ``_is_accelerate_prepared`` mark, which
    nothing public clears. So we put back exactly what was there.
    """
    raw_model.__dict__.pop("_is_accelerate_prepared", None)
    raw_model.__dict__.pop("_original_forward", None)
    if own_forward is None:
        raw_model.__dict__.pop("forward", None)  # the class's forward again
    else:
        raw_model.__dict__["forward"] = own_forward


def _check_memory(model, train_data, num_examples, collate_fn, plan_args, optimizer, mixed_precision,
                  announce=True, micro_batches=None):
    """Predict the run's GPU memory at the model's real size before step 1; stop if it cannot fit.

    Only on a GPU (real, or simulated with ``FTLAB_SIMULATE_GPU``): the CPU has no card to fit.
    The first micro-batch gives the batch shape; ``ftlab.budget.plan_run`` does the arithmetic.
    """
    from ftlab.runtime import card

    gpu = card()
    if gpu is None:
        return None
    from ftlab.budget import plan_run

    first = epoch_windows(num_examples, **plan_args)[0][0]
    batch = collate_fn([train_data[i] for i in first])
    plan = plan_run(model, batch, optimizer=optimizer, mixed_precision=mixed_precision, gpu=gpu,
                    micro_batches=micro_batches)
    if plan is not None and announce:
        print(plan.line())
    if plan is not None and not plan.fits:
        raise MemoryError(plan.advice())
    return plan
