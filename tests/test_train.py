"""Tests of ftlab.train (the one training loop) and ftlab.plots.plot_history.

Tiny models only (an MLP, a 2-layer LlamaForCausalLM with hidden size 32), a few steps each.
"""

import math
import random

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from ftlab.plots import plot_history
from ftlab.train import (
    MODEL_FILE,
    TrainConfig,
    causal_lm_loss,
    classification_loss,
    count_causal_lm_items,
    epoch_windows,
    latest_checkpoint,
    lr_multiplier,
    train,
)


# --- tiny inputs -------------------------------------------------------------------------------


def toy_classification(n=64, seed=0):
    """A linearly separable 2-class problem: y = [x0 + x1 > 0]. Returns X (n, 4), y (n,), examples."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long()
    return X, y, list(zip(X, y))


def mlp(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def accuracy_fn(X, y):
    return lambda model: {"accuracy": (model(X).argmax(-1) == y).float().mean().item()}


def tiny_llama(seed=0, tie=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=tie)
    return LlamaForCausalLM(config)


def lm_example(tokens, num_targets):
    """One causal-LM example whose last ``num_targets`` tokens are targets (the rest -100)."""
    labels = [-100] * (len(tokens) - num_targets) + tokens[len(tokens) - num_targets:]
    return {"input_ids": tokens, "attention_mask": [1] * len(tokens), "labels": labels}


def lm_data(targets=(2, 1, 7, 7), length=8, seed=0):
    rng = random.Random(seed)
    return [lm_example([rng.randrange(64) for _ in range(length)], t) for t in targets]


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def sgd(params):  # plain SGD: a step with lr=1 moves each weight by exactly minus its gradient
    return torch.optim.SGD(params, lr=1.0)


# --- learning ----------------------------------------------------------------------------------


def test_loss_goes_down_on_a_learnable_task():
    X, y, data = toy_classification()
    model = mlp()
    history = train(model, data, lr=1e-2, num_steps=60, batch_size=8, eval_fn=accuracy_fn(X, y),
                    progress=False)
    first, last = np.mean(history.losses[:5]), np.mean(history.losses[-5:])
    assert last < 0.5 * first, (first, last)
    assert history.evals[-1].metrics["accuracy"] >= 0.9
    assert history.final_loss == history.steps[-1].loss
    assert [s.step for s in history.steps] == list(range(1, 61))


def test_classification_accepts_a_dict_batch_and_a_tuple_batch():
    X, y, pairs = toy_classification(n=16)
    dicts = [{"x": x, "labels": label} for x, label in pairs]
    a, b = mlp(), mlp()
    history_a = train(a, pairs, num_steps=3, batch_size=4, shuffle=False, progress=False)
    history_b = train(b, dicts, num_steps=3, batch_size=4, shuffle=False, progress=False,
                      loss_fn=classification_loss)
    assert history_a.losses == history_b.losses
    assert history_a.steps[0].items == 4  # examples


def test_num_epochs_counts_partial_windows_and_averages_over_their_items():
    _, _, data = toy_classification(n=40)
    # 40 examples / batch 4 = 10 micro-batches per epoch; windows of 3 -> 3 + 3 + 3 + 1
    history = train(mlp(), data, num_epochs=2, batch_size=4, grad_accum=3, progress=False)
    assert len(history.steps) == 8
    assert [s.items for s in history.steps] == [12, 12, 12, 4] * 2


# --- gradient accumulation ---------------------------------------------------------------------


def test_causal_lm_loss_is_the_sum_behind_hf_mean_loss():
    model = tiny_llama()
    data = lm_data()
    batch = {k: torch.tensor([ex[k] for ex in data]) for k in data[0]}
    ours = causal_lm_loss(model, batch) / count_causal_lm_items(batch)
    assert count_causal_lm_items(batch) == 2 + 1 + 7 + 7
    assert torch.allclose(ours, model(**batch).loss, atol=1e-6)


def test_grad_accum_equals_one_big_batch_not_the_mean_of_micro_batch_means():
    # micro-batch 1 holds 2 + 1 = 3 target tokens, micro-batch 2 holds 7 + 7 = 14
    data = lm_data(targets=(2, 1, 7, 7))
    settings = dict(lr=1.0, num_steps=1, shuffle=False, max_grad_norm=None, precision="fp32",
                    optimizer=sgd, progress=False)

    accumulated, big = tiny_llama(), tiny_llama()
    before = params_of(big)
    history_acc = train(accumulated, data, batch_size=2, grad_accum=2, **settings)
    history_big = train(big, data, batch_size=4, grad_accum=1, **settings)
    assert history_acc.steps[0].items == history_big.steps[0].items == 17
    assert math.isclose(history_acc.final_loss, history_big.final_loss, rel_tol=1e-5)

    naive = tiny_llama()  # what averaging per-micro-batch means would give
    half_losses = []
    for part in (data[:2], data[2:]):
        batch = {k: torch.tensor([ex[k] for ex in part]) for k in part[0]}
        half_losses.append(causal_lm_loss(naive, batch) / count_causal_lm_items(batch))
    ((half_losses[0] + half_losses[1]) / 2).backward()

    differs = False
    for name, p in big.named_parameters():
        grad_big = before[name] - p.detach()  # SGD with lr 1: the step is the gradient
        grad_acc = before[name] - dict(accumulated.named_parameters())[name].detach()
        assert torch.allclose(grad_acc, grad_big, atol=1e-6, rtol=1e-4), name
        grad_naive = dict(naive.named_parameters())[name].grad
        differs |= not torch.allclose(grad_naive, grad_big, atol=1e-6, rtol=1e-4)
    assert differs, "mean of micro-batch means should NOT match the big batch here"


def test_a_window_whose_labels_are_all_masked_is_a_clear_error():
    data = lm_data(targets=(0, 0, 3, 3))  # the first window (batch 2, accum 1) has no target
    with pytest.raises(ValueError, match=r"step 1.*-100"):
        train(tiny_llama(), data, batch_size=2, shuffle=False, num_steps=2, progress=False)


# --- exact resume ------------------------------------------------------------------------------


def noisy_loss(model, batch):
    """Classification loss on inputs jittered with numpy and python RNGs: resume must restore both."""
    x, labels = batch
    x = x + 0.05 * torch.from_numpy(np.random.normal(size=tuple(x.shape))).float() * random.random()
    return classification_loss(model, (x, labels))


def test_resumed_run_ends_bit_exactly_where_an_uninterrupted_run_ends(tmp_path):
    _, _, data = toy_classification(n=40)
    # 10 micro-batches / epoch, 5 steps / epoch: 12 steps cross two epoch boundaries, and the
    # checkpoint at step 6 is in the middle of epoch 2 (its first window already consumed)
    cfg = TrainConfig(lr=1e-2, num_steps=12, batch_size=4, grad_accum=2, shuffle=True, seed=3,
                      warmup_steps=2, lr_schedule="cosine", weight_decay=0.1, checkpoint_every=3)

    straight = mlp(seed=1, dropout=0.3)
    history_straight = train(straight, data, cfg, loss_fn=noisy_loss, progress=False)

    calls = 0

    def crashing_loss(model, batch):
        nonlocal calls
        calls += 1
        if calls > 7 * cfg.grad_accum:  # dies during step 8
            raise RuntimeError("simulated crash")
        return noisy_loss(model, batch)

    crashed = mlp(seed=1, dropout=0.3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashed, data, cfg, loss_fn=crashing_loss, checkpoint_dir=tmp_path, progress=False)
    assert latest_checkpoint(tmp_path).name == "step_000006"

    resumed = mlp(seed=99, dropout=0.3)  # a different init: everything must come from the checkpoint
    history_resumed = train(resumed, data, cfg, loss_fn=noisy_loss, checkpoint_dir=tmp_path,
                            resume=True, progress=False)

    assert history_resumed.resumed_from_step == 6
    assert history_resumed.losses == history_straight.losses
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert latest_checkpoint(tmp_path).name == "step_000012"


def test_checkpoint_of_tied_weights_resumes_exactly(tmp_path):
    from safetensors import safe_open

    data = lm_data(targets=(3, 5, 7, 4, 6, 2))
    settings = dict(lr=1e-2, batch_size=2, shuffle=True, progress=False)
    straight = tiny_llama(tie=True)
    train(straight, data, num_steps=4, **settings)

    train(tiny_llama(tie=True), data, num_steps=2, checkpoint_dir=tmp_path, **settings)
    with safe_open(str(latest_checkpoint(tmp_path) / MODEL_FILE), "pt") as f:
        names = set(f.keys())
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # saved once

    resumed = tiny_llama(seed=5, tie=True)
    train(resumed, data, num_steps=4, checkpoint_dir=tmp_path, resume=True, **settings)
    assert resumed.lm_head.weight is resumed.model.embed_tokens.weight  # still tied
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_existing_checkpoints_need_resume_to_be_reused(tmp_path):
    _, _, data = toy_classification(n=16)
    train(mlp(), data, num_steps=2, batch_size=4, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        train(mlp(), data, num_steps=2, batch_size=4, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="batch_size"):  # the data order would not be the same
        train(mlp(), data, num_steps=3, batch_size=8, checkpoint_dir=tmp_path, resume=True,
              progress=False)


# --- guards and errors -------------------------------------------------------------------------


def test_nan_loss_stops_training_and_names_the_step():
    _, _, data = toy_classification(n=32)
    calls = 0

    def nan_at_step_3(model, batch):
        nonlocal calls
        calls += 1
        loss = classification_loss(model, batch)
        return loss * float("nan") if calls == 3 else loss

    model = mlp()
    with pytest.raises(FloatingPointError, match=r"step 3, micro-batch 1 of 1.*learning rate") as info:
        train(model, data, num_steps=5, batch_size=4, loss_fn=nan_at_step_3, progress=False)
    assert len(info.value.history.steps) == 2  # what ran before the bad step, for a plot
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN never reached the weights


@pytest.mark.parametrize("setting, match", [
    ({"grad_accum": 0}, r"grad_accum=0 .*>= 1"),
    ({"batch_size": 0}, r"batch_size=0 .*>= 1"),
    ({"lr": 0.0}, r"lr=0.0 .*> 0"),
    ({"lr": -1e-3}, r"lr=-0.001 .*> 0"),
    ({"precision": "half"}, r"precision='half'.*'bf16'"),
    ({"lr_schedule": "step"}, r"lr_schedule='step'.*cosine"),
    ({"weight_decay": float("nan")}, r"weight_decay=nan .*finite number >= 0"),
    ({"weight_decay": float("inf")}, r"weight_decay=inf .*finite number >= 0"),
    ({"weight_decay": True}, r"weight_decay=True .*finite number >= 0"),
    ({"shuffle": "no"}, r"shuffle='no' .*True .*or False"),  # a true value: it used to shuffle
])
def test_bad_settings_say_what_is_valid(setting, match):
    _, _, data = toy_classification(n=8)
    with pytest.raises(ValueError, match=match):
        train(mlp(), data, progress=False, **setting)
    with pytest.raises(ValueError, match=match):
        TrainConfig(**setting)


def test_empty_data_unknown_keyword_and_a_dataloader_are_refused():
    _, _, data = toy_classification(n=8)
    with pytest.raises(ValueError, match="empty"):
        train(mlp(), [], progress=False)
    with pytest.raises(TypeError, match=r"learning_rate.*Valid TrainConfig fields: lr, num_steps"):
        train(mlp(), data, learning_rate=1e-3, progress=False)
    with pytest.raises(TypeError, match="not a DataLoader"):
        train(mlp(), torch.utils.data.DataLoader(data), progress=False)


# --- evaluation, precision, repeated calls, frozen weights ------------------------------------------


def test_eval_fn_runs_every_n_steps_and_at_the_end_without_grad_in_eval_mode():
    X, y, data = toy_classification(n=32)
    seen, train_modes = [], []

    def eval_fn(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"accuracy": (model(X).argmax(-1) == y).float().mean(), "eval_loss": 1.0}

    def loss_fn(model, batch):
        train_modes.append(model.training)
        return classification_loss(model, batch)

    model = mlp(dropout=0.5)
    history = train(model, data, num_steps=7, batch_size=4, eval_every=3, eval_fn=eval_fn,
                    loss_fn=loss_fn, progress=False)
    assert [e.step for e in history.evals] == [3, 6, 7]
    assert seen == [(False, False)] * 3
    assert all(train_modes)  # training mode (dropout on) restored after each eval
    assert isinstance(history.evals[0].metrics["accuracy"], float)
    assert history.metric("eval_loss") == ([3, 6, 7], [1.0, 1.0, 1.0])


def test_bf16_autocast_runs_on_cpu_with_a_finite_falling_loss():
    _, _, data = toy_classification()
    autocast = []

    def loss_fn(model, batch):
        autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return classification_loss(model, batch)

    model = mlp()
    history = train(model, data, lr=1e-2, num_steps=30, batch_size=8, precision="bf16",
                    loss_fn=loss_fn, progress=False)
    assert history.precision == "bf16"
    assert set(autocast) == {(True, torch.bfloat16)}
    assert all(math.isfinite(v) for v in history.losses)
    assert np.mean(history.losses[-5:]) < np.mean(history.losses[:5])
    assert "forward" not in model.__dict__  # accelerate's autocast wrapper removed afterwards


def test_fp16_on_cpu_warns_and_falls_back_to_fp32():
    _, _, data = toy_classification(n=16)
    with pytest.warns(UserWarning, match="fp16.*falls back to fp32"):
        history = train(mlp(), data, num_steps=2, batch_size=4, precision="fp16", progress=False)
    assert history.precision == "fp32"


def test_train_can_be_called_again_with_another_precision():
    _, _, data = toy_classification()
    model = mlp()
    first = train(model, data, lr=1e-2, num_steps=20, batch_size=8, precision="fp32", progress=False)
    second = train(model, data, lr=1e-2, num_steps=20, batch_size=8, precision="bf16", progress=False)
    third = train(model, data, lr=1e-2, num_steps=20, batch_size=8, progress=True)
    assert np.mean(second.losses) < np.mean(first.losses)  # it continued training the same model
    assert np.mean(third.losses) < np.mean(first.losses)
    assert "_is_accelerate_prepared" not in model.__dict__


def test_frozen_parameters_stay_unchanged():
    _, _, data = toy_classification()
    model = mlp()
    model[0].requires_grad_(False)  # a frozen "backbone"
    before = params_of(model)
    train(model, data, lr=1e-2, num_steps=10, batch_size=8, weight_decay=0.1, progress=False)
    assert torch.equal(model[0].weight, before["0.weight"])
    assert torch.equal(model[0].bias, before["0.bias"])
    assert not torch.equal(model[3].weight, before["3.weight"])


def test_gradient_clipping_records_the_norm_before_clipping():
    _, _, data = toy_classification(n=16)
    history = train(mlp(), data, lr=1e-3, num_steps=3, batch_size=16, max_grad_norm=1e-3,
                    progress=False)
    assert all(s.grad_norm > 1e-3 for s in history.steps)


def test_summary_line_reports_time_and_peak_memory(capsys):
    _, _, data = toy_classification(n=16)
    history = train(mlp(), data, num_steps=2, batch_size=4, progress=False)
    out = capsys.readouterr().out
    assert "train: 2 steps" in out and "peak memory" in out and "final loss" in out
    assert history.seconds > 0 and history.peak_memory_bytes > 0
    assert history.to_dict()["steps"][0]["step"] == 1


# --- data order --------------------------------------------------------------------------------


def test_two_processes_take_the_windows_one_process_accumulates():
    one = epoch_windows(20, batch_size=2, grad_accum=2, world_size=1, seed=0, epoch=1)
    two = epoch_windows(20, batch_size=2, grad_accum=1, world_size=2, seed=0, epoch=1)
    assert one == two  # the same windows of micro-batches, in the same order
    window = epoch_windows(20, batch_size=2, grad_accum=2, world_size=2, seed=0)[0]
    rank0, rank1 = window[0::2], window[1::2]  # what train() gives each process
    assert len(window) == 4 and len(rank0) == len(rank1) == 2  # grad_accum micro-batches each
    assert sorted(i for mb in rank0 + rank1 for i in mb) == sorted(i for mb in window for i in mb)
    assert epoch_windows(20, batch_size=2, seed=0, epoch=2) != epoch_windows(20, batch_size=2, seed=0, epoch=1)
    padded = epoch_windows(10, batch_size=2, world_size=2, shuffle=False)  # 5 micro-batches -> 6
    assert sum(len(w) for w in padded) == 6 and padded[-1][-1] == [0, 1]


@pytest.mark.parametrize("schedule, hf_name", [
    ("constant", "constant_with_warmup"), ("linear", "linear"), ("cosine", "cosine")])
def test_lr_schedule_matches_transformers_get_scheduler(schedule, hf_name):
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_scheduler(hf_name, optimizer=optimizer, num_warmup_steps=3, num_training_steps=10)
    for step in range(12):
        ours = lr_multiplier(step, schedule=schedule, warmup_steps=3, total_steps=10)
        assert math.isclose(ours, hf.get_last_lr()[0], abs_tol=1e-12), step
        optimizer.step()
        hf.step()


def test_history_records_the_lr_each_step_used():
    _, _, data = toy_classification(n=16)
    history = train(mlp(), data, lr=0.1, num_steps=6, batch_size=4, warmup_steps=2,
                    lr_schedule="linear", progress=False)
    assert [round(s.lr, 6) for s in history.steps] == [0.0, 0.05, 0.1, 0.075, 0.05, 0.025]


# --- plots -------------------------------------------------------------------------------------


def test_plot_history_returns_a_figure_with_labelled_axes():
    X, y, data = toy_classification(n=32)

    def eval_fn(model):
        return {"accuracy": (model(X).argmax(-1) == y).float().mean(), "eval_loss": 0.5}

    history = train(mlp(), data, num_steps=6, batch_size=4, eval_every=2, eval_fn=eval_fn,
                    progress=False)
    fig = plot_history(history)
    assert isinstance(fig, Figure)
    loss_ax, metric_ax = fig.axes
    assert loss_ax.get_xlabel() == "optimizer step"
    assert "loss" in loss_ax.get_ylabel()
    assert metric_ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == [
        "train loss", "eval_loss", "eval accuracy"]
    assert len(loss_ax.lines[0].get_xdata()) == 6


# --- one metrics hook --------------------------------------------------------------------------


def test_loss_fn_metrics_are_averaged_per_item_over_each_window():
    X, y, data = toy_classification(n=20)
    seen = []

    def loss_fn(model, batch):
        x, labels = batch
        seen.append(labels)
        return classification_loss(model, batch), {"positives": labels.sum(), "rows": len(labels)}

    # 20 examples, batch 4, grad_accum 2: windows of 8, 8 and 4 examples
    history = train(mlp(), data, num_epochs=1, batch_size=4, grad_accum=2, loss_fn=loss_fn, progress=False)
    windows = [torch.cat(seen[0:2]), torch.cat(seen[2:4]), seen[4]]
    assert [s.items for s in history.steps] == [8, 8, 4]
    for record, labels in zip(history.steps, windows):
        assert record.metrics == {"positives": pytest.approx(labels.float().mean().item()), "rows": 1.0}
    plain = train(mlp(), data, num_epochs=1, batch_size=4, grad_accum=2, progress=False)
    assert plain.losses == history.losses and plain.steps[0].metrics == {}


def test_a_metric_that_is_not_a_number_is_a_clear_error():
    _, _, data = toy_classification(n=8)

    def loss_fn(model, batch):
        return classification_loss(model, batch), {"logits": model(batch[0])}

    with pytest.raises(TypeError, match=r"metric 'logits' is Tensor\(4, 2\).*SUM over the micro-batch"):
        train(mlp(), data, num_steps=1, batch_size=4, loss_fn=loss_fn, progress=False)


# --- an optimizer that holds the wrong parameters ----------------------------------------------


def test_an_optimizer_built_before_inject_lora_is_refused_before_step_1():
    from ftlab.lora import inject_lora

    model = tiny_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # built too early
    inject_lora(model, ("q_proj", "v_proj"), r=2)
    calls = []

    def loss_fn(m, batch):
        calls.append(1)
        return causal_lm_loss(m, batch)

    with pytest.raises(ValueError, match=r"holds none of the model's 8 trainable.*build the optimizer after injecting"):
        train(model, lm_data(), num_steps=2, batch_size=2, optimizer=optimizer, loss_fn=loss_fn,
              count_fn=count_causal_lm_items, progress=False)
    assert calls == []  # before: both steps ran and the adapters never moved


# --- one home for IGNORE_INDEX -----------------------------------------------------------------


def test_ignore_index_is_defined_once_in_ftlab_train():
    import re
    from pathlib import Path

    import ftlab

    root = Path(ftlab.__file__).parent
    homes = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if re.search(r"^\s*IGNORE_INDEX\s*[:=]", p.read_text(), flags=re.M))
    assert homes == ["train.py"]  # the others import it: from ftlab.train import IGNORE_INDEX
