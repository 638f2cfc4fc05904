"""Tests of ftlab.probe (lesson 01): the probe's parameters, freezing, the feature cache,
heads fitted three ways, CLIP zero-shot, k-NN and the k-shot curve, and the errors.

Tiny profile only (the micro-world CNN and CLIP); full-profile ResNets are built with random
weights, which torchvision constructs without a download.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure
from torch.utils.data import TensorDataset

from ftlab import probe as P
from ftlab.data import shapes as S
from ftlab.models import vision as V

@pytest.fixture(autouse=True)
def _tiny(monkeypatch, tmp_path):
    monkeypatch.setenv("FTLAB_PROFILE", "tiny")
    monkeypatch.setenv("FTLAB_CACHE_DIR", str(tmp_path / "features"))  # never the user's cache


@pytest.fixture(scope="module")
def target():
    return S.load_image_classification("target", "train", profile="tiny"), S.load_image_classification("target", "test", profile="tiny")


@pytest.fixture(scope="module")
def features(target, tmp_path_factory):
    """Pretrained and random CNN features of the target task (extracted once for the module)."""
    cache = tmp_path_factory.mktemp("module-cache")
    train, test = target
    out = {}
    for name, pretrained in (("pretrained", True), ("random", False)):
        model = P.build_linear_probe(len(train.classes), pretrained=pretrained, profile="tiny")
        out[name] = (model, P.extract_features(model, train, cache_dir=cache),
                     P.extract_features(model, test, cache_dir=cache))
    return out


def _images(n: int = 12, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=gen), torch.arange(n) % 3)


# ------------------------------------------------------------------------- the probe itself

def test_trainable_count_is_d_feat_times_k_plus_k():
    tiny = P.build_linear_probe(6, profile="tiny")
    assert P.trainable_count(tiny) == 128 * 6 + 6 == 774
    assert P.trainable_names(tiny) == ["fc.weight", "fc.bias"]
    resnet50 = P.build_linear_probe(10, pretrained=False, profile="full")  # no download
    assert resnet50.fc.in_features == 2048
    assert P.trainable_count(resnet50) == 2048 * 10 + 10 == 20490
    assert sum(p.numel() for p in resnet50.parameters()) == 23_528_522


def test_every_resnet_name_builds_in_full_and_maps_to_the_tiny_cnn():
    assert P.build_linear_probe(3, backbone="resnet18", pretrained=False, profile="full").fc.in_features == 512
    tiny = P.build_linear_probe(3, backbone="resnet18", profile="tiny")
    assert isinstance(tiny, V.TinyResNet) and tiny.fc.in_features == 128


def test_training_the_whole_probe_changes_only_the_head():
    model = P.build_linear_probe(3, profile="tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from ftlab.train import train

    train(model, _images(), lr=1e-2, num_steps=3, batch_size=4, progress=False)
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["fc.bias", "fc.weight"], changed  # BatchNorm running stats included
    assert model.training  # train() restored the mode; the frozen BatchNorm ran in eval anyway


def test_unfreeze_trains_the_block_and_its_batchnorm_statistics_only():
    model = P.unfreeze(P.build_linear_probe(3, profile="tiny"), "layer4")
    assert {n.split(".")[0] for n in P.trainable_names(model)} == {"layer4", "fc"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from ftlab.train import train

    train(model, _images(), lr=1e-2, num_steps=2, batch_size=4, progress=False)
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"layer4", "fc"}
    assert not torch.equal(before["layer4.bn1.running_mean"], model.state_dict()["layer4.bn1.running_mean"])
    P.unfreeze(model)
    assert P.trainable_count(model) == sum(p.numel() for p in model.parameters())


def test_differential_lr_groups_split_head_from_backbone():
    model = P.unfreeze(P.build_linear_probe(4, profile="tiny"), "layer4")
    head, body = P.differential_lr_groups(model, head_lr=1e-2, backbone_lr=1e-3)
    assert head["lr"] == 1e-2 and body["lr"] == 1e-3
    assert sum(p.numel() for p in head["params"]) == 128 * 4 + 4
    assert sum(p.numel() for p in body["params"]) == sum(p.numel() for p in model.layer4.parameters())
    assert len(P.differential_lr_groups(P.build_linear_probe(4, profile="tiny"), 1e-2, 1e-3)) == 1
    opt = torch.optim.AdamW(P.differential_lr_groups(model, 1e-2, 1e-3))
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-3]
    with pytest.raises(ValueError, match="no trainable parameter under 'head'"):
        P.differential_lr_groups(model, 1e-2, 1e-3, head="head")


# ------------------------------------------------------------------------- the feature cache

def test_cache_miss_then_hit_gives_the_same_features(tmp_path):
    model, data = P.build_linear_probe(3, profile="tiny"), _images()
    first = P.extract_features(model, data, cache_dir=tmp_path)
    second = P.extract_features(model, data, cache_dir=tmp_path)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.path == second.path and first.path.suffix == ".safetensors" and first.path.parent == tmp_path
    assert torch.equal(first.features, second.features) and torch.equal(first.labels, second.labels)
    assert first.features.shape == (12, 128)
    assert len(list(tmp_path.iterdir())) == 1


def test_default_cache_dir_follows_the_environment(tmp_path):
    assert P.feature_cache_dir() == tmp_path / "features"
    feats = P.extract_features(P.build_linear_probe(3, profile="tiny"), _images())
    assert feats.path.parent == tmp_path / "features"


def test_cache_is_invalidated_when_a_backbone_weight_changes(tmp_path):
    model, data = P.build_linear_probe(3, profile="tiny"), _images()
    first = P.extract_features(model, data, cache_dir=tmp_path)
    with torch.no_grad():
        model.layer1.conv1.weight[0, 0, 0, 0] += 0.5
    changed = P.extract_features(model, data, cache_dir=tmp_path)
    assert not changed.from_cache and changed.path != first.path
    assert not torch.equal(changed.features, first.features)
    other = P.extract_features(P.build_linear_probe(3, pretrained=False, profile="tiny"), data, cache_dir=tmp_path)
    assert not other.from_cache


def test_cache_is_invalidated_when_batchnorm_statistics_change(tmp_path):
    model, data = P.build_linear_probe(3, profile="tiny"), _images()
    P.extract_features(model, data, cache_dir=tmp_path)
    model.layer2.bn1.running_mean += 0.1
    assert not P.extract_features(model, data, cache_dir=tmp_path).from_cache


def test_cache_is_invalidated_when_one_pixel_or_label_changes(tmp_path):
    model = P.build_linear_probe(3, profile="tiny")
    images, labels = _images().tensors
    P.extract_features(model, TensorDataset(images, labels), cache_dir=tmp_path)
    pixel = images.clone()
    pixel[3, 1, 2, 2] += 1.0
    assert not P.extract_features(model, TensorDataset(pixel, labels), cache_dir=tmp_path).from_cache
    relabelled = labels.clone()
    relabelled[0] = 2
    assert not P.extract_features(model, TensorDataset(images, relabelled), cache_dir=tmp_path).from_cache
    assert P.extract_features(model, TensorDataset(images.clone(), labels.clone()), cache_dir=tmp_path).from_cache


def test_a_new_or_trained_head_still_hits_the_cache(tmp_path):
    data = _images()
    P.extract_features(P.build_linear_probe(3, profile="tiny"), data, cache_dir=tmp_path)
    other_head = P.build_linear_probe(5, profile="tiny")  # another K, another random fc
    assert P.extract_features(other_head, data, cache_dir=tmp_path).from_cache


def test_micro_world_split_and_subsets_have_distinct_keys(target):
    train, test = target
    assert P.data_fingerprint(train) == P.data_fingerprint(S.load_image_classification("target", "train", profile="tiny"))
    assert P.data_fingerprint(train) != P.data_fingerprint(test)
    assert P.data_fingerprint(S.take(train, 10, seed=0)) != P.data_fingerprint(S.take(train, 10, seed=1))


def test_a_corrupt_cache_file_is_a_miss_and_gets_rewritten(tmp_path):
    model, data = P.build_linear_probe(3, profile="tiny"), _images()
    path = P.extract_features(model, data, cache_dir=tmp_path).path
    path.write_bytes(b"not a safetensors file")
    again = P.extract_features(model, data, cache_dir=tmp_path)
    assert not again.from_cache
    assert P.extract_features(model, data, cache_dir=tmp_path).from_cache


def test_use_cache_false_writes_nothing(tmp_path):
    feats = P.extract_features(P.build_linear_probe(3, profile="tiny"), _images(), use_cache=False, cache_dir=tmp_path)
    assert not feats.from_cache and feats.path is None and not list(tmp_path.iterdir())


def test_extracting_features_leaves_the_global_rng_alone(tmp_path):
    model, data = P.build_linear_probe(3, profile="tiny"), _images()
    torch.manual_seed(0)
    P.extract_features(model, data, cache_dir=tmp_path)  # a miss runs a DataLoader
    after_miss = torch.rand(1)
    torch.manual_seed(0)
    P.extract_features(model, data, cache_dir=tmp_path)  # a hit does not
    assert torch.equal(after_miss, torch.rand(1))


def test_clip_cache_key_ignores_the_text_tower(tmp_path):
    model, _ = V.load_clip(profile="tiny")
    data = _images(6)
    first = P.extract_features(model, data, cache_dir=tmp_path)
    assert first.features.shape == (6, 64)
    torch.testing.assert_close(first.features.norm(dim=1), torch.ones(6))
    with torch.no_grad():
        model.text_projection.weight.mul_(2.0)
    assert P.extract_features(model, data, cache_dir=tmp_path).from_cache
    with torch.no_grad():
        model.visual_projection.weight.mul_(2.0)
    assert not P.extract_features(model, data, cache_dir=tmp_path).from_cache


# ------------------------------------------------------------------------- heads and accuracy

def test_probe_on_pretrained_features_beats_random_features(features):
    accs = {}
    for name, (model, f_train, f_test) in features.items():
        P.train_head(model.fc, f_train, lr=1e-2, num_epochs=60, batch_size=128, lr_schedule="cosine")
        accs[name] = P.accuracy(model.fc, f_test)
    assert accs["pretrained"] >= 0.85
    assert accs["pretrained"] - accs["random"] >= 0.15, accs


def test_trained_head_on_the_backbone_scores_the_same_on_images(features, target):
    model, f_train, f_test = features["pretrained"]
    P.train_head(model.fc, f_train, lr=1e-2, num_epochs=20, batch_size=128)
    assert P.accuracy(model, target[1]) == pytest.approx(P.accuracy(model.fc, f_test), abs=0.004)


def test_adamw_lbfgs_and_closed_form_heads_agree(features):
    model, f_train, f_test = features["pretrained"]
    head = nn.Linear(128, 6)
    P.train_head(head, f_train, lr=1e-2, num_epochs=60, batch_size=128, lr_schedule="cosine")
    accs = [P.accuracy(head, f_test),
            P.logistic_probe_accuracy(f_train.features, f_train.labels, f_test.features, f_test.labels),
            P.accuracy(P.ridge_probe(f_train, 6), f_test)]
    assert min(accs) >= 0.9 and max(accs) - min(accs) <= 0.03, accs


def test_ridge_probe_matches_least_squares_with_a_bias_column():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    head = P.ridge_probe(P.FeatureSet(x, y), 3, l2=0.0)
    design = torch.cat([x, torch.ones(40, 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, nn.functional.one_hot(y, 3).double()).solution  # [6, 3]
    torch.testing.assert_close(head.weight.detach().double(), solution[:5].T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(head.bias.detach().double(), solution[5], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------- CLIP, k-NN, k-shot

@pytest.fixture(scope="module")
def clip_features(target, tmp_path_factory):
    model, processor = V.load_clip(profile="tiny")
    cache = tmp_path_factory.mktemp("clip-cache")
    train, test = target
    return model, processor, P.extract_features(model, train, cache_dir=cache), P.extract_features(model, test, cache_dir=cache)


def test_zero_shot_head_equals_clip_zero_shot_accuracy(clip_features, target):
    model, processor, _, c_test = clip_features
    test = target[1]
    head = P.zero_shot_head(model, processor, test.classes, "a photo of a {}.")
    assert P.trainable_count(head) == 0 and head.weight.shape == (6, 64)
    expected = V.clip_zero_shot_accuracy(model, processor, test.images, test.labels, test.classes)
    assert P.accuracy(head, c_test) == pytest.approx(expected, abs=1e-6)
    assert expected >= 1 / 6 + 0.25


def test_prompt_ensemble_is_the_renormalised_mean_of_the_templates(clip_features):
    model, processor, _, _ = clip_features
    names, templates = ["heart", "tee"], ["a photo of a {}.", "a {} on a plain background"]
    head = P.zero_shot_head(model, processor, names, templates)
    each = torch.stack([V.clip_encode_text(model, processor, [t.format(n) for n in names]) for t in templates])
    torch.testing.assert_close(head.weight.detach(), nn.functional.normalize(each.mean(0), dim=-1))
    from ftlab.drills import lesson01

    img = nn.functional.normalize(torch.randn(3, 64), dim=-1)
    torch.testing.assert_close(lesson01.zero_shot_logits_solution(img, each), head(img))


def test_knn_votes_by_similarity_on_toy_points():
    train = P.FeatureSet(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    test = P.FeatureSet(torch.tensor([[0.6, 0.8], [1.0, 0.2]]), torch.tensor([1, 0]))
    assert P.knn_accuracy(train, test, neighbors=1) == 1.0
    # with all 3 voting, the two class-0 points (similarity 0.6 + 0.69) outvote the nearest one (0.8)
    assert P.knn_accuracy(train, test, neighbors=3) == 0.5
    assert P.knn_accuracy(train, test, neighbors=99) == 0.5  # capped at the training set


def test_sample_per_class_draws_k_of_each_class_repeatably(features):
    _, f_train, _ = features["pretrained"]
    few = P.sample_per_class(f_train, 4, seed=1)
    assert torch.bincount(few.labels).tolist() == [4] * 6
    assert torch.equal(few.features, P.sample_per_class(f_train, 4, seed=1).features)
    assert not torch.equal(few.features, P.sample_per_class(f_train, 4, seed=2).features)
    with pytest.raises(ValueError, match="only 4 examples"):
        P.sample_per_class(few, 5)


def test_k_shot_curve_rises_with_k_and_zero_shot_beats_one_shot(features, clip_features, target):
    _, f_train, f_test = features["pretrained"]
    cnn = P.k_shot_curve(f_train, f_test, shots=(1, 16), seeds=(0, 1))
    assert cnn["shots"] == [1, 16] and set(cnn) == {"shots", "probe", "knn", "probe_std", "knn_std"}
    assert cnn["probe"][1] >= cnn["probe"][0] + 0.1 and cnn["knn"][1] > cnn["knn"][0]
    model, processor, c_train, c_test = clip_features
    clip = P.k_shot_curve(c_train, c_test, shots=(1, 16), seeds=(0, 1))
    zero_shot = P.accuracy(P.zero_shot_head(model, processor, target[1].classes), c_test)
    assert zero_shot >= clip["probe"][0] + 0.15  # one label per class is worth less than a prompt
    from ftlab.plots import plot_k_shot

    fig = plot_k_shot({"CLIP": clip, "CNN": cnn}, zero_shot={"CLIP zero-shot": zero_shot}, chance=1 / 6)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 4 + 2


# ------------------------------------------------------------------------- clear errors

@pytest.mark.parametrize("k", [1, 0, -3, 2.5, True, "10"])
def test_num_classes_below_two_or_not_an_int_is_refused(k):
    with pytest.raises(ValueError, match="at least 2"):
        P.build_linear_probe(k, profile="tiny")


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'vit_b_16'.*resnet18.*resnet50"):
        P.build_linear_probe(10, backbone="vit_b_16", profile="tiny")


def test_empty_data_is_refused_everywhere(tmp_path):
    model = P.build_linear_probe(3, profile="tiny")
    empty = TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        P.extract_features(model, empty, cache_dir=tmp_path)
    no_rows = P.FeatureSet(torch.zeros(0, 128), torch.zeros(0, dtype=torch.long))
    for call in (lambda: P.train_head(model.fc, no_rows), lambda: P.accuracy(model.fc, no_rows),
                 lambda: P.ridge_probe(no_rows, 3)):
        with pytest.raises(ValueError, match="empty"):
            call()


def test_labels_out_of_range_are_refused_with_the_range():
    model = P.build_linear_probe(3, profile="tiny")
    bad = P.FeatureSet(torch.randn(4, 128), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"label 3 is out of range for 3 classes \(labels must be 0..2\)"):
        P.train_head(model.fc, bad)
    with pytest.raises(ValueError, match="label 3 is out of range"):
        P.accuracy(model.fc, bad)
    with pytest.raises(ValueError, match="label -1 is out of range"):
        P.ridge_probe(P.FeatureSet(torch.randn(2, 128), torch.tensor([0, -1])), 3)
    with pytest.raises(ValueError, match="label 3 is out of range"):
        P.accuracy(model, TensorDataset(torch.randn(2, 3, 32, 32), torch.tensor([0, 3])))


def test_features_of_another_width_are_refused():
    with pytest.raises(ValueError, match="64-dimensional but the head takes 128"):
        P.train_head(nn.Linear(128, 3), P.FeatureSet(torch.randn(4, 64), torch.tensor([0, 1, 2, 0])))


def test_unknown_block_and_unsupported_model_say_what_exists():
    with pytest.raises(ValueError, match="no block named \\['layer5'\\].*layer4"):
        P.unfreeze(P.build_linear_probe(3, profile="tiny"), "layer5")
    with pytest.raises(TypeError, match="ResNet-style model"):
        P.extract_features(nn.Linear(3, 3), _images())


def test_take_keeps_classes_and_targets(target):
    train, _ = target
    sub = S.take(train, 50, seed=3)
    assert len(sub) == 50 and sub.classes == train.classes
    assert sub.targets == [train.targets[i] for i in sub.indices]
    assert S.take(train, None) is train and S.take(train, 10**6) is train
    with pytest.raises(ValueError, match="full profile"):
        S.load_image_classification("eurosat", "train", profile="tiny")


def test_full_profile_code_path_runs_on_a_torchvision_resnet(tmp_path):
    """The full profile's objects (torchvision ResNet-18, random weights: no download) go through
    the same calls as the tiny CNN: probe, cached features, head, whole-network accuracy."""
    model = P.build_linear_probe(3, backbone="resnet18", pretrained=False, profile="full")
    data = TensorDataset(torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 2))
    feats = P.extract_features(model, data, cache_dir=tmp_path)
    assert feats.features.shape == (6, 512) and P.extract_features(model, data, cache_dir=tmp_path).from_cache
    P.train_head(model.fc, feats, lr=1e-2, num_steps=5, batch_size=6)
    assert P.accuracy(model, data) == pytest.approx(P.accuracy(model.fc, feats))
    frozen_bn = model.layer1[0].bn1
    from ftlab.train import train

    stats = frozen_bn.running_mean.clone()
    train(model, data, lr=1e-3, num_steps=1, batch_size=3, progress=False)
    assert torch.equal(frozen_bn.running_mean, stats)


def test_eurosat_split_is_seeded_disjoint_and_named_for_prompts(monkeypatch):
    """EuroSAT's split logic on a stand-in for torchvision's dataset (the real one downloads 90 MB)."""
    import torchvision

    folders = list(S.EUROSAT_CLASSES)

    class FakeEuroSAT(torch.utils.data.Dataset):
        def __init__(self, root, download, transform):
            self.classes = folders
            self.targets = [i % 10 for i in range(2500)]

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            return torch.zeros(3, 8, 8), self.targets[i]

    monkeypatch.setattr(torchvision.datasets, "EuroSAT", FakeEuroSAT)
    train = S.load_image_classification("eurosat", "train", profile="full")
    test = S.load_image_classification("eurosat", "test", profile="full")
    assert len(train) == len(test) == 1000
    assert sorted(set(train.targets)) == list(range(10)) and train.targets.count(3) == 100
    assert not set(train.indices) & set(test.indices)
    assert train.indices == S.load_image_classification("eurosat", "train", profile="full").indices
    assert train.classes[folders.index("SeaLake")] == "lake or sea"


# ------------------------------------------------------------------------- class imbalance

def test_confusion_matrix_and_f1_scores_on_a_hand_counted_example():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 0, 0])  # class 2 is never predicted
    cm = P.confusion_matrix(pred, y, 3)
    assert cm.tolist() == [[2, 1, 0], [1, 1, 0], [1, 0, 0]] and cm.dtype == torch.float64
    precision, recall, f1 = P.f1_scores(cm)
    torch.testing.assert_close(precision, torch.tensor([2 / 4, 1 / 2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(recall, torch.tensor([2 / 3, 1 / 2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(f1, torch.tensor([4 / 7, 1 / 2, 0.0], dtype=torch.float64))  # 2TP/(2TP+FP+FN)
    assert P.macro_f1(pred, y, 3) == pytest.approx((4 / 7 + 1 / 2 + 0) / 3)


def test_majority_class_predictor_has_high_accuracy_and_low_macro_f1():
    y = torch.tensor([0] * 90 + [1] * 5 + [2] * 5)
    pred = torch.zeros(100, dtype=torch.long)
    assert (pred == y).float().mean().item() == pytest.approx(0.9)
    assert P.macro_f1(pred, y, 3) == pytest.approx((2 * 0.9 / 1.9) / 3)  # drill 01g's answer
    assert P.macro_f1(pred, y, 3) == pytest.approx(0.3158, abs=1e-4)


def test_weighted_confusion_matrix_counts_each_example_its_weight():
    y, pred = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    weight = torch.tensor([3.0, 1.0, 0.5, 0.5])
    assert P.confusion_matrix(pred, y, 2, weight).tolist() == [[3.0, 1.0], [0.0, 1.0]]
    # the same as repeating each example its (integer) weight
    rep = torch.tensor([6, 2, 1, 1])
    assert P.macro_f1(pred, y, 2, weight) == pytest.approx(
        P.macro_f1(pred.repeat_interleave(rep), y.repeat_interleave(rep), 2))


def test_class_weights_are_inverse_frequency_with_mean_one_per_example():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    w = P.class_weights(labels, 4)  # class 3 absent
    torch.testing.assert_close(w, torch.tensor([10 / 18, 10 / 9, 10 / 3, 0.0]))  # N / (3 present * n_c)
    assert w[labels].mean().item() == pytest.approx(1.0)
    assert (w[:3] * torch.tensor([6, 3, 1])).unique().numel() == 1  # each present class weighs the same


def test_imbalanced_subset_keeps_common_classes_whole_and_a_seeded_share_of_the_rest(features):
    _, f_train, _ = features["pretrained"]
    counts = torch.bincount(f_train.labels)
    imb = P.imbalanced_subset(f_train, common=(1, 2), rare_share=0.03, seed=0)
    kept = torch.bincount(imb.labels, minlength=len(counts))
    assert kept[1] == counts[1] and kept[2] == counts[2]
    for c in (0, 3, 4, 5):
        assert kept[c] == max(1, round(0.03 * int(counts[c])))
    assert torch.equal(imb.labels, P.imbalanced_subset(f_train, (1, 2), 0.03, seed=0).labels)
    assert not torch.equal(imb.features, P.imbalanced_subset(f_train, (1, 2), 0.03, seed=1).features)
    assert imb.classes == f_train.classes


def test_class_weighted_head_finds_the_rare_classes_the_plain_head_misses(features):
    _, f_train, f_test = features["pretrained"]
    K = len(f_train.classes)
    imb = P.imbalanced_subset(f_train, common=(1, 2, 3), rare_share=0.03, seed=0)
    rare = torch.tensor([0, 4, 5])
    scores = {}
    for name, weight in (("plain", None), ("weighted", P.class_weights(imb.labels, K))):
        torch.manual_seed(0)
        head = nn.Linear(imb.dim, K)
        P.train_head(head, imb, class_weight=weight, lr=1e-2, num_epochs=60, batch_size=128, seed=0)
        with torch.no_grad():
            pred = head(f_test.features).argmax(1)
        _, recall, _ = P.f1_scores(P.confusion_matrix(pred, f_test.labels, K))
        scores[name] = (recall[rare].mean().item(), P.macro_f1(pred, f_test.labels, K))
    assert scores["weighted"][0] >= scores["plain"][0] + 0.10  # rare-class recall
    assert scores["weighted"][1] >= scores["plain"][1] + 0.05  # macro-F1 on the balanced test set


def test_class_weight_of_ones_trains_the_same_head_as_no_weight():
    data = P.FeatureSet(torch.randn(40, 5, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3)
    heads = []
    for weight in (None, torch.ones(3)):
        torch.manual_seed(0)
        heads.append(nn.Linear(5, 3))
        P.train_head(heads[-1], data, class_weight=weight, lr=1e-2, num_epochs=3, batch_size=8, seed=0)
    torch.testing.assert_close(heads[0].weight, heads[1].weight)


@pytest.mark.parametrize("call, words", [
    (lambda: P.confusion_matrix([0, 1], [0], 2), "one prediction per label"),
    (lambda: P.confusion_matrix([0, 3], [0, 1], 2), "predictions"),
    (lambda: P.confusion_matrix([0, 1], [0, 1], 2, weight=[1.0]), "one number per example"),
    (lambda: P.f1_scores(torch.zeros(2, 3)), r"\[K, K\]"),
    (lambda: P.class_weights([], 3), "no labels"),
    (lambda: P.imbalanced_subset(P.FeatureSet(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])), (7,), 0.5),
     "name classes the data has"),
    (lambda: P.imbalanced_subset(P.FeatureSet(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])), (0,), 0.0),
     r"in \(0, 1\]"),
    (lambda: P.train_head(nn.Linear(2, 2), P.FeatureSet(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])),
                          class_weight=[1.0, 2.0, 3.0], num_epochs=1), "one per class"),
])
def test_imbalance_helpers_say_what_is_wrong(call, words):
    with pytest.raises(ValueError, match=words):
        call()
