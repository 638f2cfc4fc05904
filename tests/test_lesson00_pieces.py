"""Lesson 00 writes a plain training loop (``my_train``) in its own cell: it takes the same steps as
ftlab.train (losses and weights) in fp32 and under bf16 autocast, the equality is sharp enough to
catch the usual accumulation bug, and drills 00c (predict a window's loss) and 00d (scale the loss
for gradient accumulation) grade the usual bugs with their own hints, asked before the loop."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import drills
from ftlab.drills import lesson00
from ftlab.runtime import seed_everything
from ftlab.train import TrainConfig, causal_lm_loss, train

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "00_start_here.py"
LOOP = dict(lr=1e-2, batch_size=2, grad_accum=3, warmup_steps=1, max_grad_norm=0.05)
VOCAB, LENGTH, STEPS = 40, 12, 3


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch):
    monkeypatch.delenv("FTLAB_DRILLS", raising=False)


def _code_cells() -> list[str]:
    return [c.source for c in jupytext.read(LESSON, fmt="py:percent").cells if c.cell_type == "code"]


def _loop_cell() -> str:
    (cell,) = [c for c in _code_cells() if "def my_train(" in c]
    return cell


def _my_train(source: str | None = None):
    ns = {"__name__": "lesson00", "torch": torch}  # section 1 of the lesson imported torch
    exec(compile(source or _loop_cell(), "00_start_here:my_train", "exec"), ns)
    return ns["my_train"]


def _rows(n: int) -> list[dict]:
    """Token rows whose number of target tokens differs from row to row (padding masked, -100)."""
    gen = torch.Generator().manual_seed(7)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (LENGTH,), generator=gen)
        real = int(torch.randint(2, LENGTH + 1, (1,), generator=gen))  # 2 .. LENGTH real tokens, then padding
        mask = (torch.arange(LENGTH) < real).long()
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return rows


def _collate(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _tiny_llama():
    seed_everything(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=LENGTH))


def _both(my_train, dtype=torch.float32, precision="fp32"):
    base = _tiny_llama()
    mine, ref = base, _tiny_llama()  # built twice from the same seed: the same weights
    rows = _rows(STEPS * LOOP["batch_size"] * LOOP["grad_accum"])
    history = train(ref, rows, TrainConfig(num_steps=STEPS, shuffle=False, precision=precision, **LOOP),
                    loss_fn=causal_lm_loss, collate_fn=_collate, progress=False)
    losses = my_train(mine, rows, _collate, num_steps=STEPS, dtype=dtype, **LOOP)
    return mine, ref, losses, history


def test_the_lessons_loop_takes_the_same_steps_as_ftlab_train_in_fp32():
    mine, ref, losses, history = _both(_my_train())
    assert len(losses) == STEPS
    assert all(s.grad_norm > LOOP["max_grad_norm"] for s in history.steps)  # clipping is exercised
    assert len({s.items for s in history.steps}) > 1  # windows of different token counts
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(history.losses))
    moved = 0.0
    for (name, p), q in zip(mine.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=0.0, rtol=0.0, msg=lambda m, name=name: f"{name}: {m}")
        moved = max(moved, (q - _tiny_llama().get_parameter(name)).abs().max().item())
    assert moved > 1e-3  # the steps changed the weights: equal is not "both did nothing"


def test_the_lessons_loop_autocasts_like_ftlab_train_in_bf16():
    mine, ref, losses, history = _both(_my_train(), dtype=torch.bfloat16, precision="bf16")
    assert history.precision == "bf16"
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(history.losses))
    for p, q in zip(mine.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    fp32 = _my_train()(_tiny_llama(), _rows(6), _collate, num_steps=1, **LOOP)
    bf16 = _my_train()(_tiny_llama(), _rows(6), _collate, num_steps=1, dtype=torch.bfloat16, **LOOP)
    assert fp32[0] != bf16[0]  # the autocast is on: bf16 matmuls change the loss


def test_the_equality_check_catches_the_mean_of_micro_batch_means_bug():
    cell = _loop_cell()
    right = "(loss_sum / N).backward()"
    assert right in cell
    buggy = cell.replace(right, "(loss_sum / int((batch['labels'][:, 1:] != -100).sum()) / grad_accum).backward()")
    mine, ref, _, _ = _both(_my_train(buggy))
    with pytest.raises(AssertionError):
        for p, q in zip(mine.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q)


@pytest.mark.parametrize("bug, words", [
    (lambda s, c: s / len(s), "divides by grad_accum"),
    (lambda s, c: s, "Nothing is divided"),
    (lambda s, c: s / c, "its own count"),
    (lambda s, c: s / c / len(s), "mean of the micro-batch means"),
])
def test_window_losses_drill_names_each_usual_bug(bug, words):
    result = drills.grade("00d", bug)
    assert result.status == "fail" and words in result.message


def test_window_losses_solution_matches_ftlab_train_on_a_real_window():
    losses = lesson00.window_losses_solution(torch.tensor([12.0, 300.0]), torch.tensor([3, 300]))
    torch.testing.assert_close(losses.sum(), torch.tensor(312 / 303))
    assert drills.grade("00d", lambda s, c: torch.stack([x / c.sum() for x in s])).passed


@pytest.mark.parametrize("answer, words", [(2.5, "mean of the two micro-batch means"), (156, "grad_accum"),
                                           ("1.03", None), (1.0297, None)])
def test_window_loss_prediction_hints_the_mean_of_means(answer, words):
    result = drills.grade("00c", answer)
    if words is None:
        assert result.passed
    else:
        assert result.status == "fail" and words in result.message


def test_lesson00_asks_both_drills_before_its_loop_and_the_loop_before_train():
    cells = _code_cells()
    where = {d: next(i for i, c in enumerate(cells) if f'check("{d}"' in c) for d in ("00c", "00d")}
    revealed = next(i for i, c in enumerate(cells) if "window mean" in c and "print(" in c)
    loop = cells.index(_loop_cell())
    history = next(i for i, c in enumerate(cells) if c.startswith("history = train("))
    assert where["00c"] < revealed < where["00d"] < loop < history
