"""The memory calculator against measured training steps, and the Llama-3.2-1B case offline.

    .venv/bin/python bench/memory_calculator.py [--threads N] [--skip-1b]

Part 1: a small Llama (random weights, no download) trained one step in nine set-ups (full /
LoRA / QLoRA, fp32 / bf16, gradient checkpointing on/off, AdamW / 8-bit AdamW / SGD, several
batch x sequence sizes). For each: predicted / measured for every part. Static parts are counted
tensors; activations are the bytes saved for backward (ftlab.measure.measure).

Part 2: the real Llama-3.2-1B architecture with random weights, its decoder linears quantized to
NF4 by bitsandbytes on the CPU, prepared for k-bit training, LoRA on all linears: counted static
bytes against the calculator, then the calculator's prediction for the lesson's QLoRA run on a
T4 and an L4. On a CUDA machine the same script also measures the step's
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import measure, memory

SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=320, vocab_size=500, tie_word_embeddings=True, head_dim=32)
def part1():
    config = LlamaConfig(**SMALL)
    folder = tempfile.mkdtemp()
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    print("Part 1: predicted / measured, a small Llama (hidden 128, 2 layers), one training step")
    print(f"{'method':6} {'prec':5} {'ckpt':5} {'b x s':>7} {'optimizer':10} {'weights':>8} {'grads':>7} "
          f"{'optim':>7} {'activ.':>7} {'measured activations':>21}")
    worst = 0.0
    for method, precision, ckpt, b, s, targets, opt in measure.VALIDATION_SETUPS:
        predicted, measured = measure.measure_setup(folder, method, precision, ckpt, b, s, targets, opt)
        ratios = [getattr(predicted, p) / getattr(measured, p) if getattr(measured, p) else 1.0
                  for p in ("weights", "gradients", "optimizer", "activations")]
        worst = max(worst, *(abs(r - 1) for r in ratios))
        print(f"{method:6} {precision:5} {'on' if ckpt else 'off':5} {f'{b}x{s}':>7} {opt:10} "
              + " ".join(f"{r:7.3f}" for r in ratios) + f" {measured.activations:>21,}")
    print(f"largest deviation from 1.000 over all parts and set-ups: {worst:.2%}\n")


def part2():
    config = LlamaConfig(**measure.LLAMA_32_1B)
    t0 = time.time()
    model = measure.random_qlora_model(config, r=16)
    counted = measure.param_bytes(model)
    predicted = memory.estimate(config, method="qlora", precision="bf16", r=16, target_modules="all-linear")
    print(f"Part 2: Llama-3.2-1B architecture, random weights, NF4 by bitsandbytes on CPU ({time.time() - t0:.0f} s)")
    print(f"  parameters {predicted.n_params:,}; LoRA r=16 on all linears: {predicted.trainable:,} trainable")
    print(f"  weights counted   {counted / 2**30:.3f} GiB")
    print(f"  weights predicted {predicted.weights / 2**30:.3f} GiB  (ratio {predicted.weights / counted:.4f})")
    for gpu, precision in (("T4", "fp16"), ("L4", "bf16")):
        for b, s in ((4, 512), (8, 512), (4, 1024), (16, 512)):
            run = memory.estimate(config, method="qlora", precision=precision, optimizer="adamw8bit", r=16,
                                  target_modules="all-linear", batch_size=b, seq_len=s, grad_checkpointing=True)
            print(f"  {gpu} ({precision}), batch {b:2} x {s:4}, checkpointing: total {run.total / 2**30:5.2f} GiB, "
                  f"peak {run.peak / 2**30:5.2f} GiB; headroom {run.headroom(gpu) / 2**30:6.2f} GiB -> "
                  f"{'fits' if run.fits(gpu) else 'does NOT fit'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-1b", action="store_true", help="skip part 2 (about 2 minutes and 6 GB of RAM)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    part1()
    if not args.skip_1b:
        part2()


if __name__ == "__main__":
    main()
