"""``estimate(..., world_size=N, sharding=...)``: per-GPU memory under DDP, ZeRO-1/2/3 and FSDP.

Checked against the ZeRO paper's formulas (Rajbhandari et al., 2020, section 5 and Figure 1):
with Psi parameters, N_d data-parallel GPUs and mixed-precision Adam (K = 12: fp32 master
weights, momentum and variance), the model states per GPU are

    baseline (DDP)  (2 + 2 + K) Psi        P_os    2Psi + 2Psi + K Psi / N_d
    P_os+g          2Psi + (2 + K) Psi / N_d        P_os+g+p  (2 + 2 + K) Psi / N_d
"""

from __future__ import annotations

import pytest

from ftlab.memory import SHARDINGS, estimate, known_config, shard

PSI, K = 7.5e9, 12


def zero_formula(stage: int, psi: float, n: int, k: int = K) -> float:
    return {0: (2 + 2 + k) * psi,
            1: 2 * psi + 2 * psi + k * psi / n,
            2: 2 * psi + (2 + k) * psi / n,
            3: (2 + 2 + k) * psi / n}[stage]


def mixed_precision_adam(n_gpus, sharding, psi=PSI):
    return estimate(psi, method="full", precision="fp16", master_weights=True, world_size=n_gpus, sharding=sharding)


@pytest.mark.parametrize("n", [1, 2, 8, 64, 1024])
@pytest.mark.parametrize("sharding,stage", [("ddp", 0), ("zero1", 1), ("zero2", 2), ("zero3", 3), ("fsdp", 3)])
def test_per_gpu_model_states_match_the_zero_formulas(sharding, stage, n):
    e = mixed_precision_adam(n, sharding)
    assert e.total == pytest.approx(zero_formula(stage, PSI, n), abs=3)  # each shard rounds up to a byte
    assert e.activations == 0 and e.world_size == n and e.sharding == sharding


def test_the_papers_figure_1_numbers():
    """Psi = 7.5B, N_d = 64, K = 12: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB."""
    got = [mixed_precision_adam(64, s).total / 1e9 for s in ("ddp", "zero1", "zero2", "zero3")]
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]


def test_parts_moved_and_split_by_stage():
    n = 8
    ddp, z1, z2, z3 = (mixed_precision_adam(n, s) for s in ("ddp", "zero1", "zero2", "zero3"))
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (6 * PSI, 2 * PSI, 8 * PSI)  # master in weights
    assert (z1.weights, z1.gradients, z1.optimizer) == (2 * PSI, 2 * PSI, 12 * PSI / n)  # master -> optimizer
    assert (z2.weights, z2.gradients) == (2 * PSI, 2 * PSI / n)
    assert z3.weights == 2 * PSI / n


def test_one_gpu_is_the_unsharded_estimate_unchanged():
    config = known_config("Llama-3.2-1B")
    base = estimate(config, method="full", batch_size=2, seq_len=256)
    for sharding in SHARDINGS:
        same = estimate(config, method="full", batch_size=2, seq_len=256, world_size=1, sharding=sharding)
        assert same.parts() == base.parts() and same.peak == base.peak


def test_activations_are_per_gpu_and_not_sharded():
    config = known_config("Llama-2-7B")
    one = estimate(config, method="full", batch_size=1, seq_len=1024, grad_checkpointing=True)
    z3 = estimate(config, method="full", batch_size=1, seq_len=1024, grad_checkpointing=True,
                  world_size=16, sharding="fsdp")
    assert z3.activations == one.activations and z3.transient == one.transient
    assert z3.static == pytest.approx(one.static / 16, rel=1e-6)
    assert "per GPU of 16, fsdp" in z3.table()


def test_lora_sharding_shards_the_frozen_base_only_at_stage_3():
    config = known_config("Llama-2-7B")
    lora = estimate(config, method="lora", precision="bf16")
    z2 = estimate(config, method="lora", precision="bf16", world_size=4, sharding="zero2")
    z3 = estimate(config, method="lora", precision="bf16", world_size=4, sharding="zero3")
    assert z2.weights == lora.weights and z2.optimizer == -(-lora.optimizer // 4)
    assert z3.weights == -(-lora.weights // 4)


def test_shard_directly_and_bad_arguments():
    e = estimate(1e9, method="full", precision="bf16")
    assert shard(e, 4, "zero1").optimizer == 2e9
    with pytest.raises(ValueError, match="world_size"):
        estimate(1e9, world_size=0)
    with pytest.raises(ValueError, match="sharding='zero4'"):
        estimate(1e9, world_size=2, sharding="zero4")
