"""The text-classification micro-world: reviews, tokenizer and the tiny pretrained DistilBERT.

The numbers asserted here are the ones ``data/text/QUALITY.md`` documents (minus a small
margin), so a rebuilt or damaged ``data/text`` that lost its quality fails here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ftlab.data import reviews as R
from ftlab.models import text as T
from ftlab.runtime import data_dir

# Documented in data/text/QUALITY.md (the measured value minus a margin).
MLM_ACCURACY_FLOOR = 0.74  # measured 0.776
FINETUNE_FLOOR = 0.90  # full fine-tuning of the pretrained encoder, measured 0.996
FINETUNE_MARGIN = 0.15  # pretrained minus random-init fine-tuning, measured 0.996 - 0.776
FINETUNE_LR = 5e-4  # FT["lr"] in scripts/build_text_world.py
HEAD_INIT_STD = 0.1  # HEAD_INIT_STD in scripts/build_text_world.py
# Lesson 03's LoRA recipe (LORA in scripts/build_text_world.py): rank 2 on every linear layer.
LORA_TARGETS = ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]


@pytest.fixture(scope="module")
def build():
    """scripts/build_text_world.py as a module: its MLM accuracy and fine-tuning recipe."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "build_text_world.py"
    spec = importlib.util.spec_from_file_location("build_text_world", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def splits():
    return R.labelled_reviews()


def _rows(split):
    path = data_dir() / "text" / f"reviews_{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generator_is_deterministic(splits):
    assert R.labelled_reviews() == splits
    assert R.unlabelled_corpus(200) == R.unlabelled_corpus(200)
    assert R.unlabelled_corpus(200, seed=1) != R.unlabelled_corpus(200)
    assert R.labelled_reviews(seed=7)["train"] != splits["train"]


def test_shipped_splits_equal_the_generator(splits):
    for split in R.SPLITS:
        assert _rows(split) == splits[split], f"data/text/reviews_{split}.jsonl is stale"
    heldout = [json.loads(x)["text"] for x in (data_dir() / "text" / "corpus_heldout.jsonl").read_text().splitlines()]
    assert heldout == R.heldout_corpus()


def test_split_sizes_labels_and_kinds():
    for split, n in (("train", 2000), ("validation", 500), ("test", 500)):
        ds = R.load_text_classification(split, profile="tiny")
        assert ds.column_names == ["text", "label"]
        assert len(ds) == n
        assert ds.features["label"].names == ["negative", "positive"]
        assert sum(ds["label"]) == n // 2  # exactly balanced
        kinds = [r["kind"] for r in _rows(split)]
        assert abs(kinds.count("negation") / n - R.KIND_SHARES["negation"]) < 0.01


def test_no_review_is_in_two_splits(splits):
    texts = [r["text"] for rows in splits.values() for r in rows]
    assert len(texts) == len(set(texts))


def test_train_uses_only_common_opinion_words(splits):
    rare = set(R.POSITIVE[R.COMMON:] + R.NEGATIVE[R.COMMON:])

    def words(text):
        return set(text.lower().replace(".", " ").replace(",", " ").split())

    assert not any(words(r["text"]) & rare for r in splits["train"])
    share = sum(bool(words(r["text"]) & rare) for r in splits["test"]) / len(splits["test"])
    assert 0.4 < share < 0.8


def test_labels_follow_negation_and_contrast():
    import random

    rng = random.Random(0)
    things = R.make_things()[:5]
    neg = R.review(rng, label=1, kind="negation", things=things, rare_share=0.0)
    assert (" not " in neg or neg.startswith("Nobody")) and any(w in neg for w in R.NEGATIVE)
    contrast = R.review(random.Random(3), label=0, kind="contrast", things=things, rare_share=0.0)
    assert " but " in contrast or contrast.startswith("Although")


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
        R.load_text_classification("dev", profile="tiny")


def test_full_profile_maps_sst2(monkeypatch):
    """SST-2's test split has no labels: our test is its validation, our validation is carved."""
    import datasets

    def fake_sst2(name):
        assert name == R.FULL_DATASET
        label = datasets.ClassLabel(names=["negative", "positive"])
        feats = datasets.Features({"idx": datasets.Value("int32"), "sentence": datasets.Value("string"),
                                   "label": label})
        make = lambda n, tag: datasets.Dataset.from_dict(  # noqa: E731
            {"idx": list(range(n)), "sentence": [f"{tag} {i}" for i in range(n)],
             "label": [i % 2 for i in range(n)]}, features=feats)
        return datasets.DatasetDict(train=make(1000, "train"), validation=make(40, "val"))

    monkeypatch.setattr(datasets, "load_dataset", fake_sst2)
    monkeypatch.setattr(R, "FULL_VALIDATION_SIZE", 100)
    train = R.load_text_classification("train", profile="full")
    val = R.load_text_classification("validation", profile="full")
    test = R.load_text_classification("test", profile="full")
    assert (len(train), len(val), len(test)) == (900, 100, 40)
    assert train.column_names == ["text", "label"]
    assert test[0]["text"].startswith("val") and val[0]["text"].startswith("train")
    assert not set(train["text"]) & set(val["text"])
    assert test.features["label"].names == ["negative", "positive"]


def test_take_sizes_a_text_set_to_the_rows_it_has():
    """Lesson 03's full config asks for 8,000 SST-2 reviews; a smaller copy (the rehearsal's 320)
    must give all of its rows, not an IndexError from select(range(8000))."""
    ds = R.load_text_classification("train", profile="tiny").select(range(320))
    assert len(R.take(ds, 8000, seed=0)) == 320 and len(R.take(ds, 8000)) == 320
    assert R.take(ds, 8000)["text"] == ds["text"]  # no seed: the rows as they are
    assert R.take(ds, 50)["text"] == ds["text"][:50]  # no seed: the first n
    drawn = R.take(ds, 50, seed=3)
    assert len(drawn) == 50 and drawn["text"] == ds.shuffle(seed=3)["text"][:50] != ds["text"][:50]
    assert R.take(ds, 8000, seed=3)["text"] == ds.shuffle(seed=3)["text"]  # all rows, in the seed's order
    assert R.take(ds, None) is ds
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="at least 1 row"):
            R.take(ds, bad)


