"""ftlab.dpo: the DPO loss against its formula and against TRL's DPOTrainer (trl 1.16)."""

from __future__ import annotations

import copy
import pytest
import torch

from ftlab import dpo
from ftlab.data import load_preferences
from ftlab.models import load_causal_lm

@pytest.fixture(scope="module")
def lm():
    return load_causal_lm("tiny")


@pytest.fixture(scope="module")
def rows():
    return list(load_preferences("train").select(range(8)))


def _lora(model, init=True, seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           lora_dropout=0.0, init_lora_weights=init))


def _logps(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-20 * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(4)]


def test_dpo_loss_equals_the_formula():
    pc, pr, rc, rr = _logps()
    beta = 0.3
    loss, chosen_rewards, rejected_rewards = dpo.dpo_loss(pc, pr, rc, rr, beta)
    logits = beta * ((pc - rc) - (pr - rr))
    assert torch.allclose(loss, torch.log(1 + torch.exp(-logits)).mean(), atol=1e-12)
    assert torch.allclose(chosen_rewards, beta * (pc - rc)) and torch.allclose(rejected_rewards, beta * (pr - rr))
    assert not chosen_rewards.requires_grad


def test_gradient_raises_chosen_and_lowers_rejected_logprobs():
    pc, pr, rc, rr = [t.requires_grad_() for t in _logps()]
    dpo.dpo_loss(pc, pr, rc, rr, 0.1)[0].backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # gradient descent raises pc, lowers pr


def test_a_step_on_the_model_raises_chosen_and_lowers_rejected(lm, rows):
    model, tokenizer = lm
    policy = _lora(model)
    batch = dpo.collate_pairs(dpo.tokenize_pairs(rows, tokenizer), tokenizer.pad_token_id)
    before_c, before_r = dpo.sequence_logprobs(policy, batch).detach().chunk(2)
    loss, _, _ = dpo.dpo_batch(policy, batch, beta=0.1)
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
        after_c, after_r = dpo.sequence_logprobs(policy, batch).chunk(2)
    assert (after_c - before_c).mean() > 0 and (after_r - before_r).mean() < 0


