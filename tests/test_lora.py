"""ftlab.lora against peft: same factors give the same logits, adapters cross between the two
libraries both ways, merging is exact, and bad input gets a clear error.

Two models: a tiny Llama built from a config (hidden 32, grouped-query attention so v_proj is
32 -> 16, not square) and the micro-world LM that the lessons use.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
from torch import nn

from ftlab.lora import (ADAPTER_CONFIG, LoRALinear, inject_lora, linear_layer_names, load_adapter,
                        lora_layers, lora_params, lora_scale, merge_lora, rank_alpha_summary,
                        save_adapter)

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import Linear as PeftLoraLinear  # noqa: E402

ATOL = 1e-5


def _tiny_llama(hidden: int = 32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _world_lm():
    from ftlab.models import load_causal_lm

    return load_causal_lm(profile="tiny")[0].cpu().eval()


@pytest.fixture(scope="module")
def world_lm():
    return _world_lm()


@pytest.fixture(params=["config_llama", "world_lm"])
def base_model(request, world_lm):
    """A fresh copy of each test model (tests change models in place)."""
    return _tiny_llama() if request.param == "config_llama" else copy.deepcopy(world_lm)


def _ids(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (2, 9), generator=gen)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _randomize(model, seed=2):
    """Give every B random values, so the update is not zero and comparisons mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen) * 0.1)
    return model


def _peft_with_ftlab_factors(base, ftlab_model, **config):
    """A peft model on ``base`` with the same targets and factors as ``ftlab_model``."""
    layers = lora_layers(ftlab_model)
    some = next(iter(layers.values()))
    cfg = LoraConfig(r=some.r, lora_alpha=some.alpha, use_rslora=some.rslora,
                     target_modules=sorted({n.rsplit(".", 1)[-1] for n in layers}), **config)
    peft_model = get_peft_model(base, cfg).eval()
    with torch.no_grad():
        for name, layer in layers.items():
            target = peft_model.base_model.model.get_submodule(name)
            target.lora_A["default"].weight.copy_(layer.A)
            target.lora_B["default"].weight.copy_(layer.B)
    return peft_model


# -- the layer ----------------------------------------------------------------------------------

def test_output_is_unchanged_at_init_and_A_starts_like_peft():
    torch.manual_seed(0)
    base = nn.Linear(48, 24)
    layer = LoRALinear(base, r=8, alpha=16)
    x = torch.randn(3, 5, 48)
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.B) == 0
    bound = 1 / math.sqrt(48)  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(d_in), 1/sqrt(d_in)), as peft
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > 0.8 * bound
    assert layer.A.shape == (8, 48) and layer.B.shape == (24, 8)


@pytest.mark.parametrize("rslora", [False, True])
def test_layer_forward_matches_peft_lora_linear(rslora):
    torch.manual_seed(0)
    base = nn.Linear(40, 24)
    ours = LoRALinear(copy.deepcopy(base), r=4, alpha=6, rslora=rslora)
    config = LoraConfig(r=4, lora_alpha=6, use_rslora=rslora, target_modules=["base"])
    theirs = PeftLoraLinear(copy.deepcopy(base), "default", config, r=4, lora_alpha=6)
    with torch.no_grad():
        ours.B.normal_()
        theirs.lora_A["default"].weight.copy_(ours.A)
        theirs.lora_B["default"].weight.copy_(ours.B)
    assert ours.scale == theirs.scaling["default"] == lora_scale(6, 4, rslora)
    x = torch.randn(2, 7, 40)
    torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=0)


def test_only_the_factors_train_and_the_base_stays_frozen():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), r=2, alpha=4)
    w0 = layer.base.weight.clone()
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # the first step moves only B (A's gradient is B^T ... = 0), the second both
        opt.zero_grad()
        layer(torch.randn(4, 16)).square().sum().backward()
        opt.step()
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["A", "B"]
    assert layer.base.weight.grad is None and torch.equal(layer.base.weight, w0)
    assert torch.count_nonzero(layer.B) > 0


def test_dropout_acts_on_the_lora_path_only():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), r=2, dropout=0.5)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(4, 16)
    layer.eval()
    no_dropout = layer.base(x) + layer.scale * (x @ layer.A.T) @ layer.B.T
    torch.testing.assert_close(layer(x), no_dropout)
    layer.train()
    assert not torch.allclose(layer(x), no_dropout)


