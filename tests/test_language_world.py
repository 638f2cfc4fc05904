"""The language micro-world: deterministic data, and a tiny LM that really knows its world."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from ftlab import chat, evals, models
from ftlab.data import load_facts, load_instructions, load_preferences
from ftlab.data import world as W
from ftlab.runtime import data_dir


@pytest.fixture(scope="module")
def lm():
    return models.load_causal_lm(profile="tiny")


@pytest.fixture(scope="module")
def quality():
    return json.loads((data_dir() / "lm" / "quality.json").read_text())


def test_world_is_deterministic():
    assert W.make_world() == W.make_world()
    assert W.make_world(seed=1) != W.make_world()
    assert W.pretraining_corpus(W.make_world(), 50) == W.pretraining_corpus(W.make_world(), 50)


@pytest.mark.parametrize("name, rows", [
    ("facts.jsonl", lambda w: W.facts(w)),
    ("instructions_train.jsonl", lambda w: W.instructions(w, "train")),
    ("instructions_test.jsonl", lambda w: W.instructions(w, "test")),
    ("preferences_train.jsonl", lambda w: W.preferences(w, "train")),
    ("preferences_test.jsonl", lambda w: W.preferences(w, "test")),
])
def test_shipped_datasets_match_the_generator(name, rows):
    shipped = [json.loads(line) for line in (data_dir() / "world" / name).read_text().splitlines()]
    assert shipped == rows(W.make_world())


def test_heldout_people_never_appear_in_training_sets():
    world = W.make_world()
    heldout = {p.name for p in world.people if p.split == "heldout"}
    assert len(heldout) == W.NUM_HELDOUT_PEOPLE
    for ds in (load_instructions("train"), load_preferences("train")):
        text = " ".join(ds["prompt"])
        assert not [n for n in heldout if n in text.split() or n + "?" in text or n + "." in text]
    test_people = {w.strip("?.") for p in load_instructions("test")["prompt"] for w in p.split()}
    assert heldout <= test_people


def test_dataset_loaders_return_documented_columns_and_sizes():
    train, test = load_instructions("train"), load_instructions("test")
    assert {"prompt", "response"} <= set(train.column_names)
    assert (len(train), len(test)) == (434, 150)
    prefs = load_preferences("test")
    assert {"prompt", "chosen", "rejected"} <= set(prefs.column_names)
    assert all(c != r for c, r in zip(prefs["chosen"], prefs["rejected"]))
    assert len(load_facts()) == 4 * W.NUM_PEOPLE
    assert len(load_facts("heldout")) == 4 * W.NUM_HELDOUT_PEOPLE


def test_bad_dataset_requests_get_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="splits"):
        load_instructions("validation")
    with pytest.raises(ValueError, match="heldout"):
        load_facts("dev")
    with pytest.raises(ValueError, match="not a profile|one of"):
        load_preferences("train", profile="huge")
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "instructions_train.jsonl").write_text("")
    monkeypatch.setenv("FTLAB_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="no examples"):
        load_instructions("train")


def test_tiny_lm_loads_as_a_llama_with_chat_template(lm):
    model, tokenizer = lm
    assert isinstance(model, LlamaForCausalLM)
    assert tokenizer.pad_token is not None and tokenizer.chat_template
    text = chat.chat_prompt(tokenizer, "Where does Kafi live?")
    assert text.startswith(tokenizer.bos_token) and text.endswith("<|assistant|>\n")
    n = models.count_parameters(model)
    assert 500_000 < n < 5_000_000, n


def test_tiny_lm_knows_its_world(lm, quality):
    """The pretrained LM recalls the world's facts; the same architecture untrained does not."""
    model, tokenizer = lm
    facts = load_facts()
    recall = evals.cloze_accuracy(model, tokenizer, facts["prompt"], facts["answer"])
    assert recall >= 0.9, recall
    assert recall == pytest.approx(quality["fact_recall_all"], abs=0.02)
    torch.manual_seed(0)
    scratch = LlamaForCausalLM(model.config)
    assert evals.cloze_accuracy(scratch, tokenizer, facts["prompt"], facts["answer"]) < 0.1


def test_tiny_lm_has_skills_but_does_not_follow_instructions(lm, quality):
    model, tokenizer = lm
    pairs = [(a, b) for a in range(0, 20, 3) for b in range(0, 20, 2)]
    acc = evals.cloze_accuracy(model, tokenizer, [f"{a} + {b} =" for a, b in pairs],
                               [f" {a + b}." for a, b in pairs])
    assert acc >= quality["addition_accuracy"] - 0.15 and acc >= 0.6, acc
    # Before SFT the chat format is foreign: almost no held-out instruction is answered exactly.
    test = load_instructions("test").select(range(40))
    assert evals.exact_match(model, tokenizer, list(test)) <= 0.1
    assert quality["instruction_exact_match_before_sft"] <= 0.1


def test_full_profile_uses_the_hub_code_path_without_downloading(monkeypatch, lm):
    """Offline, the full profile's loader is exercised with the hub calls replaced by spies."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = lm
    calls = []

    def fake_model(source, **kw):
        calls.append(("model", source, kw))
        return model

    def fake_tok(source, **kw):
        calls.append(("tokenizer", source, kw))
        return tokenizer

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", staticmethod(fake_model))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", staticmethod(fake_tok))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_do_not_print")
    models.load_causal_lm(profile="full", name=models.GATED_CAUSAL_LM)
    sources = {c[1] for c in calls}
    assert models.GATED_CAUSAL_LM in sources
    model_kw = next(c[2] for c in calls if c[0] == "model")
    assert model_kw["token"] == "hf_secret_do_not_print"
    calls.clear()
    models.load_causal_lm(profile="full", quantization="nf4")
    model_kw = next(c[2] for c in calls if c[0] == "model")
    q = model_kw["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert next(c[1] for c in calls if c[0] == "model") == models.DEFAULT_CAUSAL_LM


def test_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="quantization"):
        models.load_causal_lm(profile="tiny", quantization="int3")
    with pytest.raises(ValueError, match="full profile"):
        models.load_causal_lm(profile="tiny", name="some/model")
    with pytest.raises(ValueError, match="profile"):
        models.load_causal_lm(profile="medium")


def test_tiny_lm_loads_in_nf4_with_bitsandbytes_on_cpu():
    """QLoRA's base: the same LM with 4-bit weights still knows most of its world."""
    bnb = pytest.importorskip("bitsandbytes")
    model, tokenizer = models.load_causal_lm(profile="tiny", quantization="nf4")
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert models.count_parameters(model) == models.count_parameters(models.load_causal_lm(profile="tiny")[0])
    facts = load_facts()
    assert evals.cloze_accuracy(model, tokenizer, facts["prompt"], facts["answer"]) >= 0.7
