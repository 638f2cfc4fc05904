"""Lesson 01's full path in the rehearsal (stand-ins, a simulated card, FTLAB_MAX_STEPS): what
crashed or took minutes there, each checked here on small objects in a few seconds.

- a simulated T4 trains convolutions in fp32 (torch's CPU fp16 convolution backward is a slow
  reference kernel: minutes per 224x224 ResNet-50 image), everything else under fp16 autocast;
- feature extraction and whole-network scoring honour FTLAB_MAX_STEPS, spread over the classes;
- the k-shot curve keeps the k that capped features supply, and without the cap says which class
  is too small and what k would work (it raised "class 0 has only 15 examples" on EuroSAT);
- the hub's CIFAR-10 is identified by its fingerprint, not by decoding every image at 224x224;
- the feature cache follows FTLAB_CACHE, like every other full-profile cache.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from ftlab import probe as P
from ftlab.data import shapes as S
from ftlab.train import train

@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("FTLAB_PROFILE", "tiny")
    monkeypatch.setenv("FTLAB_CACHE_DIR", str(tmp_path / "features"))
    for var in ("FTLAB_MAX_STEPS", "FTLAB_SIMULATE_GPU"):
        monkeypatch.delenv(var, raising=False)


class _Conv(nn.Conv2d):
    """A convolution that records, inside its forward, whether autocast is on and its input dtype."""

    def forward(self, x):
        self.seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return super().forward(x)


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _Conv(3, 4, 3, padding=1)
        self.conv.seen = []
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.after_conv, self.fc_seen = [], []

    def forward(self, x):
        h = self.conv(x)
        self.after_conv.append(h.dtype)
        h = torch.relu(self.bn(h)).mean((2, 3))
        self.fc_seen.append(torch.is_autocast_enabled("cpu"))
        return self.fc(h)


def test_simulated_t4_trains_convolutions_in_fp32_and_the_rest_under_fp16(monkeypatch):
    monkeypatch.setenv("FTLAB_SIMULATE_GPU", "t4")
    net = _ConvNet()
    data = TensorDataset(torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3)
    history = train(net, data, lr=1e-2, num_steps=2, batch_size=4, progress=False)
    assert history.precision == "fp16" and len(history.steps) == 2
    # inside the convolution: autocast off, fp32 in; what it hands on is fp16, as on a T4
    assert net.conv.seen == [(False, torch.float32)] * 2 and net.after_conv == [torch.float16] * 2
    assert net.fc_seen == [True, True]  # the linear layer still runs under fp16 autocast
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters())
    net.conv.seen.clear()  # the hooks go with the run: outside train, autocast reaches the convolution
    with torch.autocast("cpu", dtype=torch.float16):
        net(torch.randn(2, 3, 8, 8))
    assert net.conv.seen == [(True, torch.float32)]


def test_simulated_t4_fine_tunes_a_resnet_in_seconds(monkeypatch):
    """The symptom: one step of a torchvision ResNet under the simulated T4 took minutes (fp16
    convolution backward on the CPU: about 7 s per 96x96 image for ResNet-50, 150 s at 224)."""
    monkeypatch.setenv("FTLAB_SIMULATE_GPU", "t4")
    monkeypatch.setenv("FTLAB_PROFILE", "full")
    net = P.unfreeze(P.build_linear_probe(3, backbone="resnet50", pretrained=False))  # random: no download
    data = TensorDataset(torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1]))
    start = time.process_time()
    history = train(net, data, lr=1e-4, num_steps=1, batch_size=2, progress=False)
    assert history.precision == "fp16" and len(history.steps) == 1
    assert time.process_time() - start < 5  # about 0.5 s of CPU; it was 15 s


def _class_sorted(per_class: int = 10, classes: int = 3) -> TensorDataset:
    """Images sorted by class, as an ImageFolder (EuroSAT) yields them."""
    n = per_class * classes
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return TensorDataset(images, torch.arange(n) // per_class)


def test_extraction_and_scoring_read_at_most_max_steps_batches_spread_over_the_classes(monkeypatch, capsys):
    model, data = P.build_linear_probe(3, profile="tiny"), _class_sorted()
    uncapped = P.extract_features(model, data, batch_size=4, use_cache=False)
    assert len(uncapped) == 30
    monkeypatch.setenv("FTLAB_MAX_STEPS", "2")
    capped = P.extract_features(model, data, batch_size=4, use_cache=False)
    assert len(capped) == 8 and "8 of 30 examples" in capsys.readouterr().out
    assert torch.bincount(capped.labels).tolist() == [3, 3, 2]  # every class, not the first rows' one
    rows = [i * 30 // 8 for i in range(8)]
    assert torch.allclose(capped.features, uncapped.features[rows], atol=1e-5)
    # a capped run gets its own cache key: an uncapped run never reads its smaller file
    P.extract_features(model, data, batch_size=4)
    monkeypatch.delenv("FTLAB_MAX_STEPS")
    assert len(P.extract_features(model, data, batch_size=4)) == 30
    monkeypatch.setenv("FTLAB_MAX_STEPS", "2")
    head = nn.Linear(128, 3)
    full_share = P.accuracy(head, uncapped, batch_size=4)  # 30 rows > 2 x 4: scored on 8 of them
    assert full_share * 8 == pytest.approx(round(full_share * 8))
    assert P.accuracy(model, data, batch_size=4) == pytest.approx(P.accuracy(model.fc, capped, batch_size=4))


def test_k_shot_curve_keeps_the_k_that_capped_features_supply(monkeypatch, capsys):
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 6)
    train_set = P.FeatureSet(torch.randn(14, 8, generator=gen), labels, classes=["a", "b", "c"])
    test_set = P.FeatureSet(torch.randn(9, 8, generator=gen), torch.arange(9) % 3)
    with pytest.raises(ValueError, match=r"class 1 \('b'\) has only 3.*shots up to 3"):
        P.k_shot_curve(train_set, test_set, shots=(1, 2, 4, 8), seeds=(0,))
    with pytest.raises(ValueError, match=r"class 1 \('b'\) has only 3 examples; cannot draw 4.*k <= 3"):
        P.sample_per_class(train_set, 4)
    monkeypatch.setenv("FTLAB_MAX_STEPS", "2")
    curve = P.k_shot_curve(train_set, test_set, shots=(1, 2, 4, 8), seeds=(0,))
    assert curve["shots"] == [1, 2] and len(curve["probe"]) == len(curve["knn"]) == 2
    assert "k-shot curve capped at k <= 3" in capsys.readouterr().out


def test_hub_images_are_fingerprinted_without_decoding_them():
    import datasets

    decoded = []

    def transform(image):
        decoded.append(1)
        return torch.zeros(3, 4, 4)

    def hub(n, shift=0):
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
        from PIL import Image

        images = [Image.new("RGB", (4, 4), (i + shift, 0, 0)) for i in range(n)]
        return S.HubImageDataset(datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(n)]},
                                                            features=feats), "img", "label", transform)

    a, b = hub(6), hub(6, shift=1)
    key = P.data_fingerprint(S.take(a, 4, seed=0))
    assert decoded == []  # it decoded every image of the whole set, at full size, for each extraction
    assert key == P.data_fingerprint(S.take(a, 4, seed=0))
    assert key != P.data_fingerprint(S.take(a, 4, seed=1))  # other rows
    assert P.data_fingerprint(a) != P.data_fingerprint(b)  # other pixels


def test_feature_cache_follows_ftlab_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FTLAB_CACHE_DIR")
    monkeypatch.setenv("FTLAB_CACHE", str(tmp_path / "course"))
    assert P.feature_cache_dir() == tmp_path / "course" / "features"
    monkeypatch.setenv("FTLAB_CACHE_DIR", str(tmp_path / "mine"))
    assert P.feature_cache_dir() == tmp_path / "mine"