def test_merge_is_a_plain_linear_with_the_same_output():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(32, 16), r=4, alpha=8)
    with torch.no_grad():
        layer.B.normal_()
    merged = layer.merge()
    assert type(merged) is nn.Linear and merged.weight.shape == (16, 32)
    assert not any(p.requires_grad for p in merged.parameters())
    torch.testing.assert_close(merged.weight, layer.base.weight + layer.scale * layer.B @ layer.A, atol=0, rtol=0)
    torch.testing.assert_close(merged.bias, layer.base.bias, atol=0, rtol=0)
    x = torch.randn(5, 32)
    torch.testing.assert_close(merged(x), layer(x), atol=ATOL, rtol=0)


class _FrozenLinearLike(nn.Module):
    """Stands in for a 4-bit layer: no nn.Linear, a non-parameter weight, a dequantize()."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.in_features, self.out_features = d_in, d_out
        self.register_buffer("packed", torch.randn(d_out, d_in))

    def dequantize(self):
        return self.packed

    def forward(self, x):
        return x @ self.packed.T


def test_a_linear_like_base_can_be_wrapped_and_merged():
    torch.manual_seed(0)
    base = _FrozenLinearLike(12, 6)
    layer = LoRALinear(base, r=3, alpha=3)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(4, 12)
    torch.testing.assert_close(layer(x), base(x) + (x @ layer.A.T) @ layer.B.T)
    torch.testing.assert_close(layer.merge()(x), layer(x), atol=ATOL, rtol=0)
    model = nn.Sequential()
    model.add_module("proj", _FrozenLinearLike(12, 6))
    assert isinstance(inject_lora(model, ("proj",), r=2).proj, LoRALinear)


def test_lora_wraps_ftlab_quant_nf4_linear_and_merges_its_dequantized_weight():
    from ftlab.quant import NF4Linear

    torch.manual_seed(0)
    base = NF4Linear(nn.Linear(128, 64))
    layer = LoRALinear(base, r=4, alpha=8)
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["A", "B"]
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(3, 128)
    torch.testing.assert_close(layer(x), base(x) + layer.scale * (x @ layer.A.T) @ layer.B.T)
    merged = layer.merge()
    torch.testing.assert_close(merged.weight, base.dequantized_weight() + layer.delta_weight(), atol=0, rtol=0)
    torch.testing.assert_close(merged(x), layer(x), atol=1e-4, rtol=1e-5)


# -- the model: same factors, same logits as peft; files cross both ways ---------------------------

@pytest.mark.parametrize("rslora", [False, True])
def test_same_factors_give_the_same_logits_as_peft(base_model, rslora):
    ids = _ids(base_model)
    ours = _randomize(inject_lora(copy.deepcopy(base_model), ("q_proj", "v_proj"), r=4, alpha=8, rslora=rslora))
    theirs = _peft_with_ftlab_factors(copy.deepcopy(base_model), ours)
    a, b = _logits(ours, ids), _logits(theirs, ids)
    assert (a - _logits(base_model, ids)).abs().max() > 1e-3, "the update should change the logits"
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_bf16_base_gives_the_same_logits_as_peft(base_model):
    """peft adds a bf16 base output to the fp32 update in fp32 and rounds once; rounding the update
    to bf16 before scaling (ftlab before) put 0.09 between the two on the world LM's logits."""
    base = base_model.to(torch.bfloat16)
    ids = _ids(base)
    ours = _randomize(inject_lora(copy.deepcopy(base), ("q_proj", "v_proj"), r=4, alpha=8))
    theirs = _peft_with_ftlab_factors(copy.deepcopy(base), ours)
    a, b = _logits(ours, ids), _logits(theirs, ids)
    assert a.dtype == b.dtype == torch.bfloat16
    assert next(iter(lora_layers(ours).values())).A.dtype == torch.float32  # fp32 factors, as peft's
    assert (a.float() - _logits(base, ids).float()).abs().max() > 0.1, "the update should change the logits"
    assert (a.float() - b.float()).abs().max().item() <= 1e-6


