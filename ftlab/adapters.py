"""Houlsby adapters: small bottleneck layers inserted into a frozen transformer (lesson 03).

Houlsby et al. (2019) freeze the pretrained network and add, after the output projection of each
sub-layer (attention and feed-forward), a tiny two-layer network with a skip connection:

    h  ->  h + W_up · act(W_down · h)        W_down: (bottleneck x dim), W_up: (dim x bottleneck)

The bottleneck (8 to 64 wide) keeps it small: ``2 * dim * bottleneck + bottleneck + dim``
parameters per adapter, biases included. ``W_up`` starts at zero, so at initialisation every
adapter is the identity and the model computes exactly what the pretrained one did; training
moves only the adapters (and the new task head). The paper also trains the LayerNorms; here they
stay frozen, so that the comparison with LoRA in lesson 03 is about where the parameters go.

Unlike LoRA, an adapter is an extra layer in the forward path with a non-linearity inside, so it
cannot be merged into the frozen weights: it costs a little inference time for good.

:func:`add_adapters` does the model surgery; :class:`BottleneckAdapter` is the layer and knows
nothing about transformers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn


def adapter_param_count(dim: int, bottleneck: int) -> int:
    """Parameters of one adapter: down (dim x b + b) plus up (b x dim + dim)."""
    return 2 * dim * bottleneck + bottleneck + dim


def _check_bottleneck(bottleneck, dim: int) -> None:
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or not 1 <= bottleneck <= dim:
        raise ValueError(f"bottleneck={bottleneck!r} is not valid for dim={dim}: use an int from 1 "
                         f"to {dim} (a bottleneck is narrower than the layer; 8 to 64 is usual).")


def _names(value, what: str) -> set[str]:
    """Layer names as a set; one string is one name (``set("lin2")`` would be its letters).
    ``trainable_names=None`` means no head trains; ``target_names=None`` is an error."""
    if value is None and what == "trainable_names":
        return set()
    if isinstance(value, str):
        return {value}
    names = list(value) if isinstance(value, Iterable) else None
    if names is None or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what}={value!r}: give layer names, a string or a list of strings such as "
                         "('out_lin', 'lin2').")
    return set(names)


class BottleneckAdapter(nn.Module):
    """``h + up(gelu(down(h)))`` on the last dimension: (..., dim) -> (..., dim).

    ``up`` is zero-initialised, so a new adapter returns its input unchanged.
    """

    def __init__(self, dim: int, bottleneck: int = 16):
        super().__init__()
        _check_bottleneck(bottleneck, dim)
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)  # identity at init: the pretrained output passes through
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class Adapted(nn.Module):
    """A frozen sub-layer (an ``nn.Linear``) followed by its adapter: ``adapter(sublayer(x))``."""

    def __init__(self, sublayer: nn.Linear, bottleneck: int = 16):
        super().__init__()
        self.sublayer = sublayer
        self.adapter = BottleneckAdapter(sublayer.out_features, bottleneck).to(
            device=sublayer.weight.device, dtype=sublayer.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.sublayer(x))


def _linear_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def add_adapters(model: nn.Module, target_names: Sequence[str] = ("out_lin", "lin2"),
                 bottleneck: int = 16,
                 trainable_names: Sequence[str] = ("pre_classifier", "classifier")) -> nn.Module:
    """Freeze ``model``, put an adapter after every ``nn.Linear`` named in ``target_names``, return it.

    ``target_names`` are last components of module names: DistilBERT's attention output is
    ``out_lin`` and its feed-forward output ``lin2`` (Houlsby's two places per block; Llama calls
    them ``o_proj`` and ``down_proj``). The adapters and the modules named in ``trainable_names``
    (the new classification head) are the only trainable parameters. The model is changed in
    place. A model that already has adapters is refused, so a re-run cell cannot stack them.
    A single string is one name. Every check runs before the model is changed.
    """
    if any(isinstance(m, Adapted) for m in model.modules()):
        raise ValueError("this model already has adapters (add_adapters ran on it before); load a "
                         "fresh model instead of adding a second set on top.")
    wanted, head_names = _names(target_names, "target_names"), _names(trainable_names, "trainable_names")
    if not wanted:
        raise ValueError("target_names is empty: name the linear layers to put adapters after, e.g. ('out_lin', 'lin2').")
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in wanted]
    if not targets:
        raise ValueError(f"no nn.Linear named {sorted(wanted)} in {type(model).__name__}; its "
                         f"linear layers are named {_linear_names(model)}.")
    heads = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in head_names]
    missing = sorted(head_names - {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()})
    if missing:
        raise ValueError(f"trainable_names {missing} match no module of {type(model).__name__} "
                         f"(its linear layers are named {_linear_names(model)}).")
    for name, linear in targets:
        try:
            _check_bottleneck(bottleneck, linear.out_features)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    for p in model.parameters():
        p.requires_grad = False
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Adapted(linear, bottleneck))  # new adapter params: requires_grad=True
    for head in heads:
        for p in head.parameters():
            p.requires_grad = True
    return model
