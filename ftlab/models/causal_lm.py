"""The causal language model of both scales, and how it is loaded (lessons 00, 02, 04-07, 09).

tiny: the micro-world Llama in ``data/lm`` (about 0.9M parameters, built by
``scripts/build_language_world.py``). full: TinyLlama-1.1B from the hub, or Llama-3.2-1B with a
token. :func:`quantization_config` and :func:`keep_bnb_cpu_training_layout` are the 4-bit side
of lesson 04.
"""

from __future__ import annotations

import os

import torch

from ftlab.runtime import amp_dtype, data_path, in_colab, resolve_profile

# Ungated, Llama architecture, ~1.1B parameters: fits a T4 with QLoRA and needs no token.
DEFAULT_CAUSAL_LM = "TinyLlama/TinyLlama_v1.1"
# The option students often want; gated, so it needs an accepted licence and a token.
GATED_CAUSAL_LM = "meta-llama/Llama-3.2-1B"
QUANTIZATIONS = (None, "nf4", "int8")



def tiny_lm_path():
    """Folder of the shipped tiny LM and its tokenizer (``data/lm``); a FileNotFoundError names
    the build script if it is missing."""
    return data_path("lm")


def hub_token() -> str | None:
    """The Hugging Face token from ``HF_TOKEN`` or Colab's secrets; never printed or saved."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token or not in_colab():
        return token
    try:  # Colab: the key icon in the left bar, secret name HF_TOKEN
        from google.colab import userdata  # type: ignore[import-not-found]

        return userdata.get("HF_TOKEN")
    except Exception:
        return None


def quantization_config(quantization: str | None, compute_dtype: torch.dtype | None = None):
    """A ``BitsAndBytesConfig`` for ``"nf4"`` (QLoRA's recipe) or ``"int8"``; None for no quantization."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}; use one of {QUANTIZATIONS}.")
    if quantization is None:
        return None
    from ftlab.quant import require_bitsandbytes

    require_bitsandbytes(f"quantization={quantization!r}")
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # the normal-float grid of lesson 04
        bnb_4bit_use_double_quant=True,  # quantize the per-block scales too
        bnb_4bit_compute_dtype=compute_dtype or amp_dtype(),
    )


def load_causal_lm(profile: str | None = None, quantization: str | None = None,
                   name: str | None = None, dtype: torch.dtype | None = None):
    """Return ``(model, tokenizer)``: a Hugging Face causal LM and its tokenizer.

    tiny: the micro-world Llama from ``data/lm`` (pretrained on the world's facts, addition and
    opposites; never saw a question). full: ``name`` or :data:`DEFAULT_CAUSAL_LM` from the hub;
    pass ``name=GATED_CAUSAL_LM`` for Llama-3.2-1B with ``HF_TOKEN`` set.
    ``quantization="nf4"`` loads the weights in 4-bit with bitsandbytes (QLoRA, lesson 04).
    The tokenizer always has a pad token and a chat template.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prof = resolve_profile(profile)
    qconfig = quantization_config(quantization)
    if prof == "tiny":
        if name is not None:
            raise ValueError(f"name={name!r} only applies to the full profile; the tiny profile "
                             "always loads the micro-world LM.")
        source, token = tiny_lm_path(), None
    else:
        source, token = name or DEFAULT_CAUSAL_LM, hub_token()
    kwargs = {"quantization_config": qconfig} if qconfig is not None else {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    elif prof == "full" and qconfig is None:
        kwargs["dtype"] = amp_dtype()  # 1B in fp32 is 4.4 GB; half precision halves it
    if prof == "full" and torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    tokenizer = AutoTokenizer.from_pretrained(source, token=token)
    model = AutoModelForCausalLM.from_pretrained(source, token=token, **kwargs)
    if tokenizer.pad_token is None:  # Llama tokenizers ship without one; padding uses EOS
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:  # base models: use the micro-world's, so lessons format alike
        tokenizer.chat_template = AutoTokenizer.from_pretrained(tiny_lm_path()).chat_template
    # Llama-3's template ends a turn with <|eot_id|> while its EOS is <|end_of_text|>: make every
    # generate() stop at either, or a chat answer never ends.
    from ftlab.chat import turn_end_ids

    stops = turn_end_ids(tokenizer)
    if getattr(model, "generation_config", None) is not None and len(stops) > 1:
        model.generation_config.eos_token_id = stops
    if prof == "tiny" and qconfig is None:
        model.to(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if quantization == "nf4":
        keep_bnb_cpu_training_layout(model)
    return model, tokenizer


def keep_bnb_cpu_training_layout(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    bitsandbytes 0.50 repacks a ``Linear4bit``'s weight into another layout the first time the
    layer runs in eval mode without gradients on a CPU with AVX512-BF16 (as ``generate`` does),
    and does not undo it when training resumes: the next backward pass then computes wrong input
    gradients (measured: the gradient norm of a QLoRA step drops from 184 to 22 after one
    ``generate``), and a short QLoRA run stops learning. Turning the fast path off keeps the
    layout training needs; GPUs are not affected. Returns how many layers were changed.
    """
    changed = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            if getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False):
                from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, module.weight.quant_state)
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed

