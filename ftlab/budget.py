"""Will this run fit the card? The memory calculator applied to a live model, before step 1.

``ftlab.train`` calls :func:`plan_run` on a GPU (real, or simulated with ``FTLAB_SIMULATE_GPU``)
with the model it was given, the first micro-batch and the built optimizer. The plan reads off
the model what the run is (which weights are 4-bit, which train, where LoRA sits, its rank,
gradient checkpointing, the optimizer) and prices it at the model's **real** size:

- a hub model the course names (:data:`REAL_CONFIGS`) is priced from its published config,
  built on the ``meta`` device (no memory, no download), parameter by parameter, by name. So a
  stand-in with the real architecture and shrunk widths (``make rehearse``) is priced as the
  real model, and on Colab the real model is priced as itself;
- any other model is priced as it is.

Activations come from the calculator's Llama-family model (``ftlab.memory``, docs/memory.md);
for other architectures (ResNet, CLIP, DistilBERT) the plan prices the static parts only and
says so. The host-RAM side is the runtime baseline plus one half-precision copy of the weights
passing through while they load (an upper bound: transformers loads shard by shard).

The plan also says how long the run's arithmetic takes on the card: the forward pass is counted
by ``torch.utils.flop_counter`` on the meta device at the real size (no memory, no compute), and
a training micro-batch costs that forward, once more for the gradients of the activations, the
trainable share once more for the weight gradients, and one more forward under gradient
checkpointing. Divided by the card's practical throughput (``ftlab.runtime.TRAIN_TFLOPS``,
sourced there) this gives the minutes the README's lesson table adds up (docs/rehearsal.md).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ftlab.memory import (CUDA_CONTEXT, GiB, MemoryEstimate, activation_bytes, nf4_bytes, optimizer_state_bytes,
                          shape_from_config)

# Hub repo -> its published config (the values of its config.json), for pricing at real size.
REAL_CONFIGS = {
    "TinyLlama/TinyLlama_v1.1": ("llama", dict(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)),
    "meta-llama/Llama-3.2-1B": ("llama", dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
        tie_word_embeddings=True)),
    # transformers' defaults for these two classes are these checkpoints' configs
    "openai/clip-vit-base-patch32": ("clip", {}),
    "distilbert-base-uncased": ("distilbert", {}),
}
# Python, torch and CUDA libraries in a Colab kernel before any model is loaded (measured RSS of a
# fresh Colab kernel after `import torch, transformers`: about 1.5-2 GB).
HOST_BASELINE = 2 * GiB


def _hf_model(model):
    """The Hugging Face model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _real_config(hf):
    config = getattr(hf, "config", None)
    name = getattr(config, "_name_or_path", "") or ""
    if name not in REAL_CONFIGS:
        return None, name
    family, values = REAL_CONFIGS[name]
    if family == "llama":
        from transformers import LlamaConfig

        real = LlamaConfig(**values)
    elif family == "clip":
        from transformers import CLIPConfig

        real = CLIPConfig()
    else:
        from transformers import DistilBertConfig

        real = DistilBertConfig()
    for key in ("num_labels", "id2label", "label2id", "problem_type"):
        if hasattr(config, key):
            setattr(real, key, getattr(config, key))
    return real, name


def _meta_twin(hf, real_config):
    """The same model class built from the real config on the meta device: shapes, no memory."""
    if real_config is None:
        return None
    with torch.device("meta"):
        return type(hf)._from_config(real_config)


def _clean(name: str) -> str:
    """A parameter's name in the plain HF model: drop peft's and ftlab's wrapper levels."""
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace(".base_layer.", ".").replace(".base.", ".")


_LORA_A = (".lora_A.", ".A")
_LORA_B = (".lora_B.", ".B")


def _lora_part(name: str):
    """("A" | "B", owning linear's weight name) for a LoRA factor, else None."""
    for marker, part in ((".lora_A.", "A"), (".lora_B.", "B")):
        if marker in name:
            return part, _clean(name.split(marker)[0]) + ".weight"
    for suffix, part in ((".A", "A"), (".B", "B")):
        if name.endswith(suffix):
            return part, _clean(name[: -len(suffix)]) + ".weight"
    return None


def _is_4bit(p) -> bool:
    return type(p).__name__ == "Params4bit" or getattr(p, "quant_state", None) is not None


def _optimizer_name(optimizer) -> str:
    kind = type(optimizer).__name__.lower()
    if "8bit" in kind:
        return "adamw8bit"
    if "sgd" in kind:
        momentum = any(g.get("momentum", 0) for g in getattr(optimizer, "param_groups", []))
        return "sgd_momentum" if momentum else "sgd"
    return "adamw"


