"""The memory calculator: what a fine-tuning run needs on the GPU, part by part, before you run it.

Training memory has four parts:

- **weights**: every parameter, at its storage precision (2 bytes in fp16/bf16, 4 in fp32,
  ~0.52 in NF4 with its scales), plus fp32 master weights if the recipe keeps them;
- **gradients**: one per *trainable* parameter, in that parameter's dtype;
- **optimizer state**: AdamW keeps two fp32 moments per trainable parameter (8 bytes);
  bitsandbytes' 8-bit AdamW keeps them in 8 bits with a scale per 256 (~2.03 bytes); plain SGD
  none;
- **activations**: the tensors the forward pass saves for the backward pass. They grow with
  batch x sequence length, and gradient checkpointing trades most of them for a second forward.

:func:`estimate` predicts the four from a Hugging Face config (or model, or a bare parameter
count for back-of-envelope work); :func:`max_batch_size` and :func:`fit_table` ask it what fits
which card. This module is arithmetic only: it builds no model and needs neither transformers nor
a GPU (:func:`known_config` imports transformers for its config class when called).

The other side of the comparison is ``ftlab.measure``: it builds a model the way the lessons train
it, runs one real step and counts the same four parts (:func:`side_by_side` here prints the two).
``tests/test_memory.py`` holds them together.

The activation model is derived op by op from Hugging Face's Llama decoder layer with SDPA
attention (Llama, TinyLlama, Mistral and Qwen2 share it); ``docs/memory.md`` lists the terms.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from ftlab.lora import lora_params  # noqa: F401  (re-exported: the calculator's formula lives in ftlab.lora)
from ftlab.quant import bits_per_parameter

__all__ = ["GiB", "CUDA_CONTEXT", "GPUS", "ModelShape", "MemoryEstimate", "estimate", "lora_params", "nf4_bytes",
           "shape_from_config", "side_by_side", "METHODS", "OPTIMIZERS", "PRECISIONS", "LINEAR_NAMES",
           "KNOWN_MODELS", "known_config", "SHARDINGS", "shard", "activation_bytes", "optimizer_state_bytes",
           "resolve_targets", "check_choice", "RECIPES", "max_batch_size", "fit_table", "format_fit_table"]

GiB = 1024**3
# Memory a training process can allocate on each card: the card's total as nvidia-smi reports
# it, less ~0.5 GiB that the CUDA context and cuBLAS workspace take before PyTorch allocates.
CUDA_CONTEXT = int(0.5 * GiB)
GPUS = {
    "T4": 15360 * 1024**2,         # Colab's free GPU, "16 GB"
    "L4": 23034 * 1024**2,         # Colab's mid tier, "24 GB"
    "A100-40GB": 40960 * 1024**2,
    "A100-80GB": 81920 * 1024**2,
    "H100-80GB": 81559 * 1024**2,
}
METHODS = ("full", "lora", "qlora", "probe")
OPTIMIZERS = ("adamw", "adamw8bit", "sgd", "sgd_momentum")
PRECISIONS = {"fp32": 4, "fp16": 2, "bf16": 2}
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit state for tensors smaller than this
# What each data-parallel GPU keeps a 1/N shard of (lesson 10). ZeRO (Rajbhandari et al., 2020):
# stage 1 shards the optimizer state (fp32 master weights included), stage 2 also the gradients,
# stage 3 also the weights; FSDP's FULL_SHARD is stage 3, SHARD_GRAD_OP is stage 2.
SHARDINGS = {
    "none": (),                                   # one process, or DDP: every GPU holds everything
    "ddp": (),
    "zero1": ("optimizer",),
    "zero2": ("optimizer", "gradients"),
    "zero3": ("optimizer", "gradients", "weights"),
    "fsdp": ("optimizer", "gradients", "weights"),  # FSDP full_shard
}


def nf4_bytes(numel: int, double_quant: bool = True, blocksize: int = 64) -> int:
    """Bytes bitsandbytes stores for one NF4 tensor: packed 4-bit codes, and one absmax per block,
    fp32, or with double quantization 8-bit, plus an fp32 scale per 256 of those, the 256-entry
    fp32 code table of the 8-bit map and the fp32 mean (~4.127 bits per weight for big tensors)."""
    blocks = math.ceil(numel / blocksize)
    codes = math.ceil(numel / 2)
    if not double_quant:
        return codes + 4 * blocks
    return codes + blocks + 4 * math.ceil(blocks / 256) + 4 * 256 + 4


# -- model shapes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """The numbers the calculator needs from a Llama-family decoder."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_out, d_in) of each projection in one decoder layer."""
        d, q, kv, ff = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q),
                "gate_proj": (ff, d), "up_proj": (ff, d), "down_proj": (d, ff)}

    @property
    def layer_linear_params(self) -> int:
        return sum(o * i for o, i in self.linear_shapes().values())

    @property
    def n_params(self) -> int:
        embed = self.vocab * self.hidden
        norms = (2 * self.layers + 1) * self.hidden
        return self.layers * self.layer_linear_params + norms + embed * (1 if self.tied else 2)


