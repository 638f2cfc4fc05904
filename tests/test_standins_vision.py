"""The vision stand-ins (scripts/standins_vision.py) load through the libraries' own offline paths.

The stand-ins are built once per session into a temporary folder. The loading runs in a child
process with the offline environment set before anything is imported (huggingface_hub and
datasets read HF_HOME and the offline flags at import time), and reports what it saw as JSON;
the tests below check those values.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Built and loaded by `make rehearse` (CI runs it), not `make test`: see tests/conftest.py.
pytestmark = pytest.mark.standins

ROOT = Path(__file__).resolve().parent.parent


def _load_module():
    spec = importlib.util.spec_from_file_location("standins_vision", ROOT / "scripts" / "standins_vision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SV = _load_module()

# Runs in the child process; prints one JSON object on its last line.
PROBE = r'''
import json, os, time, warnings
warnings.filterwarnings("ignore")
import torch
from PIL import Image
r = {}

from transformers import CLIPModel, CLIPProcessor
model = CLIPModel.from_pretrained("openai/clip-vit-base-patch32").eval()
proc = CLIPProcessor.from_pretrained("openai/clip-vit-base-patch32")
tok = proc.tokenizer
cfg = model.config
enc = tok(["A photo of a dog.", "an aerial satellite photo of a river"], padding=True)
gen = torch.Generator().manual_seed(0)
images = [Image.fromarray(torch.randint(0, 256, (48, 64, 3), generator=gen, dtype=torch.uint8).numpy())
          for _ in range(32)]
pixels = proc(images=images, return_tensors="pt")["pixel_values"]
with torch.no_grad():
    model.get_image_features(pixel_values=pixels[:2])  # warm-up
    start = time.perf_counter()
    feats = model.get_image_features(pixel_values=pixels)
    seconds = time.perf_counter() - start
    text = model.get_text_features(**tok(["a photo of a cat."], return_tensors="pt"))
feats = getattr(feats, "pooler_output", feats)
text = getattr(text, "pooler_output", text)
r["clip"] = {
    "model": type(model).__name__, "processor": type(proc).__name__,
    "image_processor": type(proc.image_processor).__name__, "tokenizer": type(tok).__name__,
    "vocab_size": cfg.text_config.vocab_size, "max_positions": cfg.text_config.max_position_embeddings,
    "image_size": cfg.vision_config.image_size, "patch_size": cfg.vision_config.patch_size,
    "projection_dim": cfg.projection_dim, "text_hidden": cfg.text_config.hidden_size,
    "vision_hidden": cfg.vision_config.hidden_size,
    "len_tokenizer": len(tok), "bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
    "tokens": [tok.convert_ids_to_tokens(ids) for ids in enc["input_ids"]],
    "ids": enc["input_ids"], "model_max_length": tok.model_max_length,
    "lowercase": tok("DOG")["input_ids"] == tok("dog")["input_ids"],
    "image_mean": list(proc.image_processor.image_mean), "image_std": list(proc.image_processor.image_std),
    "pixel_shape": list(pixels.shape), "image_features": list(feats.shape), "text_features": list(text.shape),
    "forward_32_seconds": seconds, "finite": bool(torch.isfinite(feats).all()),
}

from transformers import AutoTokenizer, DistilBertForSequenceClassification
clf = DistilBertForSequenceClassification.from_pretrained("distilbert-base-uncased", num_labels=2).eval()
wp = AutoTokenizer.from_pretrained("distilbert-base-uncased")
batch = wp(["The movie was surprisingly Boring!"], return_tensors="pt")
with torch.no_grad():
    logits = clf(**batch).logits
r["distilbert"] = {
    "model": type(clf).__name__, "num_labels": clf.config.num_labels, "logits": list(logits.shape),
    "vocab_size": clf.config.vocab_size, "max_positions": clf.config.max_position_embeddings,
    "n_layers": clf.config.n_layers, "dim": clf.config.dim,
    "len_tokenizer": len(wp), "model_max_length": wp.model_max_length,
    "special": {t: wp.convert_tokens_to_ids(t) for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]},
    "ids": {"pad": wp.pad_token_id, "unk": wp.unk_token_id, "cls": wp.cls_token_id, "sep": wp.sep_token_id,
            "mask": wp.mask_token_id},
    "tokens": wp.convert_ids_to_tokens(batch["input_ids"][0]),
    "unknown_words": sum(i == wp.unk_token_id for i in wp("a quick brown fox jumps over the lazy dog")["input_ids"]),
}

import torchvision
net = torchvision.models.resnet50(weights="DEFAULT").eval()
with torch.no_grad():
    out = net(torch.randn(2, 3, 224, 224, generator=gen))
r["resnet50"] = {"fc": [net.fc.in_features, net.fc.out_features], "out": list(out.shape),
                 "finite": bool(torch.isfinite(out).all()),
                 "parameters": sum(p.numel() for p in net.parameters())}

euro = torchvision.datasets.EuroSAT(root=os.environ["FTLAB_CACHE"], download=True)
image, label = euro[0]
r["eurosat"] = {"classes": euro.classes, "rows": len(euro), "size": list(image.size), "mode": image.mode,
                "first": os.path.relpath(euro.samples[0][0], os.environ["FTLAB_CACHE"]),
                "per_class": [euro.targets.count(c) for c in range(len(euro.classes))]}
from ftlab.data.shapes import load_image_classification  # lesson 01's split: k-shot sets are drawn from train
r["eurosat"]["lesson_train_per_class"] = [load_image_classification("eurosat", "train", profile="full").targets.count(c)
                                          for c in range(len(euro.classes))]

from datasets import load_dataset
r["cifar10"] = {}
for split in ("train", "test"):
    ds = load_dataset("uoft-cs/cifar10", split=split)
    img = ds[0]["img"]
    r["cifar10"][split] = {"rows": len(ds), "columns": ds.column_names,
                           "features": {k: type(v).__name__ for k, v in ds.features.items()},
                           "names": ds.features["label"].names, "size": list(img.size), "mode": img.mode,
                           "labels": sorted(set(ds["label"]))}
from ftlab.data.reviews import take, load_text_classification  # lesson 03's sizing: 8,000 asked
r["lesson03_rows"] = [len(take(load_text_classification("train", profile="full"), 8000, seed=0)),
                      len(take(load_text_classification("test", profile="full"), 872))]
sst2 = load_dataset("stanfordnlp/sst2")
r["sst2"] = {split: {"rows": len(ds), "columns": ds.column_names,
                     "features": {k: getattr(v, "dtype", type(v).__name__) for k, v in ds.features.items()},
                     "names": ds.features["label"].names, "labels": sorted(set(ds["label"])),
                     "idx_type": str(ds.data.table.schema.field("idx").type), "first": ds[0]["sentence"]}
             for split, ds in sst2.items()}
print(json.dumps(r))
'''


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins")
    return out, SV.build(out)


@pytest.fixture(scope="session")
def probe(built):
    out, _ = built
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(out / "hf"), "TORCH_HOME": str(out / "torch"), "FTLAB_CACHE": str(out / "cache"),
           "HF_ENDPOINT": "http://127.0.0.1:9",  # a hub call that slipped through would fail, not hang
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Downloading" not in done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_manifest_names_every_standin(built):
    out, manifest = built
    assert set(manifest) == {"openai/clip-vit-base-patch32", "distilbert-base-uncased", "uoft-cs/cifar10",
                             "stanfordnlp/sst2", "torchvision EuroSAT",
                             "torchvision resnet50 (ResNet50_Weights.DEFAULT)"}
    for entry in manifest.values():
        assert (out / entry["path"]).exists()
        assert "real" in entry and "standin" in entry and isinstance(entry["shrunk"], bool)
    resnet = manifest["torchvision resnet50 (ResNet50_Weights.DEFAULT)"]
    assert resnet["shrunk"] is False and resnet["path"] == "torch/hub/checkpoints/resnet50-11ad3fa6.pth"
    assert manifest["openai/clip-vit-base-patch32"]["standin"]["parameters"] < 5_000_000
    assert manifest["uoft-cs/cifar10"]["standin"]["rows"] == SV.CIFAR10_ROWS == {"train": 10_000, "test": 2_000}
    json.dumps(manifest)  # the driver writes it as JSON


def test_hub_cache_layout(built):
    out, _ = built
    for repo in ("openai/clip-vit-base-patch32", "distilbert-base-uncased"):
        folder = out / "hf" / "hub" / ("models--" + repo.replace("/", "--"))
        commit = (folder / "refs" / "main").read_text()
        assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
        files = {p.name for p in (folder / "snapshots" / commit).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    clip_files = {p.name for p in (out / "hf/hub/models--openai--clip-vit-base-patch32/snapshots").glob("*/*")}
    assert {"preprocessor_config.json", "vocab.json", "merges.txt"} <= clip_files


def test_clip_loads_offline_with_real_dims_and_tokens(probe):
    c = probe["clip"]
    assert (c["model"], c["processor"], c["image_processor"], c["tokenizer"]) == (
        "CLIPModel", "CLIPProcessor", "CLIPImageProcessor", "CLIPTokenizer")
    assert (c["vocab_size"], c["len_tokenizer"], c["max_positions"], c["model_max_length"]) == (49408, 49408, 77, 77)
    assert (c["image_size"], c["patch_size"], c["projection_dim"]) == (224, 32, 512)
    assert c["text_hidden"] == 64 and c["vision_hidden"] == 64  # shrunk
    assert (c["bos"], c["eos"], c["pad"]) == (49406, 49407, 49407)
    # Real English words are single tokens; the shorter prompt is padded with <|endoftext|>.
    assert c["tokens"][0][:8] == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "dog</w>",
                                  ".</w>", "<|endoftext|>"]
    assert c["ids"][0][0] == 49406 and set(c["ids"][0][7:]) == {49407}
    assert c["tokens"][1][1:4] == ["an</w>", "aerial</w>", "satellite</w>"]
    assert c["lowercase"]
    assert c["image_mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert c["image_std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert c["pixel_shape"] == [32, 3, 224, 224]
    assert c["image_features"] == [32, 512] and c["text_features"] == [1, 512] and c["finite"]
    assert c["forward_32_seconds"] < 3.0  # about 0.2 s on two cores


def test_distilbert_loads_as_classifier_with_bert_ids(probe):
    d = probe["distilbert"]
    assert d["model"] == "DistilBertForSequenceClassification" and d["num_labels"] == 2 and d["logits"] == [1, 2]
    assert (d["vocab_size"], d["max_positions"], d["n_layers"], d["dim"]) == (30522, 512, 6, 64)
    assert d["len_tokenizer"] == 30522 and d["model_max_length"] == 512
    assert d["special"] == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    assert d["ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert d["tokens"][:4] == ["[CLS]", "the", "movie", "was"] and d["tokens"][-3:] == ["boring", "!", "[SEP]"]
    assert "[UNK]" not in d["tokens"] and d["unknown_words"] == 0  # lowercased, split into pieces


def test_resnet50_default_weights_load_from_torch_home(probe):
    r = probe["resnet50"]
    assert r["fc"] == [2048, 1000] and r["out"] == [2, 1000] and r["finite"]
    assert r["parameters"] == 25_557_032  # the real architecture


def test_eurosat_folder(probe):
    e = probe["eurosat"]
    assert e["classes"] == ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                            "PermanentCrop", "Residential", "River", "SeaLake"]
    assert e["rows"] == SV.EUROSAT_PER_CLASS * 10 and e["per_class"] == [SV.EUROSAT_PER_CLASS] * 10
    assert min(e["lesson_train_per_class"]) >= 16  # lesson 01's k-shot curve goes up to 16 per class
    assert e["size"] == [64, 64] and e["mode"] == "RGB"
    assert e["first"].startswith("eurosat/2750/AnnualCrop/AnnualCrop_") and e["first"].endswith(".jpg")


def test_cifar10_splits_and_features(probe):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for split, rows in SV.CIFAR10_ROWS.items():
        s = probe["cifar10"][split]
        assert s["rows"] == rows and s["columns"] == ["img", "label"]
        assert s["features"] == {"img": "Image", "label": "ClassLabel"} and s["names"] == names
        assert s["size"] == [32, 32] and s["mode"] == "RGB"
        assert s["labels"] == list(range(10))


def test_sst2_splits_and_features(probe):
    sst2 = probe["sst2"]
    assert {k: v["rows"] for k, v in sst2.items()} == SV.SST2_ROWS
    # lesson 03 asks for 8,000 training reviews and SST-2's 872 validation sentences: as on Colab
    assert probe["lesson03_rows"] == [8000, 872]
    for split, s in sst2.items():
        assert s["columns"] == ["idx", "sentence", "label"]
        assert s["features"] == {"idx": "int32", "sentence": "string", "label": "int64"}
        assert s["idx_type"] == "int32" and s["names"] == ["negative", "positive"]
        assert s["first"] == s["first"].lower() and s["first"].endswith(" . ")
    assert sst2["train"]["labels"] == [0, 1] and sst2["validation"]["labels"] == [0, 1]
    assert sst2["test"]["labels"] == [-1]  # SST-2 hides its test labels
