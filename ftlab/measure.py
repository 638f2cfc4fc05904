"""Measuring training memory: build a model the way the lessons train it, take one real step, and
read off what each part of memory holds (lesson 07, docs/memory.md).

``ftlab.memory`` is the calculator (the arithmetic, from a config); this module is the other side of
the comparison:

- :func:`training_model` loads a causal LM set up for full fine-tuning, LoRA or QLoRA, and
  :func:`random_qlora_model` builds the QLoRA recipe on random weights in a real architecture
  (nothing downloaded);
- :func:`make_optimizer` builds the optimizer the calculator's ``optimizer`` names;
- :func:`measure` runs one training step and counts weights, gradients, optimizer state and the
  activations saved for backward (``torch.autograd.graph.saved_tensors_hooks``, so it works on a
  CPU; on a GPU it also reads ``torch.cuda.max_memory_allocated``);
- :func:`measure_setup` does all of it for one of :data:`VALIDATION_SETUPS` and returns the
  calculator's prediction next to the measurement (``memory.side_by_side`` prints the two).

``tests/test_memory.py`` and ``bench/memory_calculator.py`` hold the calculator to these numbers.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager

import torch
import torch.nn as nn

from ftlab.budget import plan_run
from ftlab.memory import (KNOWN_MODELS, LINEAR_NAMES, OPTIMIZERS, MemoryEstimate, check_choice, estimate,
                          resolve_targets)
from ftlab.models import keep_bnb_cpu_training_layout
from ftlab.quant import require_bitsandbytes
from ftlab.runtime import card
from ftlab.train import causal_lm_loss

__all__ = ["param_bytes", "measure", "training_model", "random_qlora_model", "LLAMA_32_1B", "make_optimizer",
           "VALIDATION_SETUPS", "measure_setup"]


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def param_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters (and float matrix buffers) hold, bitsandbytes' 4-bit scales included."""
    total = 0
    for p in model.parameters():
        total += _tensor_bytes(p)
        state = getattr(p, "quant_state", None)  # bitsandbytes 4-bit: the scales live here
        if state is not None:
            total += _tensor_bytes(state.absmax)
            nested = getattr(state, "state2", None)
            if nested is not None:
                total += _tensor_bytes(nested.absmax) + _tensor_bytes(nested.code) + 4
    return total + sum(_tensor_bytes(b) for b in model.buffers() if b.is_floating_point() and b.dim() > 1)


