"""The simulated cards of the rehearsal: FTLAB_SIMULATE_GPU, FTLAB_MAX_STEPS, fp16 master weights,
and the memory plan that stops a run which cannot fit its card before step 1."""

import pytest
import torch

from ftlab import budget, runtime, train as train_mod
from ftlab.memory import estimate, known_config
from ftlab.models import load_causal_lm
from ftlab.train import causal_lm_loss, train


# card and tinyllama_shaped: tests/conftest.py


def test_t4_decides_fp16_and_l4_bf16(card, monkeypatch):
    monkeypatch.delenv("FTLAB_PROFILE", raising=False)
    t4 = card("t4")
    assert t4.capability == (7, 5) and runtime.amp_dtype() == torch.float16
    assert runtime.trainer_precision() == {"fp16": True, "bf16": False}
    assert runtime.profile() == "full"  # a GPU, even a simulated one, means the full profile
    assert runtime.environment()["gpu_capability"] == "7.5"
    card("l4")
    assert runtime.amp_dtype() == torch.bfloat16 and runtime.trainer_precision()["bf16"] is True
    assert runtime.device().type == "cpu"  # the arithmetic stays on the CPU


def test_unknown_card_and_bad_cap_are_refused(monkeypatch):
    monkeypatch.setenv("FTLAB_SIMULATE_GPU", "t5")
    with pytest.raises(ValueError, match="l4.*t4"):
        runtime.amp_dtype()
    monkeypatch.delenv("FTLAB_SIMULATE_GPU")
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv("FTLAB_MAX_STEPS", bad)
        with pytest.raises(ValueError, match="positive integer"):
            runtime.max_steps()
    monkeypatch.setenv("FTLAB_MAX_STEPS", "3")
    assert runtime.capped_rows(list(range(10)), 2) == [0, 1, 2, 3, 4, 5]
    assert runtime.capped_rows(list(range(5)), 2) == [0, 1, 2, 3, 4]


def _fp16_lm_with_last_block_trainable():
    model, tokenizer = load_causal_lm(profile="tiny", dtype=torch.float16)
    model.requires_grad_(False)
    model.model.layers[-1].requires_grad_(True)
    rows = [{"input_ids": tokenizer(f"Kafi lives in town {i}.")["input_ids"]} for i in range(16)]
    width = max(len(r["input_ids"]) for r in rows)
    data = [{"input_ids": torch.tensor(r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"]))),
             "attention_mask": torch.tensor([1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])))}
            for r in rows]
    for d in data:
        d["labels"] = d["input_ids"].masked_fill(d["attention_mask"] == 0, -100)
    return model, data


def test_fp16_on_a_t4_trains_with_fp32_master_weights(card, capsys):
    card("t4")
    model, data = _fp16_lm_with_last_block_trainable()
    before = model.model.layers[-1].mlp.down_proj.weight.detach().clone()
    history = train(model, data, lr=1e-3, num_steps=3, batch_size=4, loss_fn=causal_lm_loss, progress=False)
    out = capsys.readouterr().out
    assert history.precision == "fp16"
    assert all(torch.isfinite(torch.tensor(s.loss)) for s in history.steps) and len(history.steps) == 3
    assert "kept in fp32" in out
    after = model.model.layers[-1].mlp.down_proj.weight
    assert after.dtype == torch.float16  # handed back in the dtype it came in
    assert not torch.equal(before, after.detach())  # and the optimizer did update it


def test_without_master_weights_the_t4_path_fails_as_on_a_t4(card, monkeypatch):
    """What lesson 00 hit on a T4: fp16 trainable weights under a GradScaler."""
    card("t4")
    monkeypatch.setattr(train_mod, "_fp32_master_weights", lambda params: [])
    model, data = _fp16_lm_with_last_block_trainable()
    with pytest.raises(ValueError, match="unscale FP16 gradients"):
        train(model, data, lr=1e-3, num_steps=1, batch_size=4, loss_fn=causal_lm_loss, progress=False)


def test_max_steps_caps_a_run(monkeypatch, capsys):
    monkeypatch.setenv("FTLAB_MAX_STEPS", "2")
    model, data = _fp16_lm_with_last_block_trainable()
    model.float()
    history = train(model, data, lr=1e-3, num_steps=5, batch_size=4, loss_fn=causal_lm_loss, progress=False)
    assert len(history.steps) == 2
    assert "capped at 2 of 5" in capsys.readouterr().out


