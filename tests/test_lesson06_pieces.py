"""Lesson 06 writes sequence_logprobs and dpo_loss in its own cells: they equal ftlab.dpo's (the
tested copy) and TRL's sigmoid formula, and the drills on them sit before those cells."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ftlab import dpo, drills
from ftlab.drills import lesson06

LESSON = Path(__file__).resolve().parents[1] / "notebooks" / "06_dpo.py"


pytestmark = pytest.mark.usefixtures("not_strict")  # drills report, never raise, here


def _lesson_functions(*names):
    """The lesson's own top-level definitions of ``names``, executed alone (not the whole notebook)."""
    tree = ast.parse(LESSON.read_text())
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    assert sorted(d.name for d in defs) == sorted(names), "the lesson defines each function once"
    namespace = {"torch": torch, "F": F}
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(LESSON), "exec"), namespace)
    return [namespace[n] for n in names]


class _Logits(torch.nn.Module):
    """A stand-in causal LM: logits from an embedding of the ids, (B, L, V)."""

    def __init__(self, vocab=13, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab, vocab)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.emb(input_ids) + torch.arange(input_ids.shape[1]).unsqueeze(-1) * 0.1)


def _batch(gen, rows=6, length=9, vocab=13):
    input_ids = torch.randint(0, vocab, (rows, length), generator=gen)
    labels = input_ids.clone()
    prompt = torch.randint(1, 4, (rows,), generator=gen)
    pad = torch.randint(0, 3, (rows,), generator=gen)
    pos = torch.arange(length)
    labels[pos < prompt.unsqueeze(1)] = -100                  # the prompt
    labels[pos >= (length - pad).unsqueeze(1)] = -100         # right padding
    attention_mask = (pos < (length - pad).unsqueeze(1)).long()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def test_lesson_sequence_logprobs_equals_ftlab_dpo_and_skips_masked_tokens():
    (sequence_logprobs,) = _lesson_functions("sequence_logprobs")
    model, gen = _Logits(), torch.Generator().manual_seed(1)
    for _ in range(3):
        batch = _batch(gen)
        with torch.no_grad():
            ours = sequence_logprobs(model, **batch)
            torch.testing.assert_close(ours, dpo.sequence_logprobs(model, batch))
    # by hand on one row: only the targets at t + 1 with a label count
    batch = _batch(gen, rows=1)
    with torch.no_grad():
        logps = torch.log_softmax(model(batch["input_ids"]).logits[0, :-1], dim=-1)
        targets = batch["labels"][0, 1:]
        want = sum(logps[t, int(targets[t])] for t in range(len(targets)) if targets[t] != -100)
        torch.testing.assert_close(sequence_logprobs(model, **batch)[0], want)


def test_lesson_dpo_loss_equals_ftlab_and_trl_sigmoid_formula():
    (dpo_loss,) = _lesson_functions("dpo_loss")
    gen = torch.Generator().manual_seed(2)
    for beta in (0.1, 0.5, 2.0):
        pc, pr, rc, rr = (-20 * torch.rand(5, generator=gen, dtype=torch.float64) for _ in range(4))
        loss, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta)
        for ours, theirs in zip((loss, chosen_rewards, rejected_rewards), dpo.dpo_loss(pc, pr, rc, rr, beta)):
            torch.testing.assert_close(ours, theirs)
        # TRL 1.16's DPOTrainer._compute_loss, loss_type="sigmoid", reverse KL, written out as there
        delta_score = (pc - rc) - (pr - rr)
        torch.testing.assert_close(loss, (-F.logsigmoid(beta * delta_score)).mean())
        torch.testing.assert_close(chosen_rewards, beta * (pc - rc))
    same = torch.tensor([-3.0, -7.0])
    assert math.isclose(float(dpo_loss(same, same, same, same, 0.1)[0]), math.log(2), rel_tol=1e-6)


def test_drill_06d_grades_loss_and_rewards_and_names_a_wrong_return():
    assert drills.check("06d", lesson06.dpo_loss_solution).passed
    only_loss = drills.check("06d", lambda pc, pr, rc, rr, b: lesson06.dpo_loss_solution(pc, pr, rc, rr, b)[0])
    assert only_loss.status == "fail" and "three things" in only_loss.message and "Tensor" in only_loss.message
    assert "_NotATriple" not in only_loss.message
    two = drills.check("06d", lambda pc, pr, rc, rr, b: lesson06.dpo_loss_solution(pc, pr, rc, rr, b)[:2])
    assert two.status == "fail" and "2 things" in two.message
    unscaled = drills.check("06d", lambda pc, pr, rc, rr, b: (-F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean(),
                                                             pc - rc, pr - rr))
    assert unscaled.status == "fail" and "rewards need beta" in unscaled.message
    beta_outside = drills.check("06d", lesson06._LOSS_BUGS[1][0])
    assert "INSIDE the sigmoid" in beta_outside.message


def test_drill_06e_is_log_2_with_hints_for_the_usual_slips():
    assert drills.check("06e", math.log(2)).passed and drills.check("06e", "0.693").passed
    assert "-log of it" in drills.check("06e", 0.5).message
    assert "sigmoid(0) is not 1" in drills.check("06e", 0).message


def test_drills_come_before_the_cells_they_drill_in_the_first_two_thirds_of_the_lesson():
    lines = LESSON.read_text().splitlines()

    def first(text):
        return next(i for i, line in enumerate(lines) if line.startswith(text))

    assert first('check("06c", answer_06c)') < first("def sequence_logprobs(")
    assert first('check("06d", answer_06d)') < first("def dpo_loss(")
    assert first('check("06e", answer_06e)') < first('print(f"step 0 (policy = reference)')
    assert first('check("06c", answer_06c)') < 2 * len(lines) / 3


def test_lesson_asserts_its_beta_claim_and_reports_the_sft_baseline():
    text = LESSON.read_text()
    assert "assert acc_large > acc_after" in text  # the summary's "larger beta did better" is checked
    assert "sft_preference = float((sft_c > sft_r).float().mean())" in text  # ties count 0, as TRL
    assert "a tie counts\n# as half: 50%" not in text  # the old claim about TRL