def test_sequence_logprobs_sums_response_tokens_only(lm, rows):
    model, tokenizer = lm
    pair = dpo.tokenize_pair(rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"], tokenizer)
    ex = pair["chosen"]
    ids = torch.tensor([ex["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        n_prompt = ex["labels"].count(-100)
        want = sum(logp[t - 1, ids[0, t]] for t in range(n_prompt, ids.shape[1]))
        # the same row padded inside a batch with a longer one gives the same value
        batch = dpo.collate_pairs([pair, dpo.tokenize_pair(rows[1]["prompt"], rows[1]["chosen"] + " and more words",
                                                           rows[1]["rejected"], tokenizer)])
        got = dpo.sequence_logprobs(model, batch)[0]
    assert tokenizer.eos_token_id in ex["labels"]
    assert ex["labels"][:n_prompt] == [-100] * n_prompt and ex["labels"][n_prompt] != -100
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("template", ["chat", "alpaca"])
def test_tokenization_equals_trls(lm, rows, template):
    """sft.trl_records writes preference rows in either template; TRL tokenizes them as we do."""
    from trl import DPOTrainer

    model, tokenizer = lm
    trainer = DPOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), processing_class=tokenizer,
                         train_dataset=_trl_dataset(rows, tokenizer, template),
                         args=_trl_args(f"/tmp/ftlab_test_dpo_tok_{template}", max_steps=1))
    assert len(trainer.train_dataset) == len(rows)
    for trl_row, pair in zip(trainer.train_dataset, dpo.tokenize_pairs(rows, tokenizer, template=template)):
        n = len(trl_row["prompt_ids"])
        assert pair["chosen"]["input_ids"] == trl_row["prompt_ids"] + trl_row["chosen_ids"]
        assert pair["rejected"]["input_ids"] == trl_row["prompt_ids"] + trl_row["rejected_ids"]
        assert pair["chosen"]["labels"][:n] == [-100] * n and -100 not in pair["chosen"]["labels"][n:]


def _trl_dataset(rows, tokenizer, template="chat"):
    from datasets import Dataset

    from ftlab.sft import trl_records

    return Dataset.from_list(trl_records(rows, template))


def test_trl_records_has_one_home_in_sft():
    import ftlab.sft

    assert not hasattr(dpo, "trl_records")  # one function for SFT and preference rows
    assert ftlab.sft.trl_records(ROWS_ONE)[0]["chosen"] == [{"role": "assistant", "content": "yes"}]


ROWS_ONE = [{"prompt": "Is it?", "chosen": "yes", "rejected": "no"}]


def _trl_args(out, **kw):
    from trl import DPOConfig

    # trl 1.16's DPOConfig defaults to bf16=True; ftlab runs fp32 on the CPU, so compare in fp32
    return DPOConfig(output_dir=out, bf16=False, per_device_train_batch_size=8, learning_rate=1e-3, beta=0.1,
                     lr_scheduler_type="constant", logging_steps=1, report_to=[], use_cpu=True,
                     save_strategy="no", disable_tqdm=True, max_length=None,
                     train_sampling_strategy="sequential", **kw)


def test_loss_and_metrics_equal_a_trl_step_with_a_frozen_copy(lm, rows):
    from trl import DPOTrainer

    model, tokenizer = lm
    ref = copy.deepcopy(model).eval()
    policy = copy.deepcopy(model)
    with torch.no_grad():  # move the policy away from the reference so the rewards are not 0
        g = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p += 0.01 * torch.randn(p.shape, generator=g)
    batch = dpo.collate_pairs(dpo.tokenize_pairs(rows, tokenizer), tokenizer.pad_token_id)
    with torch.no_grad():
        loss, chosen_rewards, rejected_rewards = dpo.dpo_batch(policy, batch, beta=0.1, ref_model=ref)
    ours = {"loss": loss.item(), **dpo.reward_metrics(chosen_rewards, rejected_rewards)}
    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref), processing_class=tokenizer,
                         train_dataset=_trl_dataset(rows, tokenizer), args=_trl_args("/tmp/ftlab_test_dpo_ref", max_steps=1))
    trainer.train()
    theirs = trainer.state.log_history[0]
    assert abs(ours["rewards/margins"]) > 0.05, "the test needs non-zero rewards"
    for key, value in ours.items():
        assert theirs[key] == pytest.approx(value, abs=2e-4, rel=1e-4), key


def test_adapter_disabled_reference_matches_trl_over_two_steps(lm, rows):
    """TRL 1.16 with a peft model keeps a frozen copy of the starting adapter as "ref"; a freshly
    initialised LoRA (B = 0) is the base model, which is what disabling the adapter gives."""
    from trl import DPOTrainer

    model, tokenizer = lm
    ours_model, trl_model = _lora(model), _lora(model)
    history, log = dpo.train_dpo(ours_model, dpo.tokenize_pairs(rows, tokenizer), lr=1e-3, num_steps=2,
                                 batch_size=8, shuffle=False, beta=0.1, pad_token_id=tokenizer.pad_token_id,
                                 progress=False)
    trainer = DPOTrainer(model=trl_model, processing_class=tokenizer, train_dataset=_trl_dataset(rows, tokenizer),
                         args=_trl_args("/tmp/ftlab_test_dpo_peft", max_steps=2))
    trainer.train()
    theirs = [h for h in trainer.state.log_history if "rewards/chosen" in h]
    assert log[0]["rewards/margins"] == 0 and abs(log[1]["rewards/margins"]) > 1e-3
    for ours_step, their_step in zip(log, theirs):
        for key in ("loss", *dpo.METRICS):
            assert their_step[key] == pytest.approx(ours_step[key], abs=1e-4, rel=1e-3), (ours_step["step"], key)


