"""Data parallelism on the CPU with gloo: 2 processes x batch b == 1 process x grad_accum 2 (lesson 10).

``ftlab.train`` cuts each optimizer step's window of ``world_size * grad_accum`` micro-batches
so that rank r takes ``window[r::world_size]``, and DDP all-reduces the gradients once per
window. Two processes with ``grad_accum=1`` therefore see exactly the examples that one process
sees with ``grad_accum=2``, and the loss (a sum over the window's items / the items in the
window, reduced over the processes) must follow the same trajectory.

Tolerance: relative 1e-5 per step. Measured here: bit-identical (0.0), because gloo sums two
fp32 gradients, which is exact in either order; other machines may differ in the last ulps.
The launch is ``torchrun --standalone`` (a free port, so parallel CI jobs do not collide); it is
what ``accelerate launch --multi_gpu --num_processes 2`` runs underneath.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ftlab.run import main

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sft_tiny.yaml"
STEPS = 4
REL_TOL = 1e-5


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", FTLAB_PROFILE="tiny", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if sys.platform == "linux":  # both processes on this machine: gloo over loopback
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_two_processes_match_one_process_with_grad_accum_2(tmp_path, monkeypatch):
    sets = [f"num_steps={STEPS}", "batch_size=4", "precision=fp32"]
    start = time.perf_counter()
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ftlab.run", "sft", "--config", str(CONFIG), "--no-progress",
         "--set", *sets, "grad_accum=1", f"output_dir={tmp_path / 'ddp'}"],
        cwd=ROOT, env={**_env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - start
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert ddp["num_processes"] == 2, "torchrun did not form a 2-process group"

    monkeypatch.setenv("FTLAB_PROFILE", "tiny")
    assert main(["sft", "--config", str(CONFIG), "--no-progress", "--set", *sets, "grad_accum=2",
                 f"output_dir={tmp_path / 'one'}"]) == 0
    one = json.loads((tmp_path / "one" / "history.json").read_text())

    assert one["num_processes"] == 1 and len(one["losses"]) == len(ddp["losses"]) == STEPS
    items = lambda r: [s["items"] for s in r["history"]["steps"]]  # noqa: E731
    assert items(one) == items(ddp), "the two runs averaged over different target tokens"
    for step, (a, b) in enumerate(zip(one["losses"], ddp["losses"]), 1):
        assert abs(a - b) <= REL_TOL * abs(a), f"step {step}: 1 process {a}, 2 processes {b}"
    norms = lambda r: [s["grad_norm"] for s in r["history"]["steps"]]  # noqa: E731
    assert norms(one) == pytest.approx(norms(ddp), rel=1e-4)
    print(f"2-process run: {seconds:.1f} s; losses {ddp['losses']}")


def test_ddp_all_reduce_makes_every_rank_hold_the_full_batch_gradient():
    from ftlab.parallel import all_reduce_demo

    r = all_reduce_demo(world_size=2, batch=8)
    assert not torch.allclose(r["local"][0], r["local"][1]), "the two shares should give different gradients"
    assert torch.equal(r["synced"][0], r["synced"][1]), "after DDP's backward every rank holds the same gradient"
    torch.testing.assert_close(r["synced"][0], r["full_batch"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close((r["local"][0] + r["local"][1]) / 2, r["synced"][0], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_dpo_on_two_processes_matches_one_process_with_grad_accum_2(tmp_path, monkeypatch):
    """The DPO reference is the DDP-wrapped peft model with its adapter disabled; the step log
    splits each process's own pairs into steps."""
    config = ROOT / "configs" / "dpo_tiny.yaml"
    sets = ["num_steps=3", "batch_size=4", "sft_adapter=null"]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ftlab.run", "dpo", "--config", str(config), "--no-progress",
         "--set", *sets, "grad_accum=1", f"output_dir={tmp_path / 'ddp'}"],
        cwd=ROOT, env={**_env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    monkeypatch.setenv("FTLAB_PROFILE", "tiny")
    assert main(["dpo", "--config", str(config), "--no-progress", "--set", *sets, "grad_accum=2",
                 f"output_dir={tmp_path / 'one'}"]) == 0
    ddp, one = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("ddp", "one"))
    assert ddp["num_processes"] == 2 and len(ddp["dpo_metrics"]) == 3
    for a, b in zip(one["losses"], ddp["losses"]):
        assert abs(a - b) <= REL_TOL * abs(a)
    assert ddp["losses"][-1] < ddp["losses"][0]