@pytest.fixture(scope="module")
def encoder():
    return T.load_text_encoder("tiny")


def test_tokenizer_round_trips_and_knows_every_word(encoder):
    _, tokenizer = encoder
    for name in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
        assert name in tokenizer.get_vocab()
    for row in _rows("test")[:50]:
        ids = tokenizer(row["text"])["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == row["text"].lower()
    for word in R.POSITIVE + R.NEGATIVE:  # every opinion word is one token, rare ones too
        assert len(tokenizer.tokenize(word)) == 1, word


def test_load_text_encoder_is_distilbert_and_seeded(encoder):
    from transformers import DistilBertForSequenceClassification

    model, _ = encoder
    assert isinstance(model, DistilBertForSequenceClassification)
    assert model.config.num_labels == 2 and model.config.id2label[1] == "positive"
    again, _ = T.load_text_encoder("tiny")
    random_init, _ = T.load_text_encoder("tiny", pretrained=False)
    three, _ = T.load_text_encoder("tiny", num_labels=3)
    assert three.classifier.out_features == 3
    w = "distilbert.transformer.layer.0.attention.q_lin.weight"
    assert torch.equal(model.state_dict()[w], again.state_dict()[w])
    assert torch.equal(model.classifier.weight, again.classifier.weight)  # the fresh head is seeded
    assert not torch.allclose(model.state_dict()[w], random_init.state_dict()[w])
    with pytest.raises(ValueError, match="num_labels"):
        T.load_text_encoder("tiny", num_labels=1)


def test_encoder_mlm_accuracy_meets_documented_floor(build):
    from transformers import AutoTokenizer, DistilBertForMaskedLM

    path = data_dir() / "text" / "encoder"
    mlm = DistilBertForMaskedLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [json.loads(x)["text"] for x in (data_dir() / "text" / "corpus_heldout.jsonl").read_text().splitlines()]
    assert build.mlm_accuracy(mlm, tokenizer, texts) >= MLM_ACCURACY_FLOOR
    # a random-weights model of the same shape is near 0: the floor measures pretraining
    from transformers import DistilBertConfig

    torch.manual_seed(0)
    random_mlm = DistilBertForMaskedLM(DistilBertConfig.from_pretrained(path))
    assert build.mlm_accuracy(random_mlm, tokenizer, texts[:100]) < 0.05


def test_pretrained_encoder_fine_tunes_better_than_random_init(build, splits):
    """Lesson 03's headline, with its recipe: pretraining is worth many points on held-out words."""
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    train, test = splits["train"], splits["test"]
    scores = {}
    for pretrained in (True, False):
        model, tokenizer = T.load_text_encoder("tiny", pretrained=pretrained)
        build.fine_tune(model, tokenizer, [r["text"] for r in train], [r["label"] for r in train],
                        epochs=4, lr=FINETUNE_LR, batch_size=32)
        scores[pretrained] = T.classifier_accuracy(model, tokenizer, [r["text"] for r in test],
                                                   [r["label"] for r in test])
    assert scores[True] >= FINETUNE_FLOOR, scores
    assert scores[True] >= scores[False] + FINETUNE_MARGIN, scores


def test_fresh_head_is_drawn_with_the_documented_std():
    """initializer_range sets how transformers draws the new head; 0.02 left it on a plateau."""
    model, _ = T.load_text_encoder("tiny")
    assert model.config.initializer_range == HEAD_INIT_STD
    assert abs(model.pre_classifier.weight.std().item() - HEAD_INIT_STD) < 0.01


def test_lora_recipe_wraps_every_linear_layer_within_five_percent():
    from peft import LoraConfig, get_peft_model

    model, _ = T.load_text_encoder("tiny")
    total = sum(p.numel() for p in model.parameters())
    config = LoraConfig(r=2, lora_alpha=16, target_modules=LORA_TARGETS,
                        modules_to_save=["pre_classifier", "classifier"], task_type="SEQ_CLS")
    peft_model = get_peft_model(model, config)
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and n.endswith(tuple(LORA_TARGETS))]
    assert len(wrapped) == len(LORA_TARGETS) * model.config.n_layers
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable / total <= 0.05
