"""Where am I running, and with what? Profiles, devices, precision, seeds (lesson 00).

Every lesson's set-up cell calls :func:`report`; most student questions are version or
hardware questions, and the report answers them before they are asked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import platform
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class _NoHubKernelNoise(logging.Filter):
    """bitsandbytes' CPU backend tries to fetch an optional kernel from the hub at import and warns
    when it cannot (always, offline). Its own fallback runs the same op; the warning only confuses
    students, so it is dropped. Nothing else from bitsandbytes is filtered."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
_NO_HUB_KERNEL_NOISE = _NoHubKernelNoise()
# peft and TRL still call transformers' old names for gradient checkpointing; the deprecation
# notice is for library authors, not for students running a lesson.
_CHECKPOINTING_NOTICE = r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated"


def quiet() -> None:
    """Keep a lesson's output to what the student is doing. It hides:

    - bitsandbytes' offline warning that its optional hub kernel is missing (its own fallback
      computes the same);
    - the FutureWarning about transformers' old gradient-checkpointing names that peft and TRL
      still call;
    - the progress bars of work the student did not ask for: transformers' "Loading weights"
      (a fraction of a second per load) and datasets' ``map``/``filter`` bars ("Filter",
      TRL's "Tokenizing train dataset"). Training progress (``ftlab.train``'s bar, a Trainer's)
      and the hub's download bars stay.

    A lesson's set-up cell calls it through :func:`report`. Importing ftlab changes no logging,
    warning filter or progress bar of the program that imports it; calling this again adds nothing.
    """
    import datasets
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger(_BNB_CPU_LOGGER)
    if _NO_HUB_KERNEL_NOISE not in logger.filters:
        logger.addFilter(_NO_HUB_KERNEL_NOISE)
    warnings.filterwarnings("ignore", category=FutureWarning, message=_CHECKPOINTING_NOTICE)
    downloads_shown = not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # which also turns off the hub's download bars ...
    if downloads_shown:
        hub_utils.enable_progress_bars()  # ... that a 2 GB download on Colab should keep
    datasets.disable_progress_bars()


PROFILES = ("tiny", "full")


