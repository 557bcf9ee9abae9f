"""Entity retrieval: the names and terms of a list that an utterance's n-best most likely contains.

A recognizer that never heard a name spells it by sound ("Shivon" for "Siobhan"), so the entry is found
by comparing word n-grams of every hypothesis with every entry both as letters (RapidFuzz ratio) and as
sounds (Metaphone keys compared the same way): the speech-to-entity retriever idea, without training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jellyfish
from rapidfuzz import fuzz

from rescore.evaluate.metrics import normalize


def load_entities(path: str | os.PathLike[str]) -> list[str]:
    """One name or term per line; blank lines and ``#`` comments skipped, duplicates dropped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read entity list {path}: {e}") from None
    seen: dict[str, None] = {}
    for line in lines:
        t = line.strip()
        if t and not t.startswith("#"):
            seen.setdefault(t, None)
    return list(seen)


@lru_cache(maxsize=65536)
def _phonetic(text: str) -> str:
    return " ".join(jellyfish.metaphone(w) for w in text.split())


def _key(text: str) -> str:
    return normalize(text, "basic")


@dataclass
class Match:
    entity: str
    score: float  # 0..100, the mean of the spelling and the sound similarity of the best n-gram
    ngram: str  # the words of the n-best it matched


class EntityRetriever:
    """Top-k entries of an entity list closest to an n-best, by fuzzy and phonetic similarity."""

    def __init__(self, entities: list[str], k: int = 5, min_score: float = 60.0) -> None:
        self.entities = entities
        self.k = k
        self.min_score = min_score
        self._keys = [_key(e) for e in entities]
        self._sounds = [_phonetic(k) for k in self._keys]
        self._lengths = sorted({len(k.split()) for k in self._keys if k})

    def retrieve(self, texts: list[str]) -> list[Match]:
        """The ``k`` best entries (score at least ``min_score``), best first, for these hypotheses."""
        grams: set[str] = set()
        for t in texts:
            words = _key(t).split()
            for n in {m for L in self._lengths for m in (L - 1, L, L + 1) if m >= 1}:
                for i in range(len(words) - n + 1):
                    grams.add(" ".join(words[i : i + n]))
        if not grams:
            return []
        gram_list = sorted(grams)
        gram_sounds = [_phonetic(g) for g in gram_list]
        matches = []
        for entity, key, sound in zip(self.entities, self._keys, self._sounds, strict=True):
            if not key:
                continue
            best, best_gram = 0.0, ""
            for g, gs in zip(gram_list, gram_sounds, strict=True):
                spell = fuzz.ratio(key, g)
                if spell + 100 <= 2 * best:  # cannot beat the best so far even with a perfect sound match
                    continue
                s = (spell + fuzz.ratio(sound, gs)) / 2
                if s > best:
                    best, best_gram = s, g
            if best >= self.min_score:
                matches.append(Match(entity, round(best, 1), best_gram))
        matches.sort(key=lambda m: (-m.score, m.entity))
        return matches[: self.k]
