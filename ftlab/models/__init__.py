"""Loaders for every model the course uses, at both scales.

Each loader returns the same *types* in both profiles, so a lesson's code after its config
cell is the code a student runs on the real model:

| loader | module | tiny (offline, CPU) | full (hub, GPU) |
|---|---|---|---|
| :func:`load_causal_lm` | :mod:`ftlab.models.causal_lm` | the micro-world Llama (~0.9M params) | TinyLlama-1.1B (Llama-3.2-1B with a token) |
| :func:`load_vision_backbone` | :mod:`ftlab.models.vision` | the micro-world CNN | torchvision ResNet-50 |
| :func:`load_clip` | :mod:`ftlab.models.vision` | the micro-world CLIP | openai/clip-vit-base-patch32 |
| :func:`load_text_encoder` | :mod:`ftlab.models.text` | the micro-world DistilBERT | distilbert-base-uncased |

:func:`count_parameters` and :func:`model_device` (:mod:`ftlab.models.info`) work on any of them.
Importing this package imports no torchvision and no transformers: each loader imports what it
needs when it is called.
"""

from ftlab.models.causal_lm import (DEFAULT_CAUSAL_LM, GATED_CAUSAL_LM, QUANTIZATIONS, hub_token,
                                    keep_bnb_cpu_training_layout, load_causal_lm, quantization_config,
                                    tiny_lm_path)
from ftlab.models.info import count_parameters, model_device
from ftlab.models.text import FULL_TEXT_ENCODER, load_text_encoder, tiny_text_encoder_path
from ftlab.models.vision import FULL_CLIP, RESNETS, load_clip, load_vision_backbone

__all__ = ["DEFAULT_CAUSAL_LM", "GATED_CAUSAL_LM", "QUANTIZATIONS", "FULL_CLIP", "FULL_TEXT_ENCODER",
           "RESNETS", "count_parameters", "hub_token", "keep_bnb_cpu_training_layout", "load_causal_lm",
           "load_clip", "load_text_encoder", "load_vision_backbone", "model_device",
           "quantization_config", "tiny_lm_path", "tiny_text_encoder_path"]
