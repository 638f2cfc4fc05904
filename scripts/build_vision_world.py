"""Build the vision micro-world: drawn-shape datasets, the pretrained tiny CNN and the tiny CLIP.

    python scripts/build_vision_world.py            # writes data/vision/ and data/clip/

Deterministic: images come from fixed seeds (ftlab.data.shapes), and training runs on one CPU
thread from fixed seeds, so a re-run on the same library versions reproduces the artifacts.
About five minutes on one CPU core. It prints the quality numbers that data/vision/QUALITY.md
records and tests/test_vision_world.py checks:

- the CNN's accuracy on its pretraining (source) task;
- a linear probe on the target task from pretrained vs random-weight features of the same CNN;
- a trained head vs fine-tuning layer4 + head on the target task (lesson 01's comparison);
- the tiny CLIP's zero-shot accuracy on the target task, against chance.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig,
                          CLIPVisionConfig, PreTrainedTokenizerFast)

from ftlab.models import vision as V
from ftlab.data import shapes as S
from ftlab.probe import logistic_probe_accuracy

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "python scripts/build_vision_world.py"
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]  # </s> is id 3: CLIP pools the text at the first </s>
PROMPT_WORDS = ["a", "photo", "of", "on", "background", "hollow", "shape"]


# ---------------------------------------------------------------------------- datasets

def write_datasets(out: Path) -> dict:
    """Draw the four shipped splits; write images and labels (safetensors), captions and meta (json)."""
    out.mkdir(parents=True, exist_ok=True)
    splits, captions = {}, {}
    for task in S.TASKS:
        for split in S.SPLITS:
            d = S.generate_split(task, split)
            tensors = {"images": d["images"].contiguous(), "labels": d["labels"]}
            tensors.update({k: d[k].to(torch.uint8) for k in S.ATTRIBUTES})
            save_file(tensors, str(out / f"{task}_{split}.safetensors"))
            captions[f"{task}_{split}"] = d["captions"]
            splits[task, split] = d
    (out / "captions.json").write_text(json.dumps(captions) + "\n")
    meta = {
        "image_size": S.IMAGE_SIZE,
        "classes": {task: list(names) for task, names in S.TASKS.items()},
        "splits": {f"{t}_{s}": {"size": S.SIZES_SHIPPED[t, s], "seed": S.SEEDS[t, s], "hollow": S.HOLLOW[t]}
                   for t, s in S.SIZES_SHIPPED},
        "attributes": {"colour": list(S.COLOURS), "size": list(S.SIZES), "background": list(S.BACKGROUNDS),
                       "hollow": ["filled", "hollow"]},
        "caption_vocabulary": caption_vocabulary(),
        "normalisation": {"mean": S.IMAGENET_MEAN, "std": S.IMAGENET_STD},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return splits


def caption_vocabulary() -> list[str]:
    return PROMPT_WORDS + list(S.SHAPES) + list(S.COLOURS) + list(S.SIZES) + list(S.BACKGROUNDS)


# ---------------------------------------------------------------------------- the CNN

def train_cnn(num_images: int, epochs: int, seed: int = 11) -> V.TinyResNet:
    """Pretrain the tiny CNN on a fresh stream of source-task images (never shipped, like ImageNet)."""
    data = S.generate(num_images, seed, S.SOURCE_SHAPES, hollow=S.HOLLOW["source"])
    x, y = S.normalize(data["images"]), data["labels"]
    torch.manual_seed(0)
    net = V.TinyResNet(num_classes=len(S.SOURCE_SHAPES))
    batch = 128
    steps = epochs * (num_images // batch)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(0)
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(num_images, generator=gen)
        for i in range(0, num_images - batch + 1, batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"  cnn epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}", flush=True)
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    return (net(S.normalize(images)).argmax(1) == labels).float().mean().item()


def probe(net: nn.Module, train: dict, test: dict) -> float:
    """Linear probe (logistic regression, L-BFGS) on the frozen penultimate features."""
    f_train = V.backbone_features(net, S.normalize(train["images"]))
    f_test = V.backbone_features(net, S.normalize(test["images"]))
    return logistic_probe_accuracy(f_train, train["labels"], f_test, test["labels"])


def finetune(pretrained: nn.Module, train: dict, test: dict, unfreeze: tuple, epochs: int = 10,
             lr: float = 1e-3) -> float:
    """A new ``fc`` on a copy of the CNN, training ``fc`` and the named blocks; returns test accuracy.

    Frozen blocks stay in eval mode, so their BatchNorm statistics stay the pretrained ones.
    """
    torch.manual_seed(0)
    net = copy.deepcopy(pretrained)
    net.fc = nn.Linear(net.fc.in_features, len(S.TARGET_SHAPES))
    trainable = ("fc",) + unfreeze
    for name, p in net.named_parameters():
        p.requires_grad = name.split(".")[0] in trainable
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    x, y = S.normalize(train["images"]), train["labels"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.eval()
        for name in unfreeze:
            getattr(net, name).train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return accuracy(net, test["images"], test["labels"])


def save_cnn(net: V.TinyResNet, path: Path) -> None:
    meta = {"widths": ",".join(map(str, V.TINY_WIDTHS)), "num_classes": str(net.fc.out_features),
            "classes": ",".join(S.SOURCE_SHAPES), "made_by": COMMAND}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)


# ---------------------------------------------------------------------------- the CLIP

def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the caption vocabulary: ``"A photo of an arrow."`` -> <s> a photo of a arrow </s>.

    Lowercases, drops punctuation and reads "an" as "a", so prompts in ordinary English work.
    """
    vocab = {w: i for i, w in enumerate(SPECIALS + caption_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([
        normalizers.Lowercase(),
        normalizers.Replace(Regex(r"[^a-z ]"), " "),
        normalizers.Replace(Regex(r"\ban\b"), "a"),
    ])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=16)


def clip_config(tokenizer) -> CLIPConfig:
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    vision = CLIPVisionConfig(image_size=S.IMAGE_SIZE, patch_size=8, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4)
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64)


