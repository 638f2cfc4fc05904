"""Linear probing: freeze a pretrained backbone, train only a new head (lesson 01).

The cheapest way to adapt a pretrained image model is to keep every backbone weight frozen and
train one ``nn.Linear`` on its features: ``d_feat * K + K`` trainable parameters (20,490 for
ResNet-50 and 10 classes). This module holds what lesson 01 builds around that idea:

- :func:`build_linear_probe` and :func:`trainable_count`: the seed's API. Full profile: a
  torchvision ResNet (``DEFAULT`` ImageNet weights) with a fresh ``fc``. Tiny profile: the
  micro-world CNN (:class:`ftlab.models.vision.TinyResNet`, 128 features), which stands in for
  every ResNet name, so ``backbone="resnet50"`` means "the tiny CNN" there.
- :func:`unfreeze` and :func:`differential_lr_groups`: partial and full fine-tuning, with a
  backbone learning rate much smaller than the head's.
- :func:`extract_features`: a frozen backbone's features, cached on disk (safetensors) under a
  key made of the backbone, a hash of its weights and a hash of the data. Training the head
  again, for another learning rate or another k, then never runs the backbone again; change a
  weight or a pixel and the key changes, so a stale file is never read.
- heads trained three ways: with :func:`ftlab.train.train` (AdamW, like everything else in the
  course), with L-BFGS (:func:`logistic_probe_accuracy`), and in closed form
  (:func:`ridge_probe`). They land within a point or two of each other: the features, not the
  optimiser, decide what a probe can do.
- CLIP: zero-shot classification from prompt templates (:func:`zero_shot_head`, itself a
  linear head whose weights come from text), a probe on CLIP's image features, a k-NN
  (:func:`knn_accuracy`) and a k-shot curve (:func:`k_shot_curve`) comparing the three.
- class imbalance: :func:`imbalanced_subset` keeps a few classes whole and a small share of the
  others; :func:`confusion_matrix`, :func:`f1_scores` and :func:`macro_f1` score every class
  (accuracy is dominated by the common ones); ``train_head(..., class_weight=class_weights(...))``
  weighs the loss by ``1 / frequency``.

Everything takes the same objects at both scales (a torchvision-style ResNet or a
``transformers.CLIPModel``; a dataset of ``(image, label)``), so the lesson's code is the code
a student runs on ResNet-50 and CLIP ViT-B/32.

Decisions worth knowing (each is tested in ``tests/test_probe.py``):

- ``backbone`` is a torchvision ResNet name (:data:`BACKBONES`); the full profile builds it with
  ``get_model(name, weights="DEFAULT")``, the tiny profile has one CNN for every name.
- Frozen means frozen: ``requires_grad=False`` alone would still let ``train()`` (which calls
  ``model.train()``) move BatchNorm's running statistics, so :func:`freeze` keeps frozen
  BatchNorm layers in eval mode; :func:`unfreeze` lets them train again.
- The cache key is the model class, the kind of feature, ``CACHE_FORMAT``, a sha256 of the
  weights that make the features (BatchNorm statistics included; a ResNet's ``fc`` and CLIP's
  text tower excluded) and a sha256 of the data: raw images and labels for the micro-world and
  tensors; the Hugging Face dataset's fingerprint, labels and transform for the hub's CIFAR-10
  (no image is decoded); file paths and the transform for an ``ImageFolder`` (EuroSAT); the
  indices for a subset. A changed key writes a new file and old ones are never read again (nor
  deleted). Features are computed in fp32, so a hit returns what a miss computed. A corrupt file
  is a miss; files are written atomically.
- :func:`zero_shot_head` has no bias and no logit scale: neither changes the argmax.
- The k-NN votes with cosine similarities, over at most as many neighbours as training points.
- The k-shot curve fits the L-BFGS probe (no learning rate to tune for a handful of examples)
  and averages over several draws; 1-shot results vary by a few points from draw to draw.
- :func:`macro_f1` averages over all ``num_classes`` classes, as scikit-learn's
  ``f1_score(average="macro", labels=range(num_classes))``; a class with no true and no predicted
  example scores 0 (scikit-learn's ``zero_division`` default), and so does a precision or recall
  with nothing to divide by. Optional per-example weights make a weighted confusion matrix
  (scikit-learn's ``sample_weight``).
- ``FTLAB_MAX_STEPS`` (the rehearsal, ``ftlab.runtime.max_steps``) caps every pass over images:
  :func:`extract_features` and :func:`accuracy` read at most that many batches of their
  ``batch_size``, spread evenly over the dataset (so a class-sorted set such as EuroSAT keeps
  every class), and say so; the k-shot curve then keeps the k its capped features can supply.
  Training is capped by :func:`ftlab.train.train`. Without the cap nothing changes. (These
  rehearsal decisions are tested in ``tests/test_probe_full_path.py``.)
- Features are computed in fp32, without autocast, on every device: a cache hit returns what a
  miss computed, bit for bit, and a CPU has no fast half-precision convolutions anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ftlab.models.info import count_parameters, model_device
from ftlab.models.vision import (RESNETS, backbone_features, clip_encode_images, clip_encode_text,
                                 load_vision_backbone)
from ftlab.runtime import cache_dir as _ftlab_cache_dir
from ftlab.runtime import max_steps

__all__ = ["BACKBONES", "build_linear_probe", "trainable_count", "trainable_names", "freeze",
           "unfreeze", "differential_lr_groups", "FeatureSet", "extract_features",
           "feature_cache_dir", "weights_fingerprint", "data_fingerprint", "accuracy", "train_head",
           "ridge_probe", "logistic_probe_accuracy", "zero_shot_head", "knn_accuracy",
           "sample_per_class", "k_shot_curve", "capped_examples", "imbalanced_subset",
           "class_weights", "confusion_matrix", "f1_scores", "macro_f1"]

BACKBONES = RESNETS  # the names build_linear_probe knows (torchvision ResNets)
HEAD = "fc"  # torchvision's name for a ResNet's classifier; the tiny CNN keeps it
CACHE_FORMAT = 1  # bump when what extract_features computes changes: old files stop matching


# --------------------------------------------------------------------------------------------
# The probe: a frozen backbone and a fresh head
# --------------------------------------------------------------------------------------------

def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: a classifier needs an int of at least 2 "
                         "classes (one class is not a decision).")
    return int(num_classes)


def _keep_frozen_batchnorm_in_eval(module: nn.Module, args) -> None:
    # requires_grad=False stops gradients but not BatchNorm's running mean and variance, which
    # move on every forward in train mode. train() calls model.train(), so a frozen BatchNorm
    # puts itself back in eval mode before each forward; an unfrozen one trains as usual.
    if module.training and not any(p.requires_grad for p in module.parameters()):
        module.eval()


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place: no gradients, and its BatchNorm statistics stay as pretrained.

    Sets ``requires_grad = False`` on every parameter and hooks each BatchNorm so that it runs
    in eval mode while its parameters are frozen (see :func:`unfreeze`). Returns ``module``.
    """
    for p in module.parameters():
        p.requires_grad = False
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and \
                _keep_frozen_batchnorm_in_eval not in m._forward_pre_hooks.values():
            m.register_forward_pre_hook(_keep_frozen_batchnorm_in_eval)
    return module


