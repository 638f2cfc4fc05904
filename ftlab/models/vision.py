"""The vision models of both scales and how they are loaded: a ResNet-style CNN and CLIP (lesson 01).

Full profile: torchvision's ResNet-50 (ImageNet weights) and ``openai/clip-vit-base-patch32``.
Tiny profile: the micro-world's look-alikes, pretrained by ``scripts/build_vision_world.py`` on
the drawn shapes of :mod:`ftlab.data.shapes` and shipped in ``data/vision`` and ``data/clip``:

- :class:`TinyResNet` keeps torchvision's attribute names (``conv1``, ``bn1``, ``layer1`` ..
  ``layer4``, ``avgpool``, ``fc``), so model surgery written for ResNet-50 works unchanged::

      net = load_vision_backbone()           # ResNet-50, or the tiny CNN
      for p in net.parameters():
          p.requires_grad = False            # freeze every backbone weight
      net.fc = nn.Linear(net.fc.in_features, num_classes)   # 2048 on ResNet-50, 128 tiny

- the tiny CLIP *is* a ``transformers.CLIPModel`` (a 32x32 ViT and a 2-layer text
  transformer), with a ``CLIPProcessor`` saved next to it, so :func:`load_clip` returns the
  same two types at both scales.

:func:`clip_encode_images` and :func:`clip_encode_text` turn dataset images and prompts into
unit-length embeddings with either CLIP; zero-shot classification is then one matrix product.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ftlab.runtime import data_path, resolve_profile

FULL_CLIP = "openai/clip-vit-base-patch32"
TINY_WIDTHS = (16, 32, 64, 128)
# What CLIP's image processor normalises with (it differs a little from ImageNet's).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------------------------
# The tiny CNN: ResNet's shape (torchvision's names), scaled down for 32x32 images
# --------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut: ``[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:  # the shortcut must match the new shape
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """A ResNet-10 for 32x32 images: ``[B, 3, 32, 32] -> [B, num_classes]`` (about 0.3M parameters).

    Same attribute names and order as ``torchvision.models.resnet50``: ``conv1, bn1, relu,
    maxpool, layer1..layer4, avgpool, fc``. Feature maps: 32x32 (layer1), 16x16, 8x8, 4x4
    (layer4), then global average pooling gives ``fc.in_features = widths[-1]`` features.
    """

    def __init__(self, num_classes: int = 8, widths: tuple = TINY_WIDTHS):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)  # ResNet-50: 7x7 stride 2
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # ResNet-50 pools here; a 32x32 image is too small to
        self.layer1 = BasicBlock(widths[0], widths[0])
        self.layer2 = BasicBlock(widths[0], widths[1], stride=2)
        self.layer3 = BasicBlock(widths[1], widths[2], stride=2)
        self.layer4 = BasicBlock(widths[2], widths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_cnn_path() -> Path:
    """The shipped CNN weights: ``data/vision/cnn.safetensors`` (a FileNotFoundError names the
    build script if they are missing)."""
    return data_path("vision", "cnn.safetensors")


# torchvision ResNets a lesson may name. The tiny profile has one CNN: every name maps to it.
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def load_vision_backbone(profile: str | None = None, pretrained: bool = True,
                         name: str = "resnet50") -> nn.Module:
    """An image classifier whose ``fc`` you replace: ResNet-50 (full) or :class:`TinyResNet` (tiny).

    tiny, ``pretrained=True``: the CNN pretrained on the micro-world's source task (8 shapes;
    ``fc`` has 8 outputs), from ``data/vision/cnn.safetensors``. ``pretrained=False``: the same
    architecture with fresh random weights (always the same ones: seed 0), the baseline that
    shows what pretraining is worth. full: ``torchvision.models.resnet50`` with the ImageNet
    weights (``ResNet50_Weights.DEFAULT``) or random ones.

    ``name`` picks another torchvision ResNet in the full profile (one of :data:`RESNETS`, each
    with its ``DEFAULT`` weights); the tiny profile has a single CNN that stands in for all of them.

    Like torchvision, the model comes back on the CPU in train mode; call ``.eval()`` before
    extracting features, so BatchNorm uses its running statistics.
    """
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(RESNETS)} "
                         "(torchvision ResNets; the tiny profile maps each to the micro-world CNN).")
    if resolve_profile(profile) == "full":
        from torchvision.models import get_model

        return get_model(name, weights="DEFAULT" if pretrained else None)
    if not pretrained:
        with torch.random.fork_rng(devices=[]):  # same random weights every call, global RNG untouched
            torch.manual_seed(0)
            return TinyResNet()
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = tiny_cnn_path()
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    widths = tuple(int(w) for w in meta.get("widths", ",".join(map(str, TINY_WIDTHS))).split(","))
    net = TinyResNet(num_classes=int(meta.get("num_classes", 8)), widths=widths)
    net.load_state_dict(load_file(str(path)))
    return net


@torch.no_grad()
def backbone_features(net: nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Penultimate features of a ResNet-style net: ``[N, 3, H, W] -> [N, net.fc.in_features]``.

    Swaps ``net.fc`` for an identity for the duration (so it works on ResNet-50 too) and runs
    in eval mode; the model is left as it was found.
    """
    fc, was_training = net.fc, net.training
    net.fc = nn.Identity()
    net.eval()
    try:
        device = next(net.parameters()).device
        return torch.cat([net(images[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(images), batch_size)])
    finally:
        net.fc = fc
        net.train(was_training)


# --------------------------------------------------------------------------------------------
# CLIP at both scales
# --------------------------------------------------------------------------------------------

def tiny_clip_path() -> Path:
    """Folder of the shipped tiny CLIP and its processor (``data/clip``); a FileNotFoundError names
    the build script if its ``config.json`` is missing."""
    return data_path("clip", "config.json").parent


def load_clip(profile: str | None = None):
    """Return ``(model, processor)``: a ``transformers.CLIPModel`` and its ``CLIPProcessor``.

    tiny: the micro-world CLIP from ``data/clip`` (a ViT on 32x32 images with 8x8 patches and a
    2-layer text transformer, about 0.16M parameters), pretrained contrastively on captioned
    drawn shapes. full: ``openai/clip-vit-base-patch32`` (151M parameters).

    The processor is the same class at both scales and is used the same way:
    ``processor(text=["a photo of a heart."], padding=True, return_tensors="pt")`` gives
    ``input_ids``/``attention_mask`` for ``model.get_text_features``;
    ``processor(images=pil_images, return_tensors="pt")`` gives ``pixel_values`` (resized to
    32 or 224 and CLIP-normalised) for ``model.get_image_features``. For images that are
    already dataset tensors, :func:`clip_encode_images` skips PIL. The model comes back on
    the CPU in eval mode.
    """
    from transformers import CLIPModel, CLIPProcessor

    if resolve_profile(profile) == "tiny":
        source = tiny_clip_path()
    else:
        source = FULL_CLIP
    model = CLIPModel.from_pretrained(source)
    processor = CLIPProcessor.from_pretrained(source)
    return model.eval(), processor


def _features(output) -> torch.Tensor:
    # transformers >= 5 returns an output object whose pooler_output is the projected
    # embedding; older versions return the tensor itself.
    return output.pooler_output if hasattr(output, "pooler_output") else output


def clip_pixel_values(model, images: torch.Tensor) -> torch.Tensor:
    """Dataset images -> CLIP's ``pixel_values``: ``[N, 3, H, W] -> [N, 3, S, S]``, S = the model's size.

    ``images`` are either float, ImageNet-normalised (what :func:`ftlab.data.load_image_classification`
    yields at both scales), or raw ``uint8`` 0..255. They are resized to the model's input
    size (32 tiny, 224 full) and normalised with CLIP's mean and std, as the processor does.
    """
    from ftlab.data.shapes import IMAGENET_MEAN, IMAGENET_STD

    if images.dtype == torch.uint8:
        x = images.float() / 255.0
    else:
        x = images.float() * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    size = model.config.vision_config.image_size
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp(0, 1)
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


@torch.no_grad()
def clip_encode_images(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Unit-length CLIP image embeddings: ``[N, 3, H, W] -> [N, projection_dim]`` (64 tiny, 512 full).

    ``images``: dataset tensors (ImageNet-normalised floats) or raw ``uint8``; see
    :func:`clip_pixel_values`. Runs in batches on the model's device; returns CPU floats.
    """
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        pixels = clip_pixel_values(model, images[i:i + batch_size]).to(device, model.dtype)
        out.append(F.normalize(_features(model.get_image_features(pixel_values=pixels)).float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def clip_encode_text(model, processor, texts: list[str]) -> torch.Tensor:
    """Unit-length CLIP text embeddings: ``T`` strings -> ``[T, projection_dim]``.

    ``processor`` is what :func:`load_clip` returned (a bare tokenizer works too).
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
    return F.normalize(_features(model.get_text_features(**batch)).float(), dim=-1).cpu()


def clip_zero_shot_accuracy(model, processor, images: torch.Tensor, labels, class_names,
                            template: str = "a photo of a {}.") -> float:
    """Zero-shot accuracy: each image gets the class whose prompt embedding is most similar.

    ``prompt_c = template.format(class_names[c])``; prediction = ``argmax_c cos(image, prompt_c)``,
    i.e. ``(clip_encode_images(images) @ clip_encode_text(prompts).T).argmax(1)``. No training.
    """
    text = clip_encode_text(model, processor, [template.format(c) for c in class_names])
    preds = (clip_encode_images(model, images) @ text.T).argmax(1)
    return (preds == torch.as_tensor(labels)).float().mean().item()