def test_trainable_count_is_r_times_d_in_plus_d_out_per_layer(base_model):
    shapes = [(m.out_features, m.in_features) for n, m in base_model.named_modules()
              if n.endswith(("q_proj", "v_proj"))]
    total = sum(p.numel() for p in base_model.parameters())
    model = inject_lora(base_model, ("q_proj", "v_proj"), r=4, alpha=8)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(4 * (d_in + d_out) for d_out, d_in in shapes)
    assert trainable == sum(lora_params(d_out, d_in, 4) for d_out, d_in in shapes)
    assert sum(p.numel() for p in model.parameters()) == total + trainable
    assert len(lora_layers(model)) == 2 * model.config.num_hidden_layers


def test_ftlab_adapter_loads_in_peft_with_the_same_logits(base_model, tmp_path):
    ids = _ids(base_model)
    ours = _randomize(inject_lora(copy.deepcopy(base_model), ("q_proj", "v_proj", "o_proj"), r=4, alpha=12))
    save_adapter(ours, tmp_path, base_model_name_or_path="micro-world/lm")
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "micro-world/lm"
    assert config["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    theirs = PeftModel.from_pretrained(copy.deepcopy(base_model), tmp_path).eval()
    torch.testing.assert_close(_logits(theirs, ids), _logits(ours, ids), atol=ATOL, rtol=0)


def test_peft_adapter_loads_in_ftlab_with_the_same_logits(base_model, tmp_path):
    ids = _ids(base_model)
    torch.manual_seed(3)
    theirs = get_peft_model(copy.deepcopy(base_model), LoraConfig(
        r=4, lora_alpha=16, lora_dropout=0.1, use_rslora=True, target_modules=["k_proj", "v_proj"])).eval()
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, PeftLoraLinear):
                module.lora_B["default"].weight.normal_(std=0.1)
    theirs.save_pretrained(tmp_path)
    ours = load_adapter(copy.deepcopy(base_model), tmp_path).eval()
    layer = ours.model.layers[0].self_attn.k_proj
    assert isinstance(layer, LoRALinear) and layer.rslora and layer.dropout_p == 0.1 and layer.r == 4
    assert all(p.requires_grad == (n.endswith((".A", ".B"))) for n, p in ours.named_parameters())
    torch.testing.assert_close(_logits(ours, ids), _logits(theirs, ids), atol=ATOL, rtol=0)


def test_ftlab_round_trip_and_loading_into_an_injected_model(tmp_path):
    model = _randomize(inject_lora(_tiny_llama(), r=4, alpha=8))
    ids = _ids(model)
    save_adapter(model, tmp_path)
    fresh = load_adapter(_tiny_llama(), tmp_path)
    torch.testing.assert_close(_logits(fresh, ids), _logits(model, ids), atol=0, rtol=0)
    injected = inject_lora(_tiny_llama(), r=4, alpha=8)  # same settings: the factors are replaced
    torch.testing.assert_close(_logits(load_adapter(injected, tmp_path), ids), _logits(model, ids), atol=0, rtol=0)


def test_merge_lora_is_exact_and_equals_peft_merge_and_unload(base_model):
    ids = _ids(base_model)
    ours = _randomize(inject_lora(copy.deepcopy(base_model), r=4, alpha=8))
    theirs = _peft_with_ftlab_factors(copy.deepcopy(base_model), ours).merge_and_unload()
    before = _logits(ours, ids)
    merged = merge_lora(ours)
    assert not lora_layers(merged)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base_model.parameters())
    for name, module in merged.named_modules():
        if name.endswith(("q_proj", "v_proj")):
            assert type(module) is nn.Linear
            assert torch.equal(module.weight, theirs.get_submodule(name).weight), name
    torch.testing.assert_close(_logits(merged, ids), before, atol=ATOL, rtol=0)


def test_inject_twice_does_not_stack_lora_on_lora():
    model = inject_lora(_tiny_llama(), r=4, alpha=8)
    layers = lora_layers(model)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with pytest.warns(UserWarning, match="already had LoRA"):
        again = inject_lora(model, r=4, alpha=8)
    assert again is model and lora_layers(model) == layers
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count
    assert not any(isinstance(m.base, LoRALinear) for m in lora_layers(model).values())
    with pytest.raises(ValueError, match="already has LoRA .*r=4.* does not stack"):
        inject_lora(model, r=8, alpha=16)
    with warnings.catch_warnings():  # adding new targets is fine: only they get wrapped
        warnings.simplefilter("ignore")
        inject_lora(model, ("q_proj", "v_proj", "k_proj"), r=4, alpha=8)
    assert len(lora_layers(model)) == 6 and linear_layer_names(model).count("base") == 0


