#!/usr/bin/env python3
"""Lesson 03's comparison for several seeds, tiny profile -> docs/peft_seeds.md.

Lesson 03 trains every method once, with one seed. This script runs the lesson itself
(notebooks/03_peft_methods.py, read with jupytext) in a fresh kernel per seed, with only the
Config's ``seed`` changed, up to the comparison table of section 8, and writes each method's
accuracy per seed and the lesson's claims, seed by seed, to a markdown table. The lesson's prose
describes what the table shows in words and points here, so no accuracy is typed by hand.

    .venv/bin/python scripts/peft_seeds.py                       # seeds 0 1 2 -> docs/peft_seeds.md
    .venv/bin/python scripts/peft_seeds.py --seeds 3 4 --out /tmp/seeds.md

It takes about a minute per seed on an idle CPU core (OMP_NUM_THREADS=1 is set when unset).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "03_peft_methods.py"
OUT = ROOT / "docs" / "peft_seeds.md"
SEED_RE = re.compile(r"^(\s*seed: int = )0(\b.*)$", re.M)  # the Config field, default 0
STOP = "the lesson's claim"  # the first cell not run: section 8's assertions (checked here instead)
MARK = "PEFT_SEEDS "
RESULTS_CELL = f"""import json
print({MARK!r} + json.dumps({{"margin": cfg.margin, "max_share": cfg.max_share, "results": {{
    k: {{"trainable": int(v["trainable"]), "share": float(v["share"]), "accuracy": float(v["accuracy"])}}
    for k, v in results.items()}}}}))"""


def seeded_notebook(source: str, seed: int):
    """The lesson's cells up to (not including) section 8's claim cell, with ``seed: int = <seed>``
    in the Config, plus one cell that prints the results as JSON."""
    import jupytext
    import nbformat

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, e.g. 1; got {seed!r}")
    nb = jupytext.reads(source, fmt="py:percent")
    config = [c for c in nb.cells if c.cell_type == "code" and SEED_RE.search(c.source)]
    if len(config) != 1 or len(SEED_RE.findall(config[0].source)) != 1:
        raise ValueError("the lesson should have exactly one Config line 'seed: int = 0' "
                         f"(found {len(config)} cells with one); peft_seeds.py changes that default")
    config[0].source = SEED_RE.sub(rf"\g<1>{seed}\g<2>", config[0].source)
    stop = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and STOP in c.source), None)
    if stop is None:
        raise ValueError(f"no code cell of the lesson contains {STOP!r}: the cell where the comparison ends")
    nb.cells = nb.cells[:stop] + [nbformat.v4.new_code_cell(RESULTS_CELL)]
    return nb


def run_seed(seed: int, cell_timeout: int = 600) -> dict:
    """Execute the seeded lesson in a fresh tiny-profile kernel; its results as a dict."""
    from nbclient import NotebookClient

    for key, value in {"FTLAB_PROFILE": "tiny", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
        os.environ.setdefault(key, value)
    os.environ["FTLAB_PROFILE"] = "tiny"
    os.environ.pop("FTLAB_DRILLS", None)  # the drills stay blank: "not attempted", not a failure
    nb = seeded_notebook(LESSON.read_text(encoding="utf-8"), seed)
    NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(LESSON.parent)}}).execute()
    lines = [line for out in nb.cells[-1].get("outputs", []) for line in out.get("text", "").splitlines()
             if line.startswith(MARK)]
    if not lines:
        raise RuntimeError(f"seed {seed}: the lesson ran but printed no {MARK.strip()} line")
    return json.loads(lines[-1][len(MARK):])


def claims(run: dict) -> dict[str, bool]:
    """Section 8's claims on one seed's results (the lesson asserts them for its own seed)."""
    res, margin = run["results"], run["margin"]
    lora = next(v for k, v in res.items() if k.startswith("LoRA") and "all linear" in k)
    full, probe = res["full fine-tuning"], res["linear probe"]
    return {f"LoRA (all linear) within {margin} of full fine-tuning": lora["accuracy"] >= full["accuracy"] - margin,
            f"LoRA (all linear) trains at most {run['max_share']:.0%}": lora["share"] <= run["max_share"],
            "full fine-tuning beats the probe by 0.2 or more": full["accuracy"] >= probe["accuracy"] + 0.2}


def render(runs: dict[int, dict], seconds: float | None = None) -> str:
    """Markdown: one row per method (the lesson's order), one accuracy column per seed, then the
    claims per seed."""
    seeds = sorted(runs)
    methods = list(runs[seeds[0]]["results"])
    lines = ["# Lesson 03 over several seeds (tiny profile)", "",
             "Written by `scripts/peft_seeds.py`, which runs notebooks/03_peft_methods.py up to its "
             "comparison table once per seed, only `seed` changed (the fresh head and the batch order). "
             "Do not edit by hand: run the script again.", "",
             "| method | trainable | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---:|" + "---:|" * len(seeds)]
    for method in methods:
        row = runs[seeds[0]]["results"][method]
        accs = [runs[s]["results"].get(method, {}).get("accuracy") for s in seeds]
        lines.append(f"| {method} | {row['share']:.2%} | "
                     + " | ".join("-" if a is None else f"{a:.3f}" for a in accs) + " |")
    lines += ["", "| claim (section 8) | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    verdicts = {s: claims(runs[s]) for s in seeds}
    for claim in verdicts[seeds[0]]:
        lines.append(f"| {claim} | " + " | ".join("holds" if verdicts[s][claim] else "**fails**" for s in seeds) + " |")
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("torch", "transformers", "peft"))
    stamp = f"{datetime.date.today().isoformat()}, {versions}"
    if seconds is not None:
        stamp += f", {seconds:.0f} s for {len(seeds)} seeds"
    return "\n".join(lines + ["", f"Run on {stamp}.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    runs, start = {}, time.perf_counter()
    for seed in args.seeds:
        t = time.perf_counter()
        runs[seed] = run_seed(seed)
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s, "
              + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in runs[seed]["results"].items()), flush=True)
    text = render(runs, time.perf_counter() - start)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    failed = [s for s in runs if not all(claims(runs[s]).values())]
    if failed:
        print(f"a claim of section 8 fails for seeds {failed}: see {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
