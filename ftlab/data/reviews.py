"""The text-classification micro-world: short reviews of an invented world's shops and things.

Lesson 03 compares ways to fine-tune a text classifier (full fine-tuning, a linear probe, LoRA,
adapters, prompt tuning, IA3); lesson 08's drills reuse it. At the ``full`` scale the classifier
is DistilBERT on SST-2 (movie-review sentences). At the ``tiny`` scale it is a tiny DistilBERT
that ``scripts/build_text_world.py`` pretrained with masked language modelling on reviews
generated here. Two kinds of text come out of this module:

* **labelled reviews** (:func:`labelled_reviews`): one sentence, positive or negative, e.g.
  ``"The Zorbel stew was superb."`` or ``"The staff was rude but the Kavi inn was lovely."``;
* **an unlabelled corpus** (:func:`unlabelled_corpus`): longer reviews in the same style, with a
  wider vocabulary (three times the things, people, days, prices), no labels. Most of them open
  with a star rating in words ("One star."), as reviews on real sites do. The tiny encoder learns
  the language from it, the way DistilBERT learnt English from books and web text.

What makes the task worth fine-tuning, rather than a bag of words:

* **negation** flips the opinion: ``"The stew was not good."`` is negative;
* **contrast**: the clause after *but* (or the main clause after *although*) decides:
  ``"The crust was bland but the Zorbel pie was superb."`` is positive, and
  ``"The crust was superb but the pie was not good."`` is negative. A bag of words sees one
  positive and one negative word in the first, two positive words in the second, and cannot
  tell either. 70% of the reviews are plain, 15% negated, 15% contrasted (a quarter of those
  with a negated second clause);
* **rare opinion words**: the labelled *train* split only uses a small, common set of opinion
  words (``good``, ``awful``, ...). The validation and test splits also use rarer ones
  (``splendid``, ``dismal``, ...) that appear in the unlabelled corpus but never in a labelled
  training example, just as a real test set holds words a small labelled set never had. A model
  trained from random weights has no idea what ``dismal`` means; a pretrained one has seen it
  where ``awful`` goes, and transfers. This is the gap lesson 03's "does pretraining matter?"
  measures.

Everything comes from :class:`random.Random` with fixed seeds, so a seed gives the same reviews
on every machine. The shipped splits live in ``data/text/reviews_{split}.jsonl``;
:func:`load_text_classification` loads them (or SST-2 in the full profile).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from ftlab.data.names import ONSETS, invented_names
from ftlab.runtime import data_path, resolve_profile

SEED = 2024
LABEL_NAMES = ("negative", "positive")  # label 0, label 1: the same order as SST-2
SPLITS = ("train", "validation", "test")
SPLIT_SIZES = {"train": 2000, "validation": 500, "test": 500}
# Kinds of labelled review and their shares (they sum to 1).
KIND_SHARES = {"simple": 0.7, "negation": 0.15, "contrast": 0.15}
RARE_SHARE_HELDOUT = 0.5  # share of validation/test opinion words drawn from the rare list

FULL_DATASET = "stanfordnlp/sst2"
FULL_VALIDATION_SIZE = 872  # carved from SST-2 train, as large as SST-2's own validation split

# Opinion words. The first COMMON of each list are the only ones labelled training reviews use;
# the rest ("rare") appear in the unlabelled corpus and in the validation and test splits.
POSITIVE = (
    "good", "great", "excellent", "wonderful", "lovely", "fantastic", "amazing", "perfect",
    "pleasant", "nice",
    "superb", "charming", "brilliant", "delightful", "splendid", "marvelous", "terrific",
    "outstanding", "fabulous", "impressive", "enjoyable", "stunning", "gorgeous", "cozy",
    "elegant", "flawless", "glorious", "magnificent", "sublime", "heavenly",
)
NEGATIVE = (
    "bad", "awful", "terrible", "horrible", "poor", "disappointing", "boring", "nasty",
    "dreadful", "rude",
    "mediocre", "bland", "stale", "lousy", "shabby", "dull", "rotten", "disgusting", "appalling",
    "miserable", "pathetic", "useless", "dismal", "gross", "unpleasant", "atrocious", "tedious",
    "soggy", "flimsy", "greasy",
)
COMMON = 10

# Things to review: an invented name plus a real category noun ("the Zorbel stew"), and the
# aspects a review of that category talks about. Nouns are singular so "was" always agrees.
CATEGORIES = {
    "food": (("stew", "pie", "soup", "noodle bowl", "bread", "cake", "curry", "dumpling", "salad",
              "tart", "pancake", "porridge"),
             ("taste", "smell", "portion", "sauce", "crust", "texture")),
    "drink": (("tea", "cider", "juice", "coffee", "lemonade", "cocoa"),
              ("flavour", "aroma", "colour", "foam")),
    "place": (("inn", "cafe", "hotel", "market", "museum", "bakery", "theatre", "garden",
               "library", "bathhouse"),
              ("staff", "service", "room", "view", "music", "waiter", "location")),
    "gadget": (("lamp", "kettle", "radio", "clock", "teapot", "bicycle", "camera", "backpack",
                "umbrella", "blanket"),
               ("battery", "handle", "design", "strap", "price", "sound")),
    "show": (("play", "film", "novel", "concert", "album", "puppet show"),
             ("plot", "ending", "acting", "singing", "pacing")),
}
INTENSIFIERS = ("", "", "", "very ", "really ", "quite ", "truly ")
# Labelled-review templates. {e} = "the Zorbel stew", {asp} = an aspect, {a}/{a1}/{a2} = opinion
# words, {i} = an optional intensifier.
SIMPLE = (
    "The {e} was {i}{a}.",
    "I found the {e} {i}{a}.",
    "The {e} is {i}{a}.",
    "Honestly, the {asp} of the {e} was {i}{a}.",
    "We thought the {e} was {i}{a}.",
    "Everyone agreed the {e} was {i}{a}.",
)
NEGATED = (  # "not {a}" flips the opinion of {a}
    "The {e} was not {i}{a}.",
    "I did not find the {e} {a}.",
    "The {asp} of the {e} was not {a} at all.",
    "Sadly, the {e} is not {i}{a}.",
    "Nobody thought the {e} was {a}.",
)
CONTRASTED = (  # the second clause decides
    "The {asp} was {a1} but the {e} was {a2}.",
    "Although the {asp} was {a1}, the {e} itself was {a2}.",
    "The {e} looked {a1}, but it was {a2}.",
    "The {e} was {a1} at first but {a2} in the end.",
)
CONTRASTED_NEGATED = (  # the second clause decides, and it is negated
    "The {asp} was {a1} but the {e} was not {a2}.",
    "Although the {asp} was {a1}, the {e} itself was not {a2}.",
)

# Unlabelled-corpus extras: sentences that carry an opinion without an opinion adjective, and
# neutral sentences that only widen the vocabulary.
CLOSING = {
    1: ("We will come back.", "Highly recommended.", "Five stars from me.", "Worth every coin.",
        "I would go again tomorrow.", "My friends loved it too.", "I smiled all day.",
        "I already told my neighbours to go."),
    0: ("Never again.", "Avoid it.", "One star from me.", "A waste of coins.", "We left early.",
        "I want my coins back.", "I regret every minute.", "I warned my neighbours to stay away."),
}
# Like reviews on real sites, most corpus documents open with their star rating, in words. That is
# how the encoder learns which side an opinion word is on: masked-word prediction ties
# "dismal" to "One star." the way DistilBERT's web text tied words to their contexts. The
# labelled reviews never carry a rating.
RATINGS = {1: ("Five stars.", "Four stars."), 0: ("One star.", "Two stars.")}
RATED_SHARE = 0.9
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("spring", "summer", "autumn", "winter")
NEUTRAL = (
    "We went to the {p} on a {day}.",
    "I bought the {g} last {month}.",
    "My friend {n} took me to the {p}.",
    "It cost {k} coins.",
    "We sat by the window near the {p}.",
    "{n} ordered the {f} and I had the {d}.",
    "The {p} is two streets from the river.",
    "We waited {k} minutes for a table.",
    "I read about the {s} in the paper.",
    "The {p} opens at {k} in the morning.",
)
SAID = ("{n} said the {e} was {a}.", "{n} told me the {e} is {a}.")
# Two opinion words joined by "and" share a side: the classic distributional cue to sentiment
# (Hatzivassiloglou and McKeown, 1997), and the main way the corpus teaches which side a rare
# word is on.
PAIRED = (
    "The {e} was {a} and {b}.",
    "The {e} was {a}, really {b}.",
    "The {asp} was {a} and the {e} was {b}.",
    "Both the {asp} and the {e} were {a}.",
)
FELT = {  # verbs that carry the side themselves
    1: ("loved", "enjoyed", "adored", "liked"),
    0: ("hated", "regretted", "disliked", "endured"),
}
FEELING = ("I {v} the {e}, it was {a}.", "We {v} the {e}; the {asp} was {a}.")


@dataclass(frozen=True)
class Thing:
    """A reviewable thing of the micro-world: ``Thing("Zorbel", "stew", "food")``."""

    name: str
    noun: str
    category: str

    @property
    def phrase(self) -> str:
        return f"{self.name} {self.noun}"


# The reviews' names sound a little different from the language world's: more onsets, an x ending.
THING_ONSETS = ONSETS + ("br", "gl", "tr", "sk")
THING_CODAS = ("", "", "n", "r", "l", "s", "x")


def make_things(seed: int = SEED, n: int = 240) -> tuple[Thing, ...]:
    """The world's reviewable things, deterministically from ``seed``.

    Labelled reviews use the first 80; the unlabelled corpus uses all of them (a wider world).
    """
    rng = random.Random(seed)
    names = invented_names(rng, n, set(), (2, 2, 3), THING_ONSETS, THING_CODAS)
    things = []
    for i, name in enumerate(names):
        category = list(CATEGORIES)[i % len(CATEGORIES)]
        things.append(Thing(name, rng.choice(CATEGORIES[category][0]), category))
    return tuple(things)


def make_people(seed: int = SEED, n: int = 60) -> tuple[str, ...]:
    """Invented first names for the corpus's "My friend Ravo said ..." sentences."""
    return tuple(invented_names(random.Random(seed + 1), n, set(), (2, 2, 3), THING_ONSETS, THING_CODAS))