def build_linear_probe(num_classes: int, backbone: str = "resnet50", pretrained: bool = True,
                       profile: str | None = None) -> nn.Module:
    """A frozen ResNet with a fresh trainable ``fc``: ``[B, 3, H, W] -> [B, num_classes]``.

    full: ``torchvision.models.<backbone>`` with its ``DEFAULT`` ImageNet weights (2048
    features for ResNet-50). tiny: the micro-world CNN for any name in :data:`BACKBONES` (128
    features). ``pretrained=False`` gives the same architecture with random weights: the
    baseline that shows what pretraining is worth. Only ``fc.weight`` and ``fc.bias`` train:
    ``trainable_count(model) == fc.in_features * num_classes + num_classes``.
    The model comes back on the CPU in train mode, like torchvision's.
    """
    num_classes = _check_num_classes(num_classes)
    net = load_vision_backbone(profile=profile, pretrained=pretrained, name=backbone)
    freeze(net)
    net.fc = nn.Linear(net.fc.in_features, num_classes)  # fresh, and trainable by default
    return net


def trainable_count(model: nn.Module) -> int:
    """Parameters that receive gradients (``requires_grad``): what the optimiser updates."""
    return count_parameters(model, trainable_only=True)


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad``, e.g. ``['fc.weight', 'fc.bias']``."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def unfreeze(model: nn.Module, *blocks: str) -> nn.Module:
    """Make the named top-level blocks trainable (``unfreeze(model, "layer4")``); none = all.

    Partial fine-tuning unfreezes the last block(s), full fine-tuning everything. The head stays
    trainable either way. Unfrozen BatchNorm layers train normally again.
    """
    children = dict(model.named_children())
    unknown = [b for b in blocks if b not in children]
    if unknown:
        raise ValueError(f"no block named {unknown} in {type(model).__name__}; its blocks are "
                         f"{list(children)}.")
    for module in ([children[b] for b in blocks] if blocks else [model]):
        for p in module.parameters():
            p.requires_grad = True
    return model


def differential_lr_groups(model: nn.Module, head_lr: float, backbone_lr: float,
                           head: str = HEAD, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: the head at ``head_lr``, every other trainable part at ``backbone_lr``.

    ``torch.optim.AdamW(differential_lr_groups(model, 1e-2, 1e-3))``: the pretrained weights
    move ten times more slowly than the fresh head, so the head's large early gradients do not
    wreck the features it depends on. Frozen parameters are left out.
    """
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] == head]
    body_params = [p for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] != head]
    if not head_params:
        raise ValueError(f"no trainable parameter under {head!r}; pass head=... the name of the "
                         f"classifier (top-level blocks: {[n for n, _ in model.named_children()]}).")
    groups = [{"params": head_params, "lr": head_lr, "weight_decay": weight_decay}]
    if body_params:
        groups.append({"params": body_params, "lr": backbone_lr, "weight_decay": weight_decay})
    return groups


# --------------------------------------------------------------------------------------------
# Features, cached on disk
# --------------------------------------------------------------------------------------------

class FeatureSet(Dataset):
    """Frozen features and their labels: item ``i`` is ``(features[i] [D] float, label int)``.

    A dataset, so ``ftlab.train.train(head, feature_set, ...)`` trains a head on it directly.
    ``classes`` are the class names when the images' dataset had them; ``from_cache`` and
    ``seconds`` say whether :func:`extract_features` read a file or ran the backbone, and how
    long that took.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, classes=None,
                 from_cache: bool = False, seconds: float = 0.0, path: Path | None = None):
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"features must be [N, D] with one label each; got {tuple(features.shape)} "
                             f"and {len(labels)} labels.")
        self.features, self.labels = features.float(), labels.long()
        self.classes = list(classes) if classes is not None else None
        self.from_cache, self.seconds, self.path = from_cache, seconds, path

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.features[i], int(self.labels[i])

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def subset(self, indices) -> FeatureSet:
        """The rows ``indices`` (a k-shot sample, a split), same classes."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return FeatureSet(self.features[idx], self.labels[idx], self.classes)

    def __repr__(self) -> str:
        source = "cache" if self.from_cache else "backbone"
        return f"FeatureSet({len(self)} x {self.dim} features, from the {source} in {self.seconds:.2f} s)"


def feature_cache_dir() -> Path:
    """Where :func:`extract_features` keeps its files: ``FTLAB_CACHE_DIR``, else ``features/`` in
    :func:`ftlab.runtime.cache_dir` (``FTLAB_CACHE``, default ``~/.cache/ftlab``)."""
    override = os.environ.get("FTLAB_CACHE_DIR", "").strip()
    return Path(override).expanduser() if override else _ftlab_cache_dir() / "features"


def capped_examples(data, batch_size: int, what: str = "pass"):
    """``data`` itself, or under ``FTLAB_MAX_STEPS`` (the rehearsal) at most that many batches of
    ``batch_size`` examples of it, spread evenly over ``data``, with a note saying so.

    Evenly spread rather than the first rows: a dataset sorted by class (an ``ImageFolder`` such
    as EuroSAT) keeps its classes. A :class:`FeatureSet` stays a FeatureSet; any other dataset
    becomes a :class:`ftlab.data.shapes.LabeledSubset` (``classes`` and ``targets`` kept).
    """
    cap = max_steps()
    if cap is None or len(data) <= cap * batch_size:
        return data
    n = cap * batch_size
    rows = [i * len(data) // n for i in range(n)]  # distinct, since n < len(data)
    print(f"FTLAB_MAX_STEPS={cap}: {what} capped at {cap} batch(es), {n} of {len(data)} examples "
          "(spread evenly over the dataset).")
    if isinstance(data, FeatureSet):
        return data.subset(rows)
    from ftlab.data.shapes import LabeledSubset

    return LabeledSubset(data, rows)


def _is_clip(model) -> bool:
    return hasattr(model, "get_image_features")


def _feature_kind(model) -> str:
    if _is_clip(model):
        return "clip-image"
    if isinstance(getattr(model, HEAD, None), nn.Module):
        return "penultimate"
    raise TypeError(f"extract_features takes a ResNet-style model (with a .{HEAD} head) or a "
                    f"transformers CLIPModel; got {type(model).__name__}.")


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes, without a copy


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of the weights (and BatchNorm statistics) that make the features.

    A ResNet's head (``fc``) is left out: a new or trained head gives the same features, so it
    must not miss the cache. For CLIP only the image tower counts (``vision_model``,
    ``visual_projection``). One changed weight gives another fingerprint.
    """
    if _is_clip(model):
        keep = lambda name: name.startswith(("vision_model.", "visual_projection."))  # noqa: E731
    else:
        keep = lambda name: name.split(".")[0] != HEAD  # noqa: E731
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if keep(name):
            h.update(name.encode())
            _hash_tensor(h, tensor)
    return h.hexdigest()


def _hash_data(h, ds) -> None:
    """Feed what identifies a dataset's images and labels to ``h``, without decoding every image
    where the dataset holds its raw data (the micro-world, CIFAR-10, an ImageFolder)."""
    h.update(type(ds).__name__.encode())
    hub = getattr(ds, "ds", None)  # ftlab.data.shapes.HubImageDataset: the hub's CIFAR-10
    if isinstance(ds, Subset):
        _hash_tensor(h, torch.as_tensor(list(ds.indices), dtype=torch.long))
        _hash_data(h, ds.dataset)
    elif isinstance(ds, TensorDataset):
        for t in ds.tensors:
            _hash_tensor(h, t)
    elif getattr(hub, "_fingerprint", None) and hasattr(ds, "image_column"):
        # A Hugging Face dataset: its fingerprint names its data files (and their modification
        # times) or its in-memory content, and every select/shuffle applied. Decoding and hashing
        # every image instead would take minutes on CIFAR-10's 50,000 (once per extraction).
        h.update(f"{hub._fingerprint}|{ds.image_column}|{len(hub)}".encode())
        _hash_tensor(h, torch.as_tensor(ds.targets))
        h.update(repr(getattr(ds, "transform", None)).encode())
    elif isinstance(getattr(ds, "images", None), torch.Tensor):  # the micro-world's ShapesDataset
        _hash_tensor(h, ds.images)
        _hash_tensor(h, torch.as_tensor(ds.targets))
    elif isinstance(getattr(ds, "data", None), (np.ndarray, torch.Tensor)):  # torchvision CIFAR/MNIST
        _hash_tensor(h, torch.as_tensor(np.ascontiguousarray(ds.data)))
        _hash_tensor(h, torch.as_tensor(ds.targets))
        h.update(repr(getattr(ds, "transform", None)).encode())
    elif hasattr(ds, "samples"):  # torchvision ImageFolder (EuroSAT): files by path
        h.update(json.dumps([(str(p), int(y)) for p, y in ds.samples]).encode())
        h.update(repr(getattr(ds, "transform", None)).encode())
    else:  # anything else: every item, decoded
        for i in range(len(ds)):
            image, label = ds[i]
            _hash_tensor(h, torch.as_tensor(image))
            h.update(str(int(label)).encode())


def data_fingerprint(dataset) -> str:
    """sha256 of a dataset's images and labels (and its transform, where it has one)."""
    h = hashlib.sha256()
    _hash_data(h, dataset)
    return h.hexdigest()


def _check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"{where}: label {bad} is out of range for {num_classes} classes "
                         f"(labels must be 0..{num_classes - 1}).")


def _in_order(dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    # A DataLoader draws its worker seed from the global RNG unless given a generator: a cache
    # miss would then shift every later random draw (a new head's init) and a hit would not.
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      generator=torch.Generator())


