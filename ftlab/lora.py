"""LoRA by hand: a trainable low-rank update beside a frozen linear layer (lesson 02).

A pretrained linear layer computes ``y = x W^T (+ b)`` with ``W`` of shape (d_out, d_in). LoRA
(Hu et al., 2021) leaves ``W`` frozen and learns the change as a product of two thin matrices:

    W' = W + scale * B @ A,    A: (r, d_in),  B: (d_out, r),  scale = alpha / r

so a layer trains ``r * (d_in + d_out)`` numbers instead of ``d_in * d_out``. ``B`` starts at
zero, so the wrapped model starts as exactly the pretrained one; after training the update can
be folded into ``W`` (:meth:`LoRALinear.merge`) and inference costs nothing extra.

The module has three parts, kept apart as in peft:

- the layer, :class:`LoRALinear`, which knows nothing about transformers;
- the model surgery, :func:`inject_lora` / :func:`merge_lora` / :func:`lora_layers`, which knows
  nothing about the math;
- the files, :func:`save_adapter` / :func:`load_adapter`, in PEFT's on-disk format, so an adapter
  trained here loads with ``peft.PeftModel.from_pretrained`` and one trained with peft loads here.

:func:`lora_params`, :func:`lora_scale` and :func:`rank_alpha_summary` are the plain numbers the
lesson's rank/alpha explorer (``ftlab.widgets``) shows.

Decisions worth knowing (each is tested in ``tests/test_lora.py``):

- ``inject_lora`` run again with the same settings leaves the adapters as they are (a warning,
  no re-initialisation); other settings are a ValueError; new target names are added. A target
  matches as in peft's list form (the full name or its dotted ending); a single string is one
  name (peft would read it as a regex).
- ``r`` must be at most min(d_in, d_out) (peft allows more, which only wastes parameters).
- The factors are fp32 on a half-precision base, as peft makes them by default, and the forward
  follows peft's order: the input is cast to fp32, the scaled update is added to the base output
  in fp32, and the sum is rounded once to the base's dtype (so bf16 logits equal peft's).
- ``alpha`` must be finite and > 0, ``dropout`` a number in [0, 1), ``target_names`` layer
  names (:func:`check_alpha`, :func:`check_dropout`, :func:`check_targets`; ``ftlab.run``
  checks its config with the same functions). A damaged adapter_config.json or a truncated
  weights file is a ValueError that names the file.
- Merged layers are frozen, like the base they replace (as peft's ``merge_and_unload``).
- ``save_adapter`` writes one (r, alpha, dropout, rsLoRA) for all layers; ``target_modules``
  are short names when they pick exactly the wrapped layers, else full names;
  ``base_model_name_or_path`` defaults to the model's ``name_or_path``; ``task_type`` is null.
- ``load_adapter`` leaves the loaded factors trainable (peft's ``from_pretrained`` freezes them
  unless ``is_trainable=True``), and refuses what plain LoRA cannot reproduce (DoRA, per-layer
  rank or alpha patterns, a bias on B, fan_in_fan_out, modules_to_save).
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_WEIGHTS_BIN = "adapter_model.bin"  # what peft wrote before safetensors became its default
PEFT_PREFIX = "base_model.model."  # peft keeps the model under PeftModel.base_model.model


# -- the numbers --------------------------------------------------------------------------------

def lora_params(d_out: int, d_in: int, r: int) -> int:
    """Trainable numbers LoRA adds to one (d_out x d_in) linear layer: A (r x d_in) + B (d_out x r).

    The one home of the formula (``ftlab.memory`` imports it); the arguments are checked, since
    the lesson's calculator cells and the memory calculator take them from the student.
    """
    for name, value in (("d_out", d_out), ("d_in", d_in), ("r", r)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r}: lora_params counts whole numbers, so {name} must be an "
                             "int >= 1 (a layer's size or the rank), e.g. lora_params(4096, 4096, 16).")
    return r * (d_in + d_out)


def lora_scale(alpha: float, r: int, rslora: bool = False) -> float:
    """The factor on ``B @ A``: alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski, 2023).

    With alpha / r, doubling r halves the update's scale, so a larger rank learns more slowly;
    rsLoRA's alpha / sqrt(r) keeps the update's size steady as r grows.
    """
    return alpha / math.sqrt(r) if rslora else alpha / r


def _check_rank(r, d_in: int, d_out: int) -> None:
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"r={r!r}: the rank is a whole number of directions, an int >= 1 (e.g. 8).")
    if r <= 0:
        raise ValueError(f"r={r}: the rank must be at least 1 (typical: 4 to 64).")
    limit = min(d_in, d_out)
    if r > limit:
        raise ValueError(f"r={r} is larger than min(d_in={d_in}, d_out={d_out}) = {limit}: the update "
                         f"of a {d_out}x{d_in} layer has rank at most {limit}, and at that rank a full "
                         f"fine-tune of the layer is cheaper. Pick r <= {limit}.")


def rank_alpha_summary(r: int, alpha: float, shapes: Sequence[tuple[int, int]], total_params: int,
                       rslora: bool = False, singular_values: Sequence[float] | None = None) -> dict:
    """What a choice of r and alpha buys, for the layers ``shapes`` [(d_out, d_in), ...].

    Returns a dict: ``scale`` (on B @ A), ``scale_rslora`` (what rsLoRA would use),
    ``trainable_params``, ``trainable_fraction`` (of ``total_params``, the base model),
    ``adapter_mb`` (fp32 on disk), and, given the singular values of a trained update,
    ``energy_kept``: the share of its squared Frobenius norm a rank-r truncation keeps (the
    best any rank-r matrix can do, by the Eckart-Young theorem). A pure function: the lesson's
    explorer (``ftlab.widgets.rank_alpha_explorer``) only draws it.
    """
    if not shapes:
        raise ValueError("shapes is empty: give the (d_out, d_in) of each layer LoRA wraps.")
    for d_out, d_in in shapes:
        _check_rank(r, d_in, d_out)
    trainable = sum(lora_params(d_out, d_in, r) for d_out, d_in in shapes)
    summary = {"r": r, "alpha": alpha, "rslora": rslora, "scale": lora_scale(alpha, r, rslora),
               "scale_rslora": lora_scale(alpha, r, True), "trainable_params": trainable,
               "trainable_fraction": trainable / total_params, "adapter_mb": trainable * 4 / 1e6}
    if singular_values is not None:
        energy = torch.as_tensor(singular_values, dtype=torch.float64).square()
        summary["energy_kept"] = float(energy[:r].sum() / energy.sum()) if energy.sum() > 0 else 1.0
    return summary


# -- the layer ------------------------------------------------------------------------------------

def _linear_shape(base) -> tuple[int, int]:
    """(d_in, d_out) of a layer LoRA can wrap, or a TypeError that says what it can wrap."""
    if isinstance(base, LoRALinear):
        raise TypeError("This layer already is a LoRALinear: LoRA on LoRA would train two updates "
                        "of the same weight. Wrap its .base, or merge it first.")
    if type(base).__module__.startswith("peft."):
        raise TypeError(f"{type(base).__name__} is peft's LoRA layer; ftlab's LoRA wraps the plain "
                        "base layer (call merge_and_unload() on the peft model first).")
    if isinstance(base, nn.Linear):
        return base.in_features, base.out_features
    # The hook for frozen layers that are not nn.Linear but act like one, such as ftlab.quant's
    # 4-bit linear (lesson 04): in_features, out_features and a forward are all LoRA needs.
    d_in, d_out = getattr(base, "in_features", None), getattr(base, "out_features", None)
    if isinstance(base, nn.Module) and all(isinstance(d, int) and not isinstance(d, bool) for d in (d_in, d_out)):
        return d_in, d_out
    raise TypeError(f"LoRALinear wraps a linear layer (nn.Linear, or a frozen layer with int "
                    f"in_features and out_features, like a 4-bit linear); got {type(base).__name__}. "
                    "Target the model's linear layers: inject_lora's error lists them.")


def check_alpha(alpha, name: str = "alpha") -> None:
    """A ValueError unless ``alpha`` is a finite number > 0 (the scale's numerator, alpha / r).

    ``name`` is what the caller calls it (``ftlab.run``'s config checks its key with this).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or not alpha > 0:
        raise ValueError(f"{name}={alpha!r}: a finite number > 0; the update is scaled by alpha / r "
                         "(alpha = 2 * r is a common choice).")


def check_dropout(dropout, name: str = "dropout") -> None:
    """A ValueError unless ``dropout`` is a number in [0, 1): the probability of zeroing an input."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}={dropout!r}: a probability, a number in [0, 1) (0.05 is typical, "
                         "0 = off).")


def check_targets(target_names, name: str = "target_names") -> tuple[str, ...]:
    """``target_names`` as a tuple of layer names; one string is one name (peft would read a regex).

    A ValueError for None, an empty list, or anything that is not a layer name.
    """
    if isinstance(target_names, str):
        target_names = (target_names,)
    if target_names is None or not isinstance(target_names, Iterable):
        raise ValueError(f"{name}={target_names!r}: name the linear layers to adapt, a list of names such "
                         "as ('q_proj', 'v_proj') (linear_layer_names(model) lists a model's).")
    targets = tuple(target_names)
    bad = [t for t in targets if not isinstance(t, str) or not t]
    if bad or not targets:
        raise ValueError(f"{name}={list(targets)!r}: "
                         + (f"{bad!r} are not layer names; " if bad else "it is empty; ")
                         + "name the linear layers to adapt with strings, e.g. ('q_proj', 'v_proj').")
    return targets


def _check_layer(base, r, alpha, dropout) -> tuple[int, int]:
    """Every check LoRALinear makes, without touching ``base``; returns (d_in, d_out)."""
    d_in, d_out = _linear_shape(base)
    _check_rank(r, d_in, d_out)
    check_alpha(alpha)
    check_dropout(dropout)
    return d_in, d_out


class LoRALinear(nn.Module):
    """``y = base(x) + scale * (x A^T) B^T``: a frozen linear layer plus a trainable rank-r update.

    Shapes: x (..., d_in) -> y (..., d_out); ``A`` (r, d_in), ``B`` (d_out, r). ``A`` starts as
    ``nn.Linear`` (and peft) start a weight, kaiming-uniform; ``B`` starts at zero, so at init the
    output is exactly ``base(x)``. ``scale`` is alpha / r, or alpha / sqrt(r) with ``rslora``.
    ``dropout`` applies to the input of the low-rank path only. Lesson 02 builds it step by step.

    ``base`` is frozen here (requires_grad False). It is normally an ``nn.Linear``; any module
    with int ``in_features``/``out_features`` and a forward also works: the hook that lets LoRA sit
    on a 4-bit layer (``ftlab.quant.NF4Linear``, lesson 04). :meth:`merge` then reads the base's
    float ``weight`` (dequantized) or calls its ``dequantize()``.
    """

    def __init__(self, base: nn.Module, r: int = 8, alpha: float = 16, dropout: float = 0.0,
                 rslora: bool = False):
        super().__init__()
        d_in, d_out = _check_layer(base, r, alpha, dropout)
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = d_in, d_out
        self.r, self.alpha, self.rslora, self.dropout_p = r, alpha, rslora, dropout
        self.scale = lora_scale(alpha, r, rslora)
        weight = getattr(base, "weight", None)
        if not isinstance(weight, torch.Tensor):  # a 4-bit base may keep only packed buffers
            weight = next(itertools.chain(base.parameters(), base.buffers()), None)
        device = weight.device if weight is not None else None
        # Adapters train in fp32 even on a half-precision base (peft does the same): an fp16
        # parameter cannot be stepped by AdamW under a GradScaler.
        full = weight is not None and weight.dtype in (torch.float32, torch.float64)
        dtype = weight.dtype if full else torch.float32
        self.A = nn.Parameter(torch.empty(r, d_in, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(d_out, r, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's own init, as in peft
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    # Code that reads layer.weight / layer.bias (dtype checks, weight tying) sees the base's.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base, "bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)                                   # (..., d_out), frozen
        h = F.linear(self.dropout(x.to(self.A.dtype)), self.A)  # (..., r): the bottleneck
        update = F.linear(h, self.B) * self.scale            # (..., d_out); never forms B @ A
        # peft's order: a half-precision base output is added to the fp32 update in fp32 and
        # rounded once; rounding the update to bf16 first would cost bf16's 3 digits twice.
        return (out + update).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The update ``scale * B @ A`` (d_out, d_in) this layer adds to the base weight."""
        return (self.B @ self.A) * self.scale

    def _base_weight(self) -> torch.Tensor:
        """The base's (d_out, d_in) float weight; a 4-bit base gives it dequantized."""
        weight = getattr(self.base, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.is_floating_point() \
                and tuple(weight.shape) == (self.out_features, self.in_features):
            return weight
        if callable(getattr(self.base, "dequantize", None)):
            return self.base.dequantize()
        raise TypeError(f"Cannot merge into a {type(self.base).__name__}: it has no float weight of shape "
                        f"({self.out_features}, {self.in_features}) and no dequantize() method to give one.")

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + scale * B @ A`` (and the base's bias), frozen.

        Same output as this layer (up to float rounding), same cost as the base: zero added latency.
        """
        W = self._base_weight()
        bias = self.bias
        merged = nn.Linear(self.in_features, self.out_features, bias=bias is not None,
                           device=W.device, dtype=W.dtype)
        merged.weight.copy_((W.to(self.A.dtype) + self.delta_weight()).to(W.dtype))
        if bias is not None:
            merged.bias.copy_(bias)
        return merged.requires_grad_(False)

    def extra_repr(self) -> str:
        rs = ", rslora" if self.rslora else ""
        return f"r={self.r}, alpha={self.alpha}, scale={self.scale:.4g}{rs}, dropout={self.dropout_p}"


# -- the model surgery --------------------------------------------------------------------------

def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every :class:`LoRALinear` in ``model``, by its dotted name (``model.layers.0.self_attn.q_proj``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _is_linear_like(module: nn.Module) -> bool:
    try:
        _linear_shape(module)
    except TypeError:
        return False
    return True


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers: what ``target_names`` can be."""
    inside = tuple(name + "." for name in lora_layers(model))  # skip each LoRALinear's own .base
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if name and not name.startswith(inside) and (_is_linear_like(m) or isinstance(m, LoRALinear))})


def _matches(name: str, targets: Iterable[str]) -> bool:
    # peft's rule for a list of targets: the full dotted name, or its ending after a dot
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def inject_lora(model: nn.Module, target_names: Sequence[str] | str = ("q_proj", "v_proj"), r: int = 8,
                alpha: float = 16, dropout: float = 0.0, rslora: bool = False) -> nn.Module:
    """Wrap every linear layer named in ``target_names`` in a :class:`LoRALinear`; freeze the rest.

    A target matches a layer's dotted name or its last part(s), as in peft (``"q_proj"`` matches
    ``model.layers.0.self_attn.q_proj``). Returns ``model`` (changed in place), with only the
    LoRA factors trainable. Nothing matching is a ValueError that lists the linear layers the
    model has. Running it again (a re-run notebook cell) never stacks LoRA on LoRA: layers that
    already have LoRA with the same settings are left as they are (with a warning), and other
    settings are a ValueError.
    """
    return _inject(model, target_names, r, alpha, dropout, rslora, quiet=False)


def _inject(model, target_names, r, alpha, dropout, rslora, *, quiet: bool) -> nn.Module:
    targets = check_targets(target_names)
    check_alpha(alpha)
    check_dropout(dropout)
    if any(type(m).__module__.startswith("peft.") for m in model.modules()):
        raise ValueError("This model already holds peft adapters; use peft's API on it, or call "
                         "merge_and_unload() first. ftlab's LoRA goes on a plain model.")
    wrapped = lora_layers(model)
    inside = tuple(name + "." for name in wrapped)  # a LoRALinear's own base is not a target
    matches = {name: m for name, m in model.named_modules()
               if name and _matches(name, targets) and not name.startswith(inside)}
    if not matches:
        raise ValueError(f"No layer of this {type(model).__name__} is named {list(targets)}. Its linear "
                         f"layers are named {linear_layer_names(model)}; pass some of those as "
                         "target_names (DistilBERT's attention uses 'q_lin' and 'v_lin', "
                         "Llama's 'q_proj' and 'v_proj').")
    settings = (r, alpha, dropout, rslora)
    again = {name: m for name, m in matches.items() if isinstance(m, LoRALinear)}
    for name, m in again.items():
        if (m.r, m.alpha, m.dropout_p, m.rslora) != settings:
            raise ValueError(f"{name} already has LoRA (r={m.r}, alpha={m.alpha}, dropout={m.dropout_p}, "
                             f"rslora={m.rslora}); inject_lora does not stack LoRA on LoRA. To start over "
                             f"with r={r}, alpha={alpha}, reload the model (or merge_lora(model) to keep "
                             "the trained update in the weights).")
    for name, m in matches.items():  # check every target before changing anything
        if name not in again:
            try:
                _check_layer(m, r, alpha, dropout)
            except TypeError as err:
                raise TypeError(f"Target {name!r}: {err}") from None
    if again and not quiet:
        warnings.warn(f"{len(again)} of the {len(matches)} target layers already had LoRA with these "
                      "settings; left as they are (not stacked, not re-initialised).", stacklevel=3)
    model.requires_grad_(False)
    for name, m in matches.items():
        if name not in again:
            _set_module(model, name, LoRALinear(m, r=r, alpha=alpha, dropout=dropout, rslora=rslora))
    for layer in lora_layers(model).values():
        layer.A.requires_grad_(True)
        layer.B.requires_grad_(True)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear`` (:meth:`LoRALinear.merge`).

    Returns ``model``, changed in place: the same outputs, the base architecture and speed,
    and no trainable LoRA factors left (peft's ``merge_and_unload``).
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("This model has no LoRA layers to merge (already merged? never injected?).")
    for name, layer in layers.items():
        _set_module(model, name, layer.merge())
    return model


# -- the files: PEFT's format ---------------------------------------------------------------------

def _target_modules(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Short targets (``q_proj``) when they pick exactly the wrapped layers, else full names."""
    short = sorted({n.rsplit(".", 1)[-1] for n in names})
    picked = {n for n, m in model.named_modules()
              if _matches(n, short) and (isinstance(m, LoRALinear) or _is_linear_like(m))
              and not any(n.startswith(w + ".") for w in names)}
    return short if picked == set(names) else sorted(names)


def save_adapter(model: nn.Module, path, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's LoRA factors in PEFT's format; returns the folder.

    ``path/adapter_config.json`` (a peft ``LoraConfig``) and ``path/adapter_model.safetensors``
    with peft's key names: ``base_model.model.<layer>.lora_A.weight`` (r, d_in) and
    ``...lora_B.weight`` (d_out, r). ``peft.PeftModel.from_pretrained(base, path)`` loads it.
    ``base_model_name_or_path`` defaults to the model's own ``name_or_path`` (as peft does).
    """
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise ValueError("This model has no LoRA layers to save: call inject_lora(model, ...) first. "
                         "(For a peft model, use model.save_pretrained(path).)")
    settings = {(m.r, m.alpha, m.dropout_p, m.rslora) for m in layers.values()}
    if len(settings) > 1:
        raise ValueError(f"The LoRA layers use different settings {sorted(settings)} (r, alpha, "
                         "dropout, rslora); save_adapter writes one setting for all layers.")
    (r, alpha, dropout, rslora), = settings
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.A.detach().cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.B.detach().cpu().contiguous()
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(model, "name_or_path", None) or None
    config = {  # the fields peft's LoraConfig needs to rebuild these layers; the rest default
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "use_rslora": rslora,
        "target_modules": _target_modules(model, list(layers)), "bias": "none",
        "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False,
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


_UNSUPPORTED = {  # adapter_config.json settings ftlab's plain LoRA cannot reproduce
    "use_dora": "DoRA", "rank_pattern": "a per-layer rank_pattern", "alpha_pattern": "a per-layer alpha_pattern",
    "lora_bias": "a bias on lora_B", "fan_in_fan_out": "fan_in_fan_out (GPT-2's Conv1D layers)",
    "modules_to_save": "modules_to_save (fully trained extra layers)",
}


def _read_adapter(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config_file = path / ADAPTER_CONFIG
    weights = next((path / f for f in (ADAPTER_WEIGHTS, ADAPTER_WEIGHTS_BIN) if (path / f).is_file()), None)
    if not config_file.is_file() or weights is None:
        raise FileNotFoundError(f"No adapter at {path}: expected a folder with {ADAPTER_CONFIG} and "
                                f"{ADAPTER_WEIGHTS}, as save_adapter and peft's save_pretrained write.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) else ""
        raise ValueError(f"{config_file} is not valid JSON{where}: the file is damaged or was cut short. "
                         "Save the adapter again (save_adapter or peft's save_pretrained).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} holds a {type(config).__name__}, not a mapping of settings: it is not "
                         "an adapter_config.json that save_adapter or peft's save_pretrained wrote.")
    missing = [key for key in ("r", "lora_alpha") if key not in config]
    if missing:
        raise ValueError(f"{config_file} lacks {missing}: a LoRA adapter's config gives its rank r and "
                         "lora_alpha. Save the adapter again (save_adapter or peft's save_pretrained).")
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path} holds a {config['peft_type']} adapter; ftlab.lora loads LoRA adapters only.")
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise ValueError(f"{path} uses {what} ({key}={config[key]!r}), which ftlab's LoRALinear does "
                             "not implement; load it with peft.PeftModel.from_pretrained instead.")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors' and torch's errors do not name the file
        raise ValueError(f"{weights} cannot be read ({type(err).__name__}: {err}): the file is damaged or "
                         f"truncated ({weights.stat().st_size:,} bytes; an interrupted copy or download?). "
                         "Save the adapter again, or copy it again.") from None
    return config, state


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Load a LoRA adapter in PEFT's format (saved by peft or by :func:`save_adapter`) into ``model``.

    Wraps the adapter's layers with :class:`LoRALinear` (r, alpha, dropout and rsLoRA from its
    config), copies its factors in, and freezes everything else; the factors stay trainable.
    Returns ``model``. A missing folder is a FileNotFoundError; an adapter for layers the model
    lacks, or whose shapes do not fit them, is a ValueError, raised before the model is touched.
    """
    path = Path(path)
    config, state = _read_adapter(path)
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name = key.removeprefix(PEFT_PREFIX)
        for suffix, which in ((".lora_A.weight", "A"), (".lora_B.weight", "B")):
            if name.endswith(suffix):
                factors.setdefault(name[: -len(suffix)], {})[which] = tensor
                break
        else:
            raise ValueError(f"{path}: unexpected tensor {key!r}; a LoRA adapter holds only "
                             "lora_A and lora_B weights.")
    if not factors:
        raise ValueError(f"{path}: the adapter file holds no LoRA weights.")
    r, alpha = config["r"], config["lora_alpha"]
    modules = dict(model.named_modules())
    base_name = config.get("base_model_name_or_path")
    for name, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{path}: layer {name} has only lora_{''.join(pair)}; an adapter needs both A and B.")
        if name not in modules:
            raise ValueError(f"The adapter at {path} is for a layer {name!r} this {type(model).__name__} "
                             f"does not have (it was made for {base_name!r}). The model's linear layers "
                             f"are named {linear_layer_names(model)}.")
        module = modules[name]
        d_in, d_out = _linear_shape(module.base if isinstance(module, LoRALinear) else module)
        a, b = tuple(pair["A"].shape), tuple(pair["B"].shape)
        if a != (r, d_in) or b != (d_out, r):
            raise ValueError(f"The adapter at {path} does not fit layer {name} ({d_out}x{d_in}): its A is {a} "
                             f"and B is {b}, but r={r} needs A ({r}, {d_in}) and B ({d_out}, {r}). It was "
                             f"trained on another model ({base_name!r}).")
    _inject(model, list(factors), r, alpha, config.get("lora_dropout", 0.0),
            bool(config.get("use_rslora", False)), quiet=True)
    layers = lora_layers(model)
    with torch.no_grad():
        for name, pair in factors.items():
            layers[name].A.copy_(pair["A"])
            layers[name].B.copy_(pair["B"])
    return model