# -- errors that teach ------------------------------------------------------------------------------

@pytest.mark.parametrize("r, match", [(0, "at least 1"), (-2, "at least 1"), (17, r"min\(d_in=32, d_out=16\) = 16")])
def test_bad_rank_says_the_limit(r, match):
    with pytest.raises(ValueError, match=match):
        LoRALinear(nn.Linear(32, 16), r=r)
    with pytest.raises(TypeError, match="int"):
        LoRALinear(nn.Linear(32, 16), r=4.0)


def test_r_larger_than_a_model_layer_is_refused_before_the_model_changes():
    model = _tiny_llama()
    with pytest.raises(ValueError, match="r=20 is larger than min"):
        inject_lora(model, r=20)  # q_proj 32x32 would fit, v_proj 16x32 does not
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("base", [nn.Conv2d(3, 8, 3), nn.Embedding(10, 4), torch.zeros(4, 4)])
def test_non_linear_base_is_a_type_error(base):
    with pytest.raises(TypeError, match="LoRALinear wraps a linear layer"):
        LoRALinear(base)


def test_lora_on_lora_and_bad_alpha_or_dropout_are_refused():
    layer = LoRALinear(nn.Linear(8, 8), r=2)
    with pytest.raises(TypeError, match="already is a LoRALinear"):
        LoRALinear(layer)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(8, 8), r=2, alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(nn.Linear(8, 8), r=2, dropout=1.0)
    with pytest.raises(TypeError, match="'model.layers.0.self_attn'.*LlamaAttention"):
        inject_lora(_tiny_llama(), ("self_attn",))


@pytest.mark.parametrize("alpha", [math.inf, -math.inf, math.nan, "16", True, None])
def test_alpha_that_is_not_a_finite_positive_number_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha=.*a finite number > 0.*alpha / r"):
        LoRALinear(nn.Linear(8, 8), r=2, alpha=alpha)
    model = _tiny_llama()
    with pytest.raises(ValueError, match="alpha="):
        inject_lora(model, r=2, alpha=alpha)
    assert not lora_layers(model)


@pytest.mark.parametrize("dropout", ["0.1", None, math.nan, -0.1, True])
def test_dropout_that_is_not_a_probability_is_refused(dropout):
    with pytest.raises(ValueError, match=r"dropout=.*a probability, a number in \[0, 1\)"):
        LoRALinear(nn.Linear(8, 8), r=2, dropout=dropout)


@pytest.mark.parametrize("targets, match", [(None, r"target_names=None: name the linear layers"),
                                            ([], "it is empty"), (("q_proj", 3), r"\[3\] are not layer names"),
                                            (5, "target_names=5: name the linear layers")])
def test_target_names_that_are_not_layer_names_are_refused(targets, match):
    model = _tiny_llama()
    with pytest.raises(ValueError, match=match):
        inject_lora(model, targets)
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("args, name", [((4096.0, 4096, 16), "d_out"), ((4096, -1, 16), "d_in"),
                                        ((4096, 4096, 0), "r"), ((4096, 4096, True), "r")])
def test_lora_params_names_the_bad_argument(args, name):
    with pytest.raises(ValueError, match=rf"^{name}=.*int >= 1"):
        lora_params(*args)


def test_a_corrupt_adapter_config_is_named(tmp_path):
    save_adapter(_randomize(inject_lora(_tiny_llama(), r=4)), tmp_path)
    config_file = tmp_path / ADAPTER_CONFIG
    config_file.write_text('{"r": 4, "lora_alpha": ')
    with pytest.raises(ValueError, match=r"adapter_config\.json is not valid JSON \(line 1, column"):
        load_adapter(_tiny_llama(), tmp_path)
    config_file.write_text('["r", 4]')
    with pytest.raises(ValueError, match=r"adapter_config\.json holds a list, not a mapping"):
        load_adapter(_tiny_llama(), tmp_path)
    config_file.write_text('{"peft_type": "LORA", "lora_alpha": 8}')
    with pytest.raises(ValueError, match=r"adapter_config\.json lacks \['r'\]"):
        load_adapter(_tiny_llama(), tmp_path)


