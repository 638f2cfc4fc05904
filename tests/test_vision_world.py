"""The vision micro-world: the shape generator, the shipped datasets, the tiny CNN and CLIP.

These pin the claims lesson 01 makes at tiny scale: the pretrained CNN knows its source task,
its features transfer to a different target task far better than random features do, and
the tiny CLIP classifies the target task zero-shot well above chance.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from ftlab.data import shapes as S
from ftlab.models import vision as V
from ftlab.probe import logistic_probe_accuracy
from ftlab.runtime import data_dir


# The thresholds data/vision/QUALITY.md documents (the measured values sit well above them).
CNN_SOURCE_ACCURACY = 0.95
PROBE_PRETRAINED = 0.85
PROBE_GAP = 0.15
CLIP_ZERO_SHOT = 0.40
CLIP_ZERO_SHOT_COLOUR = 0.90
EXPECTED = {("source", "train"): 500, ("source", "test"): 1000, ("target", "train"): 1000, ("target", "test"): 500}


@pytest.fixture(scope="module")
def target():
    return S.load_image_classification("target", "train", profile="tiny"), S.load_image_classification("target", "test", profile="tiny")


@pytest.fixture(scope="module")
def clip():
    return V.load_clip(profile="tiny")


# ---------------------------------------------------------------------------- generator

def test_generator_is_deterministic_and_seed_dependent():
    a = S.generate(24, seed=5, hollow=0.5)
    b = S.generate(24, seed=5, hollow=0.5)
    c = S.generate(24, seed=6, hollow=0.5)
    assert a["images"].dtype == torch.uint8 and a["images"].shape == (24, 3, 32, 32)
    assert a["images"].numpy().tobytes() == b["images"].numpy().tobytes()
    assert a["captions"] == b["captions"] and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["images"], c["images"])


def test_shipped_split_is_exactly_what_the_generator_draws():
    shipped = S.load_image_classification("target", "test", profile="tiny")
    fresh = S.generate_split("target", "test")
    assert torch.equal(shipped.images, fresh["images"])
    assert shipped.targets == fresh["labels"].tolist()
    assert shipped.captions == fresh["captions"]


def test_labels_are_balanced_and_attributes_vary():
    d = S.generate(60, seed=0, shapes=S.TARGET_SHAPES, hollow=0.5)
    assert torch.bincount(d["labels"]).tolist() == [10] * 6
    for key, k in (("colour", 6), ("size", 2), ("background", 4), ("hollow", 2)):
        assert len(d[key].unique()) == k, key


def test_every_shape_draws_a_visible_blob_of_the_shape_colour():
    rng = np.random.default_rng(0)
    for shape in S.SHAPES:
        img = S.draw(rng, shape, "red", "large", "plain").astype(int)
        reddish = (img[..., 0] > 150) & (img[..., 1] < 110) & (img[..., 2] < 110)
        assert 40 < reddish.sum() < 32 * 32 * 0.6, shape


def test_hollow_shapes_have_fewer_shape_pixels_than_filled_ones():
    filled = S.draw(np.random.default_rng(1), "heart", "blue", "large", "plain")
    hollow = S.draw(np.random.default_rng(1), "heart", "blue", "large", "plain", hollow=True)
    blue = lambda im: ((im[..., 2] > 150) & (im[..., 0] < 120)).sum()  # noqa: E731
    assert blue(hollow) < 0.7 * blue(filled)


# ---------------------------------------------------------------------------- datasets

@pytest.mark.parametrize("task,split", sorted(EXPECTED))
def test_shipped_dataset_sizes_classes_and_items(task, split):
    ds = S.load_image_classification(task, split, profile="tiny")
    assert len(ds) == EXPECTED[task, split]
    assert ds.classes == list(S.TASKS[task])
    image, label = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert isinstance(label, int) and 0 <= label < len(ds.classes)
    assert len(ds.targets) == len(ds.captions) == len(ds)
    assert set(ds.targets) == set(range(len(ds.classes)))
    hollow_fraction = ds.attributes["hollow"].float().mean().item()
    assert abs(hollow_fraction - S.HOLLOW[task]) < 0.06


def test_images_are_imagenet_normalised_and_display_back_to_pixels(target):
    train, _ = target
    image, _ = train[3]
    assert -2.2 < image.min() and image.max() < 2.7  # normalised, not 0..255
    shown = S.to_display(image)
    assert shown.shape == (32, 32, 3)
    np.testing.assert_allclose(shown, train.images[3].permute(1, 2, 0).numpy() / 255, atol=1e-5)


def test_captions_name_the_label_and_the_hollow_look(target):
    train, _ = target
    for i in range(50):
        words = train.captions[i].split()
        assert train.classes[train.targets[i]] in words
        assert ("hollow" in words) == bool(train.attributes["hollow"][i])


def test_meta_json_matches_the_code():
    meta = json.loads((data_dir() / "vision" / "meta.json").read_text())
    assert meta["classes"] == {"source": list(S.SOURCE_SHAPES), "target": list(S.TARGET_SHAPES)}
    assert set(S.SHAPES) | set(S.COLOURS) <= set(meta["caption_vocabulary"])


def test_bad_task_or_split_names_the_valid_ones():
    with pytest.raises(ValueError, match="'source'.*'target'"):
        S.load_image_classification("imagenet", "train", profile="tiny")
    with pytest.raises(ValueError, match="train.*test"):
        S.load_image_classification("target", "validation", profile="tiny")
    with pytest.raises(ValueError, match="ImageNet"):
        S.load_image_classification("source", "train", profile="full")


def test_vision_world_stays_small():
    size = sum(p.stat().st_size for d in ("vision", "clip") for p in (data_dir() / d).rglob("*") if p.is_file())
    assert size < 12 * 2**20, f"data/vision + data/clip hold {size / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------- the CNN

def test_backbone_takes_the_resnet_linear_probe_surgery():
    net = V.load_vision_backbone(profile="tiny")
    assert isinstance(net.fc, nn.Linear) and net.fc.in_features == 128 and net.fc.out_features == 8
    for p in net.parameters():  # the seed's build_linear_probe, line for line
        p.requires_grad = False
    net.fc = nn.Linear(net.fc.in_features, 6)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 128 * 6 + 6
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 6)
    assert all(hasattr(net, n) for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "avgpool"))


def test_random_backbone_is_repeatable_and_not_the_pretrained_one():
    a = V.load_vision_backbone(profile="tiny", pretrained=False)
    b = V.load_vision_backbone(profile="tiny", pretrained=False)
    pre = V.load_vision_backbone(profile="tiny")
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.allclose(a.conv1.weight, pre.conv1.weight)


def test_backbone_features_leave_the_model_unchanged():
    net = V.load_vision_backbone(profile="tiny").train()
    fc = net.fc
    feats = V.backbone_features(net, torch.zeros(5, 3, 32, 32))
    assert feats.shape == (5, 128) and net.fc is fc and net.training


def test_cnn_knows_its_source_task():
    test = S.load_image_classification("source", "test", profile="tiny")
    net = V.load_vision_backbone(profile="tiny").eval()
    with torch.no_grad():
        acc = (net(S.normalize(test.images)).argmax(1) == test.labels).float().mean().item()
    assert acc >= CNN_SOURCE_ACCURACY


@pytest.fixture(scope="module")
def probe_accuracies(target):
    train, test = target
    out = {}
    for name, pretrained in (("pretrained", True), ("random", False)):
        net = V.load_vision_backbone(profile="tiny", pretrained=pretrained)
        f_train = V.backbone_features(net, S.normalize(train.images))
        f_test = V.backbone_features(net, S.normalize(test.images))
        out[name] = logistic_probe_accuracy(f_train, train.labels, f_test, test.labels)
        if pretrained:  # the same probe on shuffled labels: what "learned nothing" scores
            shuffled = train.labels[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
            out["shuffled"] = logistic_probe_accuracy(f_train, shuffled, f_test, test.labels)
    return out


def test_probe_on_pretrained_features_beats_random_features_by_15_points(probe_accuracies):
    acc = probe_accuracies
    assert acc["pretrained"] >= PROBE_PRETRAINED
    assert acc["pretrained"] - acc["random"] >= PROBE_GAP, acc


def test_probe_on_shuffled_labels_is_near_chance(probe_accuracies):
    assert probe_accuracies["shuffled"] < 1 / 6 + 0.08


# ---------------------------------------------------------------------------- CLIP

def test_clip_loads_as_the_hugging_face_classes(clip):
    from transformers import CLIPModel, CLIPProcessor

    model, processor = clip
    assert isinstance(model, CLIPModel) and isinstance(processor, CLIPProcessor)
    assert model.config.vision_config.image_size == 32 and not model.training


def test_processor_and_dataset_tensors_give_the_same_pixels(clip, target):
    from PIL import Image

    model, processor = clip
    _, test = target
    pil = [Image.fromarray(test.images[i].permute(1, 2, 0).numpy()) for i in range(4)]
    via_processor = processor(images=pil, return_tensors="pt")["pixel_values"]
    via_tensors = V.clip_pixel_values(model, torch.stack([test[i][0] for i in range(4)]))
    assert via_processor.shape == via_tensors.shape == (4, 3, 32, 32)
    torch.testing.assert_close(via_tensors, via_processor.float(), atol=0.02, rtol=0)


def test_tokenizer_reads_prompts_in_plain_english(clip):
    _, processor = clip
    tok = processor.tokenizer
    a = tok("A photo of an arrow.")["input_ids"]
    assert a == tok("a photo of a arrow")["input_ids"]
    assert tok.unk_token_id not in a and a[-1] == tok.eos_token_id


def test_clip_embeddings_are_unit_length(clip, target):
    model, processor = clip
    _, test = target
    img = V.clip_encode_images(model, test.images[:8])
    txt = V.clip_encode_text(model, processor, ["a photo of a heart.", "a red tee"])
    assert img.shape == (8, 64) and txt.shape == (2, 64)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(2))


def test_clip_zero_shot_is_well_above_chance(clip, target):
    model, processor = clip
    _, test = target
    shape_acc = V.clip_zero_shot_accuracy(model, processor, test.images, test.labels, test.classes)
    colour_acc = V.clip_zero_shot_accuracy(model, processor, test.images, test.attributes["colour"],
                                           list(S.COLOURS), "a photo of a {} shape.")
    assert shape_acc >= CLIP_ZERO_SHOT  # chance is 1/6
    assert colour_acc >= CLIP_ZERO_SHOT_COLOUR
