"""Lesson 00 writes a plain training loop (``my_train``) in its own cell: it takes the same steps as
ftlab.train (losses and weights) in fp32 and under bf16 autocast, the equality is sharp enough to
catch the usual accumulation bug, and drills 00c (predict a window's loss) and 00d (scale the loss
for gradient accumulation) grade the usual bugs with their own hints, asked before the loop. Its
Trainer cell runs the same steps through ``transformers.Trainer``: the same losses as ftlab.train,
and a ``compute_metrics`` answer loss equal to ``response_loss``; a setting that differs fails it."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from types import SimpleNamespace

import jupytext
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import drills
from ftlab.data import load_instructions
from ftlab.drills import lesson00
from ftlab.evals import response_loss
from ftlab.models import load_causal_lm
from ftlab.runtime import device, seed_everything
from ftlab.train import TrainConfig, causal_lm_loss, train

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "00_start_here.py"
LOOP = dict(lr=1e-2, batch_size=2, grad_accum=3, warmup_steps=1, max_grad_norm=0.05)
VOCAB, LENGTH, STEPS = 40, 12, 3


pytestmark = pytest.mark.usefixtures("not_strict")  # drills report, never raise, here


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


# -- the same run through transformers.Trainer ------------------------------------------------------

EVAL_LENGTH = 64  # the lesson's max_length: the eval rows are real questions and answers


def _trainer_cell() -> str:
    (cell,) = [c for c in _code_cells() if "TrainingArguments(" in c]
    return cell


@pytest.fixture(scope="module")
def tokenizer():
    return load_causal_lm("tiny")[1]


def _trainer_run(tokenizer, source=None, dtype=torch.float32):
    """Run the lesson's Trainer cell after an ftlab.train run of LOOP on this file's token rows.

    Returns the cell's namespace and ftlab.train's History. The names the cell takes from earlier
    cells are given here as the lesson defines them; the model is a tiny Llama with the tiny
    tokenizer's vocabulary, so the cell's evaluation scores real held-out answers.
    """
    def init():
        seed_everything(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=EVAL_LENGTH))

    ref, rows = init(), _rows(STEPS * LOOP["batch_size"] * LOOP["grad_accum"])
    history = train(ref, rows, TrainConfig(num_steps=STEPS, shuffle=False, **LOOP,
                                           precision="bf16" if dtype == torch.bfloat16 else "fp32"),
                    loss_fn=causal_lm_loss, collate_fn=_collate, progress=False)
    ns = dict(copy=copy, tempfile=tempfile, torch=torch, F=F, device=device, response_loss=response_loss,
              cfg=SimpleNamespace(seed=0, max_length=EVAL_LENGTH), loop=LOOP, dtype=dtype, tiny_lm=init(),
              check_ds=rows, collate=_collate, ref_history=history, ref=ref, tokenizer=tokenizer,
              test_rows=list(load_instructions("test").select(range(8))))
    exec(compile(source or _trainer_cell(), "00_start_here:trainer", "exec"), ns)
    return ns, history


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_lessons_trainer_run_takes_the_same_steps_as_ftlab_train(tokenizer, dtype, capsys):
    ns, history = _trainer_run(tokenizer, dtype=dtype)
    assert len(ns["hf_losses"]) == STEPS
    torch.testing.assert_close(torch.tensor(ns["hf_losses"]), torch.tensor(history.losses))
    assert ns["args"].bf16 == (dtype == torch.bfloat16) and not ns["args"].fp16  # the precision train ran
    for p, q in zip(ns["trainer"].model.parameters(), ns["ref"].parameters()):
        torch.testing.assert_close(p, q)
    assert 4.0 < ns["hf_answer_loss"] < 9.0  # about ln(768) = 6.6 nats: a random model, answers scored
    torch.testing.assert_close(torch.tensor(ns["hf_answer_loss"]), torch.tensor(ns["ref_answer_loss"]))
    out = capsys.readouterr().out
    assert "'loss'" not in out and "train_runtime" not in out  # the Trainer prints no log lines
    lines = out.splitlines()
    assert [line for line in lines if not line.startswith("train: ")] == lines[-2:]  # only the cell's two lines
    assert lines[-2].startswith("Trainer [") and lines[-1].startswith("answer loss: compute_metrics")
    assert Path(ns["args"].output_dir).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())


@pytest.mark.parametrize("right, wrong", [
    ('learning_rate=loop["lr"]', 'learning_rate=2 * loop["lr"]'),
    ('train_sampling_strategy="sequential"', 'train_sampling_strategy="random"'),
    ('warmup_steps=loop["warmup_steps"]', "warmup_steps=0"),
    ('max_grad_norm=loop["max_grad_norm"]', "max_grad_norm=0.0"),  # 0: no clipping
    ('gradient_accumulation_steps=loop["grad_accum"]', "gradient_accumulation_steps=1"),
    ("pred.predictions[answer].mean()", "pred.predictions.mean()"),  # averages the prompt and padding too
])
def test_the_trainer_check_fails_when_a_setting_differs(tokenizer, right, wrong):
    cell = _trainer_cell()
    assert right in cell
    with pytest.raises(AssertionError):
        _trainer_run(tokenizer, cell.replace(right, wrong))


def test_the_trainer_check_fails_when_its_precision_differs_from_trains(tokenizer):
    cell = _trainer_cell()
    right = "bf16=dtype == torch.bfloat16"
    assert right in cell
    with pytest.raises(AssertionError):
        _trainer_run(tokenizer, cell.replace(right, "bf16=False"), dtype=torch.bfloat16)