def opinion_words(polarity: int, rare: bool | None = None) -> tuple[str, ...]:
    """Opinion words of ``polarity`` (1 positive, 0 negative): common ones, rare ones, or all."""
    words = POSITIVE if polarity == 1 else NEGATIVE
    if rare is None:
        return words
    return words[COMMON:] if rare else words[:COMMON]


def _fill(template: str, rng: random.Random, thing: Thing, **words: str) -> str:
    aspect = rng.choice(CATEGORIES[thing.category][1])
    intens = rng.choice(INTENSIFIERS)
    return template.format(e=thing.phrase, asp=aspect, i=intens, **words)


def review(rng: random.Random, label: int, kind: str, things, rare_share: float) -> str:
    """One labelled review sentence of ``kind`` whose overall opinion is ``label``.

    ``rare_share`` is the chance that each opinion word comes from the rare list (0 for train).
    """
    thing = rng.choice(things)

    def word(polarity: int) -> str:
        return rng.choice(opinion_words(polarity, rare=rng.random() < rare_share))

    if kind == "simple":
        return _fill(rng.choice(SIMPLE), rng, thing, a=word(label))
    if kind == "negation":
        return _fill(rng.choice(NEGATED), rng, thing, a=word(1 - label))
    if kind == "contrast":
        if rng.random() < 1 / 4:  # "X was good but Y was not good": both words say the opposite
            return _fill(rng.choice(CONTRASTED_NEGATED), rng, thing, a1=word(1 - label), a2=word(1 - label))
        return _fill(rng.choice(CONTRASTED), rng, thing, a1=word(1 - label), a2=word(label))
    raise ValueError(f"kind={kind!r}: reviews come in kinds {tuple(KIND_SHARES)}.")


