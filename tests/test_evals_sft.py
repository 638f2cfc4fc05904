"""ftlab.evals additions for lessons 05 and 06: target log-probabilities without a (B, L, V) float32
log-softmax, the held-out prompt loss, and the general-knowledge clozes of each profile; and
ftlab.chat, which the evaluations talk to the model through (greedy generation, the chat prompt)."""

from __future__ import annotations

import pytest
import torch

from ftlab.data import load_facts, load_instructions
from ftlab.evals import WELL_KNOWN_FACTS, known_facts, prompt_loss, response_loss, target_logprobs
from ftlab.models import load_causal_lm
from ftlab.sft import SFTCollator, tokenize_dataset
from ftlab.train import causal_lm_loss, count_causal_lm_items

@pytest.fixture(scope="module")
def lm():
    return load_causal_lm("tiny")


def test_target_logprobs_equal_log_softmax_gather_and_carry_gradients():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :4] = -100
    labels[2, :] = -100  # a row with nothing to score: zeros, no error here
    got = target_logprobs(logits, labels)
    targets = labels[:, 1:]
    want = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    want = want * (targets != -100)
    assert got.shape == (3, 6) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-6)
    got.sum().backward()
    assert logits.grad is not None and logits.grad[2].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_target_logprobs_upcast_half_precision_logits():
    logits = torch.randn(2, 5, 9, dtype=torch.float64)
    labels = torch.randint(0, 9, (2, 5))
    want = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1).float()
    got = target_logprobs(logits.to(torch.bfloat16), labels)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=0.05)


def test_prompt_loss_is_the_loss_on_prompt_tokens(lm):
    model, tokenizer = lm
    rows = list(load_instructions("test").select(range(12)))
    collate = SFTCollator(tokenizer=tokenizer)
    full = collate(list(tokenize_dataset(rows, tokenizer, 64, mask_prompt=False, verbose=False)))
    resp = collate(list(tokenize_dataset(rows, tokenizer, 64, verbose=False)))
    with torch.no_grad():
        want = float(causal_lm_loss(model, full) - causal_lm_loss(model, resp)) / (
            count_causal_lm_items(full) - count_causal_lm_items(resp))
    for batch_size in (1, 5, 16):
        assert prompt_loss(model, tokenizer, rows, max_length=64, batch_size=batch_size) == pytest.approx(want, rel=1e-4)
    # the prompts are not the answers: the two losses differ
    assert abs(prompt_loss(model, tokenizer, rows, 64) - response_loss(model, tokenizer, rows, 64)) > 0.1


def test_known_facts_per_profile():
    tiny = known_facts(profile="tiny")
    assert tiny["prompt"] == load_facts("heldout")["prompt"]
    assert len(known_facts(5, profile="tiny")) == 5
    full = known_facts(profile="full")
    assert len(full) == len(WELL_KNOWN_FACTS) >= 20 and full[0] == {"prompt": "The capital of France is", "answer": " Paris"}
    assert all(a.startswith(" ") and not p.endswith(" ") for p, a in WELL_KNOWN_FACTS)
    with pytest.raises(ValueError, match="n=0"):
        known_facts(0, profile="full")


def test_chat_format_report_honours_the_rehearsal_cap_on_decoding(lm, monkeypatch):
    """FTLAB_MAX_STEPS caps the evaluations; a generation evaluation's steps are its new tokens
    (on the rehearsal's random stand-ins no answer ends, so every one ran the lesson's full budget)."""
    from ftlab.evals import chat_format_report

    model, tokenizer = lm
    budgets = []
    real_generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: budgets.append(kw["max_new_tokens"]) or real_generate(**kw))
    rows = list(load_instructions("test").select(range(3)))
    chat_format_report(model, tokenizer, rows, max_new_tokens=40)
    monkeypatch.setenv("FTLAB_MAX_STEPS", "2")
    report = chat_format_report(model, tokenizer, rows, max_new_tokens=40)
    assert budgets == [40, 2] and report["n"] == 3


# --- ftlab.chat: talking to the model has one home; evals only scores ---------------------------


def _greedy_by_hand(model, tokenizer, prompt, max_new_tokens):
    """Greedy decoding one argmax at a time, no padding, stopping at an end-of-turn token."""
    from ftlab.chat import chat_prompt, turn_end_ids

    ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            new.append(nxt)
            if nxt in turn_end_ids(tokenizer):
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return new


def test_generate_is_greedy_decoding_of_the_chat_prompt_in_a_padded_batch(lm):
    from ftlab.chat import generate, generate_ids

    model, tokenizer = lm
    prompts = ["Where does Kafi live?", "What is the opposite of hot? Answer in a sentence."]  # unequal lengths
    got = generate_ids(model, tokenizer, prompts, max_new_tokens=12)
    assert len(got) == 2 and len({len(r) for r in got}) == 1  # one batch: rows padded to one width
    for prompt, row in zip(prompts, got):
        want = _greedy_by_hand(model, tokenizer, prompt, 12)
        assert row[:len(want)] == want
        assert all(t == tokenizer.pad_token_id for t in row[len(want):])  # padding after the stop, if any
    texts = generate(model, tokenizer, prompts, max_new_tokens=12)
    assert texts == [tokenizer.decode(r, skip_special_tokens=True).strip() for r in got]
    assert generate(model, tokenizer, prompts[0], max_new_tokens=12) == texts[:1]  # one prompt, a list of one


def test_generate_leaves_the_model_mode_and_padding_side_as_found(lm):
    from ftlab.chat import generate

    model, tokenizer = lm
    old_side = tokenizer.padding_side
    model.train()
    try:
        generate(model, tokenizer, ["Where does Kafi live?"], max_new_tokens=2)
        assert model.training and tokenizer.padding_side == old_side
    finally:
        model.eval()


def test_chat_names_bad_prompts_and_budgets(lm):
    from transformers import AutoTokenizer

    from ftlab.chat import chat_prompt, generate
    from ftlab.models import tiny_lm_path

    model, tokenizer = lm
    with pytest.raises(TypeError, match=r"one is a dict .*\[r\['prompt'\] for r in rows\]"):
        generate(model, tokenizer, [{"prompt": "Where does Kafi live?"}])
    with pytest.raises(ValueError, match=r"max_new_tokens=0: the most tokens to add to each prompt, an int >= 1"):
        generate(model, tokenizer, "Where does Kafi live?", max_new_tokens=0)
    bare = AutoTokenizer.from_pretrained(tiny_lm_path())
    bare.chat_template = None
    with pytest.raises(ValueError, match=r"has no chat template.*load_causal_lm.*chat=False"):
        chat_prompt(bare, "Where does Kafi live?")


def test_the_chat_functions_have_one_home_in_ftlab_chat():
    import ftlab.chat
    import ftlab.evals

    for name in ("chat_prompt", "generate", "turn_end_ids"):
        assert callable(getattr(ftlab.chat, name))
        assert not hasattr(ftlab.evals, name), name  # not defined, not re-exported: one home
