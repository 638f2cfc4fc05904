"""What DDP all-reduces, shown on real processes (lesson 10).

:func:`all_reduce_demo` starts ``world_size`` CPU processes joined by the gloo backend (the one
PyTorch uses without GPUs; NCCL plays its part on GPUs). Each process holds the same small model
and its own share of one batch. It records the gradient of its own share (before any
communication), then runs the same backward through ``DistributedDataParallel``, which
all-reduces the gradients (sums them and divides by ``world_size``) during the backward pass.
After that, every process holds the same gradient, equal to one process's gradient of the
whole batch: the weights stay identical without ever being sent.

:func:`fsdp_demo` trains a small MLP for a few AdamW steps with PyTorch's FSDP2
(``fully_shard``, ZeRO-3) on the same kind of gloo group. Each process keeps only its 1/N slice
(along dim 0) of every weight, gradient and AdamW moment; it all-gathers a layer's weights for the
forward and backward, and reduce-scatters (sums, then averages) the gradients so that each
process gets the whole-batch gradient of its own slice. The gathered weights then equal one
process's training on the whole batch.
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


def _spawn(worker, args: tuple, world_size: int) -> list[dict]:
    """Run ``worker(rank, world_size, folder, *args)`` on ``world_size`` CPU processes; return what each saved."""
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "CUDA_VISIBLE_DEVICES": ""}  # CPU processes even on a GPU runtime (one GPU cannot host 2 ranks)
    if sys.platform == "linux":  # the processes share one machine: talk over loopback, not the hostname's NIC
        env["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for attempt in (1, 2):  # a busy shared machine can time a connection out once
            with tempfile.TemporaryDirectory() as folder:
                # a file rendezvous needs no free port: safe beside other jobs on the same machine
                try:
                    mp.start_processes(worker, args=(world_size, folder, *args), nprocs=world_size,
                                       start_method="spawn")
                except ProcessException:
                    if attempt == 2:
                        raise
                    continue
                return [torch.load(Path(folder) / f"rank{r}.pt") for r in range(world_size)]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def all_reduce_demo(world_size: int = 2, seed: int = 0, batch: int = 8, d_in: int = 4, d_out: int = 3) -> dict:
    """Run the demo on ``world_size`` gloo processes; return their gradients of the weight matrix.

    Returns ``{"local": [g_0, ...], "synced": [g_0, ...], "full_batch": g}``: each process's
    gradient of its own share before the all-reduce, after it (inside DDP's backward), and one
    process's gradient of the whole batch. Each ``g`` is a (d_out, d_in) tensor.
    """
    if batch % world_size:
        raise ValueError(f"batch={batch} must split evenly over world_size={world_size} processes.")
    results = _spawn(_worker, (seed, batch, d_in, d_out), world_size)
    model, x, y = _demo_data(seed, batch, d_in, d_out)
    _loss(model, x, y).backward()
    return {"local": [r["local"] for r in results], "synced": [r["synced"] for r in results],
            "full_batch": model.weight.grad.clone()}


# --- FSDP (ZeRO-3) --------------------------------------------------------------------------------


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard  # torch >= 2.6
    except ImportError:  # torch 2.4 / 2.5 ship FSDP2 under its first name
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def _mlp_and_data(seed: int, batch: int, d_in: int, d_hidden: int, d_out: int):
    torch.manual_seed(seed)  # the same initial weights in every process
    model = torch.nn.Sequential(torch.nn.Linear(d_in, d_hidden), torch.nn.Tanh(), torch.nn.Linear(d_hidden, d_out))
    gen = torch.Generator().manual_seed(seed + 1)
    x, y = torch.randn(batch, d_in, generator=gen), torch.randn(batch, d_out, generator=gen)
    return model, x, y


def _train(model, x, y, steps: int, lr: float, world_size: int = 1) -> list[float]:
    """``steps`` AdamW steps on (x, y); the losses, averaged over the processes when there are several."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = _loss(model, x, y)
        loss.backward()  # under FSDP: all-gather each layer, then reduce-scatter its gradients
        opt.step()
        if world_size > 1:
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            loss = mean / world_size
        losses.append(loss.item())
        if len(losses) < steps:
            opt.zero_grad()  # keep the last step's gradients: the demo counts their shards
    return losses, opt


def _numel(tensors) -> int:
    return sum(t.to_local().numel() if hasattr(t, "to_local") else t.numel() for t in tensors)


def _fsdp_worker(rank: int, world_size: int, folder: str, seed: int, batch: int, d_in: int, d_hidden: int,
                 d_out: int, steps: int, lr: float):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        fully_shard = _fully_shard()
        model, x, y = _mlp_and_data(seed, batch, d_in, d_hidden, d_out)
        mesh = init_device_mesh("cpu", (world_size,))  # the CPU processes of the gloo group
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)  # one all-gather per layer, just in time
        fully_shard(model, mesh=mesh)  # the root: what is left (nothing here) and the schedule
        xs, ys = x.chunk(world_size)[rank], y.chunk(world_size)[rank]  # this process's share
        losses, opt = _train(model, xs, ys, steps, lr, world_size)
        params = list(model.parameters())  # DTensors: each holds this rank's slice
        full = {n: p.full_tensor() for n, p in model.named_parameters()}  # all-gather, for the check
        torch.save({"full": full, "losses": losses, "params": _numel(params),
                    "grads": _numel(p.grad for p in params),
                    "moments": _numel(t for st in opt.state.values() for k, t in st.items() if k != "step")},
                   Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def fsdp_demo(world_size: int = 2, seed: int = 0, batch: int = 8, d_in: int = 8, d_hidden: int = 16,
              d_out: int = 4, steps: int = 3, lr: float = 1e-2) -> dict:
    """Train an MLP ``d_in -> d_hidden -> d_out`` for ``steps`` AdamW steps, FSDP2 over ``world_size``
    gloo processes (each on its share of ``batch``), and once in this process on the whole batch.

    Returns ``{"full": [state dict per rank], "single": state dict, "losses": [...],
    "single_losses": [...], "params" / "grads" / "moments": [numel per rank], "total": numel}``:
    the weights each rank all-gathers after training, the one-process weights, the losses per
    step (averaged over the ranks), and how many parameter, gradient and AdamW-moment values
    each rank holds (``moments`` counts both moments) against the model's ``total`` parameters.
    """
    if batch % world_size:
        raise ValueError(f"batch={batch} must split evenly over world_size={world_size} processes.")
    if d_hidden % world_size or d_out % world_size:
        raise ValueError(f"d_hidden={d_hidden} and d_out={d_out} must be multiples of world_size={world_size}: "
                         "FSDP cuts every tensor along dim 0, and equal slices keep the shard sizes exact.")
    results = _spawn(_fsdp_worker, (seed, batch, d_in, d_hidden, d_out, steps, lr), world_size)
    model, x, y = _mlp_and_data(seed, batch, d_in, d_hidden, d_out)
    single_losses, _ = _train(model, x, y, steps, lr)
    return {"full": [r["full"] for r in results], "losses": results[0]["losses"],
            "single": {n: p.detach().clone() for n, p in model.named_parameters()},
            "single_losses": single_losses, "total": sum(p.numel() for p in model.parameters()),
            **{k: [r[k] for r in results] for k in ("params", "grads", "moments")}}