@dataclass
class RunPlan:
    """The predicted memory of one training run on one card, at the model's real size."""

    model_name: str
    card: object                      # ftlab.runtime.Card
    estimate: MemoryEstimate
    activations_modelled: bool
    host_bytes: int
    setup: str                        # what the run is, in words
    notes: list[str] = field(default_factory=list)
    train_flops: float | None = None  # the whole run's arithmetic at real size, if it could be counted

    @property
    def minutes(self) -> float | None:
        """Minutes of arithmetic on the card at its practical throughput, or None if unknown."""
        tflops = getattr(self.card, "train_tflops", None)
        if self.train_flops is None or not tflops:
            return None
        return self.train_flops / (tflops * 1e12) / 60

    @property
    def gpu_usable(self) -> int:
        return self.card.memory_bytes - CUDA_CONTEXT

    @property
    def gpu_peak(self) -> int:
        return self.estimate.peak

    @property
    def fits_gpu(self) -> bool:
        return self.gpu_peak <= self.gpu_usable

    @property
    def fits_host(self) -> bool:
        return not self.card.host_ram_bytes or self.host_bytes <= self.card.host_ram_bytes

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host

    def line(self) -> str:
        """One line for the lesson's output (``make rehearse`` collects it: prefix ``Memory plan:``)."""
        acts = "" if self.activations_modelled else " (activations not modelled for this architecture)"
        line = (f"Memory plan: {self.model_name} at real size, {self.setup}: GPU peak "
                f"{self.gpu_peak / GiB:.2f} GiB of {self.card.name}'s {self.gpu_usable / GiB:.1f} GiB usable{acts}; "
                f"host {self.host_bytes / GiB:.1f} GiB of {self.card.host_ram_bytes / GiB:.1f} GiB")
        if self.minutes is not None:
            line += (f"; compute {self.train_flops / 1e12:,.0f} TFLOP, about {self.minutes:.1f} min at the "
                     f"{self.card.name}'s practical {self.card.train_tflops:g} TFLOP/s")
        return line

    def advice(self) -> str:
        """Why the run cannot start, with the calculator's parts and what to change."""
        parts = ", ".join(f"{k} {v / GiB:.2f} GiB" for k, v in self.estimate.parts().items())
        if not self.fits_gpu:
            head = (f"This run does not fit the {self.card.name}: the calculator predicts a peak of "
                    f"{self.gpu_peak / GiB:.2f} GiB ({parts}; + {self.estimate.transient / GiB:.2f} GiB of "
                    f"loss gradients) against {self.gpu_usable / GiB:.1f} GiB usable.")
        else:
            head = (f"This run does not fit the runtime's host RAM: about {self.host_bytes / GiB:.1f} GiB "
                    f"against {self.card.host_ram_bytes / GiB:.1f} GiB.")
        tips = []
        e = self.estimate
        if e.trainable > 0.5 * e.n_params:
            tips.append("train LoRA adapters instead of every weight (lesson 02), or QLoRA on a 4-bit base (lesson 04)")
        if e.optimizer > 0.25 * e.total:
            tips.append("use 8-bit AdamW (optimizer='adamw8bit'): 2 bytes of state per parameter instead of 8")
        if e.activations > 0.25 * e.total:
            tips.append("turn on gradient checkpointing, or halve batch_size and double grad_accum, "
                        "or shorten max_length")
        tips.append("budget it first with ftlab.memory.estimate (lesson 07)")
        return head + " Try: " + "; ".join(tips) + "."


def _meta_inputs(batch):
    """``batch`` as meta tensors of the same shapes and dtypes: (args, kwargs) for a forward."""
    def meta(t):
        return torch.empty(t.shape, dtype=t.dtype, device="meta") if torch.is_tensor(t) else t
    if torch.is_tensor(batch):
        return (meta(batch),), {}
    if isinstance(batch, Mapping):
        # no attention_mask: the FLOPs do not depend on it, and masking code reads its values
        keep = ("input_ids", "pixel_values")
        return (), {k: meta(v) for k, v in batch.items() if k in keep and torch.is_tensor(v)}
    return (meta(batch[0]),), {}


def forward_flops(model, batch, twin=None) -> float | None:
    """FLOPs of one forward pass on ``batch``, counted on the meta device (no memory, no compute).

    ``twin`` is the model at its real size (built by :func:`plan_run` from the published config);
    without one a small model is copied to the meta device as it is. None if it cannot be counted
    (a model over 1 GiB with no twin, or a forward the meta device does not support).
    """
    from torch.utils.flop_counter import FlopCounterMode

    if twin is None:
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        if size > GiB:
            return None
        try:
            twin = copy.deepcopy(_hf_model(model)).to("meta")
        except Exception:  # noqa: BLE001 - a model deepcopy cannot copy is simply not counted
            return None
    args, kwargs = _meta_inputs(batch)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            twin(*args, **kwargs)
    except Exception:  # noqa: BLE001 - some library versions cannot run on meta (transformers 5.2's rotary)
        return _token_flops(twin, kwargs.get("input_ids"))
    return float(counter.get_total_flops())


