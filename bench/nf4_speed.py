"""NF4 by hand (ftlab.quant) vs bitsandbytes: quantize and dequantize time, same inputs, one run.

    .venv/bin/python bench/nf4_speed.py [--threads N] [--repeats R]

Prints median seconds for each and the ratio ftlab / bitsandbytes (1.00 = as fast). Both are
checked equal before timing. Runs on the device ftlab.runtime.device() picks (the CPU here).
"""

from __future__ import annotations

import argparse
import statistics
import time

import bitsandbytes.functional as bnbf
import torch

from ftlab import quant
from ftlab.runtime import device

SHAPES = [(1024, 1024), (4096, 1024), (4096, 4096)]


def timed(fn, repeats):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = device()
    print(f"device {dev}, torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'op':11} {'shape':>11} {'ftlab s':>9} {'bnb s':>9} {'ratio':>6}")
    for shape in SHAPES:
        w = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dev)
        q = quant.quantize_nf4(w)
        packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
        assert torch.equal(q.packed(), packed.reshape(-1).to(q.codes.device)), "not equal: no timing"
        rows = {
            "quantize": (lambda: quant.quantize_nf4(w), lambda: bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")),
            "dequantize": (lambda: quant.dequantize_nf4(q), lambda: bnbf.dequantize_4bit(packed, state)),
        }
        for op, (ours, theirs) in rows.items():
            # interleave the two, so drift in machine load hits both alike
            a, b = [], []
            for _ in range(2):
                a.append(timed(ours, args.repeats))
                b.append(timed(theirs, args.repeats))
            a, b = min(a), min(b)
            print(f"{op:11} {'x'.join(map(str, shape)):>11} {a:9.4f} {b:9.4f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
