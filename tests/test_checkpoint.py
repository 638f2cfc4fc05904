"""Tests of ftlab.checkpoint: what a resumed run applies, and checkpoints that cannot be used.

Tiny MLPs on a separable 2-class problem, a few steps each (the exact-resume tests of the loop
itself are in tests/test_train.py).
"""

import math

import pytest
import torch
from torch import nn

from ftlab import checkpoint
from ftlab.train import latest_checkpoint, lr_multiplier, train


def toy_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return list(zip(X, (X[:, 0] + X[:, 1] > 0).long()))


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


SETTINGS = dict(batch_size=4, shuffle=True, seed=1, progress=False)


def first_run(tmp_path, **cfg):
    """4 steps with a checkpoint at steps 2 and 4; returns the model and its history."""
    model = mlp()
    history = train(model, toy_data(), num_steps=4, checkpoint_every=2, checkpoint_dir=tmp_path,
                    **{**SETTINGS, **cfg})
    return model, history


# --- the public names stay where lessons and tests import them ---------------------------------


def test_train_reexports_the_checkpoint_names():
    from ftlab import train as train_mod

    for name in ("MODEL_FILE", "STATE_FILE", "latest_checkpoint", "trainable_state_dict"):
        assert getattr(train_mod, name) is getattr(checkpoint, name), name
    assert checkpoint.MODEL_FILE == "model.safetensors" and checkpoint.STATE_FILE == "training_state.pt"


# --- a resumed run applies what it is given, and says so ---------------------------------------


def test_a_resumed_run_applies_a_changed_lr_and_records_it(tmp_path, capsys):
    first_run(tmp_path, lr=0.1)
    history = train(mlp(seed=5), toy_data(), num_steps=6, lr=0.2, checkpoint_dir=tmp_path, resume=True,
                    **SETTINGS)
    assert history.resumed_from_step == 4
    assert [s.lr for s in history.steps] == pytest.approx([0.1] * 4 + [0.2] * 2)  # was 0.1 throughout
    assert history.config["lr"] == 0.2
    assert "lr 0.1 -> 0.2" in capsys.readouterr().out


def test_a_resumed_run_applies_a_changed_warmup_and_schedule(tmp_path):
    first_run(tmp_path, lr=0.1)
    history = train(mlp(), toy_data(), num_steps=8, lr=0.1, warmup_steps=6, lr_schedule="linear",
                    checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    want = [0.1 * lr_multiplier(s, schedule="linear", warmup_steps=6, total_steps=8) for s in range(4, 8)]
    assert [s.lr for s in history.steps[4:]] == pytest.approx(want)  # 0.067, 0.083, 0.1, 0.05
    assert history.config["warmup_steps"] == 6 and history.config["lr_schedule"] == "linear"


def test_a_resumed_run_applies_a_changed_weight_decay(tmp_path):
    first_run(tmp_path, weight_decay=0.0)
    train(mlp(), toy_data(), num_steps=6, weight_decay=0.5, checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    state = torch.load(latest_checkpoint(tmp_path) / checkpoint.STATE_FILE, weights_only=True)
    # AdamW's groups: matrices (decayed), then biases; before, the checkpoint's 0.0 came back
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [0.5, 0.0]
    assert state["config"]["weight_decay"] == 0.5


def test_more_steps_on_a_cosine_schedule_do_not_restart_at_lr_zero(tmp_path):
    first_run(tmp_path, lr=0.1, lr_schedule="cosine")  # ended at step 4, where the 4-step cosine is 0
    history = train(mlp(), toy_data(), num_steps=8, lr=0.1, lr_schedule="cosine", checkpoint_dir=tmp_path,
                    resume=True, **SETTINGS)
    resumed = [s.lr for s in history.steps[4:]]
    assert resumed == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(4, 8)])
    assert resumed[0] == pytest.approx(0.05)  # the new 8-step curve at step 4, not the old one's 0


