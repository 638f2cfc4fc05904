"""Where the loaders live, what importing them costs, and the helpers they share.

``ftlab.models`` is a package (causal LM, vision, text); ``ftlab.data`` re-exports its loaders
under the names lessons import, defined under those same names, so "go to definition" lands on
the code. The text scorers, the L-BFGS probe and the name generator each exist once.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

import ftlab.data
import ftlab.models
from ftlab.data.names import CODAS, ONSETS, invented_names
from ftlab.data.reviews import THING_CODAS, THING_ONSETS
from ftlab.models import model_device
from ftlab.models.text import classifier_accuracy, load_text_encoder, sentence_features
from ftlab.probe import logistic_probe_accuracy


@pytest.mark.parametrize("package, name, module", [
    (ftlab.models, "load_causal_lm", "ftlab.models.causal_lm"),
    (ftlab.models, "load_vision_backbone", "ftlab.models.vision"),
    (ftlab.models, "load_clip", "ftlab.models.vision"),
    (ftlab.models, "load_text_encoder", "ftlab.models.text"),
    (ftlab.models, "count_parameters", "ftlab.models.info"),
    (ftlab.data, "load_image_classification", "ftlab.data.shapes"),
    (ftlab.data, "load_text_classification", "ftlab.data.reviews"),
])
def test_each_loader_is_defined_under_its_own_name_in_the_module_its_name_says(package, name, module):
    loader = getattr(package, name)
    assert (loader.__module__, loader.__name__) == (module, name)
    assert name in package.__all__
    assert not hasattr(package, "__getattr__")  # explicit imports: "go to definition" works


def test_old_private_modules_are_gone():
    for old in ("ftlab._tinyvision", "ftlab._tinytext"):
        with pytest.raises(ModuleNotFoundError):
            __import__(old)


def test_importing_the_models_package_imports_neither_torchvision_nor_transformers():
    code = ("import sys, ftlab.models, ftlab.data; "
            "print(sorted(m for m in ('torchvision', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_device_names_a_model_without_parameters():
    from ftlab import runtime

    assert model_device is runtime.model_device  # one home
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    with pytest.raises(ValueError, match="ReLU has no parameters"):
        model_device(torch.nn.ReLU())


@pytest.fixture()
def empty_world(tmp_path, monkeypatch):
    for part in ("world", "lm", "text", "vision", "clip"):
        (tmp_path / part).mkdir()
    monkeypatch.setenv("FTLAB_DATA", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("load, missing, script", [
    (lambda: load_text_encoder("tiny"), "text/encoder/config.json", "build_text_world.py"),
    (lambda: ftlab.models.load_vision_backbone("tiny"), "vision/cnn.safetensors", "build_vision_world.py"),
    (lambda: ftlab.models.load_clip("tiny"), "clip/config.json", "build_vision_world.py"),
    (lambda: ftlab.data.load_image_classification("target", "train", "tiny"), "vision/target_train.safetensors",
     "build_vision_world.py"),
    (lambda: ftlab.data.load_text_classification("train", "tiny"), "text/reviews_train.jsonl", "build_text_world.py"),
])
def test_a_missing_micro_world_part_names_itself_its_script_and_ftlab_data(empty_world, load, missing, script):
    with pytest.raises(FileNotFoundError) as err:
        load()
    message = str(err.value)
    assert missing in message and script in message and "FTLAB_DATA" in message, message


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder("tiny")


def test_classifier_accuracy_counts_right_answers_whatever_the_batch(encoder):
    model, tokenizer = encoder
    texts = ["the pie was superb.", "the crust was bland.", "a dismal soup.", "truly good bread."] * 3
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt").to(model_device(model))
        pred = model(**batch).logits.argmax(-1).cpu()
    labels = [int(p) if i % 3 else 1 - int(p) for i, p in enumerate(pred)]  # every third one wrong
    assert classifier_accuracy(model, tokenizer, texts, labels) == pytest.approx(8 / 12)
    assert classifier_accuracy(model, tokenizer, texts, labels, batch_size=5) == pytest.approx(8 / 12)


def test_sentence_features_cls_is_the_first_token_state(encoder):
    model, tokenizer = encoder
    texts = ["the pie was superb.", "not good at all, the soup."]
    feats = sentence_features(model, tokenizer, texts, pooling="cls", batch_size=1)
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt").to(model_device(model))
        hidden = model.distilbert(**batch).last_hidden_state
    assert feats.shape == (2, model.config.dim)
    torch.testing.assert_close(feats, hidden[:, 0].cpu(), atol=1e-5, rtol=1e-5)


def test_text_scorers_explain_bad_input(encoder):
    model, tokenizer = encoder
    with pytest.raises(TypeError, match="one string"):
        classifier_accuracy(model, tokenizer, "the pie was superb.", [1])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        classifier_accuracy(model, tokenizer, ["a", "b"], [1])
    with pytest.raises(ValueError, match="0 texts"):
        sentence_features(model, tokenizer, [])
    with pytest.raises(ValueError, match="pooling='max'"):
        sentence_features(model, tokenizer, ["a"], pooling="max")


def test_lbfgs_probe_takes_label_lists_and_separates_separable_features():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    acc = logistic_probe_accuracy(x[:40], y[:40].tolist(), x[40:], y[40:].tolist())
    assert acc == logistic_probe_accuracy(x[:40], y[:40], x[40:], y[40:])
    assert acc >= 0.95
    with pytest.raises(ValueError, match="one label per feature row"):
        logistic_probe_accuracy(x[:40], y[:39], x[40:], y[40:])
    with pytest.raises(ValueError, match="same D"):
        logistic_probe_accuracy(x[:40], y[:40], x[40:, :3], y[40:])


def test_one_name_generator_gives_both_worlds_their_old_names():
    # The values the two generators (ftlab.data.world._names, reviews._invented_names) gave
    # before they became one: the shipped micro-worlds depend on them.
    assert invented_names(random.Random(5), 4, set(), 2, ONSETS, CODAS) == ["Ritis", "Tubos", "Gafa", "Nemu"]
    assert invented_names(random.Random(5), 4, set(), (2, 2, 3), THING_ONSETS, THING_CODAS) == \
        ["Pitrabres", "Latox", "Vugu", "Mopex"]


def test_invented_names_skip_taken_names_and_refuse_a_bad_count():
    taken = {"Ritis"}
    names = invented_names(random.Random(5), 3, taken)
    assert "Ritis" not in names and len(set(names)) == 3 and taken >= set(names)
    with pytest.raises(ValueError, match="n=-1"):
        invented_names(random.Random(0), -1, set())