def _lm_batch(b, seq, vocab=32000):
    ids = torch.randint(0, vocab, (b, seq))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def test_plan_prices_a_standin_at_real_size_as_the_calculator_does(card, tinyllama_shaped):
    from peft import LoraConfig, get_peft_model

    t4 = card("t4")
    model = get_peft_model(tinyllama_shaped(), LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    plan = budget.plan_run(model, _lm_batch(4, 256), optimizer=opt, mixed_precision="fp16", gpu=t4)
    ref = estimate(known_config("TinyLlama-1.1B"), method="lora", precision="fp16", r=16,
                   target_modules=("q_proj", "v_proj"), batch_size=4, seq_len=256)
    assert plan.estimate.trainable == ref.trainable == 22 * (16 * 2048 + 2048 * 16 + 16 * 2048 + 256 * 16)
    assert plan.estimate.n_params == ref.n_params  # 1,100,048,384: the real TinyLlama
    for part in ("weights", "gradients", "optimizer", "activations"):
        assert getattr(plan.estimate, part) == getattr(ref, part), part
    assert plan.fits and "TinyLlama/TinyLlama_v1.1 at real size" in plan.line()


def test_full_finetune_of_1b_on_a_t4_stops_before_step_1_with_advice(card, tinyllama_shaped):
    card("t4")
    model = tinyllama_shaped()
    data = [_lm_batch(1, 64) for _ in range(4)]
    data = [{k: v[0] for k, v in d.items()} for d in data]
    with pytest.raises(MemoryError) as err:
        train(model, data, lr=1e-5, num_steps=1, batch_size=2, loss_fn=causal_lm_loss, progress=False)
    msg = str(err.value)
    assert "does not fit the Tesla T4" in msg and "LoRA" in msg and "8-bit AdamW" in msg
    assert all(p.dtype == torch.float16 for p in model.parameters())  # nothing left upcast


def test_no_plan_on_a_plain_cpu(monkeypatch, capsys):
    monkeypatch.delenv("FTLAB_SIMULATE_GPU", raising=False)
    model, data = _fp16_lm_with_last_block_trainable()
    model.float()
    train(model, data, lr=1e-3, num_steps=1, batch_size=4, loss_fn=causal_lm_loss, progress=False)
    assert "Memory plan" not in capsys.readouterr().out


def test_plan_counts_the_runs_compute_at_real_size_and_its_minutes_on_the_card(card, tinyllama_shaped):
    """The forward is counted on the meta device at TinyLlama's real size: within a few percent of
    2 x parameters x tokens (attention adds a little, the embedding lookup costs nothing). A LoRA
    micro-batch costs ~2 forwards (the weight gradients of 2.3M parameters are noise), a full
    fine-tune 3, and gradient checkpointing one more; minutes divide by the card's throughput."""
    from peft import LoraConfig, get_peft_model

    batch = _lm_batch(4, 256)
    n_real = 1_100_048_384
    model = tinyllama_shaped()
    fwd = budget.forward_flops(model, batch, budget._meta_twin(model, budget._real_config(model)[0]))
    approx = 2 * (n_real - 32000 * 2048) * 4 * 256  # every weight but the input embedding, once per token
    assert 0.97 < fwd / approx < 1.10
    # where the meta forward cannot run (transformers 5.2's rotary embedding asks autocast about
    # "meta"), the count falls back to 2 x weights x tokens: the same figure without attention's share
    twin = budget._meta_twin(model, budget._real_config(model)[0])
    assert budget._token_flops(twin, batch["input_ids"]) == approx

    t4, l4 = card("t4"), runtime.CARDS["l4"]
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad])
    plan = budget.plan_run(lora, batch, optimizer=opt, mixed_precision="fp16", gpu=t4, micro_batches=100)
    assert 2.0 < plan.train_flops / (100 * fwd) < 2.01
    assert plan.minutes == pytest.approx(plan.train_flops / 12e12 / 60)
    assert f"about {plan.minutes:.1f} min at the Tesla T4's practical 12 TFLOP/s" in plan.line()
    on_l4 = budget.plan_run(lora, batch, optimizer=opt, mixed_precision="bf16", gpu=l4, micro_batches=100)
    assert on_l4.minutes == pytest.approx(plan.minutes * 12 / 22)

    full = tinyllama_shaped()
    opt = torch.optim.AdamW(full.parameters())
    plan_full = budget.plan_run(full, batch, optimizer=opt, mixed_precision="fp16", gpu=t4, micro_batches=100)
    assert plan_full.train_flops == pytest.approx(3 * 100 * fwd)
    full.gradient_checkpointing_enable()
    plan_ckpt = budget.plan_run(full, batch, optimizer=opt, mixed_precision="fp16", gpu=t4, micro_batches=100)
    assert plan_ckpt.train_flops == pytest.approx(4 * 100 * fwd)
    assert budget.plan_run(full, batch, optimizer=opt, mixed_precision="fp16", gpu=t4).minutes is None


def test_a_small_model_without_a_published_config_is_counted_as_it_is():
    net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
    assert budget.forward_flops(net, torch.zeros(8, 10)) == 2 * 8 * (10 * 20 + 20 * 3)
    assert next(net.parameters()).device.type == "cpu"  # the model itself is untouched
