"""What DDP all-reduces, shown on real processes (lesson 10).

:func:`all_reduce_demo` starts ``world_size`` CPU processes joined by the gloo backend (the one
PyTorch uses without GPUs; NCCL plays its part on GPUs). Each process holds the same small model
and its own share of one batch. It records the gradient of its own share (before any
communication), then runs the same backward through ``DistributedDataParallel``, which
all-reduces the gradients (sums them and divides by ``world_size``) during the backward pass.
After that, every process holds the same gradient, equal to one process's gradient of the
whole batch: the weights stay identical without ever being sent.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException


def _demo_data(seed: int, batch: int, d_in: int, d_out: int):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(d_in, d_out)
    with torch.no_grad():
        model.weight.copy_(torch.randn(d_out, d_in, generator=gen))
        model.bias.zero_()
    x, y = torch.randn(batch, d_in, generator=gen), torch.randn(batch, d_out, generator=gen)
    return model, x, y


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()  # mean over this process's share of the batch


def _worker(rank: int, world_size: int, folder: str, seed: int, batch: int, d_in: int, d_out: int):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        model, x, y = _demo_data(seed, batch, d_in, d_out)
        xs, ys = x.chunk(world_size)[rank], y.chunk(world_size)[rank]  # this process's share
        _loss(model, xs, ys).backward()
        local = model.weight.grad.clone()  # before any communication
        model.zero_grad()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        _loss(ddp, xs, ys).backward()  # the all-reduce happens inside this backward
        torch.save({"local": local, "synced": model.weight.grad.clone()}, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def all_reduce_demo(world_size: int = 2, seed: int = 0, batch: int = 8, d_in: int = 4, d_out: int = 3) -> dict:
    """Run the demo on ``world_size`` gloo processes; return their gradients of the weight matrix.

    Returns ``{"local": [g_0, ...], "synced": [g_0, ...], "full_batch": g}``: each process's
    gradient of its own share before the all-reduce, after it (inside DDP's backward), and one
    process's gradient of the whole batch. Each ``g`` is a (d_out, d_in) tensor.
    """
    if batch % world_size:
        raise ValueError(f"batch={batch} must split evenly over world_size={world_size} processes.")
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if sys.platform == "linux":  # the processes share one machine: talk over loopback, not the hostname's NIC
        env["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for attempt in (1, 2):  # a busy shared machine can time a connection out once
            with tempfile.TemporaryDirectory() as folder:
                # a file rendezvous needs no free port: safe beside other jobs on the same machine
                try:
                    mp.start_processes(_worker, args=(world_size, folder, seed, batch, d_in, d_out),
                                       nprocs=world_size, start_method="spawn")
                except ProcessException:
                    if attempt == 2:
                        raise
                    continue
                results = [torch.load(Path(folder) / f"rank{r}.pt") for r in range(world_size)]
                break
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    model, x, y = _demo_data(seed, batch, d_in, d_out)
    _loss(model, x, y).backward()
    return {"local": [r["local"] for r in results], "synced": [r["synced"] for r in results],
            "full_batch": model.weight.grad.clone()}