def test_train_dpo_logs_each_step_over_its_whole_window(lm, rows):
    model, tokenizer = lm
    pairs = dpo.tokenize_pairs(rows[:4], tokenizer)
    policy = _lora(model, init=False)  # random B: rewards are non-zero from the start
    with torch.no_grad():
        loss, c, r = dpo.dpo_batch(policy, dpo.collate_pairs(pairs, tokenizer.pad_token_id), beta=0.2)
    history, log = dpo.train_dpo(policy, pairs, lr=1e-3, num_steps=1, batch_size=2, grad_accum=2, beta=0.2,
                                 shuffle=False, pad_token_id=tokenizer.pad_token_id, progress=False)
    assert [e["step"] for e in log] == [1] and history.steps[0].items == 4
    assert log[0]["loss"] == pytest.approx(loss.item(), abs=1e-5)
    for key, value in dpo.reward_metrics(c, r).items():
        assert log[0][key] == pytest.approx(value, abs=1e-5), key


def test_accuracy_counts_ties_zero_as_trl_does_and_kl_is_zero_before_training(lm, rows):
    model, tokenizer = lm
    policy = _lora(model)
    pairs = dpo.tokenize_pairs(rows, tokenizer)
    assert dpo.preference_accuracy(policy, pairs) == 0.0  # every margin is a tie; TRL counts chosen > rejected
    assert dpo.margin_accuracy(torch.tensor([0.0, 1e-5, 0.5, -0.5])) == 0.25  # near-ties count 0 too
    assert dpo.kl_to_reference(policy, pairs) == pytest.approx(0.0, abs=1e-6)
    assert dpo.kl_to_reference(_lora(model, init=False), pairs) > 1e-4


@pytest.mark.parametrize("beta", [0, -0.1, float("nan"), True])
def test_bad_beta_is_a_clear_error(beta):
    with pytest.raises(ValueError, match="beta"):
        dpo.dpo_loss(*_logps(), beta=beta)


def test_mismatched_batch_sizes_are_a_clear_error():
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="shapes differ"):
        dpo.dpo_loss(pc, pr[:3], rc, rr)


def test_identical_chosen_and_rejected_warn(lm):
    _, tokenizer = lm
    with pytest.warns(UserWarning, match="identical"):
        dpo.tokenize_pair("Where does Bo live?", "Bo lives in Rome.", "Bo lives in Rome.", tokenizer)


@pytest.mark.parametrize("chosen,rejected", [("", "No."), ("Yes.", "   ")])
def test_empty_responses_are_a_clear_error(lm, chosen, rejected):
    _, tokenizer = lm
    with pytest.raises(ValueError, match="empty"):
        dpo.tokenize_pair("Where does Bo live?", chosen, rejected, tokenizer)


def test_a_row_with_no_response_token_is_an_error_not_a_silent_zero(lm):
    model, _ = lm
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long),
             "labels": torch.tensor([[-100, -100, 5, 6, 7], [-100] * 5])}
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        dpo.sequence_logprobs(model, batch)


def test_truncation_never_leaves_an_all_masked_row(lm):
    _, tokenizer = lm
    pair = dpo.tokenize_pair("Where does Bo live?", "Bo lives in Rome.", "No.", tokenizer, max_length=14)
    for ex in pair.values():
        assert len(ex["input_ids"]) <= 14 and any(t != -100 for t in ex["labels"])
    long_prompt = "Where does Bo live? " * 20
    with pytest.raises(ValueError, match="max_length"):
        dpo.tokenize_pair(long_prompt, "Bo lives in Rome.", "No.", tokenizer, max_length=12)
    rows = [{"prompt": long_prompt, "chosen": "Bo lives in Rome.", "rejected": "No."},
            {"prompt": "Where does Bo live?", "chosen": "Bo lives in Rome.", "rejected": "No."}]
    assert len(dpo.tokenize_pairs(rows, tokenizer, max_length=14, verbose=False)) == 1  # dropped, counted
    with pytest.raises(ValueError, match="drops all"):
        dpo.tokenize_pairs(rows[:1], tokenizer, max_length=12)


