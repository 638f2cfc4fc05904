"""ftlab.sft: prompt masking, the boundary, truncation, padding, and equality with TRL's SFTTrainer."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from ftlab.models import tiny_lm_path
from ftlab.sft import (ALPACA_TEMPLATE, IGNORE_INDEX, SFTCollator, common_prefix_length, default_adapter_dir,
                       format_prompt, tokenize_dataset, tokenize_example, trl_records)
from ftlab.train import causal_lm_loss, count_causal_lm_items

ROWS = [{"prompt": "Where does Kafi live?", "response": "Kafi lives in Daletol."},
        {"prompt": "What is 7 + 5?", "response": "12"},
        {"prompt": "What is the opposite of hot?", "response": "The opposite of hot is cold."}]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_lm_path())


@pytest.fixture(scope="module")
def merging_tokenizer():
    """A character BPE whose merges cross the alpaca prompt/response boundary ("\\nK", "\\n1")."""
    from tokenizers import Tokenizer, models

    chars = sorted({c for r in ROWS for c in ALPACA_TEMPLATE.format(prompt=r["prompt"]) + r["response"]})
    vocab = {"<pad>": 0, "</s>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    merges = [("\n", "K"), ("\n", "1"), ("\n", "T")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=merges)),
                                  eos_token="</s>", pad_token="<pad>")
    return tok


def test_prompt_tokens_masked_response_and_eos_trained(tokenizer):
    for template in ("chat", "alpaca"):
        ex = tokenize_example(ROWS[0]["prompt"], ROWS[0]["response"], tokenizer, template=template)
        n_prompt = len(tokenizer(format_prompt(ROWS[0]["prompt"], tokenizer, template),
                                 add_special_tokens=template == "alpaca")["input_ids"])
        assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
        assert tokenizer.eos_token_id in ex["labels"][n_prompt:]
        assert tokenizer.decode(ex["labels"][n_prompt:], skip_special_tokens=True).strip() == ROWS[0]["response"]
        assert ex["attention_mask"] == [1] * len(ex["input_ids"])


def test_unmasked_labels_are_the_input_ids(tokenizer):
    ex = tokenize_example("Hi", "there", tokenizer, mask_prompt=False)
    assert ex["labels"] == ex["input_ids"]


def test_boundary_merge_trains_the_merged_token(merging_tokenizer):
    tok = merging_tokenizer
    prompt_text = ALPACA_TEMPLATE.format(prompt=ROWS[0]["prompt"])
    alone = tok(prompt_text)["input_ids"]
    full = tok(prompt_text + ROWS[0]["response"] + tok.eos_token)["input_ids"]
    assert full[:len(alone)] != alone  # the tokenizer really merges "\n" + "K" across the boundary
    ex = tokenize_example(ROWS[0]["prompt"], ROWS[0]["response"], tok, template="alpaca")
    n = common_prefix_length(alone, full)
    assert n == len(alone) - 1
    assert ex["input_ids"] == full  # the sequence is the full text's tokens, never prompt + response ids
    assert ex["labels"][:n] == [IGNORE_INDEX] * n and ex["labels"][n] == tok.convert_tokens_to_ids("\nK")


def test_truncation_inside_prompt_raises_and_dataset_drops_and_counts(tokenizer):
    with pytest.raises(ValueError, match="max_length"):
        tokenize_example(ROWS[0]["prompt"], ROWS[0]["response"], tokenizer, max_length=8)
    ex = tokenize_example(ROWS[0]["prompt"], ROWS[0]["response"], tokenizer, max_length=13)
    assert len(ex["input_ids"]) == 13 and sum(label != IGNORE_INDEX for label in ex["labels"]) == 2
    rows = ROWS + [{"prompt": "word " * 40, "response": "ok"}]
    ds = tokenize_dataset(rows, tokenizer, max_length=20, verbose=False)
    assert ds.dropped == 1 and ds.dropped_rows == [3] and len(ds) == 3
    with pytest.raises(ValueError, match="drops all"):
        tokenize_dataset(rows[3:], tokenizer, max_length=20, verbose=False)


def test_bad_inputs_get_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="template"):
        tokenize_example("a", "b", tokenizer, template="vicuna")
    with pytest.raises(ValueError, match="max_length"):
        tokenize_example("a", "b", tokenizer, max_length=0)
    with pytest.raises(TypeError, match="strings"):
        tokenize_example("a", None, tokenizer)
    with pytest.raises(ValueError, match="'prompt' and"):
        tokenize_dataset([{"question": "a"}], tokenizer)
    with pytest.raises(ValueError, match="empty"):
        SFTCollator(0)([])


def test_collator_right_pads_with_minus_100_and_keeps_eos_when_pad_is_eos(tokenizer):
    examples = [tokenize_example(r["prompt"], r["response"], tokenizer) for r in ROWS]
    eos = tokenizer.eos_token_id
    batch = SFTCollator(pad_token_id=eos, pad_to_multiple_of=8)(examples)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= max(len(e["input_ids"]) for e in examples)
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == ex["input_ids"]
        assert batch["labels"][i, :n].tolist() == ex["labels"]
        assert (batch["input_ids"][i, n:] == eos).all() and (batch["labels"][i, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert eos in batch["labels"][i].tolist()  # padding masked by position, not by id


def test_no_nan_loss_from_masking(tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path())
    ds = tokenize_dataset(ROWS, tokenizer, max_length=14, verbose=False)
    batch = SFTCollator(tokenizer=tokenizer)(list(ds))
    n = count_causal_lm_items(batch)
    assert n > 0 and math.isfinite(float(causal_lm_loss(model, batch).detach()) / n)
    assert all(count_causal_lm_items(SFTCollator(tokenizer=tokenizer)([ex])) > 0 for ex in ds)


def _trl_labels(records, tokenizer, tmp_path, max_length):
    # TRL 1.16 API: SFTTrainer(model, args=SFTConfig(...), train_dataset=..., processing_class=tokenizer).
    # A prompt/completion dataset with completion_only_loss=True gets labels -100 on the prompt, built
    # while the dataset is prepared (trainer.train_dataset["labels"]), truncated with keep_start.
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path())
    args = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, max_length=max_length,
                     report_to=[], shuffle_dataset=False, use_cpu=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records),
                         processing_class=tokenizer)
    return trainer.train_dataset["input_ids"], trainer.train_dataset["labels"]


@pytest.mark.parametrize("template,max_length", [("chat", 24), ("alpaca", 40)])
def test_labels_equal_trl_sft_trainer(tokenizer, tmp_path, template, max_length):
    rows = ROWS + [{"prompt": "word " * 40, "response": "ok"}]  # the last one truncation drops, in both
    ours = tokenize_dataset(rows, tokenizer, max_length=max_length, template=template, verbose=False)
    assert any(len(ex["input_ids"]) == max_length for ex in ours)  # truncation is exercised
    trl_ids, trl_labels = _trl_labels(trl_records(rows, template), tokenizer, tmp_path, max_length)
    assert ours.dropped == len(rows) - len(trl_labels) == 1
    assert [ex["input_ids"] for ex in ours] == trl_ids
    assert [ex["labels"] for ex in ours] == trl_labels


def test_labels_equal_trl_where_tokens_merge_across_the_boundary(merging_tokenizer, tmp_path):
    ours = tokenize_dataset(ROWS, merging_tokenizer, template="alpaca", verbose=False)
    trl_ids, trl_labels = _trl_labels(trl_records(ROWS, "alpaca"), merging_tokenizer, tmp_path, None)
    assert [ex["labels"] for ex in ours] == trl_labels


def test_default_adapter_dir_is_per_profile_and_overridable(tmp_path, monkeypatch):
    monkeypatch.delenv("FTLAB_ADAPTER_DIR", raising=False)
    assert default_adapter_dir("tiny").parts[-3:] == ("ftlab", "adapters", "sft_tiny")
    monkeypatch.setenv("FTLAB_ADAPTER_DIR", str(tmp_path))
    assert default_adapter_dir("full") == tmp_path / "sft_full"