def labelled_reviews(seed: int = SEED) -> dict[str, list[dict]]:
    """The three labelled splits: ``{"train": [...], "validation": [...], "test": [...]}``.

    Each row is ``{"text", "label", "kind"}`` with ``label`` 0 (negative) or 1 (positive) and
    ``kind`` in ``simple`` / ``negation`` / ``contrast``. Labels are exactly balanced in every
    split, kinds follow :data:`KIND_SHARES`, and no text appears twice (within or across splits).
    Train uses only the common opinion words; validation and test draw half of theirs from the
    rare list (see the module docstring for why).
    """
    rng = random.Random(seed)
    things = make_things(seed)[:80]
    seen: set[str] = set()
    out = {}
    for split in SPLITS:
        n = SPLIT_SIZES[split]
        rare_share = 0.0 if split == "train" else RARE_SHARE_HELDOUT
        plan = []  # (label, kind) for every row, so labels and kinds are balanced exactly
        per_label = {kind: round(n * share / 2) for kind, share in KIND_SHARES.items()}
        per_label["simple"] += n // 2 - sum(per_label.values())  # rounding lands on plain reviews
        for kind, count in per_label.items():
            plan += [(label, kind) for label in (0, 1) for _ in range(count)]
        rows = []
        for label, kind in plan:
            while True:
                text = review(rng, label, kind, things, rare_share)
                if text not in seen:
                    break
            seen.add(text)
            rows.append({"text": text, "label": label, "kind": kind})
        rng.shuffle(rows)
        out[split] = rows
    return out


