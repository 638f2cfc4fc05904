"""ftlab.adapters: Houlsby bottleneck adapters, on a small DistilBERT built from a config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftlab.adapters import Adapted, BottleneckAdapter, adapter_param_count, add_adapters

DIM, LAYERS, BOTTLENECK = 32, 2, 4


def _distilbert(seed: int = 0):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=100, dim=DIM, n_layers=LAYERS, n_heads=2, hidden_dim=64,
                              max_position_embeddings=32, num_labels=2)
    return DistilBertForSequenceClassification(config).eval()


def _inputs():
    ids = torch.randint(1, 100, (3, 7), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_new_adapter_is_the_identity():
    adapter = BottleneckAdapter(DIM, BOTTLENECK)
    h = torch.randn(2, 5, DIM)
    assert torch.equal(adapter(h), h)


def test_model_output_unchanged_when_adapters_are_added():
    model = _distilbert()
    with torch.no_grad():
        before = model(**_inputs()).logits
        after = add_adapters(model, bottleneck=BOTTLENECK)(**_inputs()).logits
    assert torch.equal(before, after)


def test_adapter_param_count_matches_formula():
    assert adapter_param_count(DIM, BOTTLENECK) == sum(p.numel() for p in BottleneckAdapter(DIM, BOTTLENECK).parameters())
    assert adapter_param_count(768, 64) == 99_136  # DistilBERT-base, bottleneck 64


def test_only_adapters_and_head_are_trainable():
    model = add_adapters(_distilbert(), target_names=("out_lin", "lin2"), bottleneck=BOTTLENECK)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or n.startswith(("pre_classifier.", "classifier.")) for n in trainable)
    adapters = [m for m in model.modules() if isinstance(m, BottleneckAdapter)]
    assert len(adapters) == 2 * LAYERS  # after attention and after the feed-forward of every block
    head = sum(p.numel() for p in model.pre_classifier.parameters()) + sum(p.numel() for p in model.classifier.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == \
        2 * LAYERS * adapter_param_count(DIM, BOTTLENECK) + head


def test_adapters_learn_while_the_base_stays_frozen():
    model = add_adapters(_distilbert(), bottleneck=BOTTLENECK)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([0, 1, 1])
    first = model(**_inputs(), labels=labels).loss.item()
    for _ in range(20):
        loss = model(**_inputs(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert model.distilbert.transformer.layer[0].ffn.lin2.adapter.up.weight.abs().sum() > 0


def test_no_matching_layer_lists_the_linear_names():
    with pytest.raises(ValueError, match=r"no nn.Linear named \['o_proj'\].*'lin2'.*'out_lin'"):
        add_adapters(_distilbert(), target_names=("o_proj",))


def test_unknown_head_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"trainable_names \['score'\]"):
        add_adapters(_distilbert(), trainable_names=("score",))


def test_adding_twice_is_refused():
    model = add_adapters(_distilbert(), bottleneck=BOTTLENECK)
    with pytest.raises(ValueError, match="already has adapters"):
        add_adapters(model, bottleneck=BOTTLENECK)
    assert sum(isinstance(m, Adapted) for m in model.modules()) == 2 * LAYERS


@pytest.mark.parametrize("bottleneck", [0, -1, DIM + 1, 2.5, True])
def test_bad_bottleneck_says_the_limit(bottleneck):
    with pytest.raises(ValueError, match=f"from 1 to {DIM}"):
        BottleneckAdapter(DIM, bottleneck)


def test_adapter_follows_the_wrapped_layer_dtype():
    adapted = Adapted(nn.Linear(8, 6).to(torch.float64), bottleneck=2)
    assert adapted.adapter.down.weight.dtype == torch.float64
    assert adapted(torch.randn(4, 8, dtype=torch.float64)).shape == (4, 6)


def test_a_single_string_is_one_layer_name_not_its_letters():
    model = add_adapters(_distilbert(), target_names="lin2", bottleneck=BOTTLENECK, trainable_names="classifier")
    assert sum(isinstance(m, Adapted) for m in model.modules()) == LAYERS  # one per block: lin2 only
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad and ".adapter." not in n}
    assert trainable == {"classifier"}


@pytest.mark.parametrize("kwargs, match", [
    ({"target_names": None}, r"target_names=None: give layer names"),
    ({"target_names": ()}, "target_names is empty"),
    ({"target_names": ("lin2", 3)}, r"target_names=\('lin2', 3\): give layer names"),
    ({"trainable_names": 5}, r"trainable_names=5: give layer names"),
    ({"bottleneck": DIM + 1}, r"distilbert.transformer.layer.0.attention.out_lin: bottleneck=33 .* from 1 to 32"),
])
def test_bad_arguments_are_refused_before_the_model_changes(kwargs, match):
    model = _distilbert()
    with pytest.raises(ValueError, match=match):
        add_adapters(model, **kwargs)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, Adapted) for m in model.modules())
