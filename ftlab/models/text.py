"""The text encoder lessons fine-tune (lesson 03, drills in 08): DistilBERT, at both scales.

:func:`load_text_encoder` returns ``(model, tokenizer)``: a
``transformers.DistilBertForSequenceClassification`` with a fresh classification head and its
tokenizer. In the ``full`` profile that is ``distilbert-base-uncased`` from the hub. In the
``tiny`` profile it is the micro-world's DistilBERT in ``data/text/encoder``: the *same class*
with a tiny config (dim 64, 3 layers, a 1,200-word WordPiece vocabulary), pretrained by
``scripts/build_text_world.py`` with masked language modelling on the reviews of
:mod:`ftlab.data.reviews`. Because the class is the same, ``peft``'s LoRA finds the attention
projections under the same names (``q_lin``, ``k_lin``, ``v_lin``, ``out_lin``) at both scales.

:func:`classifier_accuracy` and :func:`sentence_features` score such a model on raw texts: the
build script, its tests and lesson 03 use them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ftlab.data.reviews import LABEL_NAMES
from ftlab.models.info import model_device
from ftlab.runtime import data_path, device, resolve_profile

FULL_TEXT_ENCODER = "distilbert-base-uncased"


def tiny_text_encoder_path():
    """Folder of the shipped tiny DistilBERT and its tokenizer (``data/text/encoder``); a
    FileNotFoundError names the build script if its ``config.json`` is missing."""
    return data_path("text", "encoder", "config.json").parent


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' "newly initialized weights" report while loading (it is expected here)."""
    from transformers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def load_text_encoder(profile: str | None = None, num_labels: int = 2, pretrained: bool = True,
                      seed: int = 0):
    """Return ``(model, tokenizer)``: a DistilBERT sequence classifier and its tokenizer.

    ``model`` is a ``DistilBertForSequenceClassification``: the pretrained transformer body
    plus a new head (``pre_classifier``, a dim x dim linear with ReLU, then ``classifier``,
    dim x ``num_labels``) that reads the hidden state of the first token, ``[CLS]``. The head is
    random until you fine-tune, so a fresh model scores about chance.

    * ``pretrained=True``: the body carries what masked-LM pretraining learnt (tiny: the
      micro-world encoder; full: ``distilbert-base-uncased``).
    * ``pretrained=False``: the same architecture with every weight random, for lesson 03's
      "does pretraining matter?" comparison.

    Randomly initialised weights are drawn from ``seed`` without touching the global RNG, so two
    calls give identical models. The model is on :func:`ftlab.runtime.device`. Inputs are
    ``input_ids`` and ``attention_mask`` of shape (batch, seq); ``model(...).logits`` is
    (batch, ``num_labels``).
    """
    from transformers import AutoConfig, AutoTokenizer, DistilBertForSequenceClassification

    prof = resolve_profile(profile)
    if not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels={num_labels!r}: a classifier needs an int >= 2 classes.")
    source = str(tiny_text_encoder_path()) if prof == "tiny" else FULL_TEXT_ENCODER
    labels = {}
    if num_labels == len(LABEL_NAMES):  # named labels show up in pipelines and saved configs
        labels = {"id2label": dict(enumerate(LABEL_NAMES)),
                  "label2id": {name: i for i, name in enumerate(LABEL_NAMES)}}
    tokenizer = AutoTokenizer.from_pretrained(source)
    with torch.random.fork_rng(devices=[]), _quiet_transformers():
        torch.manual_seed(seed)  # the new head (and, unpretrained, every weight) from this seed
        if pretrained:
            model = DistilBertForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, **labels)
        else:
            config = AutoConfig.from_pretrained(source, num_labels=num_labels, **labels)
            model = DistilBertForSequenceClassification(config)
    return model.to(device()), tokenizer


# ----------------------------------------------------------------------------- scoring


def _batches(tokenizer, texts: Sequence[str], batch_size: int, max_length: int):
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        yield tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")


def _check_texts(texts, labels=None) -> None:
    if isinstance(texts, str):
        raise TypeError(f"texts is one string ({texts[:40]!r}...); pass a list of texts, e.g. ds['text'].")
    if labels is not None and len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels: pass one label per text.")
    if len(texts) == 0:
        raise ValueError("no texts to score (0 texts): check the split or the subset size.")


@torch.no_grad()
def sentence_features(model, tokenizer, texts: Sequence[str], pooling: str = "mean",
                      batch_size: int = 128, max_length: int = 64) -> torch.Tensor:
    """Frozen sentence features, ``(num_texts, dim)`` floats on the CPU: the last hidden states, pooled.

    ``pooling="cls"`` takes the first token's state, ``[CLS]``, which is what
    ``DistilBertForSequenceClassification``'s head reads (lesson 03's linear probe);
    ``"mean"`` averages the real tokens (padding excluded). Masked-LM pretraining never trains
    ``[CLS]`` for anything, so mean pooling is the fairer probe of what the encoder knows.
    Works on any DistilBERT model (``...ForSequenceClassification``, ``...ForMaskedLM``, or the
    bare ``DistilBertModel``); texts longer than ``max_length`` tokens are truncated. The model
    is left in eval mode.
    """
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling={pooling!r}: use 'mean' or 'cls'.")
    _check_texts(texts)
    body = getattr(model, "distilbert", model)
    body.eval()
    dev = model_device(body)
    out = []
    for batch in _batches(tokenizer, texts, batch_size, max_length):
        hidden = body(input_ids=batch["input_ids"].to(dev),
                      attention_mask=batch["attention_mask"].to(dev)).last_hidden_state  # (batch, seq, dim)
        if pooling == "cls":
            out.append(hidden[:, 0].float().cpu())
        else:
            mask = batch["attention_mask"].to(dev).unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def classifier_accuracy(model, tokenizer, texts: Sequence[str], labels: Sequence[int],
                        batch_size: int = 128, max_length: int = 64) -> float:
    """Share of ``texts`` a sequence classifier labels right (0..1).

    ``model`` is anything whose output has ``.logits`` of shape (batch, classes): a DistilBERT
    classifier, peft-wrapped too. Texts longer than ``max_length`` tokens are truncated. The
    model is left in eval mode.
    """
    _check_texts(texts, labels)
    labels = torch.as_tensor(list(labels))
    model.eval()
    dev = model_device(model)
    hits = 0
    for start, batch in zip(range(0, len(labels), batch_size), _batches(tokenizer, texts, batch_size, max_length)):
        pred = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)).logits
        hits += (pred.argmax(-1).cpu() == labels[start:start + batch_size]).sum().item()
    return hits / len(labels)