def test_a_truncated_adapter_weights_file_is_named(tmp_path):
    save_adapter(_randomize(inject_lora(_tiny_llama(), r=4)), tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    model = _tiny_llama()
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors cannot be read.*truncated"):
        load_adapter(model, tmp_path)
    assert not lora_layers(model)
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors cannot be read"):
        load_adapter(model, tmp_path)


def test_no_match_lists_the_models_linear_layers():
    from ftlab.models import load_text_encoder

    encoder, _tokenizer = load_text_encoder(profile="tiny")
    with pytest.raises(ValueError, match=r"\['q_proj', 'v_proj'\].*'q_lin'.*'v_lin'") as err:
        inject_lora(encoder)
    assert "k_lin" in str(err.value) and "lin1" in str(err.value)
    assert len(lora_layers(inject_lora(encoder, ("q_lin", "v_lin"), r=4))) == 2 * encoder.config.n_layers


def test_saving_a_model_without_lora_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers to save: call inject_lora"):
        save_adapter(_tiny_llama(), tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
    with pytest.raises(ValueError, match="no LoRA layers to merge"):
        merge_lora(_tiny_llama())


def test_missing_adapter_path_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No adapter at .*nowhere.*adapter_config.json"):
        load_adapter(_tiny_llama(), tmp_path / "nowhere")


def test_an_adapter_that_does_not_fit_is_refused_before_the_model_changes(tmp_path):
    save_adapter(inject_lora(_tiny_llama(hidden=32), r=4), tmp_path / "small")
    wider = _tiny_llama(hidden=48)
    fits = r"does not fit layer model\.layers\.0\.self_attn\.q_proj \(48x48\).*A is \(4, 32\)"
    with pytest.raises(ValueError, match=fits):
        load_adapter(wider, tmp_path / "small")
    assert not lora_layers(wider)
    with pytest.raises(ValueError, match="for a layer 'model.layers.0.self_attn.q_proj' this Sequential does not have"):
        load_adapter(nn.Sequential(nn.Linear(32, 32)), tmp_path / "small")
    config = json.loads((tmp_path / "small" / ADAPTER_CONFIG).read_text())
    config["use_dora"] = True
    (tmp_path / "small" / ADAPTER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="DoRA"):
        load_adapter(_tiny_llama(), tmp_path / "small")


def test_a_peft_model_is_not_injected_again():
    theirs = get_peft_model(_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="already holds peft adapters"):
        inject_lora(theirs)


# -- the numbers behind the explorer --------------------------------------------------------------

def test_rank_alpha_summary_gives_the_seed_d1_numbers():
    s = rank_alpha_summary(16, 32, [(4096, 4096)], total_params=4096 * 4096)
    assert s["trainable_params"] == 131_072 == lora_params(4096, 4096, 16)
    assert s["trainable_fraction"] == pytest.approx(0.0078125)
    assert s["scale"] == 2.0 and s["scale_rslora"] == 8.0
    assert s["adapter_mb"] == pytest.approx(131_072 * 4 / 1e6)
    assert rank_alpha_summary(16, 32, [(4096, 4096)], 1, rslora=True)["scale"] == 8.0


def test_rank_alpha_summary_energy_kept_is_the_eckart_young_share():
    values = [3.0, 2.0, 1.0, 0.0]
    assert rank_alpha_summary(1, 2, [(8, 8)], 64, singular_values=values)["energy_kept"] == pytest.approx(9 / 14)
    assert rank_alpha_summary(3, 2, [(8, 8)], 64, singular_values=values)["energy_kept"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="larger than min"):
        rank_alpha_summary(16, 32, [(8, 8)], 64)


def test_rank_alpha_explorer_is_a_view_over_the_summary(capsys):
    pytest.importorskip("ipywidgets")
    from ftlab.widgets import format_rank_alpha, rank_alpha_explorer

    view = rank_alpha_explorer([(64, 64), (32, 64)], total_params=10_000, singular_values=[2.0, 1.0], r=4)
    assert list(view.children[0].options) == [1, 2, 4, 8, 16, 32]
    text = format_rank_alpha(rank_alpha_summary(4, 16, [(64, 64), (32, 64)], 10_000, False, [2.0, 1.0]))
    assert "trainable params:  896" in text and "100.0%" in text