def shape_from_config(config) -> ModelShape:
    """A :class:`ModelShape` from a Hugging Face config (Llama, Mistral, Qwen2, TinyLlama...)."""
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    missing = [a for a in needed if getattr(config, a, None) is None]
    if missing:
        raise ValueError(f"{type(config).__name__} lacks {missing}: the calculator's activation model is for "
                         "Llama-family decoders (Llama, TinyLlama, Mistral, Qwen2). Pass a bare parameter count "
                         "for weights, gradients and optimizer state only")
    heads = config.num_attention_heads
    return ModelShape(
        hidden=config.hidden_size, layers=config.num_hidden_layers, heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        intermediate=config.intermediate_size, vocab=config.vocab_size,
        tied=bool(getattr(config, "tie_word_embeddings", False)))


# Public architectures, from their published config.json numbers, to budget models that are never
# downloaded (lesson 07). Qwen2.5 adds biases to q/k/v (27,648 parameters in 0.5B), which the
# calculator, like LlamaConfig, leaves out.
KNOWN_MODELS: dict[str, dict] = {
    "Qwen2.5-0.5B": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         head_dim=64, intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "Llama-3.2-1B": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=64, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
    "TinyLlama-1.1B": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                           head_dim=64, intermediate_size=5632, vocab_size=32000, tie_word_embeddings=False),
    "Llama-3.2-3B": dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                         head_dim=128, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
    "Llama-2-7B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       head_dim=128, intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False),
    "Mistral-7B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=128, intermediate_size=14336, vocab_size=32000, tie_word_embeddings=False),
    "Llama-3-8B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=128, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False),
}


def known_config(name: str):
    """A ``transformers.LlamaConfig`` with the shapes of a public model in :data:`KNOWN_MODELS`.

    Nothing is downloaded: ``estimate(known_config("Llama-3-8B"), ...)`` budgets an 8B model
    on a laptop. (Build ``LlamaForCausalLM`` from it on the ``meta`` device to count parameters.)
    """
    from transformers import LlamaConfig

    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown model {name!r}; known: {list(KNOWN_MODELS)}. For another Llama-family "
                         "model pass its own config (AutoConfig.from_pretrained) to estimate()")
    return LlamaConfig(**KNOWN_MODELS[name])


# -- the estimate -------------------------------------------------------------------------------

