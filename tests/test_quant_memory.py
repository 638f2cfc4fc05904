"""Lesson 04's NF4 section on a 1B model must fit Colab's host RAM (12.7 GB): the peak, measured.

The lesson used to concatenate every projection weight of the model into one float32 tensor and
quantize it in one go, with a Gaussian tensor of the same size next to it: for TinyLlama's 969M
projection weights that is ~20 GB (the copies, the scaled values, int64 bucket indices). Now
``quant.codebook_errors`` streams the weights one tensor at a time, in slices of ``quant.CHUNK``
values, and the quantizer itself works in slices. These tests measure the peak resident memory of
both paths on the same weights (a model big enough to tell: 12.8M weights, in fp16 as the full
profile loads them) in a fresh process each, and hold the streamed one to
``quant.working_set_bytes()``, the bound the lesson prints.

The peak is the kernel's high-water mark (VmHWM), reset just before the measured code
(``/proc/self/clear_refs``), so what the process did before (imports, building the weights) does
not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")

CHILD = textwrap.dedent(r'''
    import json, math, sys
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    from ftlab import quant

    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass  # then the high-water mark since start is compared with the RSS now: a lower bound

    # the OLD quantizer, verbatim before streaming: whole-tensor float copy, pad, scale, int64 bucketize
    def old_quantize(weight, codebook, blocksize=64):
        flat = weight.detach().reshape(-1).float()
        n = flat.numel()
        n_blocks = math.ceil(n / blocksize)
        padded = F.pad(flat, (0, n_blocks * blocksize - n)).view(n_blocks, blocksize)
        absmax = padded.abs().amax(dim=1)
        scaled = (padded * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1).reshape(-1)[:n]
        codebook = codebook.to(flat.device, torch.float32)
        indices = torch.bucketize(scaled, (codebook[:-1] + codebook[1:]) / 2).to(torch.uint8)
        return indices.view(weight.shape), absmax

    def old_dequantize(indices, absmax, codebook, blocksize=64):
        levels = codebook.to(absmax.device)[indices.reshape(-1).int()]
        n = levels.numel()
        blocks = F.pad(levels, (0, absmax.numel() * blocksize - n)).view(-1, blocksize)
        return (blocks * absmax.unsqueeze(1)).view(-1)[:n].view(indices.shape)

    mode = sys.argv[1]
    gen = torch.Generator().manual_seed(0)
    weights = []  # 4 Llama-like decoder layers, hidden 512, MLP 1408, fp16 as the full profile loads them
    for _ in range(4):
        for shape in [(512, 512)] * 4 + [(1408, 512), (1408, 512), (512, 1408)]:
            weights.append((torch.randn(*shape, generator=gen) * 0.02).half())
    numel = sum(w.numel() for w in weights)
    big = (torch.randn(4096, 4096, generator=gen) * 0.02).half()
    reset_peak()
    before, _ = status()
    if mode == "old_lesson":  # lesson 04 before: concatenate, then one quantize/dequantize round trip
        real = torch.cat([w.flatten() for w in weights]).float()
        idx, absmax = old_quantize(real, quant.NF4_CODEBOOK)
        back = old_dequantize(idx, absmax, quant.NF4_CODEBOOK)
        result = ((back - real) ** 2).mean().item() / real.var().item()
    elif mode == "streamed_lesson":  # lesson 04 now
        result = quant.codebook_errors((w for w in weights), {"NF4": quant.NF4_CODEBOOK})["NF4"]
    elif mode == "old_quantizer":  # one 4096 x 4096 weight
        idx, absmax = old_quantize(big, quant.NF4_CODEBOOK)
    else:  # "quantizer"
        idx, absmax = quant.quantize_with_codebook(big, quant.NF4_CODEBOOK)
    _, peak = status()
    if mode.endswith("quantizer"):  # a checksum of the codes, after the peak is read (sum() widens to int64)
        result = int(idx.sum())
    print(json.dumps({"peak": peak - before, "result": result, "numel": numel, "big": big.numel(),
                      "bound": quant.working_set_bytes()}))
''')


# glibc's allocator serves large blocks from its heap once a threshold has adapted, and keeps freed
# heap memory resident: the peak then depends on what the process did before. A fixed threshold
# maps every block over 128 KiB on its own and unmaps it when freed, so the resident set follows
# the live tensors (measured: the same peak to 0.1 MiB over repeated runs, instead of +-50%).
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "0"}


def _measure(*modes: str) -> list[dict]:
    """Each mode in its own fresh process, side by side (each measures only itself)."""
    env = {**os.environ, **ALLOCATOR}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env) for mode in modes]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_streamed_nf4_errors_peak_within_the_printed_bound_and_far_below_the_old_path():
    old, new = _measure("old_lesson", "streamed_lesson")
    assert new["result"] == pytest.approx(old["result"], rel=1e-5)  # the same measure
    # the old path holds several float32 copies of all 12.8M weights (>= 4 bytes x numel each)
    assert old["peak"] >= 4 * 4 * old["numel"], old
    # the streamed one holds a few slices: the bound the lesson prints, plus allocator slack
    assert new["peak"] <= new["bound"] + 8 * MiB, new
    assert new["peak"] * 8 < old["peak"], (new, old)


def test_the_quantizer_works_in_slices_whatever_the_weight_size():
    old, new = _measure("old_quantizer", "quantizer")
    assert new["result"] == old["result"]  # the same codes
    n = new["big"]
    # kept: 1 byte of code per value and one fp32 absmax per 64; temporaries: one working set
    kept = n + 4 * n // 64
    assert new["peak"] <= kept + new["bound"] + 8 * MiB, new
    assert old["peak"] >= 20 * n, old  # float copy, padded, |x|, scaled, clamped, int64 indices...