def test_a_checkpoint_past_num_steps_is_refused(tmp_path):
    first_run(tmp_path)
    with pytest.raises(ValueError, match=r"step 4, past this run's 2 steps"):
        train(mlp(), toy_data(), num_steps=2, checkpoint_dir=tmp_path, resume=True, **SETTINGS)


# --- checkpoint_dir is checked before step 1 ---------------------------------------------------


def test_an_unwritable_checkpoint_dir_is_refused_before_step_1(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        x, y = batch
        return nn.functional.cross_entropy(model(x), y, reduction="sum")

    for bad in (blocker, blocker / "checkpoints"):
        with pytest.raises(PermissionError, match=r"not a writable folder.*checkpoint_dir=None"):
            train(mlp(), toy_data(), num_steps=3, loss_fn=loss_fn, checkpoint_dir=bad, **SETTINGS)
    assert calls == []  # before: 3 steps ran, then the first save failed


# --- corrupt, truncated and missing files ------------------------------------------------------


@pytest.mark.parametrize("name", [checkpoint.MODEL_FILE, checkpoint.STATE_FILE])
def test_a_truncated_file_is_an_error_that_names_it(tmp_path, name):
    first_run(tmp_path)
    bad = tmp_path / "step_000004" / name
    bad.write_bytes(bad.read_bytes()[:40])
    model = mlp(seed=7)
    before = params_of(model)
    with pytest.raises(checkpoint.CheckpointError, match=r"step_000004/" + name.replace(".", r"\.") + ".*truncated"):
        train(model, toy_data(), num_steps=6, checkpoint_dir=tmp_path, resume=tmp_path / "step_000004",
              **SETTINGS)
    for name_, p in model.named_parameters():
        assert torch.equal(p, before[name_]), name_


def test_resume_true_falls_back_to_the_previous_good_checkpoint(tmp_path, capsys):
    straight = mlp()
    train(straight, toy_data(), num_steps=6, **SETTINGS)
    first_run(tmp_path)
    bad = tmp_path / "step_000004" / checkpoint.MODEL_FILE
    bad.write_bytes(b"\x00" * 64)
    capsys.readouterr()
    resumed = mlp(seed=9)
    history = train(resumed, toy_data(), num_steps=6, checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    out = capsys.readouterr().out
    assert "falling back to the previous good one, step_000002" in out and str(bad) in out
    assert history.resumed_from_step == 2
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name  # steps 3-6 retaken from step 2: the same run
    assert latest_checkpoint(tmp_path).name == "step_000006"


def test_resume_true_with_every_checkpoint_unreadable_names_the_newest(tmp_path):
    first_run(tmp_path)
    for step in ("step_000002", "step_000004"):
        (tmp_path / step / checkpoint.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match=r"step_000004.*No earlier checkpoint.*2 tried"):
        train(mlp(), toy_data(), num_steps=6, checkpoint_dir=tmp_path, resume=True, **SETTINGS)


def test_a_missing_rng_file_is_an_error_before_the_weights_are_overwritten(tmp_path):
    first_run(tmp_path)
    (tmp_path / "step_000004" / "rng_state_0.pt").unlink()
    model = mlp(seed=11)
    before = params_of(model)
    with pytest.raises(checkpoint.CheckpointError, match=r"rng_state_0\.pt: the file is missing"):
        train(model, toy_data(), num_steps=6, checkpoint_dir=tmp_path, resume=tmp_path / "step_000004",
              **SETTINGS)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name  # before: the checkpoint's weights were already in


def test_a_checkpoint_of_another_shape_leaves_the_model_untouched(tmp_path):
    first_run(tmp_path)
    torch.manual_seed(0)
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))  # a 3-class head
    before = params_of(other)
    with pytest.raises(ValueError, match=r"does not fit this model.*shapes that differ \['2.bias', '2.weight'\]"):
        train(other, toy_data(), num_steps=6, checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    for name, p in other.named_parameters():
        assert torch.equal(p, before[name]), name  # before: 0.weight, 0.bias had been overwritten