def test_no_reference_is_a_clear_error(lm, rows):
    model, tokenizer = lm
    batch = dpo.collate_pairs(dpo.tokenize_pairs(rows[:2], tokenizer))
    with pytest.raises(ValueError, match="ref_model"):
        dpo.reference_logprobs(model, batch)


def test_beta_explorer_drifts_less_for_larger_beta():
    from ftlab.widgets import beta_explorer_data

    toy = ((0.40, 0.30, 0.10, 0.05, 0.15), (1.0, -1.0, -0.5, -1.0, 0.5), tuple("abcde"))
    small, large = beta_explorer_data(0.05, *toy), beta_explorer_data(2.0, *toy)
    assert small["kl"] > large["kl"] > 0
    assert abs(sum(small["policy"]) - 1) < 1e-9
    with pytest.raises(ValueError, match="beta"):
        beta_explorer_data(0.0, *toy)


# ---------------------------------------------------------------------------------------------
# The evaluations at full scale: memory-bounded, same numbers


class _LargestFloat32OverVocab(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest float32 tensor over the vocabulary (last dim = vocab) any op creates."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel())
        return out


class _RowCounter(torch.nn.Module):
    """The model, recording how many rows each forward pass gets."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, input_ids, attention_mask):
        self.rows.append(input_ids.shape[0])
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def _naive_margins_and_kl(policy, ref, pairs):
    """The evaluations as written before: one batch, a float32 log_softmax over (B, L, V)."""
    batch = dpo.collate_pairs(pairs)
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    with torch.no_grad():
        logp = torch.log_softmax(policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float(), -1)
        ref_logp = torch.log_softmax(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float(), -1)
    picked = lambda lp: (lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(1)  # noqa: E731
    pc, pr = picked(logp).chunk(2)
    rc, rr = picked(ref_logp).chunk(2)
    kl = (logp.exp() * (logp - ref_logp)).sum(-1)[mask].sum() / mask.sum()
    return (pc - rc) - (pr - rr), float(kl)


def test_evaluations_equal_the_full_batch_formula(lm, rows):
    model, tokenizer = lm
    policy, ref = _lora(model, init=False), copy.deepcopy(model)
    pairs = dpo.tokenize_pairs(rows, tokenizer)
    want_margins, want_kl = _naive_margins_and_kl(policy, ref, pairs)
    for batch_size in (1, 3, 8):
        margins = dpo.preference_margins(policy, pairs, ref_model=ref, batch_size=batch_size, pad_token_id=0)
        assert torch.allclose(margins, want_margins, atol=1e-4)
        assert dpo.kl_to_reference(policy, pairs, ref_model=ref, batch_size=batch_size) == pytest.approx(want_kl, rel=1e-4, abs=1e-7)
    # the adapter-disabled reference is the base model: the same numbers without a copy
    assert torch.allclose(dpo.preference_margins(policy, pairs), want_margins, atol=1e-4)
    assert dpo.preference_accuracy(policy, pairs) == dpo.margin_accuracy(want_margins)


def test_evaluations_are_memory_bounded_in_half_precision(lm):
    """Full scale: a half-precision model, many long pairs. Before, all 32 pairs went through one
    forward pass and a float32 log_softmax over (64, L, V): ~10 GB at 512 tokens and a 32k vocabulary,
    twice that for the KL. Now: at most 2 x batch_size rows per forward pass, and no float32 tensor
    over the vocabulary larger than one row's (L, V)."""
    model, tokenizer = lm
    policy = _lora(copy.deepcopy(model).to(torch.bfloat16), init=False)
    long_rows = [{"prompt": f"Where does person {i} live? " * 3, "chosen": "Bo lives in Rome. " * 4,
                  "rejected": "No."} for i in range(40)]
    pairs = dpo.tokenize_pairs(long_rows, tokenizer)
    length = max(len(p["chosen"]["input_ids"]) for p in pairs)
    one_row = length * model.config.vocab_size
    for fn in (dpo.preference_accuracy, dpo.kl_to_reference):
        counter = _RowCounter(policy)
        counter.disable_adapter = policy.disable_adapter  # the reference: the adapter switched off
        with _LargestFloat32OverVocab(model.config.vocab_size) as mode:
            fn(counter, pairs)
        assert max(counter.rows) <= 2 * dpo.EVAL_PAIRS_PER_BATCH, fn.__name__
        assert sum(counter.rows) == 2 * 2 * len(pairs), fn.__name__  # policy + reference, every pair once
        assert 0 < mode.largest <= one_row, (fn.__name__, mode.largest, one_row)


# ---------------------------------------------------------------------------------------------
# Refused before step 1, and the log of a resumed run


def test_the_policy_as_its_own_reference_is_refused(lm, rows):
    model, tokenizer = lm
    policy = _lora(model)
    pairs = dpo.tokenize_pairs(rows[:2], tokenizer)
    for ref in (policy, policy.base_model.model):  # itself, or the module its adapters live in
        with pytest.raises(ValueError, match=r"ref_model is the policy itself.*log 2 = 0\.693.*deepcopy"):
            dpo.train_dpo(policy, pairs, num_steps=1, batch_size=2, ref_model=ref, progress=False)


def test_untokenized_and_one_sided_rows_are_clear_errors(lm, rows):
    model, tokenizer = lm
    policy = _lora(model)
    with pytest.raises(TypeError, match=r"train_dpo takes tokenized pairs.*pair 0 is text.*tokenize_pairs\(rows, tokenizer\)"):
        dpo.train_dpo(policy, rows[:2], num_steps=1, batch_size=2, progress=False)
    no_rejected = [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in rows[:2]]
    with pytest.raises(ValueError, match=r"row 0 has no 'rejected' \(its keys: \['chosen', 'prompt'\]\)"):
        dpo.tokenize_pairs(no_rejected, tokenizer)
    one_sided = [{"chosen": p["chosen"]} for p in dpo.tokenize_pairs(rows[:2], tokenizer)]
    with pytest.raises(ValueError, match=r"train_dpo: pair 0 has no 'rejected' side"):
        dpo.train_dpo(policy, one_sided, num_steps=1, batch_size=2, progress=False)


def test_evaluations_name_a_missing_model_or_empty_pairs(lm, rows):
    model, tokenizer = lm
    pairs = dpo.tokenize_pairs(rows[:2], tokenizer)
    with pytest.raises(TypeError, match=r"preference_accuracy\(model, pairs, \.\.\.\) takes the policy model first; got a list"):
        dpo.preference_accuracy([], pairs)
    with pytest.raises(ValueError, match=r"preference_accuracy got no pairs"):
        dpo.preference_accuracy(model, [])
    with pytest.raises(TypeError, match=r"kl_to_reference takes tokenized pairs"):
        dpo.kl_to_reference(_lora(model), rows[:2])


def test_the_log_of_a_resumed_run_covers_every_step(lm, rows, tmp_path):
    model, tokenizer = lm
    pairs = dpo.tokenize_pairs(rows, tokenizer)
    settings = dict(lr=1e-3, batch_size=2, grad_accum=2, beta=0.1, pad_token_id=tokenizer.pad_token_id,
                    progress=False)
    _, straight = dpo.train_dpo(_lora(model), pairs, num_steps=4, **settings)
    dpo.train_dpo(_lora(model), pairs, num_steps=2, checkpoint_dir=tmp_path, **settings)
    history, log = dpo.train_dpo(_lora(model), pairs, num_steps=4, checkpoint_dir=tmp_path, resume=True, **settings)
    assert history.resumed_from_step == 2
    assert [e["step"] for e in log] == [1, 2, 3, 4]  # before: only the steps after the resume
    for ours, want in zip(log, straight):
        for key in ("loss", *dpo.METRICS):
            assert ours[key] == pytest.approx(want[key], abs=1e-6), (ours["step"], key)
