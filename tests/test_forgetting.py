"""ftlab.forgetting: replay batches, early stopping, the base-weights hash, the three scores."""

from __future__ import annotations

import pytest
import torch

from ftlab.forgetting import EarlyStopping, base_weights_hash, lm_examples, replay_mix


def test_replay_mix_puts_the_share_in_every_batch():
    task, general = [("t", i) for i in range(10)], [("g", i) for i in range(7)]
    mixed = replay_mix(task, general, replay_share=0.25, batch_size=8, num_steps=5, seed=0)
    assert len(mixed) == 40
    for start in range(0, 40, 8):
        assert sum(kind == "g" for kind, _ in mixed[start:start + 8]) == 2
    # without replacement until a source runs out: the first 10 task examples are all different
    assert len({i for kind, i in mixed if kind == "t"}) == 10
    assert replay_mix(task, general, 0.25, 8, 5, seed=0) == mixed  # seeded


def test_replay_mix_zero_share_is_plain_task_data_and_bad_share_raises():
    mixed = replay_mix(list(range(4)), [], replay_share=0.0, batch_size=4, num_steps=2)
    assert sorted(mixed[:4]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="replay_share"):
        replay_mix([1], [2], replay_share=1.0, batch_size=4, num_steps=1)
    with pytest.raises(ValueError, match="no general"):
        replay_mix([1], [], replay_share=0.5, batch_size=4, num_steps=1)


class _Tok:
    def __call__(self, text):
        return {"input_ids": [1] + [ord(c) for c in text]}


def test_lm_examples_train_every_token_and_truncate():
    ex = lm_examples(["abcdef"], _Tok(), max_length=4)[0]
    assert ex["input_ids"] == [1, 97, 98, 99] and ex["labels"] == ex["input_ids"]
    with pytest.raises(ValueError, match="token"):
        lm_examples([""], _Tok())


def test_early_stopping_restores_the_last_weights_above_the_floor():
    model = torch.nn.Linear(2, 1, bias=False)
    scores = iter([0.95, 0.91, 0.7, 0.99])  # falls under 0.9 at the third eval; later recovery ignored
    stopper = EarlyStopping(lambda m: next(scores), floor=0.9, eval_every=5)
    stopper.snapshot(model)
    kept = None
    for i in range(4):
        with torch.no_grad():
            model.weight.fill_(float(i + 1))
        stopper(model)
        if i == 1:
            kept = model.weight.detach().clone()
    assert stopper.steps == [5, 10, 15, 20]
    assert stopper.restore(model) == 10
    assert torch.equal(model.weight, kept)


def test_base_weights_hash_ignores_lora_and_sees_base_changes():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    before = base_weights_hash(base)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["0"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(1.0)
    assert base_weights_hash(model) == before
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_" not in n).add_(1e-3)
    assert base_weights_hash(model) != before
