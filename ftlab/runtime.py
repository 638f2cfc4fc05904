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
from pathlib import Path

import numpy as np
import torch


class _NoHubKernelNoise(logging.Filter):
    """bitsandbytes' CPU backend tries to fetch an optional kernel from the hub at import and warns
    when it cannot (always, offline). Its own fallback runs the same op; the warning only confuses
    students, so it is dropped. Nothing else from bitsandbytes is filtered."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoHubKernelNoise())
# peft still calls transformers' old names for gradient checkpointing; the deprecation notice is
# for library authors, not for students running a lesson.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, message=r"`(is_)?gradient_checkpointing(_enable)?` is deprecated")

PROFILES = ("tiny", "full")


def profile() -> str:
    """The course scale: ``"tiny"`` (micro-world, CPU, offline) or ``"full"`` (hub models, GPU).

    Read from ``FTLAB_PROFILE``. Unset means ``full`` when a CUDA GPU is present, else ``tiny``.
    """
    value = os.environ.get("FTLAB_PROFILE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "tiny"
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
    """The device lessons put models on: the first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


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
    """bf16 on capability >= 8, fp16 on a T4/V100, float32 on the CPU."""
    if not torch.cuda.is_available():
        return torch.float32
    return dtype_for_capability(torch.cuda.get_device_capability())


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


def data_dir() -> Path:
    """The micro-world's folder: ``FTLAB_DATA`` if set, the checkout's ``data/``, or the wheel's copy."""
    override = os.environ.get("FTLAB_DATA")
    if override:
        path = Path(override)
        if not path.is_dir():
            raise FileNotFoundError(f"FTLAB_DATA={override!r} is not a folder.")
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
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        info["gpu_capability"] = "%d.%d" % torch.cuda.get_device_capability()
    else:
        info["gpu"] = "none"
    return info


def report() -> dict:
    """Print the environment report (every lesson's set-up cell does) and return it."""
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