@torch.no_grad()
def _run_backbone(model, dataset, batch_size: int, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    encode = clip_encode_images if _is_clip(model) else backbone_features
    feats, labels = [], []
    for images, y in _in_order(dataset, batch_size, num_workers):
        feats.append(encode(model, images, batch_size=batch_size))
        labels.append(torch.as_tensor(y).long())
    return torch.cat(feats), torch.cat(labels)


def extract_features(model, dataset, *, use_cache: bool = True, cache_dir: str | Path | None = None,
                     batch_size: int = 256, num_workers: int = 0) -> FeatureSet:
    """Run a frozen backbone over ``dataset`` once: ``N`` images -> :class:`FeatureSet` ``[N, D]``.

    ``model``: a ResNet-style net (its penultimate features, ``fc.in_features`` wide, via
    :func:`ftlab.models.vision.backbone_features`) or a ``transformers.CLIPModel`` (unit-length
    image embeddings, :func:`ftlab.models.vision.clip_encode_images`). ``dataset`` yields
    ``(image [3, H, W], label)``. Runs on the model's device, in eval mode, in fp32.
    Under ``FTLAB_MAX_STEPS`` only that many batches of ``batch_size`` images are read
    (:func:`capped_examples`).

    With ``use_cache`` the result is stored in ``cache_dir`` (default :func:`feature_cache_dir`)
    as ``<kind>-<weights hash>-<data hash>.safetensors`` and read from there next time: same
    weights and same data give the same file; a changed weight or image gives a new key (the
    old file is never read again). ``FeatureSet.from_cache`` says which happened.
    """
    kind = _feature_kind(model)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty (0 images): there are no features to extract. "
                         "Check the split, or the subset size.")
    classes = getattr(dataset, "classes", None)
    dataset = capped_examples(dataset, batch_size, "feature extraction")
    start = time.perf_counter()
    path = None
    if use_cache:
        key = {"format": CACHE_FORMAT, "kind": kind, "backbone": type(model).__name__,
               "weights": weights_fingerprint(model), "data": data_fingerprint(dataset)}
        path = Path(cache_dir or feature_cache_dir()) / (
            f"{type(model).__name__}-{kind}-{key['weights'][:16]}-{key['data'][:16]}.safetensors")
        cached = _read_cache(path, key)
        if cached is not None:
            return FeatureSet(*cached, classes=classes, from_cache=True,
                              seconds=time.perf_counter() - start, path=path)
    features, labels = _run_backbone(model, dataset, batch_size, num_workers)
    if use_cache:
        _write_cache(path, key, features, labels)
    return FeatureSet(features, labels, classes, from_cache=False,
                      seconds=time.perf_counter() - start, path=path)


