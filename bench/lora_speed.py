"""How much does the hand-written LoRA cost? ftlab's LoRALinear against peft's lora.Linear.

Two tables, both timed in one run, the contenders interleaved (each repeat runs every contender
once, alternating which goes first) so that a slow moment of a shared machine hits all of them:

1. forward + backward of one layer (d_out x d_in, r = 16, the same base weight and factors) on a
   batch of tokens whose input requires a gradient, as inside a network: ftlab / peft, goal <= 1.00;
2. inference of the merged layer against the base layer it came from: merged / base, goal <= 1.05
   (a merged LoRA layer is a plain nn.Linear, so it should cost the same). The unmerged layers
   are timed too, for the cost that merging removes.

    .venv/bin/python bench/lora_speed.py                 # all CPU threads, or the GPU if there is one
    .venv/bin/python bench/lora_speed.py --threads 1     # one CPU thread (a shared machine)

Prints markdown tables: median milliseconds per call over the repeats, and the ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from ftlab.lora import LoRALinear
from ftlab.runtime import device

SHAPES = ((1024, 1024), (4096, 1024))  # (d_out, d_in): a square projection and an MLP up-projection


def build(d_out: int, d_in: int, r: int, dev: torch.device):
    """The base layer, ftlab's LoRA and peft's LoRA on copies of it, with the same nonzero factors."""
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLoraLinear

    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out, bias=False, device=dev).requires_grad_(False)
    ours = LoRALinear(copy.deepcopy(base), r=r, alpha=2 * r)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["base"])
    theirs = PeftLoraLinear(copy.deepcopy(base), "default", config, r=r, lora_alpha=2 * r)
    with torch.no_grad():
        ours.B.normal_(std=0.02)
        theirs.lora_A["default"].weight.copy_(ours.A)
        theirs.lora_B["default"].weight.copy_(ours.B)
    return base, ours, theirs


def forward_backward(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    def step():
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).backward(grad_out)
    return step


def inference(layer: nn.Module, x: torch.Tensor):
    def step():
        with torch.no_grad():
            layer(x)
    return step


def interleaved(steps: dict, repeats: int, dev: torch.device, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each step, the steps taking turns within every repeat."""
    def timed(step) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(timed(steps[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=512, help="tokens per batch (rows of x)")
    parser.add_argument("--r", type=int, default=16, help="LoRA rank")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of each contender")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = device()
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"LoRA speed: ftlab LoRALinear vs peft lora.Linear | r={args.r}, {args.tokens} tokens, fp32, "
          f"{where} | torch {torch.__version__} | median of {args.repeats} interleaved repeats\n")

    train_rows, infer_rows = [], []
    for d_out, d_in in SHAPES:
        base, ours, theirs = build(d_out, d_in, args.r, dev)
        x = torch.randn(args.tokens, d_in, device=dev, requires_grad=True)
        grad_out = torch.randn(args.tokens, d_out, device=dev)
        t = interleaved({"peft": forward_backward(theirs, x, grad_out),
                         "ftlab": forward_backward(ours, x, grad_out)}, args.repeats, dev)
        train_rows.append(f"| {d_out}x{d_in} | {t['peft'] * 1e3:.3f} | {t['ftlab'] * 1e3:.3f} | "
                          f"{t['ftlab'] / t['peft']:.3f} |")
        x = x.detach()
        merged = ours.merge()
        t = interleaved({"base": inference(base, x), "merged": inference(merged, x),
                         "peft": inference(theirs, x), "ftlab": inference(ours, x)}, args.repeats, dev)
        infer_rows.append(f"| {d_out}x{d_in} | {t['base'] * 1e3:.3f} | {t['merged'] * 1e3:.3f} | "
                          f"{t['merged'] / t['base']:.3f} | {t['peft'] * 1e3:.3f} | {t['ftlab'] * 1e3:.3f} |")

    print("Forward + backward (goal: ftlab / peft <= 1.00)\n")
    print("| layer (d_out x d_in) | peft ms | ftlab ms | ftlab / peft |\n|---|---:|---:|---:|")
    print("\n".join(train_rows))
    print("\nInference, no grad (goal: merged / base <= 1.05)\n")
    print("| layer (d_out x d_in) | base ms | merged ms | merged / base | peft unmerged ms | ftlab unmerged ms |\n"
          "|---|---:|---:|---:|---:|---:|")
    print("\n".join(infer_rows))


if __name__ == "__main__":
    main()
