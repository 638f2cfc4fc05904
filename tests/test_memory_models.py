"""ftlab.memory.KNOWN_MODELS: the public architectures lesson 07 budgets, built from their numbers.

Each config must give the parameter count its model card publishes, both through the
calculator's own count and through a real ``LlamaForCausalLM`` built on the meta device (shapes
only, no memory, nothing downloaded).
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import memory

PUBLISHED = {  # parameters on each model card (Qwen2.5's q/k/v biases left out: 27,648)
    "Qwen2.5-0.5B": 494_032_768 - 27_648,
    "Llama-3.2-1B": 1_235_814_400,
    "TinyLlama-1.1B": 1_100_048_384,
    "Llama-3.2-3B": 3_212_749_824,
    "Llama-2-7B": 6_738_415_616,
    "Mistral-7B": 7_241_732_096,
    "Llama-3-8B": 8_030_261_248,
}


def test_known_models_are_the_published_ones_from_half_a_billion_to_eight():
    assert list(memory.KNOWN_MODELS) == list(PUBLISHED)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_known_config_has_the_published_parameter_count(name):
    config = memory.known_config(name)
    assert isinstance(config, LlamaConfig)
    assert memory.shape_from_config(config).n_params == PUBLISHED[name]
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]


def test_llama_3_2_1b_matches_the_shapes_the_memory_tests_use():
    shape = memory.shape_from_config(memory.known_config("Llama-3.2-1B"))
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.head_dim) == (2048, 16, 32, 8, 64)
    assert (shape.intermediate, shape.vocab, shape.tied) == (8192, 128256, True)


def test_known_config_is_a_fresh_config_each_time():
    a = memory.known_config("Llama-3-8B")
    a.num_hidden_layers = 1
    assert memory.known_config("Llama-3-8B").num_hidden_layers == 32


def test_an_unknown_model_is_a_clear_error_that_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'Llama-4'.*Llama-3-8B"):
        memory.known_config("Llama-4")


def test_known_configs_go_straight_into_estimate():
    est = memory.estimate(memory.known_config("Llama-2-7B"), method="full", precision="fp16", optimizer="adamw",
                          batch_size=1, seq_len=128)
    assert est.static == 12 * PUBLISHED["Llama-2-7B"]  # D2's 12 bytes per parameter
    assert est.activations > 0