def _read_cache(path: Path, key: dict):
    """``(features, labels)`` from ``path`` if it holds exactly ``key``'s features, else None."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = json.loads((f.metadata() or {}).get("key", "{}"))
        if stored != key:  # a truncated hash collided, or the file is from another format
            return None
        tensors = load_file(str(path))
        return tensors["features"], tensors["labels"]
    except Exception:  # a half-written or corrupt file is a miss, and gets rewritten
        return None


def _write_cache(path: Path, key: dict, features: torch.Tensor, labels: torch.Tensor) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": features.contiguous(), "labels": labels.contiguous()}, str(tmp),
              metadata={"key": json.dumps(key, sort_keys=True)})
    os.replace(tmp, path)  # atomic: a reader never sees half a file


# --------------------------------------------------------------------------------------------
# Heads: trained, L-BFGS, closed form; and how to score them
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def accuracy(model: nn.Module, data, batch_size: int = 256) -> float:
    """Fraction of ``data`` that ``model`` classifies right (a float in 0..1).

    ``data`` yields ``(input, label)``: images for a whole network, or a :class:`FeatureSet`
    for a head alone. Runs in eval mode on the model's device; the mode is restored. Under
    ``FTLAB_MAX_STEPS`` it scores that many batches of ``batch_size`` (:func:`capped_examples`).
    """
    if len(data) == 0:
        raise ValueError("cannot score an empty dataset (0 examples).")
    data = capped_examples(data, batch_size, "accuracy")
    was_training = model.training
    model.eval()
    device = model_device(model)
    right = 0
    try:
        for x, y in _in_order(data, batch_size):
            logits = model(x.to(device))
            logits = getattr(logits, "logits", logits)  # [B, K]
            y = torch.as_tensor(y)
            _check_labels(y, logits.shape[1], "accuracy")
            right += (logits.argmax(1).cpu() == y).sum().item()
    finally:
        model.train(was_training)
    return right / len(data)


def train_head(head: nn.Linear, data: FeatureSet, cfg=None, class_weight=None, **overrides):
    """Train a head on cached features with :func:`ftlab.train.train`; returns its ``History``.

    The same loop as every other run in the course (AdamW, ``cfg`` or keyword settings such as
    ``lr=1e-2, num_epochs=60``), after checking that the features fit the head: their width is
    ``head.in_features`` and every label is below ``head.out_features``. A step costs one small
    matrix product, so hundreds of epochs take seconds. ``class_weight`` (``[K]``, e.g.
    :func:`class_weights`) multiplies each example's cross-entropy by its class's weight.
    """
    from ftlab.train import classification_loss, train

    if len(data) == 0:
        raise ValueError("the feature set is empty (0 examples): nothing to train the head on.")
    if data.dim != head.in_features:
        raise ValueError(f"the features are {data.dim}-dimensional but the head takes "
                         f"{head.in_features}: were they extracted with another backbone?")
    _check_labels(data.labels, head.out_features, "train_head")
    overrides.setdefault("progress", False)
    loss_fn = classification_loss
    if class_weight is not None:
        weight = torch.as_tensor(class_weight, dtype=torch.float32)
        if weight.shape != (head.out_features,) or not torch.isfinite(weight).all() or (weight < 0).any():
            raise ValueError(f"class_weight must be {head.out_features} finite weights >= 0, one per class "
                             f"(e.g. class_weights(data.labels, {head.out_features})); got "
                             f"{tuple(weight.shape) if weight.ndim else float(weight)!r}.")

        def loss_fn(model, batch):  # the SUM of w[y] * cross-entropy, as train's loss contract wants
            x, y = batch
            return F.cross_entropy(model(x).float(), y, weight=weight.to(x.device), reduction="sum")
    return train(head, data, cfg, loss_fn=loss_fn, **overrides)


def logistic_probe_accuracy(train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y,
                            weight_decay: float = 1e-3, steps: int = 100) -> float:
    """Test accuracy (0..1) of a linear classifier fit on frozen features with L-BFGS.

    ``train_x [N, D]`` and ``test_x [M, D]`` float features, ``train_y [N]`` and ``test_y [M]``
    int labels (tensors or lists). Features are standardised with the training mean/std, then
    multinomial logistic regression (``weight_decay`` times the squared weights added to the
    loss) is fit full batch from zero weights, so the result depends on neither batching, a
    learning rate nor a seed: the quick, repeatable probe of the k-shot curve, the build scripts
    and the tests. Lessons 01 and 03 also train heads with :func:`ftlab.train.train`.
    """
    train_y, test_y = torch.as_tensor(train_y).long(), torch.as_tensor(test_y).long()
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D for train and test; got "
                         f"{tuple(train_x.shape)} and {tuple(test_x.shape)}.")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y) or len(train_x) == 0 or len(test_x) == 0:
        raise ValueError(f"need one label per feature row and at least one row each; got {len(train_x)} "
                         f"train rows with {len(train_y)} labels, {len(test_x)} test rows with {len(test_y)}.")
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    head = nn.Linear(xtr.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(xtr), train_y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (head(xte).argmax(1) == test_y).float().mean().item()


def ridge_probe(train: FeatureSet, num_classes: int | None = None, l2: float = 1e-2) -> nn.Linear:
    """The closed-form probe: least squares onto one-hot labels, ``W = (X^T X + l2 N I)^-1 X^T Y``.

    ``X`` is the centred features ``[N, D]``, ``Y`` the centred one-hot labels ``[N, K]``; the
    bias puts the means back. No learning rate, no steps: one linear solve. Returns an
    ``nn.Linear(D, K)`` to use like any trained head.
    """
    if len(train) == 0:
        raise ValueError("the feature set is empty (0 examples): nothing to fit.")
    k = _check_num_classes(num_classes if num_classes is not None else
                           (len(train.classes) if train.classes else int(train.labels.max()) + 1))
    _check_labels(train.labels, k, "ridge_probe")
    x = train.features.double()
    y = F.one_hot(train.labels, k).double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + l2 * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    weight = torch.linalg.solve(gram, xc.T @ yc)  # [D, K]
    head = nn.Linear(x.shape[1], k)
    with torch.no_grad():
        head.weight.copy_(weight.T)
        head.bias.copy_(y_mean - x_mean @ weight)
    return head


# --------------------------------------------------------------------------------------------
# Class imbalance: a skewed training set, per-class scores, a weighted loss
# --------------------------------------------------------------------------------------------

def imbalanced_subset(data: FeatureSet, common, rare_share: float, seed: int = 0) -> FeatureSet:
    """Every example of the ``common`` classes and a random ``rare_share`` of each other class's
    (at least one of each class present), seeded: a long-tailed training set from a balanced one."""
    common = {int(c) for c in common}
    if not 0.0 < float(rare_share) <= 1.0:
        raise ValueError(f"rare_share={rare_share!r}: give the share of each rare class to keep, in (0, 1].")
    present = sorted(data.labels.unique().tolist())
    if not common or not common <= set(present):
        raise ValueError(f"common={sorted(common)}: name classes the data has (its labels are {present}), "
                         "at least one.")
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in present:
        rows = torch.nonzero(data.labels == c).flatten()
        n = len(rows) if c in common else max(1, round(rare_share * len(rows)))
        picked.append(rows[torch.randperm(len(rows), generator=gen)[:n]].sort().values)
    return data.subset(torch.cat(picked))


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """``[K]`` loss weights ``N / (K * n_c)``, inversely proportional to each class's count ``n_c``:
    every class then weighs the same in the loss, and the mean weight per example is 1
    (scikit-learn's ``compute_class_weight("balanced")``). A class with no example gets 0 (it never
    appears in the loss), and ``K`` counts only the classes present."""
    labels = torch.as_tensor(labels).long()
    num_classes = _check_num_classes(num_classes)
    if len(labels) == 0:
        raise ValueError("no labels: class weights come from the training labels' counts.")
    _check_labels(labels, num_classes, "class_weights")
    counts = torch.bincount(labels, minlength=num_classes).float()  # [K]
    present = int((counts > 0).sum())
    return torch.where(counts > 0, len(labels) / (present * counts.clamp(min=1)), torch.zeros(()))


def confusion_matrix(predictions, labels, num_classes: int, weight=None) -> torch.Tensor:
    """``[K, K]`` float64 counts: row = true class, column = predicted class. ``weight`` (``[N]``,
    optional) counts each example that much instead of 1 (scikit-learn's ``sample_weight``)."""
    pred, y = torch.as_tensor(predictions).long().flatten(), torch.as_tensor(labels).long().flatten()
    num_classes = _check_num_classes(num_classes)
    if pred.shape != y.shape:
        raise ValueError(f"one prediction per label: got {len(pred)} predictions and {len(y)} labels.")
    _check_labels(y, num_classes, "confusion_matrix (labels)")
    _check_labels(pred, num_classes, "confusion_matrix (predictions)")
    w = torch.ones(len(y), dtype=torch.float64) if weight is None else torch.as_tensor(weight, dtype=torch.float64)
    if w.shape != y.shape:
        raise ValueError(f"weight needs one number per example ({len(y)}), got shape {tuple(w.shape)}.")
    cm = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    return cm.index_put_((y, pred), w, accumulate=True)


def f1_scores(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class ``(precision, recall, f1)``, each ``[K]``, from a confusion matrix (rows true).

    precision_c = TP / (TP + FP) (of what was called c, how much was c), recall_c = TP / (TP + FN)
    (of the real c, how much was found), F1 = their harmonic mean = 2 TP / (2 TP + FP + FN).
    Nothing to divide by gives 0.
    """
    cm = torch.as_tensor(cm, dtype=torch.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is [K, K] (rows true, columns predicted); got {tuple(cm.shape)}.")
    tp = cm.diagonal()
    predicted, actual = cm.sum(0), cm.sum(1)  # [K] column sums (TP + FP), row sums (TP + FN)

    def ratio(num, den):
        return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros(()))
    return ratio(tp, predicted), ratio(tp, actual), ratio(2 * tp, predicted + actual)


def macro_f1(predictions, labels, num_classes: int, weight=None) -> float:
    """The mean over the ``num_classes`` classes of their F1 (0..1): every class counts the same,
    however rare, unlike accuracy, where each example counts the same."""
    return f1_scores(confusion_matrix(predictions, labels, num_classes, weight))[2].mean().item()


# --------------------------------------------------------------------------------------------
# CLIP zero-shot, k-NN, k-shot
# --------------------------------------------------------------------------------------------

def zero_shot_head(model, processor, class_names, templates=("a photo of a {}.",)) -> nn.Linear:
    """CLIP's zero-shot classifier as a linear head ``[D] -> [K]``, built from text alone.

    Row ``c`` of the weight is the mean over ``templates`` of the unit text embeddings of
    ``template.format(class_names[c])``, renormalised (prompt ensembling). On unit image
    embeddings the logits are cosine similarities, so ``argmax`` picks the closest prompt.
    It is a linear probe whose weights came from text instead of labelled images.
    """
    if not class_names or len(class_names) < 2:
        raise ValueError(f"zero-shot needs at least 2 class names, got {list(class_names or [])}.")
    if isinstance(templates, str):
        templates = (templates,)
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"each template needs a '{{}}' where the class name goes; got {list(templates)}.")
    per_template = torch.stack([clip_encode_text(model, processor, [t.format(c) for c in class_names])
                                for t in templates])  # [T, K, D]
    weight = F.normalize(per_template.mean(0), dim=-1)  # [K, D]
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        head.weight.copy_(weight)
    head.requires_grad_(False)
    return head


def knn_accuracy(train: FeatureSet, test: FeatureSet, neighbors: int = 5) -> float:
    """Accuracy of a cosine k-NN: each test point takes the similarity-weighted vote of its
    ``neighbors`` most similar training points (fewer if the training set is smaller).

    No training at all, only stored examples: the other cheap baseline next to a probe.
    """
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"k-NN needs training and test points; got {len(train)} and {len(test)}.")
    k = min(int(neighbors), len(train))
    if k < 1:
        raise ValueError(f"neighbors={neighbors!r}: use at least 1.")
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    sims = F.normalize(test.features, dim=-1) @ F.normalize(train.features, dim=-1).T  # [N_test, N_train]
    top, idx = sims.topk(k, dim=1)
    votes = torch.zeros(len(test), num_classes).scatter_add_(1, train.labels[idx], top)
    return (votes.argmax(1) == test.labels).float().mean().item()


def _class_name(data: FeatureSet, c: int) -> str:
    return f"class {c} ({data.classes[c]!r})" if data.classes and c < len(data.classes) else f"class {c}"


def _smallest_class(data: FeatureSet) -> tuple[int, int]:
    """(label, count) of the class with the fewest examples among those present."""
    counts = torch.bincount(data.labels)
    present = torch.nonzero(counts).flatten()
    c = int(present[counts[present].argmin()])
    return c, int(counts[c])


def sample_per_class(data: FeatureSet, k: int, seed: int = 0) -> FeatureSet:
    """A k-shot training set: ``k`` random examples of every class (``K * k`` rows), seeded."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: a k-shot set needs an int of at least 1 example per class.")
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in sorted(data.labels.unique().tolist()):
        rows = torch.nonzero(data.labels == c).flatten()
        if len(rows) < k:
            raise ValueError(f"{_class_name(data, c)} has only {len(rows)} examples; cannot draw {k} per class. "
                             f"Use k <= {_smallest_class(data)[1]} (the smallest class), or a larger "
                             "training pool to draw from.")
        picked.append(rows[torch.randperm(len(rows), generator=gen)[:k]])
    return data.subset(torch.cat(picked))


def k_shot_curve(train: FeatureSet, test: FeatureSet, shots=(1, 2, 4, 8, 16), seeds=(0, 1, 2),
                 neighbors: int = 5) -> dict:
    """Probe and k-NN accuracy with ``k`` labelled examples per class, for each ``k`` in ``shots``.

    For each k and seed: draw a k-shot set from ``train`` (:func:`sample_per_class`), fit the
    L-BFGS probe (:func:`logistic_probe_accuracy`) and score the k-NN, both on all of ``test``.
    Returns ``{"shots": [...], "probe": [...], "knn": [...], "probe_std": [...], "knn_std": [...]}``,
    means (and standard deviations) over the seeds, accuracies in 0..1.

    Every class of ``train`` must hold at least ``max(shots)`` examples, else a ValueError names
    the smallest class. Under ``FTLAB_MAX_STEPS`` (the rehearsal), whose capped features hold a
    few examples per class, the curve keeps the k that the smallest class can supply, and says so.
    """
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"a k-shot curve needs training and test features; got {len(train)} and {len(test)}.")
    shots = list(shots)
    if not shots:
        raise ValueError("shots is empty: give the numbers of labelled examples per class, e.g. (1, 2, 4, 8, 16).")
    c, have = _smallest_class(train)
    if max(shots) > have:
        cap = max_steps()
        kept = [k for k in shots if k <= have]
        if cap is None or not kept:
            raise ValueError(f"the k-shot curve needs {max(shots)} training examples of every class, but "
                             f"{_class_name(train, c)} has only {have}. Use shots up to {have}, or draw the "
                             "features from a larger training set.")
        print(f"FTLAB_MAX_STEPS={cap}: k-shot curve capped at k <= {have} (shots {kept} of {shots}): "
              f"the capped features hold {have} example(s) of their smallest class.")
        shots = kept
    curve = {"shots": [], "probe": [], "knn": [], "probe_std": [], "knn_std": []}
    for k in shots:
        probe, knn = [], []
        for seed in seeds:
            few = sample_per_class(train, k, seed)
            probe.append(logistic_probe_accuracy(few.features, few.labels, test.features, test.labels))
            knn.append(knn_accuracy(few, test, neighbors))
        curve["shots"].append(k)
        for name, values in (("probe", probe), ("knn", knn)):
            curve[name].append(statistics.fmean(values))
            curve[f"{name}_std"].append(statistics.pstdev(values))
    return curve
