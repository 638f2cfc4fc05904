"""Two facts about any model the course loads: how many parameters it has, and where they are."""

from __future__ import annotations

from ftlab.runtime import model_device  # noqa: F401  (one home: ftlab.runtime; re-exported here)


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (or only those with ``requires_grad``). 4-bit weights count per value."""
    total = 0
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        n = p.numel()
        # bitsandbytes packs two 4-bit values per uint8 element
        if getattr(p, "quant_state", None) is not None or type(p).__name__ == "Params4bit":
            n *= 2
        total += n
    return total
