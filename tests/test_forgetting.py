"""ftlab.forgetting: replay batches, early stopping, the base-weights hash, the three scores."""

from __future__ import annotations

import pytest
import torch

from ftlab.forgetting import EarlyStopping, MatchedSkill, base_weights_hash, lm_examples, replay_mix


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


# ---------------------------------------------------------------------------------------------
# General-text loss, the sets at both scales, and early stopping that fits a T4 run


@pytest.fixture(scope="module")
def tiny_lm():
    from ftlab.models import load_causal_lm

    return load_causal_lm(profile="tiny")


def test_text_loss_is_low_on_pretraining_text_and_high_on_shuffled_words(tiny_lm):
    import random

    from ftlab.data.world import make_world, pretraining_corpus
    from ftlab.forgetting import text_loss

    model, tok = tiny_lm
    docs = pretraining_corpus(make_world(), 32, seed=2)
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(d.split(), len(d.split()))) for d in docs]
    assert text_loss(model, tok, docs) < 1.0 < 3.0 < text_loss(model, tok, shuffled)
    with pytest.raises(ValueError, match="at least one text"):
        text_loss(model, tok, [])


def test_text_loss_is_the_training_loss_per_token_of_the_same_texts(tiny_lm):
    """text_loss scores through evals.mean_label_nll; it must equal what ftlab.train's causal-LM
    loss sums over the same padded batch, divided by the tokens it counts."""
    from ftlab.data.world import make_world, pretraining_corpus
    from ftlab.forgetting import lm_examples, text_loss
    from ftlab.sft import SFTCollator
    from ftlab.train import causal_lm_loss, count_causal_lm_items

    model, tok = tiny_lm
    docs = pretraining_corpus(make_world(), 5, seed=3)  # lengths differ: the batch is padded
    batch = SFTCollator(tokenizer=tok)(lm_examples(docs, tok, max_length=48))
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()
    with torch.no_grad():
        expected = float(causal_lm_loss(model.eval(), batch)) / count_causal_lm_items(batch)
    assert text_loss(model, tok, docs, max_length=48, batch_size=5) == pytest.approx(expected, rel=1e-5)


def test_forgetting_report_adds_the_text_loss_only_when_given_text(tiny_lm):
    from ftlab.forgetting import forgetting_report, forgetting_sets

    model, tok = tiny_lm
    sets = forgetting_sets("fact", eval_size=4, text_docs=8, profile="tiny")
    general = {k: v[:8] for k, v in sets.general.items()}
    plain = forgetting_report(model, tok, sets.target, general, sets.skill)
    with_text = forgetting_report(model, tok, sets.target, general, sets.skill, text=sets.text)
    assert set(plain) == {"target", "general", "skill"} and set(with_text) == set(plain) | {"text"}
    assert with_text["general"] == plain["general"] == 1.0  # the base knows the held-out facts
    assert 0 < with_text["text"] < 1.0


def test_tiny_sets_are_the_micro_world_sets_lesson_09_always_used():
    from ftlab.data import load_facts, load_instructions
    from ftlab.data.world import OPPOSITES, make_world, pretraining_corpus
    from ftlab.forgetting import forgetting_sets

    sets = forgetting_sets("fact", eval_size=40, replay_docs=400, text_docs=64, profile="tiny")
    assert sets.train == [dict(r) for r in load_instructions("train") if r["kind"] == "fact"]
    assert sets.target == [dict(r) for r in load_instructions("test") if r["kind"] == "fact"][:40]
    assert sets.general["prompt"] == list(load_facts("heldout")["prompt"])
    assert sets.general_val["answer"] == list(load_facts("train")["answer"])
    assert sets.skill["prompt"][:2] == [f"The opposite of {OPPOSITES[0][0]} is", f"The opposite of {OPPOSITES[1][0]} is"]
    assert len(sets.skill["prompt"]) == 2 * len(OPPOSITES)
    assert sets.replay == pretraining_corpus(make_world(), 400, seed=1)
    assert len(sets.text) == 64 and not set(sets.text) & set(sets.replay[:64])  # another draw
    assert tuple(sets.tasks) == ("fact", "addition", "opposite") and sets.tasks["fact"] is sets.train


