"""Checkpoints of :func:`ftlab.train.train`: save a run, find the newest good one, restore it.

A checkpoint is a folder ``step_NNNNNN`` in ``checkpoint_dir`` holding

- ``model.safetensors``: the trainable parameters and buffers (not the frozen weights: rebuild the
  model the same way before resuming, so a LoRA checkpoint stays megabytes);
- ``training_state.pt``: the step, the data plan, the optimizer's state (Adam's moments), the
  number of scheduler steps taken, the GradScaler, the history and the run's settings;
- ``rng_state_<rank>.pt``: the python, numpy and torch RNGs of each process.

Decisions (each tested in ``tests/test_checkpoint.py``):

- Saving writes ``step_N.tmp`` and renames it, so a crash mid-write never leaves a half checkpoint.
- Reading is separate from restoring: :func:`read_checkpoint` reads and checks every file first,
  and only then does :func:`restore` touch the model. A missing RNG file or a corrupt weight file
  is an error that names the file, raised while the model still holds its own weights.
- ``train(resume=True)`` resumes from the newest checkpoint that reads cleanly; an unreadable
  newer one is reported and skipped (:func:`newest_readable`).
- A resumed run keeps the optimizer's state and the schedule's position from the checkpoint, and
  takes its settings (lr, schedule, warmup, weight decay, number of steps) from the call: what
  the run was given is what it applies and what ``history.config`` records.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"


def rng_file(rank: int) -> str:
    """Name of the RNG file of process ``rank``."""
    return f"rng_state_{rank}.pt"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated or corrupt. ``.path`` is the file."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"Cannot read checkpoint file {self.path}: {problem}")


# ---------------------------------------------------------------------------------------------
# Finding checkpoints


def checkpoints(checkpoint_dir) -> list[Path]:
    """The complete ``step_NNNNNN`` folders of ``checkpoint_dir`` (both files present), oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*")
             if p.name[5:].isdigit() and (p / STATE_FILE).is_file() and (p / MODEL_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(checkpoint_dir) -> Path | None:
    """The newest complete ``step_NNNNNN`` folder in ``checkpoint_dir``, or None."""
    found = checkpoints(checkpoint_dir)
    return found[-1] if found else None


def check_writable(checkpoint_dir, rank: int = 0) -> Path:
    """Create ``checkpoint_dir`` if needed and write a probe file there; raise before step 1 if we cannot.

    Without this check a run with an unwritable folder trains for its whole first
    ``checkpoint_every`` steps and then dies at the first save.
    """
    root = Path(checkpoint_dir)
    probe = root / f".write_probe_{os.getpid()}_{rank}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ftlab")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"checkpoint_dir {str(root)!r} is not a writable folder ({type(err).__name__}: {err}). "
            "Checkpoints could not be saved there: pass a folder you can write to (on Colab, one under "
            "/content or on your mounted Drive), or checkpoint_dir=None for no checkpoints."
        ) from err
    return root


