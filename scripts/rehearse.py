"""The Colab path, rehearsed offline: every lesson in its full profile, as on a T4 and an L4.

``make rehearse`` runs this. For each card it executes every lesson top to bottom with

- ``FTLAB_PROFILE=full``: the lessons' full configurations, the hub's repo ids;
- the stand-ins (``scripts/build_standins.py``, built first if missing): the real architectures,
  tokenizers and dataset schemas, small and random, found offline where the libraries look
  (``HF_HOME``, ``TORCH_HOME``, ``FTLAB_CACHE``);
- ``FTLAB_SIMULATE_GPU=t4|l4``: precision as on that card (T4: fp16 autocast + GradScaler; L4:
  bf16) and the card's memory budget. Every training run prints the memory calculator's
  prediction at the model's REAL size ("Memory plan: ...") and stops if it cannot fit;
- ``FTLAB_MAX_STEPS`` (default 2): every training run and evaluation is cut short.

It writes ``build/rehearsal/summary.md``: one row per lesson and card (amp dtype, predicted GPU
and host peaks against the card, the minutes a Colab run of the lesson is estimated to take,
seconds here, ``ok`` or the error), then the memory plans. The executed notebooks go to
``build/rehearsal/<card>/``. Exit status 1 if any lesson failed.

Minutes on Colab (the README's "minutes (full)"): the arithmetic of every training run the lesson
makes, counted at the real model size and full step count by ``ftlab.budget`` (its plan line says
"compute N TFLOP, about M min at the card's practical T TFLOP/s"), plus :data:`ALLOWANCE_MIN` for
what no plan counts. A run of all lessons on both cards that passes writes
``docs/lesson_minutes.json``, which ``scripts/badges.py`` puts in the README's lesson table.

    python scripts/rehearse.py                  # all lessons, both cards
    python scripts/rehearse.py 04 05 --cards t4 # some lessons, one card
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from run_lessons import first_error, headless_client, headlines, lesson_files, read_lesson  # noqa: E402

OUT = ROOT / "build" / "rehearsal"
STANDINS = ROOT / "build" / "standins"
CARDS = ("t4", "l4")
AMP = {"t4": "fp16", "l4": "bf16"}
MINUTES = ROOT / "docs" / "lesson_minutes.json"
# What the plans do not count, the same for every lesson: the set-up cell's install (~0.5 min),
# downloading and loading a hub checkpoint (TinyLlama_v1.1 is 4.4 GB of fp32 safetensors: ~0.75
# min at 100 MB/s), and the evaluations and generations around the training runs (~0.75 min).
ALLOWANCE_MIN = 2.0
PLAN = re.compile(r"^Memory plan: (?P<model>.+?) at real size, (?P<setup>.+?): GPU peak (?P<gpu>[\d.]+) GiB of "
                  r"(?P<card>.+?)'s (?P<usable>[\d.]+) GiB usable.*?; host (?P<host>[\d.]+) GiB of (?P<ram>[\d.]+) GiB"
                  r"(?:; compute (?P<tflop>[\d,]+) TFLOP, about (?P<minutes>[\d.]+) min)?")
# A lesson that budgets its time by hand (the capstone, which uses no ftlab.budget) prints this instead.
TIME_PLAN = re.compile(r"^Time plan: .*?about (?P<minutes>[\d.]+) min")


def standin_env(root: Path) -> dict[str, str]:
    """The environment that points the libraries at the stand-ins, offline."""
    return {"HF_HOME": str(root / "hf"), "TORCH_HOME": str(root / "torch"), "FTLAB_CACHE": str(root / "cache"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def ensure_standins(root: Path) -> None:
    manifest = root / "manifest.json"
    builders = [ROOT / "scripts" / "build_standins.py", *sorted((ROOT / "scripts").glob("standins_*.py"))]
    newest = max((p.stat().st_mtime for p in builders if p.exists()), default=0)
    if manifest.is_file() and manifest.stat().st_mtime >= newest:
        return
    print(f"building the hub stand-ins into {root} ...", flush=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_standins.py"), "--out", str(root)], check=True)


def printed_lines(nb, pattern: re.Pattern) -> list[dict]:
    """Every line of the lesson's printed output that ``pattern`` matches, parsed."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                for line in out.get("text", "").splitlines():
                    m = pattern.match(line.strip())
                    if m:
                        found.append({**m.groupdict(), "line": line.strip()})
    return found


def memory_plans(nb) -> list[dict]:
    """Every ``Memory plan:`` line the lesson printed, parsed."""
    return printed_lines(nb, PLAN)


def run_lesson(path: Path, card: str, out_dir: Path, cell_timeout: int) -> dict:
    nb = read_lesson(path)
    client = headless_client(nb, path.parent, cell_timeout)
    start = time.perf_counter()
    ok, error = True, ""
    with (out_dir / f"{path.stem}.kernel.log").open("w") as log:
        try:
            client.execute(stderr=log)
        except Exception as exc:  # a failing cell, a timeout, a dead kernel: record it, go on
            ok, error = False, first_error(nb, exc)
    seconds = time.perf_counter() - start
    import nbformat

    nbformat.write(nb, out_dir / f"{path.stem}.ipynb")
    return {"lesson": path.stem, "card": card, "amp": AMP[card], "seconds": round(seconds, 1), "ok": ok,
            "error": error, "headline": headlines(nb), "plans": memory_plans(nb),
            "time_plans": printed_lines(nb, TIME_PLAN)}