def random_caption(rng: random.Random, shape: str, colour: str, size: str, background: str, hollow: bool) -> str:
    """A caption that names the shape and a random subset of the rest, like alt-text on the web.

    Short captions ("a heart") teach the model that the shape word alone matches the image,
    which is what a zero-shot prompt ("a photo of a heart.") asks.
    """
    words = [w for w, keep in ((size, rng.random() < 0.5), (colour, rng.random() < 0.5),
                               ("hollow", hollow and rng.random() < 0.5)) if keep] + [shape]
    text = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    if rng.random() < 0.5:
        text += f" on a {background} background"
    if rng.random() < 0.5:
        text = "a photo of " + text
    return text


def train_clip(num_images: int, steps: int, seed: int = 3) -> tuple[CLIPModel, PreTrainedTokenizerFast]:
    """Contrastive pretraining (CLIP's loss) on captioned images of all 14 shapes, 40% hollow."""
    data = S.generate(num_images, seed, S.SHAPES, hollow=0.4)
    names = {"colour": list(S.COLOURS), "size": list(S.SIZES), "background": list(S.BACKGROUNDS)}
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = CLIPModel(clip_config(tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.5e-3, total_steps=steps, pct_start=0.1)
    rng, gen, batch = random.Random(0), torch.Generator().manual_seed(0), 256
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, num_images, (batch,), generator=gen)
        texts = [random_caption(rng, S.SHAPES[data["labels"][i]], names["colour"][data["colour"][i]],
                                names["size"][data["size"][i]], names["background"][data["background"][i]],
                                bool(data["hollow"][i])) for i in idx.tolist()]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        loss = model(**tokens, pixel_values=V.clip_pixel_values(model, data["images"][idx]), return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            print(f"  clip step {step}/{steps}  loss {loss.item():.3f}", flush=True)
    return model.eval(), tokenizer


def save_clip(model: CLIPModel, tokenizer, out: Path) -> CLIPProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": S.IMAGE_SIZE}, crop_size={"height": S.IMAGE_SIZE, "width": S.IMAGE_SIZE},
        image_mean=list(V.CLIP_MEAN), image_std=list(V.CLIP_STD))
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # Name the class every transformers release knows (5.x writes its new "TokenizersBackend",
    # which 4.x cannot load); the vocabulary and ids live in tokenizer.json either way.
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(dict(sorted(tok_cfg.items())), indent=2) + "\n")
    return processor


def measure_clip(model, processor, train: dict, test: dict) -> dict:
    chance = 1 / len(S.TARGET_SHAPES)
    zs = lambda imgs, labels, names, tpl="a photo of a {}.": V.clip_zero_shot_accuracy(  # noqa: E731
        model, processor, imgs, labels, names, tpl)
    hollow = test["hollow"].bool()
    f_train, f_test = V.clip_encode_images(model, train["images"]), V.clip_encode_images(model, test["images"])
    return {
        "clip_zero_shot_target": zs(test["images"], test["labels"], S.TARGET_SHAPES),
        "clip_zero_shot_target_filled": zs(test["images"][~hollow], test["labels"][~hollow], S.TARGET_SHAPES),
        "clip_zero_shot_target_hollow": zs(test["images"][hollow], test["labels"][hollow], S.TARGET_SHAPES),
        "clip_zero_shot_chance": chance,
        "clip_zero_shot_colour": zs(test["images"], test["colour"], list(S.COLOURS), "a photo of a {} shape."),
        "clip_probe_target": logistic_probe_accuracy(f_train, train["labels"], f_test, test["labels"]),
    }


# ---------------------------------------------------------------------------- report

