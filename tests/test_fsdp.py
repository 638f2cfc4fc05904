"""FSDP2 (``fully_shard``, ZeRO-3) on 2 CPU processes joined by gloo trains exactly like 1 process
on the whole batch, while each process holds only its half of every state (lesson 10, section 5).

Measured here (torch 2.14.1, 2 processes, MLP 8 -> 16 -> 4, 3 AdamW steps at lr 1e-2): the losses
agree bit for bit and the gathered weights differ from the one-process weights by at most 3e-8
(float32 rounding of the reduce-scatter's average). Tolerance: 1e-5, as for the DDP demo.
"""

from __future__ import annotations

import pytest
import torch

from ftlab.drills import lesson10
from ftlab.parallel import _mlp_and_data, fsdp_demo

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no gloo backend")


@pytest.fixture(scope="module")
def run():
    return fsdp_demo(world_size=2, seed=0, batch=8, d_in=8, d_hidden=16, d_out=4, steps=3)


def test_each_fsdp_rank_holds_half_of_the_weights_gradients_and_adamw_moments(run):
    total = 8 * 16 + 16 + 16 * 4 + 4
    assert run["total"] == total == 212
    assert run["params"] == [total // 2] * 2, "each rank should hold its half of every parameter"
    assert run["grads"] == [total // 2] * 2, "the reduce-scatter should leave each rank its half of the gradient"
    assert run["moments"] == [total] * 2, "AdamW's two moments should be sharded like the weights"
    # drill 10d's answer is what the demo counts on one rank
    assert run["params"][0] + run["grads"][0] + run["moments"][0] == lesson10._ZERO3 == 424


def test_fsdp_on_two_processes_trains_like_one_process_on_the_whole_batch(run):
    init = {n: p.detach() for n, p in _mlp_and_data(0, 8, 8, 16, 4)[0].named_parameters()}
    assert set(run["single"]) == set(run["full"][0]) == set(init)
    for name, weight in run["single"].items():
        assert torch.equal(run["full"][0][name], run["full"][1][name]), f"{name}: ranks gathered different weights"
        torch.testing.assert_close(run["full"][0][name], weight, rtol=1e-5, atol=1e-5)
        assert (weight - init[name]).abs().max() > 1e-3, f"{name} did not move: the comparison would be empty"
    assert run["losses"] == pytest.approx(run["single_losses"], rel=1e-6)
    assert run["losses"][-1] < run["losses"][0]


@pytest.mark.parametrize("kwargs, needle", [
    ({"batch": 7}, "batch=7 must split evenly over world_size=2"),
    ({"d_hidden": 15}, "d_hidden=15 and d_out=4 must be multiples of world_size=2"),
    ({"d_out": 3}, "d_hidden=16 and d_out=3 must be multiples of world_size=2"),
])
def test_fsdp_demo_names_an_uneven_split(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        fsdp_demo(world_size=2, **kwargs)