def _token_flops(twin, input_ids) -> float | None:
    """2 x weights x tokens: a transformer's forward without attention's own (few-percent) share,
    for when the meta forward cannot run. The input embedding is a lookup, not a matmul; tied to
    the output head it is counted once, as the head. None for inputs that are not token ids."""
    if input_ids is None or input_ids.dim() != 2:
        return None
    weights = sum(p.numel() for p in twin.parameters())  # a tied tensor once
    embed = twin.get_input_embeddings() if hasattr(twin, "get_input_embeddings") else None
    head = twin.get_output_embeddings() if hasattr(twin, "get_output_embeddings") else None
    if embed is not None and not (head is not None and head.weight is embed.weight):
        weights -= embed.weight.numel()
    return 2.0 * weights * input_ids.numel()


def plan_run(model, batch, *, optimizer, mixed_precision: str, gpu, micro_batches: int | None = None) -> RunPlan:
    """Price a training run at the model's real size on ``gpu`` (an ``ftlab.runtime.Card``).

    ``batch`` is the first micro-batch (its shape gives batch x sequence length);
    ``mixed_precision`` is accelerate's name ("no", "fp16", "bf16"); ``micro_batches``, the number
    of forward/backward passes the whole run makes (steps x grad_accum), gives its compute.
    """
    hf = _hf_model(model)
    real, name = _real_config(hf)
    twin = _meta_twin(hf, real)
    real_params = dict(twin.named_parameters()) if twin is not None else {}
    opt_name = _optimizer_name(optimizer)

    weights = grads = opt = trainable = n_params = 0
    lora_rank, lora_targets, quantized = 0, set(), False
    seen = set()
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        lora = _lora_part(pname)
        if lora is not None and lora[1] in real_params:
            part, owner = lora
            d_out, d_in = real_params[owner].shape
            r = p.shape[0] if part == "A" else p.shape[1]
            numel = r * d_in if part == "A" else d_out * r
            lora_rank = max(lora_rank, r)
            lora_targets.add(owner.split(".")[-2])
        else:
            twin_p = real_params.get(_clean(pname))
            numel = twin_p.numel() if twin_p is not None else (p.numel() * (2 if _is_4bit(p) else 1))
        if _is_4bit(p):
            quantized = True
            weights += nf4_bytes(numel)
        else:
            weights += numel * p.element_size()
        n_params += numel if lora is None else 0
        if p.requires_grad:
            trainable += numel
            grads += numel * p.element_size()
            opt += optimizer_state_bytes(numel, opt_name)

    if torch.is_tensor(batch):
        shape = tuple(batch.shape)
    elif isinstance(batch, Mapping):
        shape = tuple(batch.get("input_ids", batch.get("pixel_values", next(iter(batch.values())))).shape)
    else:
        shape = tuple(batch[0].shape)
    method = "qlora" if quantized and lora_rank else ("lora" if lora_rank else "full")
    half = mixed_precision in ("fp16", "bf16") or any(
        p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters() if not _is_4bit(p))
    checkpointing = bool(getattr(hf, "is_activation_checkpointing", None)
                         if hasattr(type(hf), "is_activation_checkpointing")
                         else getattr(hf, "is_gradient_checkpointing", False))
    acts = transient = 0
    modelled = False
    cfg = real if real is not None else getattr(hf, "config", None)
    try:
        llama_shape = shape_from_config(cfg) if cfg is not None and len(shape) == 2 else None
    except ValueError:
        llama_shape = None
    if llama_shape is not None and hasattr(hf, "lm_head"):
        b, seq = shape
        targets = tuple(sorted(lora_targets))
        acts, _ = activation_bytes(llama_shape, method, 2 if half else 4, targets, lora_rank or 1, b, seq,
                                   checkpointing)
        transient = 2 * 4 * b * (seq - 1) * llama_shape.vocab
        modelled = True
    est = MemoryEstimate(int(weights), int(grads), int(opt), int(acts), int(trainable), int(n_params),
                         transient=int(transient), label=name or type(hf).__name__)
    host = HOST_BASELINE + 2 * n_params
    train_flops = None
    if micro_batches:
        fwd = forward_flops(model, batch, twin)
        if fwd:
            passes = 2 + (trainable / n_params if n_params else 1) + (1 if checkpointing else 0)
            train_flops = fwd * passes * micro_batches
    setup = (f"{method}" + (f" r={lora_rank} on {','.join(sorted(lora_targets))}" if lora_rank else "")
             + f", {trainable / 1e6:.1f}M trainable, {mixed_precision if mixed_precision != 'no' else 'fp32'}, "
             f"{opt_name}, batch {' x '.join(map(str, shape[:2]))}"
             + (", gradient checkpointing" if checkpointing else ""))
    return RunPlan(name or type(hf).__name__, gpu, est, modelled, int(host), setup, train_flops=train_flops)