def rehearse_card(card: str, files: list[Path], out: Path, max_steps: int, cell_timeout: int) -> list[dict]:
    """Run ``files`` one after another as on ``card`` (called in a child process: see main)."""
    os.environ.update(standin_env(STANDINS), FTLAB_PROFILE="full", FTLAB_SIMULATE_GPU=card,
                      FTLAB_MAX_STEPS=str(max_steps), MPLBACKEND="Agg", OMP_NUM_THREADS="1",
                      TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    card_dir = out / card
    card_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in files:
        r = run_lesson(path, card, card_dir, cell_timeout)
        status = "ok" if r["ok"] else f"FAILED {r['error']}"
        print(f"[{card}] {r['lesson']}: {r['seconds']:.0f} s, {status}", flush=True)
        results.append(r)
    (card_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results


def colab_minutes(result: dict) -> float:
    """Estimated minutes of the lesson on Colab: its training runs' arithmetic (ftlab.budget's plans,
    or the lesson's own "Time plan:" lines) plus the allowance."""
    plans = [*result["plans"], *result.get("time_plans", [])]
    return ALLOWANCE_MIN + sum(float(p["minutes"]) for p in plans if p.get("minutes"))


def minutes_table(results: list[dict]) -> dict:
    """{lesson: {card: whole minutes, rounded up}} with how they were made: docs/lesson_minutes.json."""
    table: dict = {}
    for r in results:
        table.setdefault(r["lesson"], {})[r["card"]] = math.ceil(colab_minutes(r))
    return {"how": (f"ftlab.budget's count of every training run's arithmetic at the real model size "
                    f"and full step count, at the card's practical throughput (ftlab.runtime.TRAIN_TFLOPS), "
                    f"plus {ALLOWANCE_MIN:g} min for install, download, loading and evaluation; "
                    f"written by `make rehearse` (scripts/rehearse.py)"),
            "minutes": dict(sorted(table.items()))}


def summary(results: list[dict]) -> str:
    rows = ["| lesson | card | amp | GPU peak predicted / usable (GiB) | host predicted / RAM (GiB) "
            "| minutes on Colab (est.) | seconds here | status |",
            "|---|---|---|---|---|---:|---:|---|"]
    for r in results:
        plans = r["plans"]
        if plans:
            worst = max(plans, key=lambda p: float(p["gpu"]))
            gpu = f"{worst['gpu']} / {worst['usable']}" + (f" ({len(plans)} runs, max)" if len(plans) > 1 else "")
            host = f"{max(float(p['host']) for p in plans):.1f} / {worst['ram']}"
        elif r.get("time_plans"):
            gpu = host = "budgeted by hand in the lesson (its Time plan)"
        else:
            gpu = host = "no training run"
        status = "ok" if r["ok"] else f"**{r['error']}**"
        cells = [r["lesson"], r["card"], r["amp"], gpu, host, f"{colab_minutes(r):.1f}", f"{r['seconds']:.1f}", status]
        rows.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    passed = sum(r["ok"] for r in results)
    rows.append(f"\n{passed}/{len(results)} lesson runs ok; {sum(r['seconds'] for r in results):.0f} s of lessons.")
    rows.append("\n## Memory plans (every training run, at the model's real size)\n")
    for r in results:
        for p in r["plans"]:
            rows.append(f"- {r['lesson']} on {r['card']}: {p['line'][len('Memory plan: '):]}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson number prefixes, e.g. 00 04; default all")
    parser.add_argument("--cards", default=",".join(CARDS), help="comma-separated: t4, l4")
    parser.add_argument("--max-steps", type=int, default=2, help="FTLAB_MAX_STEPS for every run")
    parser.add_argument("--cell-timeout", type=int, default=600)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--card", help=argparse.SUPPRESS)  # internal: run one card in this process
    args = parser.parse_args(argv)
    files = lesson_files(args.lessons)
    if args.card:
        rehearse_card(args.card, files, args.out, args.max_steps, args.cell_timeout)
        return 0
    cards = [c.strip() for c in args.cards.split(",") if c.strip()]
    bad = [c for c in cards if c not in CARDS]
    if bad or not cards:
        parser.error(f"--cards {args.cards!r}: use one or more of {', '.join(CARDS)}")
    ensure_standins(STANDINS)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"rehearsing {len(files)} lesson(s) on {', '.join(cards)} (full profile, stand-ins, "
          f"FTLAB_MAX_STEPS={args.max_steps}); outputs in {args.out}", flush=True)

    def child(card: str) -> list[dict]:  # one process per card: each sets its own environment
        cmd = [sys.executable, __file__, *args.lessons, "--card", card, "--max-steps", str(args.max_steps),
               "--cell-timeout", str(args.cell_timeout), "--out", str(args.out)]
        subprocess.run(cmd, check=False)
        path = args.out / card / "results.json"
        return json.loads(path.read_text()) if path.is_file() else [
            {"lesson": "(all)", "card": card, "amp": AMP[card], "seconds": 0, "ok": False,
             "error": "the rehearsal process died", "headline": "", "plans": []}]

    with ThreadPoolExecutor(max_workers=len(cards)) as pool:
        per_card = list(pool.map(child, cards))
    results = sorted((r for rs in per_card for r in rs), key=lambda r: (r["lesson"], r["card"]))
    text = (f"# Rehearsal: the full profile on simulated cards\n\nStand-ins of the hub, FTLAB_MAX_STEPS="
            f"{args.max_steps}, {time.perf_counter() - start:.0f} s wall on {os.cpu_count()} cores.\n\n"
            + summary(results))
    (args.out / "summary.md").write_text(text)
    print(text)
    ok = all(r["ok"] for r in results)
    if ok and not args.lessons and set(cards) == set(CARDS) and args.out == OUT:
        MINUTES.write_text(json.dumps(minutes_table(results), indent=1) + "\n")
        print(f"wrote {MINUTES.relative_to(ROOT)}: run `make badges` to put it in the README")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
