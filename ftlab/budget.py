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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ftlab.memory import CUDA_CONTEXT, GiB, MemoryEstimate, _activations, _adam_bytes, nf4_bytes, shape_from_config

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
        return (f"Memory plan: {self.model_name} at real size, {self.setup}: GPU peak "
                f"{self.gpu_peak / GiB:.2f} GiB of {self.card.name}'s {self.gpu_usable / GiB:.1f} GiB usable{acts}; "
                f"host {self.host_bytes / GiB:.1f} GiB of {self.card.host_ram_bytes / GiB:.1f} GiB")

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


def plan_run(model, batch, *, optimizer, mixed_precision: str, gpu) -> RunPlan:
    """Price a training run at the model's real size on ``gpu`` (an ``ftlab.runtime.Card``).

    ``batch`` is the first micro-batch (its shape gives batch x sequence length);
    ``mixed_precision`` is accelerate's name ("no", "fp16", "bf16").
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
            opt += _adam_bytes(numel, opt_name)

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
        acts, _ = _activations(llama_shape, method, 2 if half else 4, targets, lora_rank or 1, b, seq, checkpointing)
        transient = 2 * 4 * b * (seq - 1) * llama_shape.vocab
        modelled = True
    est = MemoryEstimate(int(weights), int(grads), int(opt), int(acts), int(trainable), int(n_params),
                         transient=int(transient), label=name or type(hf).__name__)
    host = HOST_BASELINE + 2 * n_params
    setup = (f"{method}" + (f" r={lora_rank} on {','.join(sorted(lora_targets))}" if lora_rank else "")
             + f", {trainable / 1e6:.1f}M trainable, {mixed_precision if mixed_precision != 'no' else 'fp32'}, "
             f"{opt_name}, batch {' x '.join(map(str, shape[:2]))}"
             + (", gradient checkpointing" if checkpointing else ""))
    return RunPlan(name or type(hf).__name__, gpu, est, modelled, int(host), setup)