@dataclass
class MemoryEstimate:
    """Bytes per part. ``.total`` is their sum; ``.fits("T4")`` compares with the card."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    trainable: int
    n_params: int
    assumptions: list[str] = field(default_factory=list)
    details: dict[str, int] = field(default_factory=dict)
    label: str = "estimate"
    transient: int = 0  # short-lived buffers on top of the total at the worst moment (see peak)
    world_size: int = 1  # data-parallel GPUs; the parts above are PER GPU (lesson 10)
    sharding: str = "none"  # a key of SHARDINGS: what those GPUs split between them

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def peak(self) -> int:
        """The total plus the largest short-lived buffers: the loss's fp32 gradients over the
        vocabulary in the backward pass (two b x (s-1) x V fp32 tensors). ``fits`` uses this."""
        return self.total + self.transient

    @property
    def static(self) -> int:
        return self.weights + self.gradients + self.optimizer

    def parts(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                "activations": self.activations}

    def fits(self, gpu: str | int = "T4", context: int = CUDA_CONTEXT) -> bool:
        """Whether the peak plus the CUDA context fits ``gpu`` (a name in GPUS, or bytes)."""
        return self.peak + context <= _capacity(gpu)

    def headroom(self, gpu: str | int = "T4", context: int = CUDA_CONTEXT) -> int:
        """Bytes left on ``gpu`` at the peak (negative: short by that much)."""
        return _capacity(gpu) - context - self.peak

    def table(self) -> str:
        rows = [f"{self.label}: {self.n_params / 1e9:.3g}B parameters, {self.trainable:,} trainable"
                + (f"; per GPU of {self.world_size}, {self.sharding}" if self.world_size > 1 else "")]
        for name, value in self.parts().items():
            rows.append(f"  {name:12} {value / GiB:8.3f} GiB")
        rows.append(f"  {'total':12} {self.total / GiB:8.3f} GiB")
        if self.transient:
            rows.append(f"  {'peak':12} {self.peak / GiB:8.3f} GiB  (+ loss gradients over the vocabulary)")
        fits = ", ".join(f"{g}: {'yes' if self.fits(g) else 'no'}" for g in ("T4", "L4", "A100-40GB"))
        rows.append(f"  fits (with {CUDA_CONTEXT / GiB:.1f} GiB CUDA context)  {fits}")
        rows += [f"  - {a}" for a in self.assumptions]
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()


def _capacity(gpu) -> int:
    if isinstance(gpu, str):
        if gpu not in GPUS:
            raise ValueError(f"unknown GPU {gpu!r}; use one of {list(GPUS)} or a number of bytes")
        return GPUS[gpu]
    if isinstance(gpu, (int, float)) and not isinstance(gpu, bool) and gpu > 0:
        return int(gpu)
    raise ValueError(f"gpu must be one of {list(GPUS)} or a positive number of bytes, got {gpu!r}")


def resolve_targets(target_modules) -> tuple[str, ...]:
    """LoRA's ``target_modules`` as a tuple of projection names ("all-linear": every one of LINEAR_NAMES)."""
    if target_modules in ("all-linear", "all_linear", "all"):
        return LINEAR_NAMES
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    targets = tuple(target_modules)
    unknown = [t for t in targets if t not in LINEAR_NAMES]
    if unknown or not targets:
        raise ValueError(f"target_modules {unknown or targets} not understood; use names from {LINEAR_NAMES} "
                         "or 'all-linear'")
    return targets


def optimizer_state_bytes(numel: int, optimizer: str) -> float:
    """Bytes of optimizer state for one trainable tensor of ``numel`` values (a name in OPTIMIZERS):
    AdamW two fp32 moments, 8-bit AdamW two 8-bit moments plus an fp32 scale per 256 (32-bit state
    below bitsandbytes' 4096-value threshold), SGD with momentum one fp32 buffer, plain SGD none."""
    if optimizer == "adamw":
        return 8 * numel
    if optimizer == "adamw8bit":
        return 8 * numel if numel < BNB_MIN_8BIT_SIZE else 2 * numel + 2 * 4 * math.ceil(numel / 256)
    if optimizer == "sgd_momentum":
        return 4 * numel
    return 0