# ---------------------------------------------------------------------------------------------
# What a checkpoint holds


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters with ``requires_grad`` plus persistent buffers, as independent CPU tensors.

    Frozen weights are not saved (a LoRA checkpoint stays small); rebuild the model the same way
    before resuming. Tied weights appear once (``named_parameters`` drops duplicates), and every
    tensor is cloned, so safetensors never sees two names sharing memory.
    """
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {name: t.detach().to("cpu").contiguous().clone()
            for name, t in model.state_dict().items() if name in trainable or name in buffers}


def rng_state() -> dict:
    """The python, numpy, torch and CUDA RNG states of this process (plain data and tensors)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        # numpy arrays are not allowed by torch.load(weights_only=True); a tensor is
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Put back what :func:`rng_state` returned."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(checkpoint_dir: Path, step: int, *, accelerator, raw_model, optimizer, scheduler,
                    history: dict, data_plan: dict, config: dict) -> Path:
    """Write ``step_N`` (via ``step_N.tmp`` then a rename); every process writes its RNG file."""
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"step_{step:06d}"
    tmp = checkpoint_dir / f"step_{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / rng_file(accelerator.process_index))
    if accelerator.is_main_process:
        save_file(trainable_state_dict(raw_model), str(tmp / MODEL_FILE), metadata={"step": str(step)})
        torch.save({
            "step": step,
            "data": data_plan,
            "config": config,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "history": history,
        }, tmp / STATE_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------
# Reading (no side effects) and restoring


@dataclass
class Checkpoint:
    """Everything one process reads from a checkpoint folder, checked, before anything is restored."""

    path: Path
    state: dict  # training_state.pt
    weights: dict[str, torch.Tensor]  # model.safetensors
    rng: dict  # rng_state_<rank>.pt

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def scheduler_steps(self) -> int:
        """Scheduler steps taken (fewer than ``step`` when fp16 overflows skipped some)."""
        return int(self.state["scheduler"]["last_epoch"])

    @property
    def config(self) -> dict:
        """The settings of the run that saved it ({} for a checkpoint that did not record them)."""
        return dict(self.state.get("config") or self.state.get("history", {}).get("config") or {})


def _read(path: Path, reader, what: str):
    if not path.is_file():
        raise CheckpointError(path, f"the file is missing ({what}).")
    try:
        return reader(path)
    except Exception as err:  # torch/safetensors raise many types on a truncated or corrupt file
        raise CheckpointError(path, f"it is truncated or corrupt ({type(err).__name__}: "
                                    f"{str(err)[:200]}). Delete this step_ folder, or resume from "
                                    "an earlier one.") from err


def read_checkpoint(path, *, rank: int = 0, data_plan: dict | None = None) -> Checkpoint:
    """Read and check the files of checkpoint ``path`` for process ``rank``; change nothing.

    Raises :class:`CheckpointError` (naming the file) for a file that is missing, truncated or
    corrupt, FileNotFoundError when ``path`` is not a checkpoint folder, and ValueError when
    ``data_plan`` (dataset size, batch_size, grad_accum, shuffle, seed, processes) differs from
    the saved one: the data order could not continue exactly.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a checkpoint folder: it needs {MODEL_FILE} and {STATE_FILE}.")
    # Our own files: tensors and plain python values only, so the safe unpickler suffices.
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    state = _read(path / STATE_FILE, load, "the step, optimizer and history")
    if not isinstance(state, dict) or not {"step", "data", "optimizer", "scheduler"} <= set(state):
        raise CheckpointError(path / STATE_FILE, "it is not an ftlab training state (keys step, data, "
                                                 "optimizer, scheduler).")
    if data_plan is not None:
        changed = {k: (v, data_plan[k]) for k, v in state["data"].items()
                   if k in data_plan and data_plan[k] != v}
        if changed:
            details = ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(f"Cannot resume exactly from {path}: the data settings changed ({details}). "
                             "Resume with the same dataset, batch_size, grad_accum, shuffle, seed and "
                             "number of processes, or start a new run in a new checkpoint_dir.")
    weights = _read(path / MODEL_FILE, lambda p: load_file(str(p)), "the trainable weights")
    rng = _read(path / rng_file(rank), load, f"the random-number state of process {rank}; "
                                             "was the run saved with fewer processes?")
    return Checkpoint(path=path, state=state, weights=weights, rng=rng)


def newest_readable(checkpoint_dir, *, rank: int = 0, data_plan: dict | None = None,
                    announce: bool = True) -> Checkpoint | None:
    """The newest checkpoint of ``checkpoint_dir`` that reads cleanly, or None if there is none.

    An unreadable newer one (a truncated file after a crash or a full disk) is skipped, and with
    ``announce`` the skip is printed with the file and the checkpoint used instead. If every
    checkpoint is unreadable, the newest one's :class:`CheckpointError` is raised.
    """
    found = checkpoints(checkpoint_dir)
    errors = []
    for path in reversed(found):
        try:
            ckpt = read_checkpoint(path, rank=rank, data_plan=data_plan)
        except CheckpointError as err:
            errors.append(err)
            continue
        if errors and announce:
            skipped = "; ".join(str(e) for e in errors)
            print(f"train: skipped {len(errors)} unreadable checkpoint(s) ({skipped}); "
                  f"falling back to the previous good one, {path.name}.")
        return ckpt
    if errors:
        raise CheckpointError(errors[0].path, f"{errors[0].problem} No earlier checkpoint in "
                              f"{checkpoint_dir} is readable either ({len(errors)} tried).") from errors[0]
    return None


def restore(ckpt: Checkpoint, *, accelerator, raw_model, optimizer) -> None:
    """Put the checkpoint's weights, optimizer state, GradScaler and RNGs into this run.

    Everything that could refuse is checked before the first tensor is copied, so a checkpoint
    that does not fit leaves the model as it was. The optimizer's state (Adam's moments and step
    counts) comes from the checkpoint; its settings (lr, weight decay, betas...) stay those this
    run was built with. The scheduler is not restored here: ``train`` rebuilds it at
    ``ckpt.scheduler_steps`` with the schedule it was given.
    """
    path, weights = ckpt.path, ckpt.weights
    own = raw_model.state_dict()
    trainable = {name for name, p in raw_model.named_parameters() if p.requires_grad}
    unexpected = sorted(set(weights) - set(own))
    lacking = sorted(trainable - set(weights))
    reshaped = sorted(k for k in set(weights) & set(own) if tuple(weights[k].shape) != tuple(own[k].shape))
    if unexpected or lacking or reshaped:
        raise ValueError(f"Checkpoint {path} does not fit this model: names not in the model "
                         f"{unexpected[:5]}, trainable parameters missing from the checkpoint "
                         f"{lacking[:5]}, shapes that differ {reshaped[:5]}. Build (and freeze, and inject "
                         "adapters into) the model the same way as the run that saved it.")
    saved_groups = ckpt.state["optimizer"]["param_groups"]
    sizes = [len(g["params"]) for g in saved_groups]
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != ours:
        raise ValueError(f"The optimizer state in {path} does not match this model's trainable "
                         f"parameters (parameter groups of sizes {sizes} saved, {ours} now). Freeze "
                         "the same parameters, and build the optimizer the same way, as the saved run.")

    raw_model.load_state_dict(weights, strict=False)
    given = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(ckpt.state["optimizer"])
    for group, settings in zip(optimizer.param_groups, given):
        group.update(settings)  # this run's lr, weight decay...; the moments stay the checkpoint's
    if accelerator.scaler is not None and ckpt.state.get("scaler") is not None:
        accelerator.scaler.load_state_dict(ckpt.state["scaler"])
    set_rng_state(ckpt.rng)