def unlabelled_corpus(num_docs: int = 40000, seed: int = 0) -> list[str]:
    """Unlabelled reviews (a rating and one to three sentences) for masked-LM pretraining.

    Each document has one hidden opinion and keeps to it: a star rating in words (90% of
    documents), plain opinion sentences, pairs ("was lovely and splendid"), feelings ("I hated
    the ..., it was ..."), negated sentences ("not awful" in a happy review), contrasts whose
    second clause agrees, a closing line ("Never again."), and neutral sentences about days,
    prices and friends. Nothing is labelled, but a model that must fill in
    ``"One star. The stew was [MASK]."`` learns that the missing word is a negative one: which
    words are opinions, and of which side. (Without the ratings, a 64-dim encoder needs far more
    than a few CPU minutes to find that out from the subtler cues alone.)
    All opinion words (common and rare) and all 240 things appear.
    """
    rng = random.Random(seed + 7919)
    things = make_things()
    people = make_people()
    by_cat = {c: [t for t in things if t.category == c] for c in CATEGORIES}
    docs = []
    for _ in range(num_docs):
        side = rng.randrange(2)  # the document's hidden opinion
        thing = rng.choice(things)

        def word(polarity: int = side) -> str:
            return rng.choice(opinion_words(polarity))

        sentences = [rng.choice(RATINGS[side])] if rng.random() < RATED_SHARE else []
        if rng.random() < 0.1:
            sentences.append(rng.choice(NEUTRAL).format(
                p=rng.choice(by_cat["place"]).phrase, g=rng.choice(by_cat["gadget"]).phrase,
                f=rng.choice(by_cat["food"]).phrase, d=rng.choice(by_cat["drink"]).phrase,
                s=rng.choice(by_cat["show"]).phrase, n=rng.choice(people),
                day=rng.choice(DAYS), month=rng.choice(MONTHS), k=rng.randint(2, 40)))
        for _ in range(rng.choice((1, 1, 1, 2))):
            r = rng.random()
            if r < 0.15:
                sentences.append(_fill(rng.choice(SIMPLE), rng, thing, a=word()))
            elif r < 0.40:
                sentences.append(_fill(rng.choice(PAIRED), rng, thing, a=word(), b=word()))
            elif r < 0.65:
                sentences.append(_fill(rng.choice(FEELING), rng, thing, a=word(),
                                       v=rng.choice(FELT[side])))
            elif r < 0.75:
                sentences.append(_fill(rng.choice(NEGATED), rng, thing, a=word(1 - side)))
            elif r < 0.85:
                sentences.append(_fill(rng.choice(CONTRASTED), rng, thing, a1=word(1 - side), a2=word()))
            elif r < 0.90:
                sentences.append(_fill(rng.choice(CONTRASTED_NEGATED), rng, thing,
                                       a1=word(1 - side), a2=word(1 - side)))
            else:
                sentences.append(rng.choice(SAID).format(n=rng.choice(people), e=thing.phrase, a=word()))
        if rng.random() < 0.4:
            sentences.append(rng.choice(CLOSING[side]))
        docs.append(" ".join(sentences))
    return docs