def check_choice(name, value, options):
    """A ValueError that names the argument and its options unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}={value!r}; use one of {list(options)}")


def check_flag(name, value):
    """A ValueError unless ``value`` is True or False: a string such as "no" would read as on."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: pass True or False (a string or a number is not read as a switch)")


def estimate(model, method: str = "full", precision: str = "bf16", optimizer: str = "adamw", r: int = 16,
             target_modules=("q_proj", "v_proj"), batch_size: int = 1, seq_len: int = 512,
             grad_checkpointing: bool = False, master_weights: bool = False, double_quant: bool = True,
             trainable: int | None = None, adam_state: str = "fp32", world_size: int = 1,
             sharding: str = "none") -> MemoryEstimate:
    """Predict training memory. ``model`` is an HF config, an HF model, or a bare parameter count.

    - ``method``: "full" (every weight trains), "lora" (frozen base + LoRA on ``target_modules``
      with rank ``r``), "qlora" (the same on an NF4 base), "probe" (only the output head trains).
    - ``precision``: the dtype of the weights and activations, "fp32", "fp16" or "bf16" (for
      QLoRA, the compute dtype of the non-quantized parts). ``master_weights`` adds an fp32 copy of
      every trainable weight (mixed-precision full fine-tuning: 16 bytes/param instead of 12).
    - ``optimizer``: "adamw" (two fp32 moments), "adamw8bit" (bitsandbytes), "sgd", "sgd_momentum".
    - ``batch_size``, ``seq_len``, ``grad_checkpointing``: for the activations.
    - ``trainable``: with a bare count, how many parameters train under lora/qlora/probe
      (default 0.5% of the count for LoRA; pass a config for exact numbers).
    - ``adam_state``: "fp32" (the mixed-precision convention, and the seed's D2: 8 bytes per
      parameter) or "param" (the trainable parameter's own dtype, which is what
      ``torch.optim.AdamW`` does with bf16/fp16 weights: 4 bytes per parameter in half precision).

    Padding is not modelled: the activations assume unpadded (packed or equal-length) sequences.
    With a padded attention mask, SDPA may also keep the mask per layer.

    LoRA adapters are kept in fp32 (peft's default, ``autocast_adapter_dtype=True``), so they cost
    16 bytes per parameter with AdamW.

    ``world_size`` and ``sharding`` (lesson 10) make it the memory of ONE of ``world_size``
    data-parallel GPUs, each with its own micro-batch of ``batch_size``: see :func:`shard`.
    """
    for name, flag in (("grad_checkpointing", grad_checkpointing), ("master_weights", master_weights),
                       ("double_quant", double_quant)):
        check_flag(name, flag)
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer (data-parallel GPUs), got {world_size!r}")
    check_choice("sharding", sharding, SHARDINGS)
    one = _estimate_one(model, method, precision, optimizer, r, target_modules, batch_size, seq_len,
                        grad_checkpointing, master_weights, double_quant, trainable, adam_state)
    return shard(one, world_size, sharding, master=4 * one.trainable if master_weights and method == "full" else 0)


