"""ftlab.sft: prompt masking, the boundary, truncation, padding, and equality with TRL's SFTTrainer."""

import math

import pytest
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


# ---------------------------------------------------------------------------------------------
# The full profile's models: Llama-3's end of turn, the user turn's start, lesson 05's demos


@pytest.fixture(scope="module")
def llama3_like_tokenizer():
    """A tokenizer with Llama-3's trap: its template ends a turn with <|eot_id|>, an added special
    token that is not its EOS (<|end_of_text|>) and, under transformers 5, not in all_special_tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AddedToken

    words = ["user", "assistant", "Where", "does", "Kafi", "live?", "Kafi", "lives", "in", "Daletol.", "\n\n"]
    vocab = {"<unk>": 0}
    for w in words:
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    tok.add_tokens([AddedToken(t, special=True) for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")])
    tok.chat_template = ("{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
                         "'<|end_header_id|>\\n\\n' }}{{- message['content'] | trim }}{{- '<|eot_id|>' }}{%- endfor %}"
                         "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
                         "{%- endif %}")
    return tok


def test_llama3_end_of_turn_is_found_and_trained(llama3_like_tokenizer):
    import warnings

    from ftlab.chat import turn_end_ids

    tok = llama3_like_tokenizer
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert eot not in tok.all_special_ids  # the trap is really there
    assert turn_end_ids(tok) == [tok.eos_token_id, eot]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "the response has no EOS" warning: <|eot_id|> ends it
        ex = tokenize_example(ROWS[0]["prompt"], ROWS[0]["response"], tok)
    trained = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert trained[-1] == eot and ex["input_ids"][-1] == eot  # the turn end is trained
    assert ex["labels"].count(eot) == 1  # the user turn's <|eot_id|> is prompt: masked
    # padded with the EOS (load_causal_lm's pad for Llama), the end of turn keeps its label
    batch = SFTCollator(pad_token_id=tok.eos_token_id)([ex, tokenize_example("Where does Kafi live?", "in", tok)])
    assert int((batch["labels"] == eot).sum()) == 2


def test_user_turn_start_holds_one_bos(tokenizer, llama3_like_tokenizer):
    from ftlab.sft import user_turn_start

    assert user_turn_start(tokenizer) == "<|user|>\n"  # the tokenizer adds the BOS itself
    ids = tokenizer(user_turn_start(tokenizer) + "What")["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1
    tok = llama3_like_tokenizer  # adds no BOS itself: the template's stays
    assert user_turn_start(tok) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    assert tok(user_turn_start(tok) + "Where")["input_ids"].count(tok.bos_token_id) == 1


@pytest.mark.parametrize("max_length", [64, 512, 2048])
def test_lesson05_truncation_demo_drops_its_long_prompt_at_any_max_length(tokenizer, max_length):
    """Lesson 05 asserts its long prompt is dropped; with a fixed 20 repetitions it was not at the full
    profile's max_length=512 (the rehearsal's AssertionError). Repeating it max_length / 2 times is."""
    long_row = {"prompt": "Tell me everything. " * (max_length // 2), "response": "No."}
    demo = tokenize_dataset([ROWS[0], long_row], tokenizer, max_length=max_length, verbose=False)
    assert demo.dropped == 1 and demo.dropped_rows == [1]


def test_adapter_for_checks_the_base_model(tmp_path, capsys):
    from peft import LoraConfig, get_peft_model

    from ftlab.sft import adapter_for

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path())
    assert adapter_for(model, tmp_path / "none") is None and "no SFT adapter" in capsys.readouterr().out
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "a")
    other = AutoModelForCausalLM.from_pretrained(tiny_lm_path())
    assert adapter_for(other, tmp_path / "a") == tmp_path / "a"
    other.config._name_or_path = "meta-llama/Llama-3.2-1B"
    assert adapter_for(other, tmp_path / "a") is None and "not on this model" in capsys.readouterr().out


def _tokenizer_without_pad_or_eos():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz #:\n?.")}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_a_tokenizer_with_neither_pad_nor_eos_gets_clear_errors():
    tok = _tokenizer_without_pad_or_eos()
    assert tok.pad_token_id is None and tok.eos_token_id is None
    with pytest.raises(ValueError, match=r"this \w+ has neither a pad nor an EOS token.*tokenizer.pad_token = "):
        SFTCollator(tokenizer=tok)
    with pytest.raises(ValueError, match="no pad_token_id and no tokenizer"):
        SFTCollator()
    with pytest.raises(ValueError, match=r"has no EOS token: template='alpaca' ends every response with EOS"):
        tokenize_example("hi", "there", tok, template="alpaca")
    assert SFTCollator(pad_token_id=0, tokenizer=tok).pad_token_id == 0  # an explicit id is enough


def test_a_dict_of_columns_where_rows_are_expected_is_named(tokenizer):
    columns = Dataset.from_list(ROWS)[:2]  # a slice of a Dataset is a dict of columns, not rows
    assert isinstance(columns, dict)
    with pytest.raises(TypeError, match=r"tokenize_dataset takes rows.*dict of columns \{'prompt': 2, 'response': 2\}"):
        tokenize_dataset(columns, tokenizer)
    with pytest.raises(TypeError, match=r"trl_records takes rows.*dict of columns"):
        trl_records(columns)
    with pytest.raises(TypeError, match=r"row 0 is a str \('Where does Kafi live\?'\).*dicts with 'prompt'"):
        tokenize_dataset(columns["prompt"], tokenizer)
    assert len(tokenize_dataset(Dataset.from_list(ROWS).select(range(2)), tokenizer)) == 2


def test_ignore_index_has_one_home_in_ftlab_train():
    import ftlab.sft
    import ftlab.train

    assert "IGNORE_INDEX = " not in __import__("inspect").getsource(ftlab.sft)
    assert ftlab.sft.IGNORE_INDEX is ftlab.train.IGNORE_INDEX == -100


def test_adapter_for_names_a_corrupt_adapter_config(tmp_path):
    from ftlab.sft import adapter_for

    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": ')
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path())
    with pytest.raises(ValueError, match=r"adapter_config\.json is not valid JSON.*Delete the folder"):
        adapter_for(model, tmp_path)


PAIRS = [{"prompt": "Where does Kafi live?", "chosen": "Kafi lives in Daletol.", "rejected": "I do not know."}]


def test_trl_records_writes_sft_and_preference_rows_in_either_template():
    """One function for both of TRL's record kinds, told apart by the rows' keys (as TRL does)."""
    user = [{"role": "user", "content": "Where does Kafi live?"}]
    assert trl_records(ROWS[:1]) == [{"prompt": user, "completion": [{"role": "assistant",
                                                                      "content": "Kafi lives in Daletol."}]}]
    assert trl_records(PAIRS) == [{"prompt": user,
                                   "chosen": [{"role": "assistant", "content": "Kafi lives in Daletol."}],
                                   "rejected": [{"role": "assistant", "content": "I do not know."}]}]
    prompt = ALPACA_TEMPLATE.format(prompt="Where does Kafi live?")
    assert trl_records(PAIRS, "alpaca") == [{"prompt": prompt, "chosen": "Kafi lives in Daletol.",
                                             "rejected": "I do not know."}]
    assert trl_records(Dataset.from_list(ROWS[:1]), "alpaca") == [{"prompt": prompt,
                                                                   "completion": "Kafi lives in Daletol."}]


def test_trl_records_names_rows_of_no_kind_or_of_two_kinds():
    with pytest.raises(ValueError, match=r"row 0 has keys \['answer', 'prompt'\]; trl_records takes SFT rows "
                                         r"with \('prompt', 'response'\) or preference rows"):
        trl_records([{"prompt": "q", "answer": "a"}])
    with pytest.raises(ValueError, match=r"row 1 is a preference row but the rows before it are response rows"):
        trl_records([ROWS[0], PAIRS[0]])
    with pytest.raises(ValueError, match=r"row 0 has keys .*'chosen'"):  # response and chosen: which kind?
        trl_records([{**ROWS[0], "chosen": "x"}])
    with pytest.raises(ValueError, match=r"trl_records got no rows"):
        trl_records([])
    with pytest.raises(ValueError, match=r"template='chatml' is not a template"):
        trl_records(ROWS, "chatml")


def test_format_prompt_chat_is_the_chat_modules_prompt(tokenizer):
    from ftlab.chat import chat_prompt

    assert format_prompt("Where does Kafi live?", tokenizer) == chat_prompt(tokenizer, "Where does Kafi live?")
    assert format_prompt("Where does Kafi live?", tokenizer, "alpaca") == ALPACA_TEMPLATE.format(prompt="Where does Kafi live?")
