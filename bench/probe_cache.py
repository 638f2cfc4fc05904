"""How much faster is a probe sweep when the backbone's features are cached? (lesson 01)

A sweep trains one head per setting (learning rate x k labelled examples per class). Uncached,
every setting runs the frozen backbone over the training and test images again; cached
(``ftlab.probe.extract_features``), the first setting runs it once and every other one reads a
safetensors file. Both arms train the same heads with ``ftlab.train`` and must reach the same
accuracies. Prints one table, the uncached arm as the baseline.

    .venv/bin/python bench/probe_cache.py               # tiny profile: the micro-world CNN
    FTLAB_PROFILE=full python bench/probe_cache.py      # ResNet-50 on CIFAR-10, on a GPU
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time

import torch
import torch._dynamo  # noqa: F401  (the first optimizer imports it otherwise: ~3 s, not what we measure)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1], help="head learning rates")
    ap.add_argument("--shots", type=int, nargs="+", default=[4, 16, 0], help="examples per class (0 = all)")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per head")
    ap.add_argument("--train-size", type=int, default=None, help="training images (default: all; full: 10,000)")
    ap.add_argument("--test-size", type=int, default=None, help="test images (default: all; full: 2,000)")
    ap.add_argument("--repeats", type=int, default=3, help="sweeps per arm, interleaved; the median is reported")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from ftlab.data import load_image_classification
    from ftlab.data.shapes import take
    from ftlab.probe import accuracy, build_linear_probe, extract_features, sample_per_class, train_head
    from ftlab.runtime import device, profile

    full = profile() == "full"
    train_ds = take(load_image_classification("target", "train"), args.train_size or (10_000 if full else None))
    test_ds = take(load_image_classification("target", "test"), args.test_size or (2_000 if full else None))
    model = build_linear_probe(len(train_ds.classes)).to(device())
    settings = list(itertools.product(args.lrs, args.shots))
    extract = dict(batch_size=256, num_workers=2 if full else 0)

    def fit(f_train, f_test, lr, shots) -> float:
        few = sample_per_class(f_train, shots, seed=0) if shots else f_train
        torch.manual_seed(0)  # the same initial head in both arms
        head = torch.nn.Linear(f_train.dim, len(train_ds.classes))
        train_head(head, few, lr=lr, num_steps=args.steps, batch_size=128, seed=0)
        return accuracy(head, f_test)

    def sweep(use_cache: bool, cache_dir: str) -> dict:
        feature_s = head_s = 0.0
        passes, accs = 0, []
        for lr, shots in settings:
            start = time.perf_counter()
            f_train = extract_features(model, train_ds, use_cache=use_cache, cache_dir=cache_dir, **extract)
            f_test = extract_features(model, test_ds, use_cache=use_cache, cache_dir=cache_dir, **extract)
            feature_s += time.perf_counter() - start
            passes += (not f_train.from_cache) + (not f_test.from_cache)
            start = time.perf_counter()
            accs.append(fit(f_train, f_test, lr, shots))
            head_s += time.perf_counter() - start
        return {"features": feature_s, "heads": head_s, "total": feature_s + head_s, "passes": passes, "accs": accs}

    def median_run(runs: list[dict]) -> dict:
        return min(runs, key=lambda r: abs(r["total"] - statistics.median(x["total"] for x in runs)))

    with tempfile.TemporaryDirectory() as warm_dir:
        warm = extract_features(model, test_ds, cache_dir=warm_dir, **extract)  # warm-up: kernels, allocator
        fit(warm, warm, args.lrs[0], 0)
        one_pass = statistics.median(
            extract_features(model, train_ds, use_cache=False, **extract).seconds for _ in range(3))
        read = statistics.median(extract_features(model, train_ds, cache_dir=warm_dir, **extract).seconds
                                 for _ in range(3))
    runs = {"uncached": [], "cached": []}
    for _ in range(args.repeats):  # interleaved, so a busy spell on the machine hits both arms
        runs["uncached"].append(sweep(False, None))
        with tempfile.TemporaryDirectory() as cache_dir:  # empty: the first setting is a miss
            runs["cached"].append(sweep(True, cache_dir))
    uncached, cached = median_run(runs["uncached"]), median_run(runs["cached"])

    print(f"probe sweep: {len(settings)} heads (lr {args.lrs} x shots {args.shots}, 0 = all), "
          f"{args.steps} steps each, median of {args.repeats} sweeps | {profile()} profile, {type(model).__name__}, {len(train_ds):,} train / "
          f"{len(test_ds):,} test images | {device()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"one backbone pass over the training images: {one_pass:.3f} s; the same features from the cache: "
          f"{read:.4f} s ({one_pass / read:,.0f}x)")
    print()
    print("| sweep | backbone passes | features (s) | heads (s) | total (s) | total / uncached |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("uncached", uncached), ("cached", cached)):
        print(f"| {name} | {r['passes']} | {r['features']:.2f} | {r['heads']:.2f} | {r['total']:.2f} | "
              f"{r['total'] / uncached['total']:.2f} |")
    print()
    print(f"speed-up of the whole sweep: {uncached['total'] / cached['total']:.2f}x; of its feature part: "
          f"{uncached['features'] / cached['features']:.1f}x")
    diff = max(abs(a - b) for a, b in zip(uncached["accs"], cached["accs"]))
    print(f"same heads in both arms: max accuracy difference {diff:.4f} "
          f"(accuracies {', '.join(f'{a:.3f}' for a in cached['accs'])})")


if __name__ == "__main__":
    main()