def shard(est: MemoryEstimate, world_size: int, sharding: str = "zero3", master: int = 0) -> MemoryEstimate:
    """Per-GPU memory when ``world_size`` data-parallel GPUs shard the parts that ``sharding`` names.

    The ZeRO paper's accounting, for mixed-precision AdamW (K = 12: fp32 master weights + two
    fp32 moments) and Psi parameters, per GPU::

        DDP      2Psi + 2Psi + K Psi            ZeRO-2   2Psi + (2Psi + K Psi) / N
        ZeRO-1   2Psi + 2Psi + K Psi / N        ZeRO-3   (2Psi + 2Psi + K Psi) / N   (= FSDP full_shard)

    ``master`` is the bytes of fp32 master weights inside ``est.weights``: ZeRO counts them as
    optimizer state, so they are sharded from stage 1 on. Each shard is rounded up to a byte.
    Activations are per GPU already (each GPU runs its own micro-batch) and are not sharded.
    Not modelled: the buffers stage 3 / FSDP all-gathers one layer at a time into (about one
    layer's weights, twice with prefetch), and communication buckets (DDP: 25 MiB each).
    """
    check_choice("sharding", sharding, SHARDINGS)
    parts = SHARDINGS[sharding]
    split = lambda x: -(-int(x) // world_size)  # noqa: E731  (ceil: a shard is never short)
    weights, grads, opt = est.weights, est.gradients, est.optimizer
    if "optimizer" in parts:  # the master copy moves from `weights` into the sharded optimizer state
        weights, opt = weights - master, split(opt + master)
    if "gradients" in parts:
        grads = split(grads)
    if "weights" in parts:
        weights = split(weights)
    result = MemoryEstimate(int(weights), int(grads), int(opt), est.activations, est.trainable, est.n_params,
                            list(est.assumptions), dict(est.details), est.label, est.transient,
                            world_size=world_size, sharding=sharding)
    if world_size > 1 or sharding not in ("none", "ddp"):
        what = ", ".join(parts) if parts else "nothing (each GPU holds a full replica)"
        result.assumptions.append(f"per GPU of {world_size} data-parallel GPUs, {sharding}: shards {what}"
                                  + ("; fp32 master weights counted as optimizer state" if master and parts else ""))
    return result


def _estimate_one(model, method, precision, optimizer, r, target_modules, batch_size, seq_len,
                  grad_checkpointing, master_weights, double_quant, trainable, adam_state) -> MemoryEstimate:
    check_choice("method", method, METHODS)
    check_choice("precision", precision, PRECISIONS)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("adam_state", adam_state, ("fp32", "param"))
    for name, v in (("batch_size", batch_size), ("seq_len", seq_len), ("r", r)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    e = PRECISIONS[precision]
    assumptions = [f"{precision} weights and activations; {optimizer} state per trainable parameter"]
    config = getattr(model, "config", model)
    if isinstance(model, numbers.Real) and not isinstance(model, bool):
        n = _parameter_count(model)
        _check_trainable(trainable, n)
        return _estimate_bare(n, method, e, optimizer, master_weights, double_quant, trainable, assumptions)
    if isinstance(model, (str, bool)) or model is None:
        raise ValueError(f"model={model!r}: pass a parameter count (7e9 for a 7B model), a Hugging Face config "
                         "(known_config('Llama-3.2-1B'), AutoConfig.from_pretrained(...)) or a model.")
    shape = shape_from_config(config)
    n = shape.n_params
    _check_trainable(trainable, n)
    targets = resolve_targets(target_modules) if method in ("lora", "qlora") else ()
    lin = shape.linear_shapes()
    lora_tensors = [n_ for t in targets for n_ in (r * lin[t][1], lin[t][0] * r)] * shape.layers
    for t in targets:
        if r > min(lin[t]):
            raise ValueError(f"r={r} exceeds min(d_in, d_out)={min(lin[t])} of {t}")
    head = shape.vocab * shape.hidden

    if method == "full":
        n_train = n
        weights = n * e + (4 * n if master_weights else 0)
        grads = n * e
        opt = optimizer_state_bytes(n, optimizer) if optimizer != "adamw8bit" else 2.0 * n + 8 * math.ceil(n / 256)
        if adam_state == "param" and optimizer in ("adamw", "sgd_momentum"):
            opt = opt * e // 4
    elif method == "probe":
        n_train = head  # the output head (vocab x hidden), tied or not
        weights, grads = n * e, n_train * 4
        opt = optimizer_state_bytes(n_train, optimizer)
        assumptions.append("probe: only the output head trains, in fp32")
    else:
        n_train = sum(lora_tensors)
        if method == "lora":
            weights = n * e
        else:
            quantized = shape.layers * shape.layer_linear_params
            bits = bits_per_parameter(64, double_quant)
            weights = shape.layers * sum(nf4_bytes(o * i, double_quant) for o, i in lin.values())
            weights += (n - quantized) * 4
            assumptions.append(f"NF4 base: {bits:.3f} bits per linear weight (blocksize 64, double quant "
                               f"{'on' if double_quant else 'off'}); embeddings, norms and head in fp32 "
                               "(prepare_model_for_kbit_training upcasts them)")
        weights += 4 * n_train
        grads = 4 * n_train
        opt = sum(optimizer_state_bytes(t, optimizer) for t in lora_tensors)
        assumptions.append(f"LoRA r={r} on {', '.join(targets)}: {n_train:,} fp32 parameters")
    acts, details = activation_bytes(shape, method, e, targets, r, batch_size, seq_len, grad_checkpointing)
    assumptions.append(f"activations: batch {batch_size} x {seq_len} tokens, SDPA attention, gradient checkpointing "
                       f"{'on' if grad_checkpointing else 'off'}")
    transient = 2 * 4 * batch_size * (seq_len - 1) * shape.vocab if method != "probe" else 0
    return MemoryEstimate(int(weights), int(grads), int(opt), int(acts), int(n_train), n, assumptions, details,
                          transient=transient)


def _parameter_count(model) -> int:
    """A bare parameter count as an int: a whole, finite number > 0 (7e9 is fine, 7.5 is not)."""
    value = float(model)
    if not math.isfinite(value) or value <= 0 or value != int(value):
        raise ValueError(f"model={model!r}: a parameter count is a whole, positive number (e.g. 7e9 or 1_100_000_000), "
                         "or pass a Hugging Face config for the exact count.")
    return int(value)


def _check_trainable(trainable, n: int) -> None:
    if trainable is None:
        return
    if isinstance(trainable, bool) or not isinstance(trainable, numbers.Integral) or not 0 <= trainable <= n:
        raise ValueError(f"trainable={trainable!r}: the number of parameters that train, a whole number from 0 "
                         f"to the model's {n:,} parameters (or None: 0.5% of them for LoRA).")


def _estimate_bare(n, method, e, optimizer, master_weights, double_quant, trainable, assumptions):
    assumptions.append("a bare parameter count: no activations (pass a config for them)")
    if method == "full":
        weights = n * e + (4 * n if master_weights else 0)
        n_train, grads = n, n * e
        opt = optimizer_state_bytes(n, optimizer) if optimizer != "adamw8bit" else 2.0 * n + 8 * math.ceil(n / 256)
        if master_weights:
            assumptions.append("fp32 master weights: +4 bytes per parameter")
    else:
        n_train = trainable if trainable is not None else (int(0.005 * n) if method != "probe" else 0)
        if method == "qlora":
            bits = bits_per_parameter(64, double_quant)
            weights = int(n * bits / 8)
            assumptions.append(f"every weight in NF4 at {bits:.3f} bits (a bare count cannot tell linears "
                               "from embeddings)")
        else:
            weights = n * e
        weights += 4 * n_train
        grads, opt = 4 * n_train, optimizer_state_bytes(n_train, optimizer)
        assumptions.append(f"{n_train:,} trainable fp32 parameters")
    return MemoryEstimate(int(weights), int(grads), int(opt), 0, int(n_train), n, assumptions)


def activation_bytes(s: ModelShape, method, e, targets, r, b, seq, checkpointing):
    """Bytes a Llama-family decoder saves for backward, and those bytes term by term (a dict).

    ``s`` the model's shape, ``method`` one of METHODS, ``e`` bytes per activation value (2 or 4),
    ``targets`` LoRA's projection names, ``r`` its rank, ``b`` x ``seq`` the micro-batch,
    ``checkpointing`` gradient checkpointing. docs/memory.md derives each term from the ops.
    """
    T = b * seq                          # tokens in the micro-batch
    d, q, kv, ff, h = s.hidden, s.q_dim, s.kv_dim, s.intermediate, s.heads
    frozen = method in ("lora", "qlora")
    if method == "qlora":
        # The QLoRA recipe's prepare_model_for_kbit_training upcasts embeddings and norms to
        # fp32, and a bitsandbytes 4-bit layer returns its input's dtype: so every activation is
        # fp32, whatever the compute dtype (the matmuls themselves run in the compute dtype).
        e = 4
    er = e  # the residual stream's dtype

    def lora_inputs(names, d_in, in_bytes, already_saved=False):
        """LoRA's A saves its input, B saves A's output (r values, fp32). Adapters are fp32: an
        fp32 input is shared by every adapter reading it; any other is copied to fp32 per adapter."""
        hits = [t for t in targets if t in names]
        if not hits:
            return 0
        if in_bytes == 4:
            inputs = 0 if already_saved else 4 * d_in
        else:
            inputs = 4 * d_in * len(hits)
        return inputs + 4 * r * len(hits)

    if method == "probe":
        layer = first = 0
    elif frozen:
        norm = 4 * d + 4                        # the fp32 input (or its fp32 copy) and rsqrt
        attn = e * (2 * q + 2 * kv) + 4 * h     # SDPA keeps q, k, v, its output and the logsumexp
        mlp = e * 3 * ff                        # gate out, silu(gate), up out (down_proj is frozen)
        adapters = (lora_inputs(("q_proj", "k_proj", "v_proj"), d, er)
                    + lora_inputs(("gate_proj", "up_proj"), d, er)
                    + lora_inputs(("o_proj",), q, e, already_saved=True)   # = SDPA's output
                    + lora_inputs(("down_proj",), ff, e))
        layer = 2 * norm + attn + mlp + adapters
        # layer 0's input needs no gradient (the embeddings are frozen), so its first norm saves
        # nothing; with gradient checkpointing the recipe makes the embeddings' output require grad
        first = layer if checkpointing else layer - norm
    else:
        norm = 4 * d + 2 * e * d + 4            # fp32 input, normalised x, rsqrt, the norm's output
        layer = 2 * norm + e * (2 * q + 2 * kv) + 4 * h + 4 * e * ff
        first = layer
    rope = 2 * seq * s.head_dim * e            # cos and sin, shared by all layers
    logits = b * (seq - 1) * (4 * s.vocab + 8)  # the loss: fp32 log-softmax + int64 targets (seq-1 positions)
    if method == "full":
        tail = T * (8 + 4 * d + 2 * e * d + 4)  # token ids, final norm, lm_head input
    elif method == "probe":
        tail, rope = T * e * d, 0               # the head's input
    else:
        tail = T * (4 * d + 4)                  # final norm (frozen)
    if checkpointing and method != "probe":
        kept = s.layers * T * er * d            # each layer's input, kept for the recomputation
        # + one layer recomputed in the backward pass (its input is already counted when the
        # first norm saves the input itself, i.e. when the stream is fp32)
        layers_bytes = kept + T * layer - (T * 4 * d if er == 4 else 0)
    else:
        layers_bytes = T * (first + (s.layers - 1) * layer)
    details = {"layers": int(layers_bytes), "rope": int(rope), "logits": int(logits), "embed+final": int(tail)}
    return layers_bytes + rope + logits + tail, details


# -- what fits where (lesson 07) -------------------------------------------------------------------

# The three recipes of lesson 07's "what fits where" table. Full fine-tuning is mixed precision:
# 16-bit weights for the matmuls, an fp32 master copy for the update, AdamW (16 bytes/param).
# LoRA and QLoRA put r = 16 adapters on every linear projection; QLoRA adds the NF4 base and the
# paged 8-bit AdamW of the QLoRA paper. bf16 is fp16 on a T4: the same bytes.
RECIPES = {
    "full": dict(method="full", precision="bf16", optimizer="adamw", master_weights=True),
    "lora": dict(method="lora", precision="bf16", optimizer="adamw", r=16, target_modules="all-linear"),
    "qlora": dict(method="qlora", precision="bf16", optimizer="adamw8bit", r=16, target_modules="all-linear"),
}
FIT_GPUS = ("T4", "L4", "A100-40GB")  # the cards lesson 07's table and explorer compare


def _config(model):
    """A name in KNOWN_MODELS as its config; a config or a model as it is."""
    return known_config(model) if isinstance(model, str) else model


def max_batch_size(model, gpu="T4", limit: int = 4096, **kwargs) -> int:
    """The largest batch size whose :func:`estimate` fits ``gpu`` (0: not even one).

    ``model`` is a name in ``KNOWN_MODELS``, a config or a model; ``kwargs`` go to ``estimate``
    (``batch_size`` excepted). Memory grows with the batch, so a doubling then a bisection finds it.
    """
    config = _config(model)
    kwargs.pop("batch_size", None)

    def fits(b):
        return estimate(config, batch_size=b, **kwargs).fits(gpu)

    if not fits(1):
        return 0
    low = 1
    while low < limit and fits(min(2 * low, limit)):
        low = min(2 * low, limit)
    high = min(2 * low, limit + 1)  # fits(low), not fits(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def fit_table(models, recipes=None, gpus=FIT_GPUS, batch_size: int = 4, seq_len: int = 512) -> list[dict]:
    """Lesson 07's "what fits where": one row per (model, recipe), each estimated without and with
    gradient checkpointing at ``batch_size`` x ``seq_len``. ``recipes`` default to :data:`RECIPES`.

    Each row has ``model``, ``params_b`` (billions), ``method``, ``total_gib`` and
    ``total_gib_ckpt``, and ``fits`` mapping each GPU to "yes" (fits as is), "ckpt" (fits only
    with gradient checkpointing) or "no".
    """
    rows = []
    for name in models:
        config = _config(name)
        for method, recipe in (recipes or RECIPES).items():
            plain, ckpt = (estimate(config, batch_size=batch_size, seq_len=seq_len, grad_checkpointing=c, **recipe)
                           for c in (False, True))
            rows.append({"model": name if isinstance(name, str) else type(config).__name__,
                         "params_b": plain.n_params / 1e9, "method": method,
                         "total_gib": plain.total / GiB, "total_gib_ckpt": ckpt.total / GiB,
                         "fits": {g: "yes" if plain.fits(g) else "ckpt" if ckpt.fits(g) else "no" for g in gpus}})
    return rows


def format_fit_table(rows: list[dict]) -> str:
    """:func:`fit_table`'s rows as a fixed-width text table."""
    gpus = list(rows[0]["fits"]) if rows else []
    head = f"{'model':15} {'params':>7} {'method':7} {'GiB':>6} {'ckpt GiB':>8}  " + "".join(f"{g:>10}" for g in gpus)
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['model']:15} {row['params_b']:6.2f}B {row['method']:7} {row['total_gib']:6.1f} "
                     f"{row['total_gib_ckpt']:8.1f}  " + "".join(f"{row['fits'][g]:>10}" for g in gpus))
    return "\n".join(lines)


# -- reading an estimate --------------------------------------------------------------------------

def side_by_side(predicted: MemoryEstimate, measured: MemoryEstimate) -> str:
    """Predicted vs measured, part by part, in MiB, with the ratio."""
    rows = [f"{'part':12} {'predicted MiB':>14} {'measured MiB':>13} {'ratio':>6}"]
    for part in (*predicted.parts(), "total"):
        p, m = getattr(predicted, part), getattr(measured, part)
        ratio = f"{p / m:6.3f}" if m else "     -"
        rows.append(f"{part:12} {p / 2**20:14.2f} {m / 2**20:13.2f} {ratio}")
    return "\n".join(rows)
