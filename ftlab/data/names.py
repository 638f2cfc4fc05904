"""Invented names for the micro-worlds: people of the language world, things and people of the reviews.

Names are made of consonant-vowel syllables and an optional final consonant ("Bodan", "Glitrux"),
so no real name, and no word the hub models know well, ends up in a fact or a review.
"""

from __future__ import annotations

import random

ONSETS = tuple("b d f g k l m n p r s t v z".split())
VOWELS = tuple("a e i o u".split())
CODAS = ("", "", "", "n", "r", "l", "s")


def invented_names(rng: random.Random, n: int, taken: set[str], syllables=2,
                   onsets=ONSETS, codas=CODAS) -> list[str]:
    """``n`` new capitalised names drawn with ``rng``, none already in ``taken`` (which grows).

    ``syllables`` is a count, or a tuple of counts that each name draws from
    (``(2, 2, 3)``: a third of the names get three syllables). An empty string among ``codas``
    makes names that end in a vowel.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r}: the number of names must be an int >= 0.")
    out = []
    while len(out) < n:
        count = rng.choice(syllables) if isinstance(syllables, tuple) else syllables
        name = "".join(rng.choice(onsets) + rng.choice(VOWELS) for _ in range(count))
        name = (name + rng.choice(codas)).capitalize()
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out