def profile() -> str:
    """The course scale: ``"tiny"`` (micro-world, CPU, offline) or ``"full"`` (hub models, GPU).

    Read from ``FTLAB_PROFILE``. Unset means ``full`` when a CUDA GPU is present (or simulated with ``FTLAB_SIMULATE_GPU``),
    else ``tiny``.
    """
    value = os.environ.get("FTLAB_PROFILE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() or simulated_gpu() is not None else "tiny"
    if value not in PROFILES:
        raise ValueError(
            f"FTLAB_PROFILE={os.environ['FTLAB_PROFILE']!r} is not a profile. Use one of "
            f"{PROFILES}: 'tiny' runs the offline micro-world on a CPU, 'full' loads real hub "
            "models on a GPU. Unset it to pick automatically."
        )
    return value


def resolve_profile(value: str | None = None) -> str:
    """``value`` if given (checked), else :func:`profile`. Loaders take ``profile=None`` this way."""
    if value is None:
        return profile()
    if value not in PROFILES:
        raise ValueError(f"profile={value!r} is not a profile; use one of {PROFILES} or None.")
    return value


def device() -> torch.device:
    """The device lessons put models on: the first CUDA GPU if there is one, else the CPU.

    A simulated card (``FTLAB_SIMULATE_GPU``) still computes on the CPU: it changes decisions
    (precision, memory budget), not where tensors live.
    """
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def model_device(model) -> torch.device:
    """The device a model's weights are on (its first parameter's): where its inputs must go."""
    try:
        return next(model.parameters()).device
    except AttributeError:
        raise TypeError(f"a {type(model).__name__} is not a model: pass a torch model (an nn.Module with "
                        "weights), e.g. what ftlab.models.load_causal_lm returns.") from None
    except StopIteration:
        raise ValueError(f"a {type(model).__name__} has no parameters, so it is on no device; pass a "
                         "model with weights.") from None


GiB = 1024**3


@dataclass(frozen=True)
class Card:
    """A GPU as the course budgets for it: what a Colab runtime with that card gives you."""

    key: str              # "t4", "l4": FTLAB_SIMULATE_GPU's value; upper-cased, a key of memory.GPUS
    name: str             # what torch.cuda.get_device_name() reports on it
    capability: tuple     # CUDA compute capability: bf16 from 8.0 on, else fp16 + GradScaler
    memory_bytes: int     # GPU memory torch sees as total_memory
    host_ram_bytes: int   # system RAM of the runtime that comes with the card
    simulated: bool = False
    train_tflops: float | None = None  # practical training throughput (TFLOP/s), for time estimates

    @property
    def memory_key(self) -> str:
        return self.key.upper()


# Colab's runtimes: the free T4 one has 12.7 GB of system RAM, the L4 one 53 GB. GPU memory is
# torch's total_memory (nvidia-smi: 15360 MiB on a T4, 23034 MiB on an L4), as memory.GPUS has it.
#
# Practical training throughput, for the time a run will take (docs/rehearsal.md, "Minutes"):
# both cards are capped at ~70 W, so long matrix multiplies run far below the datasheet peak. A
# T4 sustains about 24 TFLOP/s of fp16 cuBLAS GEMM (65 peak; NVIDIA developer forum, "About GPU
# peak performance", 2023: power capping). The L4 is assumed to keep the same share of its 121
# TFLOP/s bf16 dense peak: 45. A whole training step (attention, norms, the optimizer, the data
# loader) reaches about half of GEMM speed, so: T4 12 TFLOP/s, L4 22 TFLOP/s.
TRAIN_TFLOPS = {"t4": 12.0, "l4": 22.0}
CARDS = {
    "t4": Card("t4", "Tesla T4", (7, 5), 15360 * 1024**2, int(12.7e9), simulated=True,
               train_tflops=TRAIN_TFLOPS["t4"]),
    "l4": Card("l4", "NVIDIA L4", (8, 9), 23034 * 1024**2, int(53.0e9), simulated=True,
               train_tflops=TRAIN_TFLOPS["l4"]),
}


def simulated_gpu() -> Card | None:
    """The card ``FTLAB_SIMULATE_GPU`` (``t4`` or ``l4``) asks the runtime to decide as on, or None.

    The rehearsal (``make rehearse``) runs every lesson as on a Colab T4 and L4 without one: the
    precision (fp16 autocast with a GradScaler on a T4, bf16 on an L4) and the memory budget are
    the card's, while the arithmetic runs on the CPU (torch runs both autocasts there).
    """
    value = os.environ.get("FTLAB_SIMULATE_GPU", "").strip().lower()
    if not value:
        return None
    if value not in CARDS:
        raise ValueError(f"FTLAB_SIMULATE_GPU={os.environ['FTLAB_SIMULATE_GPU']!r} is not a card we simulate; "
                         f"use one of {sorted(CARDS)}, or unset it to use the real hardware.")
    return CARDS[value]


def _host_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def card() -> Card | None:
    """The GPU this run budgets for: the real CUDA device, else the simulated one, else None (CPU)."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        known = next((c for c in CARDS.values() if c.name == props.name), None)
        return Card(known.key if known else props.name, props.name, tuple(torch.cuda.get_device_capability(0)),
                    props.total_memory, _host_ram_bytes(), train_tflops=known.train_tflops if known else None)
    return simulated_gpu()


def gpu_capability() -> tuple[int, int] | None:
    """The capability precision is decided from: the real GPU's, else the simulated card's, else None."""
    if torch.cuda.is_available():
        return tuple(torch.cuda.get_device_capability())
    sim = simulated_gpu()
    return sim.capability if sim is not None else None


def dtype_for_capability(capability: tuple[int, int] | None) -> torch.dtype:
    """Mixed-precision dtype for a CUDA compute capability (``None`` means no GPU).

    bf16 needs capability >= 8.0 (Ampere: A100, L4, H100) to run natively. A T4 (7.5) or V100
    (7.0) gets fp16, which needs a GradScaler. ``torch.cuda.is_bf16_supported()`` answers yes
    on a T4 because it can emulate bf16, slowly, so we decide from the capability instead.
    """
    if capability is None:
        return torch.float32
    major, _minor = capability
    return torch.bfloat16 if major >= 8 else torch.float16


def amp_dtype() -> torch.dtype:
    """bf16 on capability >= 8, fp16 on a T4/V100, float32 on the CPU (a simulated card counts)."""
    return dtype_for_capability(gpu_capability())


def trainer_precision() -> dict:
    """``fp16=`` and ``bf16=`` for Hugging Face ``TrainingArguments`` (TRL's SFTConfig, DPOConfig).

    Left unset, transformers turns bf16 on whenever torch calls it supported, which a T4 answers
    yes to while emulating it slowly. This decides from the capability, as :func:`amp_dtype`
    does. (On a CPU with a simulated card, accelerate runs the Trainer in fp32 whatever these say.)
    """
    dtype = amp_dtype()
    return {"fp16": dtype == torch.float16, "bf16": dtype == torch.bfloat16}


def max_steps() -> int | None:
    """The cap ``FTLAB_MAX_STEPS`` puts on every training run and evaluation, or None.

    ``ftlab.train`` stops after this many optimizer steps and the evaluations score at most this
    many batches: ``make rehearse`` uses it to run each lesson's full configuration briefly.
    Lessons never read it; a capped run says so when it starts.
    """
    value = os.environ.get("FTLAB_MAX_STEPS", "").strip()
    if not value:
        return None
    cap = int(value) if value.isdigit() else 0
    if cap < 1:
        raise ValueError(f"FTLAB_MAX_STEPS={value!r} must be a positive integer (the most optimizer steps or "
                         "evaluation batches a run takes), or unset for no cap.")
    return cap


def capped(n: int, what: str = "steps") -> int:
    """``min(n, FTLAB_MAX_STEPS)``, printing a note when the cap shortens the run."""
    cap = max_steps()
    if cap is None or n <= cap:
        return n
    print(f"FTLAB_MAX_STEPS={cap}: {what} capped at {cap} of {n}.")
    return cap


def seed_everything(seed: int = 0) -> int:
    """Seed python, numpy and torch (CPU and CUDA) so a run repeats. Returns the seed."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


# The micro-world's parts (data/README.md): a folder that FTLAB_DATA names holds some of them.
MICRO_WORLD = {
    "world": "scripts/build_language_world.py",  # facts, instructions, preferences (.jsonl)
    "lm": "scripts/build_language_world.py",     # the tiny Llama and its tokenizer
    "text": "scripts/build_text_world.py",       # reviews and the tiny DistilBERT
    "vision": "scripts/build_vision_world.py",   # drawn shapes and the tiny ResNet
    "clip": "scripts/build_vision_world.py",     # the tiny CLIP
}
_UNSET = "unset it (shell: unset FTLAB_DATA; notebook: del os.environ['FTLAB_DATA']) to use the course's own data"


def data_dir() -> Path:
    """The micro-world's folder: ``FTLAB_DATA`` if set, the checkout's ``data/``, or the wheel's copy.

    ``FTLAB_DATA`` must name a folder holding at least one of the micro-world's parts
    (:data:`MICRO_WORLD`: ``world/``, ``lm/``, ``text/``, ``vision/``, ``clip/``); otherwise a
    FileNotFoundError names the folder, what it should hold, and how to unset the variable.
    """
    override = os.environ.get("FTLAB_DATA")
    if override:
        path = Path(override).expanduser()
        parts = ", ".join(f"{name}/" for name in MICRO_WORLD)
        if not path.is_dir():
            raise FileNotFoundError(f"FTLAB_DATA={override!r} is not a folder. It should name a micro-world folder "
                                    f"holding {parts} (as the checkout's data/ does); or {_UNSET}.")
        if not any((path / name).is_dir() for name in MICRO_WORLD):
            found = sorted(p.name for p in path.iterdir())
            shown = (", ".join(found[:6]) + (", ..." if len(found) > 6 else "")) if found else "nothing"
            raise FileNotFoundError(f"FTLAB_DATA={override!r} names a folder without the micro-world: it holds "
                                    f"{shown}, but should hold {parts} (as the checkout's data/ does; the "
                                    f"scripts/build_*_world.py --out FOLDER write them). Point it at such a "
                                    f"folder, or {_UNSET}.")
        return path
    checkout = Path(__file__).resolve().parent.parent / "data"
    if (checkout / "README.md").is_file():
        return checkout
    packaged = Path(__file__).resolve().parent / "_data"
    if packaged.is_dir():
        return packaged
    raise FileNotFoundError(
        "The micro-world data was not found: looked in the checkout's data/ and in the installed "
        "package's ftlab/_data. Reinstall ftlab from the repository or set FTLAB_DATA."
    )


def data_path(*parts: str) -> Path:
    """``data_dir() / parts...``, or a FileNotFoundError that says which script builds it and,
    when ``FTLAB_DATA`` chose the folder, that the variable did."""
    root = data_dir()
    path = root.joinpath(*parts)
    if path.exists():
        return path
    script = MICRO_WORLD.get(parts[0] if parts else "", "the scripts/build_*_world.py")
    if os.environ.get("FTLAB_DATA"):
        raise FileNotFoundError(f"{path} is missing: FTLAB_DATA={os.environ['FTLAB_DATA']!r} chose that micro-world "
                                f"folder, and it lacks {'/'.join(parts)} (built by {script} --out FOLDER). "
                                f"Point FTLAB_DATA at a complete folder, or {_UNSET}.")
    raise FileNotFoundError(f"{path} is missing; rebuild it with {script}.")


def capped_rows(rows, batch_size: int):
    """The first ``FTLAB_MAX_STEPS`` batches' worth of ``rows`` (all of them without the cap).

    Evaluations score what this returns and average over its length, so a capped evaluation is a
    smaller sample, never a wrong average.
    """
    cap = max_steps()
    if cap is None or len(rows) <= cap * batch_size:
        return rows
    print(f"FTLAB_MAX_STEPS={cap}: evaluation capped at {cap} batch(es), {cap * batch_size} of {len(rows)} rows.")
    return rows[:cap * batch_size]


def cache_dir() -> Path:
    """Where full-profile datasets that are not on the Hugging Face hub are downloaded once
    (EuroSAT): ``FTLAB_CACHE`` if set, else ``~/.cache/ftlab``."""
    override = os.environ.get("FTLAB_CACHE", "").strip()
    return Path(override).expanduser() if override else Path.home() / ".cache" / "ftlab"


_LIBRARIES = ("torch", "torchvision", "transformers", "peft", "trl", "bitsandbytes",
              "datasets", "accelerate")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict:
    """What the environment report prints, as a dict (library versions, device, GPU, profile)."""
    info = {
        "python": platform.python_version(),
        "ftlab": importlib.import_module("ftlab").__version__,
        **{lib: _version(lib) for lib in _LIBRARIES},
        "profile": profile(),
        "device": str(device()),
        "amp_dtype": str(amp_dtype()).replace("torch.", ""),
        "colab": in_colab(),
        "cpu_threads": torch.get_num_threads(),
    }
    gpu = card()
    if gpu is None:
        info["gpu"] = "none"
    else:
        info["gpu"] = gpu.name + (" (simulated on the CPU: FTLAB_SIMULATE_GPU)" if gpu.simulated else "")
        info["gpu_memory_gb"] = round(gpu.memory_bytes / GiB, 1)
        info["gpu_capability"] = "%d.%d" % gpu.capability
        if gpu.host_ram_bytes:
            info["host_ram_gb"] = round(gpu.host_ram_bytes / 1e9, 1)
    cap = max_steps()
    if cap is not None:
        info["max_steps"] = f"{cap} (FTLAB_MAX_STEPS: every run and evaluation is capped)"
    return info


def report() -> dict:
    """Print the environment report (every lesson's set-up cell does) and return it.

    It also calls :func:`quiet`, so a lesson's output shows no library notice meant for library
    authors; a program that imports ftlab without calling it keeps its own logging as it was.
    """
    quiet()
    info = environment()
    width = max(len(k) for k in info)
    print("ftlab environment")
    for key, value in info.items():
        print(f"  {key:<{width}}  {value}")
    return info


HEADLINE_PREFIX = "Headline:"


def headline(text: str) -> str:
    """Print a lesson's headline result; ``make lessons`` collects these lines into its table."""
    line = f"{HEADLINE_PREFIX} {text}"
    print(line)
    return line
