"""Two facts about any model the course loads: how many parameters it has, and where they are."""

from __future__ import annotations

import torch


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


def model_device(model) -> torch.device:
    """The device of ``model``'s first parameter: where its inputs must go.

    A model with no parameter at all has no device to send inputs to; that is a ValueError.
    """
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError(f"{type(model).__name__} has no parameters, so it has no device to send "
                         "inputs to; pass a model with weights.") from None