def write_quality(path: Path, q: dict) -> None:
    pct = lambda k: f"{100 * q[k]:.1f}%"  # noqa: E731
    path.write_text(f"""## Vision micro-world (`data/vision`, `data/clip`)

Made by `{COMMAND}` (deterministic, one CPU thread, {q['seconds']} s);
checked by `tests/test_vision_world.py`.

Images: 32x32 RGB drawings (`ftlab.data.shapes`), a shape with a random colour (6), size (2),
position, rotation (+-20 degrees) and background texture (plain, striped, dotted, cloudy), plus
pixel noise; uint8 in safetensors. Source task: 8 filled shapes ({', '.join(S.SOURCE_SHAPES)});
500 train / 1000 test shipped. Target task: 6 other shapes ({', '.join(S.TARGET_SHAPES)}), half
drawn hollow; 1000 train / 500 test. Captions: "a small red hollow heart on a striped background".

| model | what | measured |
|---|---|---|
| tiny CNN (`vision/cnn.safetensors`, ResNet-10, {q['cnn_parameters']:,} params) | pretrained on {q['cnn_pretrain_images']:,} fresh source images, {q['cnn_epochs']} epochs | source test accuracy **{pct('cnn_source_test')}** (chance 12.5%) |
| | linear probe on the target task, pretrained features | **{pct('probe_target_pretrained')}** |
| | same probe, same CNN with random weights (`pretrained=False`) | **{pct('probe_target_random')}** (chance 16.7%) |
| | head only, 10 epochs AdamW (frozen backbone) | {pct('head_only_target')} |
| | layer4 + head, 10 epochs AdamW (partial fine-tuning) | {pct('partial_ft_target')} |
| tiny CLIP (`clip/`, ViT 8x8 patches + 2-layer text, {q['clip_parameters']:,} params) | contrastive on {q['clip_pretrain_images']:,} captioned images of all 14 shapes, {q['clip_steps']} steps of 256 | |
| | zero-shot on the target test set, "a photo of a {{}}." | **{pct('clip_zero_shot_target')}** (filled {pct('clip_zero_shot_target_filled')}, hollow {pct('clip_zero_shot_target_hollow')}; chance 16.7%) |
| | zero-shot colour, "a photo of a {{}} shape." | {pct('clip_zero_shot_colour')} (chance 16.7%) |
| | linear probe on CLIP image features, target task | {pct('clip_probe_target')} |

The probe is multinomial logistic regression on standardised frozen features (L-BFGS, 100
steps, `ftlab.probe.logistic_probe_accuracy`). Tests assert: source accuracy >= 95%,
pretrained probe >= 85% and >= random probe + 15 points, CLIP zero-shot >= 40% on the target shapes and >= 90% on colour.
The pretraining streams (seeds 11 and 3) are regenerated by the script, not shipped, like ImageNet.
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cnn-images", type=int, default=8000)
    ap.add_argument("--cnn-epochs", type=int, default=5)
    ap.add_argument("--clip-images", type=int, default=12000)
    ap.add_argument("--clip-steps", type=int, default=2200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out_vision, out_clip = args.out / "vision", args.out / "clip"
    out_vision.mkdir(parents=True, exist_ok=True)
    os.environ["FTLAB_DATA"] = str(args.out)  # the loaders below read back what this run wrote

    data = write_datasets(out_vision)
    src_test, tgt_train, tgt_test = data["source", "test"], data["target", "train"], data["target", "test"]
    print(f"datasets written ({time.time() - t0:.0f}s)", flush=True)

    cnn = train_cnn(args.cnn_images, args.cnn_epochs)
    save_cnn(cnn, out_vision / "cnn.safetensors")
    cnn = V.load_vision_backbone("tiny")  # measure what ships, as loaded
    q = {
        "cnn_source_test": accuracy(cnn, src_test["images"], src_test["labels"]),
        "probe_target_pretrained": probe(cnn, tgt_train, tgt_test),
        "probe_target_random": probe(V.load_vision_backbone("tiny", pretrained=False), tgt_train, tgt_test),
        "head_only_target": finetune(cnn, tgt_train, tgt_test, unfreeze=()),
        "partial_ft_target": finetune(cnn, tgt_train, tgt_test, unfreeze=("layer4",)),
    }
    print({k: round(v, 4) for k, v in q.items()}, f"({time.time() - t0:.0f}s)", flush=True)

    clip, tokenizer = train_clip(args.clip_images, args.clip_steps)
    save_clip(clip, tokenizer, out_clip)
    clip, processor = V.load_clip("tiny")
    q.update(measure_clip(clip, processor, tgt_train, tgt_test))

    q = {k: round(v, 4) for k, v in q.items()}
    q.update(cnn_parameters=sum(p.numel() for p in cnn.parameters()), cnn_pretrain_images=args.cnn_images,
             cnn_epochs=args.cnn_epochs, clip_parameters=sum(p.numel() for p in clip.parameters()),
             clip_pretrain_images=args.clip_images, clip_steps=args.clip_steps,
             seconds=round(time.time() - t0), command=COMMAND)
    (out_vision / "quality.json").write_text(json.dumps(q, indent=2) + "\n")
    write_quality(out_vision / "QUALITY.md", q)
    for path in (*out_vision.iterdir(), *out_clip.iterdir()):
        path.chmod(0o644)  # safetensors writes 0600; the data must be readable by everyone who installs it
    print(json.dumps(q, indent=2))


if __name__ == "__main__":
    main()