@contextmanager
def _saved_tensor_counter(exclude: set[int]):
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in exclude:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def measure(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, loss_fn=None) -> MemoryEstimate:
    """One real training step (forward, backward, optimizer step), measured part by part.

    Weights, gradients and optimizer state are counted tensors. Activations are the unique bytes
    of every tensor the forward saved for backward (``saved_tensors_hooks``), parameters excluded.
    With gradient checkpointing, they are the layer inputs kept for recomputation, plus the
    bytes one layer saves when it is recomputed in the backward pass. On CUDA, ``details`` also
    has ``max_memory_allocated`` for the step.
    """
    loss_fn = loss_fn or causal_lm_loss
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    layers = _decoder_layers(model)
    checkpointing = bool(getattr(model, "is_gradient_checkpointing", False)) and layers is not None
    kept: dict[int, int] = {}
    first_call: list = []
    if checkpointing:
        originals = [layer._gradient_checkpointing_func for layer in layers]
        for layer, orig in zip(layers, originals):
            def wrapped(fn, *args, _orig=orig, **kwargs):
                for a in list(args) + list(kwargs.values()):
                    if isinstance(a, torch.Tensor) and a.is_floating_point():
                        st = a.untyped_storage()
                        if st.data_ptr() not in params:
                            kept[st.data_ptr()] = st.nbytes()
                if not first_call:
                    first_call.append((fn, args, kwargs))
                return _orig(fn, *args, **kwargs)
            layer._gradient_checkpointing_func = wrapped
    cuda = torch.cuda.is_available() and next(model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    optimizer.zero_grad(set_to_none=True)
    try:
        with _saved_tensor_counter(params) as seen:
            loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()}: nothing to measure")
        outside = sum(seen.values())
        recompute = 0
        if checkpointing and first_call:
            fn, args, kwargs = first_call[0]
            with _saved_tensor_counter(params | set(kept)) as again:
                fn(*args, **kwargs)  # one layer, as the backward pass recomputes it
            recompute = sum(again.values())
        loss.backward()
        optimizer.step()
    finally:
        if checkpointing:
            for layer, orig in zip(layers, originals):
                layer._gradient_checkpointing_func = orig
    only_kept = sum(v for k, v in kept.items() if k not in seen)  # the hooks usually saw them already
    activations = outside + only_kept + recompute
    grads = sum(_tensor_bytes(p.grad) for p in model.parameters() if p.grad is not None)
    states: dict[int, int] = {}  # by storage: bitsandbytes shares its quantization maps between tensors
    for state in optimizer.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                states[v.untyped_storage().data_ptr()] = _tensor_bytes(v)
    opt = sum(states.values())
    n = sum(p.numel() * (2 if getattr(p, "quant_state", None) is not None else 1) for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    details = {"saved outside checkpoints": outside, "checkpointed layer inputs": sum(kept.values()),
               "one layer recomputed": recompute}
    if cuda:
        torch.cuda.synchronize()
        details["max_memory_allocated"] = torch.cuda.max_memory_allocated()
        details["allocated before the step"] = before
    optimizer.zero_grad(set_to_none=True)
    return MemoryEstimate(param_bytes(model), grads, opt, activations, n_train, n,
                          ["measured on one training step"], details, label="measured")


def _decoder_layers(model: nn.Module):
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and hasattr(layers[0], "_gradient_checkpointing_func"):
            return list(layers)
    return None


def training_model(path, method: str = "full", precision: str = "fp32", r: int = 16,
                   target_modules=("q_proj", "v_proj"), grad_checkpointing: bool = False):
    """Load a causal LM from ``path`` (a local folder or hub id) set up for ``method`` the way
    the lessons train it: full (every weight), lora (peft on ``target_modules``), qlora (NF4 with
    double quantization + ``prepare_model_for_kbit_training`` + peft), with SDPA attention and,
    optionally, gradient checkpointing. The calculator's activation model describes this recipe."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    check_choice("method", method, ("full", "lora", "qlora"))
    check_choice("precision", precision, ("fp32", "bf16", "fp16"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    kwargs = {}
    if method == "qlora":
        require_bitsandbytes("method='qlora' (the 4-bit NF4 base)")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa", **kwargs)
    if method == "qlora":
        keep_bnb_cpu_training_layout(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=grad_checkpointing)
    if method in ("lora", "qlora"):
        targets = list(resolve_targets(target_modules))
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    if grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method in ("lora", "qlora"):
            model.enable_input_require_grads()  # so the checkpointed layers see an input that needs grad
    return model


LLAMA_32_1B = KNOWN_MODELS["Llama-3.2-1B"]
"""Llama-3.2-1B's architecture numbers (from its public config.json), to build it without a download."""


def random_qlora_model(config=None, device: str = "cpu", r: int = 16, compute_dtype=torch.bfloat16, seed: int = 0):
    """The QLoRA recipe on random weights in a real architecture (default Llama-3.2-1B): every
    decoder linear quantized to NF4 (double quantization) by bitsandbytes, exactly as
    transformers does when it loads a checkpoint; then prepare_model_for_kbit_training and peft
    LoRA on all linears. Nothing is downloaded, so memory figures can be checked offline."""
    bnb = require_bitsandbytes("measure.random_qlora_model (bitsandbytes NF4 layers)")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import LlamaConfig, LlamaForCausalLM

    config = config or LlamaConfig(**LLAMA_32_1B)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device=device).to(compute_dtype)
    model.tie_weights()  # to_empty gives the head its own storage; tie it back as from_pretrained does
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)  # norm weights
            elif "embed" in name:
                p.normal_(0, 0.02, generator=gen)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and name != "lm_head":
                w = torch.randn(child.out_features, child.in_features, generator=gen, device=device) * 0.02
                layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=False,
                                          compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True,
                                          device="meta")
                layer.weight = bnb.nn.Params4bit(w.to(compute_dtype).cpu() if device == "cpu" else w.to(compute_dtype),
                                                 requires_grad=False, quant_type="nf4", blocksize=64,
                                                 compress_statistics=True)
                setattr(module, name, layer.to(device))  # quantizes
                del w
    model.is_loaded_in_4bit = True
    keep_bnb_cpu_training_layout(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear"))


def make_optimizer(name: str, params, lr: float = 1e-4) -> torch.optim.Optimizer:
    """The optimizer the calculator's ``optimizer`` names, over the trainable ``params``:
    "adamw", "adamw8bit" / "paged_adamw_8bit" (bitsandbytes: ``pip install 'ftlab[quant]'``),
    "sgd", "sgd_momentum"."""
    check_choice("optimizer", name, OPTIMIZERS + ("paged_adamw_8bit",))
    params = [p for p in params if p.requires_grad]
    if name in ("adamw8bit", "paged_adamw_8bit"):
        bnb = require_bitsandbytes(f"optimizer={name!r} (bitsandbytes' 8-bit AdamW)")
        return (bnb.optim.PagedAdamW8bit if name.startswith("paged") else bnb.optim.AdamW8bit)(params, lr=lr)
    if name in ("sgd", "sgd_momentum"):
        return torch.optim.SGD(params, lr=lr, momentum=0.9 if name == "sgd_momentum" else 0.0)
    return torch.optim.AdamW(params, lr=lr)


# The set-ups bench/memory_calculator.py and tests/test_memory.py hold the calculator to:
# method, precision, gradient checkpointing, batch, sequence length, LoRA targets, optimizer.
VALIDATION_SETUPS = (
    ("full", "fp32", False, 2, 64, (), "adamw"),
    ("full", "fp32", True, 2, 96, (), "adamw"),
    ("full", "bf16", False, 4, 32, (), "sgd"),
    ("lora", "fp32", False, 2, 128, ("q_proj", "v_proj"), "adamw"),
    ("lora", "bf16", False, 2, 64, LINEAR_NAMES, "adamw"),
    ("lora", "fp32", True, 4, 64, ("q_proj", "v_proj"), "adamw8bit"),
    ("qlora", "bf16", False, 2, 64, ("q_proj", "v_proj"), "adamw"),
    ("qlora", "bf16", True, 2, 128, LINEAR_NAMES, "adamw8bit"),
    ("qlora", "fp32", False, 4, 32, ("q_proj", "o_proj", "down_proj"), "adamw"),
)


def measure_setup(path, method: str, precision: str, grad_checkpointing: bool, batch_size: int, seq_len: int,
                  target_modules=(), optimizer: str = "adamw", r: int = 16, seed: int = 1, device=None):
    """``(predicted, measured)`` for one set-up: the model at ``path`` loaded with
    :func:`training_model`, one step on an unpadded batch of random tokens, and :func:`estimate`
    for the same set-up (optimizer state in the parameters' dtype, as torch keeps it)."""
    targets = target_modules or "q_proj"
    model = training_model(path, method, precision, r, targets, grad_checkpointing)
    if device is not None:
        model = model.to(device)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch_size, seq_len), generator=gen)
    ids = ids.to(next(model.parameters()).device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    opt = make_optimizer(optimizer, model.parameters())
    _plan_step(model, batch, opt, precision)
    measured = measure(model, batch, opt)
    predicted = estimate(model.config, method=method, precision=precision, optimizer=optimizer, r=r,
                         target_modules=targets, batch_size=batch_size, seq_len=seq_len,
                         grad_checkpointing=grad_checkpointing, adam_state="param")
    predicted.label = "predicted"
    del model, opt, batch, ids
    if torch.cuda.is_available():  # hand the step's memory back before the next set-up is measured
        gc.collect()
        torch.cuda.empty_cache()
    return predicted, measured


def _plan_step(model, batch, optimizer, precision: str):
    """On a GPU (real, or simulated with ``FTLAB_SIMULATE_GPU``), the memory plan of the step about
    to be measured, at the model's real size, as ``ftlab.train`` prints it before a run; stop with
    the calculator's advice if it cannot fit the card. On a CPU, nothing. Returns the plan or None."""
    gpu = card()
    if gpu is None:
        return None
    plan = plan_run(model, batch, optimizer=optimizer, mixed_precision="no" if precision == "fp32" else precision,
                    gpu=gpu)
    print(plan.line())
    if not plan.fits:
        raise MemoryError(plan.advice())
    return plan