def test_a_narrow_task_the_profile_lacks_is_an_error_naming_the_ones_it_has():
    """The full profile's lesson 09 asked for kind "fact" in Alpaca, whose rows are all "alpaca":
    zero rows, and exact_match raised "needs at least one row" (the L4 rehearsal)."""
    from ftlab.forgetting import TASKS, task_rows

    with pytest.raises(ValueError, match=r"'fact' does not exist in the full profile.*'date', 'addition', 'opposite'"):
        task_rows("fact", profile="full")
    with pytest.raises(ValueError, match=r"'date' does not exist in the tiny profile.*'fact'"):
        task_rows("date", profile="tiny")
    for kind in TASKS["full"]:
        assert task_rows(kind, "train", profile="full") and task_rows(kind, "test", profile="full")


def test_generated_tasks_are_seeded_disjoint_and_answered_right():
    import re

    from ftlab.forgetting import MONTHS, generated_task

    for kind in ("date", "addition", "opposite"):
        train, test = generated_task(kind, "train"), generated_task(kind, "test")
        assert generated_task(kind, "train") == train  # the same rows on every machine
        assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
        assert all(r["kind"] == kind and r["response"] for r in train + test)
    dates = generated_task("date", "train") + generated_task("date", "test")
    assert len(dates) == 1200 and len({r["response"] for r in dates}) == 1200  # no date in both splits
    for r in dates[:60]:
        day_first = re.search(r"(\d{1,2}) ([A-Z][a-z]+) (\d{4})", r["prompt"])
        if day_first:
            d, month, y = day_first.groups()
        else:
            month, d, y = re.search(r"([A-Z][a-z]+) (\d{1,2}), (\d{4})", r["prompt"]).groups()
        assert r["response"] == f"{int(y):04d}-{MONTHS.index(month) + 1:02d}-{int(d):02d}"
    for r in generated_task("addition", "test")[:50]:
        a, b = map(int, re.findall(r"\d+", r["prompt"])[:2])
        assert r["response"] == str(a + b)
    with pytest.raises(ValueError, match="splits"):
        generated_task("date", "validation")


def test_early_stopping_keeps_one_cpu_copy_overwritten_in_place():
    model = torch.nn.Linear(3, 2)
    stopper = EarlyStopping(lambda m: 1.0, floor=0.5, eval_every=5)
    stopper.snapshot(model)
    kept = dict(stopper._state)
    with torch.no_grad():
        model.weight.fill_(2.0)
    stopper(model)
    assert all(t.device.type == "cpu" for t in stopper._state.values())
    assert all(stopper._state[n] is kept[n] for n in kept)  # written into the same buffers
    assert torch.equal(stopper._state["weight"], torch.full((2, 3), 2.0))
    model.half()  # the model changed dtype: a new copy of the right dtype
    stopper.snapshot(model, step=7)
    assert stopper._state["weight"].dtype == torch.float16 and stopper.best_step == 7


def test_early_stopping_labels_the_last_eval_with_the_step_it_ran_at(monkeypatch):
    """train evaluates every eval_every steps and once more after its last step (here 12, or 2
    under FTLAB_MAX_STEPS=2): that last one is step 12 (or 2), not 15 (or 5)."""
    from ftlab.train import train

    data = [(torch.randn(3), torch.tensor(0)) for _ in range(8)]
    for cap, expected in ((None, [5, 10, 12]), ("2", [2])):
        if cap:
            monkeypatch.setenv("FTLAB_MAX_STEPS", cap)
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        stopper = EarlyStopping(lambda m: 1.0, floor=0.5, eval_every=5, num_steps=12)
        stopper.snapshot(model)
        train(model, data, lr=1e-2, num_steps=12, batch_size=4, eval_every=5, eval_fn=stopper, progress=False)
        assert stopper.steps == expected and stopper.best_step == expected[-1]


# ---------------------------------------------------------------------------------------------
# Early stopping on validation loss, and scoring runs at matched target skill (lesson 09)


def _run_evals(stopper, model, n):
    """Set the weight to 1, 2, ... before each of ``n`` evaluations; return the weight of each."""
    seen = []
    for i in range(n):
        with torch.no_grad():
            model.weight.fill_(float(i + 1))
        stopper(model)
        seen.append(model.weight.detach().clone())
    return seen


