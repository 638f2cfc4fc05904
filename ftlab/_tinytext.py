"""The text encoder lessons fine-tune (lesson 03, drills in 08): DistilBERT, at both scales.

:func:`load_text_encoder` returns ``(model, tokenizer)``: a
``transformers.DistilBertForSequenceClassification`` with a fresh classification head and its
tokenizer. In the ``full`` profile that is ``distilbert-base-uncased`` from the hub. In the
``tiny`` profile it is the micro-world's DistilBERT in ``data/text/encoder``: the *same class*
with a tiny config (dim 64, 3 layers, a 1,200-word WordPiece vocabulary), pretrained by
``scripts/build_text_world.py`` with masked language modelling on the reviews of
:mod:`ftlab.data.reviews`. Because the class is the same, ``peft``'s LoRA finds the attention
projections under the same names (``q_lin``, ``k_lin``, ``v_lin``, ``out_lin``) at both scales.

The second half of this module holds the small measurements the build script records in
``data/text/QUALITY.md`` and ``tests/test_text_world.py`` re-checks: masked-token accuracy,
sentence features and a linear probe on them, and a plain fine-tuning loop. They are
deliberately minimal (no progress bar, no mixed precision); lessons use ``ftlab.probe`` and
``ftlab.train`` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ftlab.runtime import data_dir, device, resolve_profile

FULL_TEXT_ENCODER = "distilbert-base-uncased"
LABEL_NAMES = ("negative", "positive")


def tiny_text_encoder_path():
    """Folder of the shipped tiny DistilBERT and its tokenizer (``data/text/encoder``)."""
    return data_dir() / "text" / "encoder"


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
    if prof == "tiny" and not (tiny_text_encoder_path() / "config.json").is_file():
        raise FileNotFoundError(f"{tiny_text_encoder_path()} holds no encoder; rebuild it with "
                                "scripts/build_text_world.py")
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


# ----------------------------------------------------------------------------- measurements


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _batches(tokenizer, texts: Sequence[str], batch_size: int, max_length: int = 64):
    for start in range(0, len(texts), batch_size):
        yield tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")


def mask_tokens(input_ids: torch.Tensor, tokenizer, mask_prob: float = 0.15,
                generator: torch.Generator | None = None, replace_all: bool = False):
    """BERT's masking: returns ``(masked_ids, labels)``, both (batch, seq).

    ``mask_prob`` of the real (non-special, non-padding) tokens are chosen. For training, 80% of
    them become ``[MASK]``, 10% a random token, 10% stay (so the model cannot assume that only
    ``[MASK]`` positions matter); ``replace_all=True`` masks every chosen token (for evaluation).
    ``labels`` holds the original id at chosen positions and -100 (ignored by the loss) elsewhere.
    """
    special = torch.tensor(tokenizer.all_special_ids)
    real = ~torch.isin(input_ids, special)
    chosen = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & real
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = input_ids.clone()
    if replace_all:
        masked[chosen] = tokenizer.mask_token_id
        return masked, labels
    roll = torch.rand(input_ids.shape, generator=generator)
    masked[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[to_random] = torch.randint(len(tokenizer), input_ids.shape, generator=generator)[to_random]
    return masked, labels


@torch.no_grad()
def mlm_accuracy(mlm_model, tokenizer, texts: Sequence[str], mask_prob: float = 0.15,
                 seed: int = 0, batch_size: int = 64) -> float:
    """Fraction of masked tokens a masked LM (``DistilBertForMaskedLM``) predicts exactly.

    Every chosen token is replaced by ``[MASK]``; the choice comes from ``seed``, so the number
    repeats. A model that learnt nothing scores about 1/vocab.
    """
    mlm_model.eval()
    gen = torch.Generator().manual_seed(seed)
    hits = total = 0
    for batch in _batches(tokenizer, texts, batch_size):
        ids, labels = mask_tokens(batch["input_ids"], tokenizer, mask_prob, gen, replace_all=True)
        logits = mlm_model(input_ids=ids.to(_model_device(mlm_model)),
                           attention_mask=batch["attention_mask"].to(_model_device(mlm_model))).logits
        chosen = labels != -100
        hits += (logits.argmax(-1).cpu()[chosen] == labels[chosen]).sum().item()
        total += chosen.sum().item()
    return hits / max(total, 1)


@torch.no_grad()
def sentence_features(model, tokenizer, texts: Sequence[str], pooling: str = "mean",
                      batch_size: int = 128) -> torch.Tensor:
    """Frozen sentence features, (num_texts, dim): the last hidden states, pooled.

    ``pooling="mean"`` averages the real tokens (padding excluded); ``"cls"`` takes the first
    token's state, which is what ``DistilBertForSequenceClassification``'s head reads. Masked-LM
    pretraining never trains ``[CLS]`` for anything, so mean pooling is the fairer probe.
    Works on any DistilBERT model (``...ForSequenceClassification``, ``...ForMaskedLM``, or the
    bare ``DistilBertModel``).
    """
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling={pooling!r}: use 'mean' or 'cls'.")
    body = getattr(model, "distilbert", model)
    body.eval()
    out = []
    for batch in _batches(tokenizer, texts, batch_size):
        batch = {k: v.to(_model_device(body)) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        hidden = body(**batch).last_hidden_state  # (batch, seq, dim)
        if pooling == "cls":
            out.append(hidden[:, 0].cpu())
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
    return torch.cat(out)


def linear_probe_accuracy(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor,
                          test_y: Sequence[int], steps: int = 300, lr: float = 0.05,
                          weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Test accuracy of a logistic-regression probe trained on frozen features.

    Features are standardised with the train mean and std (probes are sensitive to scale), then
    one ``nn.Linear(dim, classes)`` is trained full-batch with Adam for ``steps`` steps.
    """
    train_y, test_y = torch.as_tensor(list(train_y)), torch.as_tensor(list(test_y))
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(xtr.shape[1], int(train_y.max()) + 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(xtr), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (head(xte).argmax(-1) == test_y).float().mean().item()


@torch.no_grad()
def classifier_accuracy(model, tokenizer, texts: Sequence[str], labels: Sequence[int],
                        batch_size: int = 128) -> float:
    """Accuracy of a sequence classifier (anything returning ``.logits``, peft-wrapped too)."""
    model.eval()
    hits = 0
    for start, batch in zip(range(0, len(texts), batch_size), _batches(tokenizer, texts, batch_size)):
        batch = {k: v.to(_model_device(model)) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        pred = model(**batch).logits.argmax(-1).cpu()
        hits += (pred == torch.as_tensor(list(labels[start:start + batch_size]))).sum().item()
    return hits / len(texts)


def finetune_classifier(model, tokenizer, texts: Sequence[str], labels: Sequence[int],
                        epochs: int = 3, lr: float = 1e-3, batch_size: int = 32,
                        weight_decay: float = 0.01, warmup_share: float = 0.1,
                        seed: int = 0) -> list[float]:
    """Train every parameter that has ``requires_grad`` with AdamW; returns the loss per step.

    The same loop serves full fine-tuning (all parameters trainable), a frozen body with a
    trainable head, and a peft model (only adapters and ``modules_to_save`` trainable). The
    learning rate warms up linearly over the first ``warmup_share`` of the steps (a fresh head
    and big early updates can kill every ReLU of ``pre_classifier``, after which the loss sits at
    log 2 for good), then decays linearly to zero. Batches are shuffled with ``seed``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (every requires_grad is False).")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(texts) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    warmup = max(1, int(warmup_share * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min((step + 1) / warmup, (total - step) / max(1, total - warmup)))
    gen = torch.Generator().manual_seed(seed)
    dev = _model_device(model)
    labels_t = torch.as_tensor(list(labels))
    losses = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout masks repeat too
        for _ in range(epochs):
            order = torch.randperm(len(texts), generator=gen).tolist()
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=64, return_tensors="pt")
                out = model(input_ids=batch["input_ids"].to(dev),
                            attention_mask=batch["attention_mask"].to(dev), labels=labels_t[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(out.loss.item())
    model.eval()
    return losses
