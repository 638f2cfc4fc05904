"""Write the worked memory examples of docs/field_guide.md from the course's calculator.

The guide's "Memory by hand" section holds a block between ``<!-- worked:start -->`` and
``<!-- worked:end -->``: a table of ``ftlab.memory.estimate`` for Llama-3.2-1B and Llama-2-7B
under lesson 07's three recipes (``memory.RECIPES``), and the same numbers worked by hand. This
script computes that block, so no number in it is typed.

    python scripts/field_guide_numbers.py          # print the block
    python scripts/field_guide_numbers.py --write  # put it into docs/field_guide.md
    python scripts/field_guide_numbers.py --check  # exit 1 if the guide's block is out of date

``tests/test_field_guide.py`` runs the check, and parses the table against ``estimate`` itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "field_guide.md"
START, END = "<!-- worked:start -->", "<!-- worked:end -->"

MODELS = ("Llama-3.2-1B", "Llama-2-7B")  # the course's 1B (lesson 07) and 7B (lessons 07, 10)
BATCH, SEQ, CHECKPOINTING = 4, 512, True  # lesson 07's budget: 4 x 512 tokens, checkpointing on
CARDS = ("T4", "L4")


def _memory():
    sys.path.insert(0, str(ROOT))
    try:
        from ftlab import memory
    finally:
        sys.path.pop(0)
    return memory


def worked_estimates() -> dict[tuple[str, str], object]:
    """``{(model, recipe): MemoryEstimate}`` for every model in MODELS and recipe in RECIPES."""
    memory = _memory()
    return {(name, recipe): memory.estimate(memory.known_config(name), batch_size=BATCH, seq_len=SEQ,
                                            grad_checkpointing=CHECKPOINTING, **kwargs)
            for name in MODELS for recipe, kwargs in memory.RECIPES.items()}


def _gib(x: float) -> str:
    return f"{x / 2**30:.2f}"


def table() -> str:
    rows = ["| model | recipe | trainable | weights | gradients | optimizer | activations | total | peak "
            "| T4 | L4 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for (name, recipe), est in worked_estimates().items():
        fits = " | ".join("fits" if est.fits(card) else "no" for card in CARDS)
        rows.append(f"| {name} | {recipe} | {est.trainable:,} | {_gib(est.weights)} | {_gib(est.gradients)} | "
                    f"{_gib(est.optimizer)} | {_gib(est.activations)} | {_gib(est.total)} | {_gib(est.peak)} | "
                    f"{fits} |")
    return "\n".join(rows)


def by_hand() -> str:
    """The same numbers from the per-parameter and per-token rules above the block."""
    memory = _memory()
    GiB = memory.GiB
    one = memory.shape_from_config(memory.known_config(MODELS[0]))
    seven = memory.shape_from_config(memory.known_config(MODELS[1]))
    est = worked_estimates()
    n1 = one.n_params
    full1 = est[(MODELS[0], "full")]
    lora1 = est[(MODELS[0], "lora")]
    q7 = est[(MODELS[1], "qlora")]
    lin7 = seven.layers * seven.layer_linear_params
    rest7 = seven.n_params - lin7
    T = BATCH * SEQ
    kept = one.layers * T * 2 * one.hidden           # each layer's bf16 input, kept for the recompute
    logits = BATCH * (SEQ - 1) * 4 * one.vocab         # the fp32 log-softmax over the vocabulary
    transient = 2 * logits                             # its two fp32 gradient buffers, at the peak
    lines = [
        f"- **1B, full fine-tuning, static part:** {n1 / 1e9:.3f}B parameters x 16 bytes = "
        f"{16 * n1 / GiB:.2f} GiB (the table: {full1.static / GiB:.2f}). It does not fit a T4 before a "
        "single activation.",
        f"- **1B, LoRA r = 16 on all linears:** the bf16 base is {n1 / 1e9:.3f}B x 2 = {2 * n1 / GiB:.2f} GiB; "
        f"the {lora1.trainable / 1e6:.1f}M adapter weights cost 16 bytes each, {16 * lora1.trainable / GiB:.2f} GiB.",
        f"- **1B activations with checkpointing** ({BATCH} x {SEQ} = {T:,} tokens): the kept layer inputs are "
        f"{one.layers} x {T:,} x 2 x {one.hidden} = {kept / GiB:.2f} GiB, the loss's fp32 log-softmax "
        f"{BATCH} x {SEQ - 1} x 4 x {one.vocab:,} = {logits / GiB:.2f} GiB, and the peak adds twice that again "
        f"({transient / GiB:.2f} GiB): with a 128K vocabulary the loss, not the layers, is the budget.",
        f"- **7B, QLoRA:** {lin7 / 1e9:.2f}B linear weights x 4.127 / 8 = {lin7 * 4.127 / 8 / GiB:.2f} GiB, "
        f"plus {rest7 / 1e6:.0f}M embedding, head and norm weights kept in fp32: {4 * rest7 / GiB:.2f} GiB "
        f"(the table's weights, {q7.weights / GiB:.2f}, add the fp32 adapters); {q7.trainable / 1e6:.1f}M adapter "
        f"weights with 8-bit AdamW take {q7.gradients / GiB:.2f} GiB of gradients and "
        f"{q7.optimizer / GiB:.2f} GiB of state.",
    ]
    return "\n".join(lines)


def block() -> str:
    return (f"{START}\n"
            f"Batch {BATCH} x {SEQ} tokens, gradient checkpointing {'on' if CHECKPOINTING else 'off'}, "
            "GiB (`scripts/field_guide_numbers.py`, from `ftlab.memory.estimate`; \"fits\" compares "
            "the peak plus 0.5 GiB of CUDA context with the card, as `estimate(...).fits` does):\n\n"
            f"{table()}\n\n{by_hand()}\n{END}")


def replaced(text: str) -> str:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{GUIDE} has no {START} ... {END} block for the worked examples")
    return text[:start] + block() + text[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the block in docs/field_guide.md")
    group.add_argument("--check", action="store_true", help="exit 1 if the guide's block is out of date")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(block())
        return 0
    text = GUIDE.read_text(encoding="utf-8")
    new = replaced(text)
    if args.check:
        if new != text:
            print(f"{GUIDE.relative_to(ROOT)}: worked examples out of date; run "
                  "`python scripts/field_guide_numbers.py --write`")
            return 1
        print("worked examples up to date")
        return 0
    if new != text:
        GUIDE.write_text(new, encoding="utf-8")
        print(f"rewrote the worked examples in {GUIDE.relative_to(ROOT)}")
    else:
        print("worked examples up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