def heldout_corpus(num_docs: int = 300) -> list[str]:
    """Corpus documents the encoder never trained on (another seed): its MLM accuracy is measured here."""
    return unlabelled_corpus(num_docs, seed=1)


# ----------------------------------------------------------------------------- loading


def _label_feature():
    from datasets import ClassLabel

    return ClassLabel(names=list(LABEL_NAMES))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a split of the text-classification set; use "
                         f"one of {SPLITS}.")


def _load_tiny(split: str):
    from datasets import Dataset, Features, Value

    path = data_path("text", f"reviews_{split}.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    features = Features({"text": Value("string"), "label": _label_feature()})
    return Dataset.from_dict({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]},
                             features=features)


def _load_full(split: str):
    from datasets import load_dataset

    sst2 = load_dataset(FULL_DATASET)
    if split == "test":  # SST-2's own test split has no labels (all -1): its validation is our test
        ds = sst2["validation"]
    else:
        # 872 sentences, as many as the test split; at most a fifth of a smaller train split
        size = min(FULL_VALIDATION_SIZE, len(sst2["train"]) // 5)
        parts = sst2["train"].train_test_split(test_size=size, seed=0)
        ds = parts["train"] if split == "train" else parts["test"]
    ds = ds.rename_column("sentence", "text").remove_columns(["idx"])
    return ds.cast_column("label", _label_feature())


def take(dataset, n: int | None, seed: int | None = None):
    """At most ``n`` rows of a ``datasets.Dataset``: the first ``n`` (``seed=None``), or ``n`` drawn
    at random in a random order (``seed`` an int: ``dataset.shuffle(seed)``'s first ``n``).

    ``n=None`` or ``n >= len(dataset)`` keeps every row (still shuffled when ``seed`` is given), so a
    full-profile size (8,000 SST-2 reviews) works on a smaller copy too; use ``len()`` of the result
    afterwards, never ``n``. The text-set counterpart of :func:`ftlab.data.shapes.take`.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n={n!r}: take at least 1 row (an int), or None for all of them.")
    if seed is not None:
        dataset = dataset.shuffle(seed=seed)
    if n is None or n >= len(dataset):
        return dataset
    return dataset.select(range(n))


def load_text_classification(split: str = "train", profile: str | None = None):
    """A sentiment set as a ``datasets.Dataset`` with columns ``text`` (str) and ``label`` (int).

    ``ds.features["label"].names`` is ``["negative", "positive"]`` at both scales.

    * tiny: the micro-world reviews in ``data/text/`` (train 2,000, validation 500, test 500;
      labels balanced; a mix of plain, negated and contrasted sentences; validation and test use
      opinion words the train split never does).
    * full: SST-2 (``stanfordnlp/sst2``). Its test split has no labels, so our ``test`` is SST-2's
      validation (872 sentences) and our ``validation`` is 872 sentences carved from SST-2's
      train with seed 0; ``train`` is the remaining 66,477.

    Lesson 03 fine-tunes on ``train``, picks settings on ``validation`` and reports ``test``.
    """
    _check_split(split)
    if resolve_profile(profile) == "tiny":
        return _load_tiny(split)
    return _load_full(split)
