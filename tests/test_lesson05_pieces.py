"""Lesson 05's own pieces: its format_example and sft_collate equal ftlab.sft (both templates),
its drills 05a and 05d grade the usual bugs with their own hints, and the lesson asks before it
reveals (a code drill early, no typed percentages in its prose)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import jupytext
import pytest
import torch

from ftlab import drills
from ftlab.drills import lesson05
from ftlab.models import load_causal_lm
from ftlab.sft import SFTCollator, common_prefix_length, tokenize_example

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "05_sft_masked_loss.py"


pytestmark = pytest.mark.usefixtures("not_strict")  # drills report, never raise, here


def _cells():
    return jupytext.read(LESSON, fmt="py:percent").cells


def _lesson_function(name: str, template: str = "chat"):
    """Run the lesson's cell that defines ``name`` (and nothing else) and return the function."""
    (source,) = [c.source for c in _cells() if c.cell_type == "code" and f"def {name}(" in c.source
                 and "answer" not in c.metadata.get("tags", []) and "solution" not in c.metadata.get("tags", [])]
    namespace = {"torch": torch, "common_prefix_length": common_prefix_length,
                 "cfg": SimpleNamespace(template=template)}
    exec(compile(source, str(LESSON), "exec"), namespace)
    return namespace[name]


@pytest.fixture(scope="module")
def tokenizer():
    return load_causal_lm()[1]


ROWS = [{"prompt": "Where does Kafi live?", "response": "Kafi lives in Daletol."},
        {"prompt": "What is 7 + 5?", "response": "7 + 5 = 12."},
        {"prompt": "Tell me everything. " * 20, "response": "No."}]


@pytest.mark.parametrize("template", ["chat", "alpaca"])
def test_lesson_format_example_equals_ftlab_tokenize_example(tokenizer, template):
    format_example = _lesson_function("format_example", template)
    for row in ROWS[:2]:
        want = tokenize_example(row["prompt"], row["response"], tokenizer, max_length=64, template=template)
        got = format_example(row, tokenizer, 64)
        assert got == want
        assert got["labels"][:3] == [-100] * 3 and got["labels"][-1] != -100  # prompt masked, the end trained
    long = format_example(ROWS[2], tokenizer, 16)  # truncation keeps the first 16 tokens
    assert len(long["input_ids"]) == 16 and set(long["labels"]) == {-100}


def test_lesson_sft_collate_equals_sftcollator_and_pads_labels_with_minus_100():
    sft_collate = _lesson_function("sft_collate")
    examples = [{"input_ids": [1, 5, 6, 2], "labels": [-100, -100, 6, 2]},
                {"input_ids": [1, 7, 2], "labels": [-100, 7, 2]},
                {"input_ids": [1, 2], "labels": [-100, 2]}]
    got = sft_collate(examples, pad_token_id=2)  # pad = EOS, as for a Llama tokenizer
    want = SFTCollator(pad_token_id=2)(examples)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(got[key], want[key]), key
    assert got["labels"].tolist() == [[-100, -100, 6, 2], [-100, 7, 2, -100], [-100, 2, -100, -100]]
    assert got["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]


def test_pad_batch_solution_equals_trl_and_sftcollator_on_the_drill_inputs():
    for seed in range(6):
        examples, pad = lesson05._batch_inputs(torch.Generator().manual_seed(seed))
        ours = lesson05.pad_batch_solution(examples, pad)
        for theirs in (lesson05._trl_collate(examples, pad), SFTCollator(pad_token_id=pad)(examples)):
            for key in lesson05.KEYS:
                assert torch.equal(ours[key], theirs[key]), key


def test_pad_batch_inputs_cover_pad_equal_to_eos_and_different_lengths():
    """Masking by id only shows when the pad id is the EOS: the grader's trials must include both."""
    trials = [lesson05._batch_inputs(torch.Generator().manual_seed(1000 + t)) for t in range(4)]
    assert {pad for _, pad in trials} == {0, 2}
    assert all(len({len(ex["input_ids"]) for ex in examples}) >= 2 for examples, _ in trials)


@pytest.mark.parametrize("bug, words", [
    (lesson05._bug_labels_pad_id, "Pad labels with -100"),
    (lesson05._bug_mask_by_id, "by position"),
    (lesson05._bug_mask_all_ones, "attention_mask"),
    (lesson05._bug_left_pad, "left padding"),
    (lesson05._bug_ids_minus_100, "-100 is a label"),
])
def test_pad_batch_bugs_get_their_own_hint(bug, words):
    result = drills.check("05d", bug)
    assert result.status == "fail" and words in result.message


def test_pad_batch_grader_explains_a_wrong_form_and_accepts_lists_or_in_place_padding():
    as_tensor = drills.check("05d", lambda ex, pad: lesson05.pad_batch_solution(ex, pad)["labels"])
    assert as_tensor.status == "fail" and "return a dict" in as_tensor.message
    no_labels = drills.check("05d", lambda ex, pad: {k: v for k, v in lesson05.pad_batch_solution(ex, pad).items()
                                                      if k != "labels"})
    assert no_labels.status == "fail" and "['labels']" in no_labels.message
    short = drills.check("05d", lambda ex, pad: {k: v[:, :-1] for k, v in lesson05.pad_batch_solution(ex, pad).items()})
    assert short.status == "fail" and "(B, L) = (2, 4)" in short.message

    def in_place(examples, pad):  # extends the student's lists: must not spoil the reference's inputs
        width = max(len(ex["input_ids"]) for ex in examples)
        for ex in examples:
            k = width - len(ex["input_ids"])
            ex["input_ids"] += [pad] * k
            ex["attention_mask"] += [0] * k
            ex["labels"] += [-100] * k
        return {key: [ex[key] for ex in examples] for key in lesson05.KEYS}  # lists, not tensors

    assert drills.check("05d", in_place).passed


def test_sft_labels_off_by_one_fails_with_a_boundary_hint():
    short = drills.check("05a", lesson05._bug_one_short)  # the last prompt token left trained
    assert short.status == "fail" and short.message.startswith("Hint: Off by one")
    over = drills.check("05a", lesson05._bug_one_over)  # the first response token masked too
    assert over.status == "fail" and ("Off by one" in over.message or "first differ" in over.message)


def test_lesson05_asks_a_code_drill_in_its_first_two_thirds_and_predicts_before_revealing():
    cells = _cells()
    checks = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.startswith("check(")]
    first_code_drill = min(i for i in checks if '"05a"' in cells[i].source or '"05d"' in cells[i].source)
    assert first_code_drill < 2 * len(cells) / 3
    reveal = next(i for i, c in enumerate(cells) if "n_in_loss = " in c.source)
    assert next(i for i in checks if '"05b"' in cells[i].source) < reveal


def test_lesson05_prose_types_no_percentages():
    """Numbers in the text come from printed variables: a typed '57%' drifts from what was run."""
    typed = [m.group(0) for c in _cells() if c.cell_type == "markdown"
             for m in re.finditer(r"~?\d+(\.\d+)?\s?%", c.source)]
    assert typed == []
