"""Simulated first-pass errors for training the cross-attention model.

A model that reads the n-best learns to copy it: the 1-best is right for most words, so the loss falls without the
audio, and the gated cross-attention is never needed (the audio model's held-out loss is lower than the gates-shut
model's, its WER is not). This is modality laziness, and the remedy is modality dropout on the side that is too
easy. In a share of the training examples, some words are replaced in every hypothesis alike by a look-alike word
of the training targets. The n-best then agree on a wrong word, as they do on a first pass's hardest errors, and
only the audio, or the LM's prior, can put it right. The no-audio ablation trains on the same noise, so the
comparison stays fair. Held-out losses, decoding and the report see the hypotheses unchanged.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rescore.deep.model import normalize_target

LETTERS = (2, 1)  # look-alikes share this many first letters: two where the vocabulary has one, else one


def look_alike_key(word: str, letters: int) -> tuple[str, int]:
    """Words that share their first ``letters`` letters and have about the same length (in 2-letter bins):
    a cheap stand-in for acoustic confusability ("then"/"than", "walked"/"wanted")."""
    return word[:letters], len(word) // 2


@dataclass
class HypothesisNoise:
    """Replace some words of a share of the examples' hypotheses by look-alike words, the same in every hypothesis.

    ``examples``: the share of training examples corrupted (0: none, the default); ``words``: the share of a
    corrupted example's distinct words replaced (at least one). Look-alikes come from the training targets' words
    (:meth:`fit`), bucketed by :func:`look_alike_key` on two letters, then on one where two leave no other word.
    """

    examples: float = 0.0
    words: float = 0.15
    text_norm: str = "lower"
    # the look-alike buckets for each key's number of first letters, tried in LETTERS order
    _tables: dict[int, dict[tuple[str, int], list[str]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.examples <= 1.0 or not 0.0 < self.words <= 1.0:
            raise ValueError(f"hypothesis noise shares must be in [0, 1] (examples) and (0, 1] (words): {self}")

    def fit(self, targets: Iterable[str]) -> HypothesisNoise:
        """Learn the look-alike vocabulary from the training targets (normalised as the prompt's hypotheses are)."""
        tables: dict[int, dict[tuple[str, int], set[str]]] = {n: defaultdict(set) for n in LETTERS}
        for text in targets:
            for w in self.normalized(text).split():
                for n, table in tables.items():
                    table[look_alike_key(w, n)].add(w)
        self._tables = {n: {k: sorted(v) for k, v in table.items()} for n, table in tables.items()}
        return self

    def normalized(self, text: str) -> str:
        """``text`` in the style the noise works on: the prompt's and the targets' (``text_norm``)."""
        return normalize_target(text, self.text_norm)

    @property
    def active(self) -> bool:
        return self.examples > 0.0

    def substitute(self, word: str, rng: random.Random) -> str | None:
        """A look-alike of ``word`` other than itself, or None where the vocabulary has none."""
        for letters, table in self._tables.items():
            others = [w for w in table.get(look_alike_key(word, letters), ()) if w != word]
            if others:
                return rng.choice(others)
        return None

    def __call__(self, hypotheses: Sequence[str], rng: random.Random) -> list[str]:
        """The hypotheses, normalised, with the same words replaced in each; unchanged (but normalised) for the
        examples not drawn. Normalising first makes "The" and "the" one word, so all hypotheses agree."""
        hyps = [self.normalized(h) for h in hypotheses]
        if not self.active or rng.random() >= self.examples:
            return hyps
        distinct = sorted({w for h in hyps for w in h.split()})
        if not distinct:
            return hyps
        chosen = rng.sample(distinct, max(1, round(self.words * len(distinct))))
        swap = {w: s for w in chosen if (s := self.substitute(w, rng)) is not None}
        return [" ".join(swap.get(w, w) for w in h.split()) for h in hyps]