def test_early_stopping_on_a_loss_keeps_the_weights_of_its_minimum():
    """mode="min": the validation loss falls, then turns up (overfitting); restore() puts back the
    weights of the lowest loss, not the last ones and not the last improvement before a rise."""
    model = torch.nn.Linear(2, 1, bias=False)
    losses = iter([0.9, 0.5, 0.3, 0.45, 0.35, 0.8])
    stopper = EarlyStopping(lambda m: next(losses), eval_every=4, mode="min")
    stopper.snapshot(model)
    seen = _run_evals(stopper, model, 6)
    assert stopper.steps == [4, 8, 12, 16, 20, 24] and stopper.scores == [0.9, 0.5, 0.3, 0.45, 0.35, 0.8]
    assert stopper.best_score == 0.3 and stopper.restore(model) == 12
    assert torch.equal(model.weight, seen[2])
    # mode="max" without a floor keeps the highest score (0.9 at the first eval)
    scores = iter([0.9, 0.5, 0.3])
    best = EarlyStopping(lambda m: next(scores), eval_every=4)
    best.snapshot(model)
    _run_evals(best, model, 3)
    assert best.restore(model) == 4 and float(model.weight.detach()[0, 0]) == 1.0


def test_early_stopping_names_what_a_bad_mode_floor_or_eval_every_should_be():
    with pytest.raises(ValueError, match="'min' for a score that should go down"):
        EarlyStopping(lambda m: 0.0, eval_every=5, mode="lowest")
    with pytest.raises(ValueError, match="leave floor=None"):
        EarlyStopping(lambda m: 0.0, floor=1.0, eval_every=5, mode="min")
    with pytest.raises(ValueError, match="eval_every=None"):
        EarlyStopping(lambda m: 0.0, floor=0.5)


def test_matched_skill_reports_once_when_the_level_is_first_reached_then_stops_scoring():
    model = torch.nn.Linear(2, 1, bias=False)
    scores, reports = iter([0.1, 0.4, 0.6, 0.2]), []
    matched = MatchedSkill(lambda m: next(scores), level=0.5, eval_every=5, num_steps=22,
                           report_fn=lambda m: reports.append(float(m.weight.detach()[0, 0])) or {"general": 0.7})
    out = [matched(model) for _ in range(2)]
    with torch.no_grad():
        model.weight.fill_(3.0)
    out += [matched(model) for _ in range(3)]  # the 4th score (0.2) is never asked for
    assert out == [{"target_val": 0.1}, {"target_val": 0.4}, {"target_val": 0.6}, {}, {}]
    assert matched.steps == [5, 10, 15] and matched.reached_step == 15
    assert reports == [3.0] and matched.report == {"general": 0.7} and matched.best == 0.6


def test_matched_skill_that_never_reaches_the_level_says_so_and_how_close_it_came():
    scores = iter([0.1, 0.3, 0.2])
    matched = MatchedSkill(lambda m: next(scores), level=0.5, report_fn=lambda m: 1 / 0, eval_every=5, num_steps=12)
    for _ in range(3):
        matched(torch.nn.Linear(1, 1))
    assert matched.reached_step is None and matched.report is None
    assert matched.best == 0.3 and matched.steps == [5, 10, 12]  # the last eval runs after step 12
    with pytest.raises(ValueError, match="eval_every=0"):
        MatchedSkill(lambda m: 0.0, level=0.5, report_fn=dict, eval_every=0)


def test_held_out_target_rows_split_into_reported_and_validation_rows():
    """Decisions (early stopping, matched skill) watch target_val; the reported target is other rows."""
    from ftlab.forgetting import forgetting_sets, task_rows

    sets = forgetting_sets("fact", eval_size=40, val_size=24, text_docs=8, profile="tiny")
    held_out = task_rows("fact", "test", profile="tiny")
    assert sets.target == held_out[:40] and sets.target_val == held_out[40:64]
    assert not {r["prompt"] for r in sets.target} & {r["prompt"] for r in sets.target_val}
    with pytest.raises(ValueError, match=r"64 held-out rows, fewer than eval_size \+ val_size = 50 \+ 24"):
        forgetting_sets("fact", eval_size=50, val_size=24, profile="tiny")
