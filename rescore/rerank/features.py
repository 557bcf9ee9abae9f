"""Named features of each hypothesis, for the learned reranker: what the scorers wrote, and what follows.

Scores written by stages (``am``, ``am:<model>``, ``lm:<name>``, ``ctc``, ``rank:<system>`` ...) are used as
they are; :func:`add_derived` adds the ones computed from the list itself, as plain score keys so that a
linear :class:`rescore.rerank.ranker.Weights` over them is the whole model:

- ``am_norm:<model>``: ``am:<model> / am_tokens:<model>``, the per-token score (what beam search ranks by);
- ``rank:<system>`` for a system that did not propose the hypothesis: the length of the list (worse than any
  hypothesis it did propose);
- ``mbr:<model>``: minus the expected number of word errors of the hypothesis against the others, under the
  posterior ``softmax(am:<model>)`` over the list (minimum-Bayes-risk consensus: a hypothesis that agrees
  with the probable ones scores high);
- ``first_pass``: 1 on the list's first hypothesis (the first pass's own 1-best), 0 elsewhere. Its weight is a
  margin: another hypothesis is chosen only where it beats the first pass by more than that.

The word count is not a score key: :class:`~rescore.rerank.ranker.Weights` has its ``length_bonus`` for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from rescore.evaluate.metrics import normalize
from rescore.records import NBest

FIRST_PASS = "first_pass"
DERIVED_PREFIXES = ("am_norm:", "mbr:", FIRST_PASS)
NOT_FEATURES = {"total", "am_tokens"}  # bookkeeping, not evidence


def acoustic_models(records: Iterable[NBest]) -> list[str]:
    """The models that wrote ``am:<model>`` scores (teacher forcing, or a merged recognizer's own)."""
    found: dict[str, None] = {}
    for r in records:
        for h in r.hypotheses:
            for k in h.scores:
                if k.startswith("am:") and f"am_tokens:{k[3:]}" in h.scores:
                    found.setdefault(k[3:])
    return list(found)


def rank_systems(records: Iterable[NBest]) -> list[str]:
    found: dict[str, None] = {}
    for r in records:
        for h in r.hypotheses:
            for k in h.scores:
                if k.startswith("rank:"):
                    found.setdefault(k[5:])
    return list(found)


def expected_errors(texts: Sequence[str], logits: Sequence[float], normalizer: str = "whisper") -> list[float]:
    """For each text, the expected word edit distance to the list under ``softmax(logits)``."""
    words = [normalize(t, normalizer).split() for t in texts]
    z = np.asarray(logits, dtype=float)
    p = np.exp(z - z.max())
    p /= p.sum()
    out = []
    for i in range(len(words)):
        out.append(float(sum(p[j] * Levenshtein.distance(words[i], words[j]) for j in range(len(words)) if j != i)))
    return out


def add_derived(records: Iterable[NBest], *, mbr: bool = True) -> list[NBest]:
    """Add the derived features (see the module docstring) to every hypothesis, in place."""
    records = list(records)
    models = acoustic_models(records)
    systems = rank_systems(records)
    for r in records:
        if not r.ok or not r.hypotheses:
            continue
        for m in models:
            for h in r.hypotheses:
                if f"am:{m}" in h.scores and h.scores.get(f"am_tokens:{m}"):
                    h.scores[f"am_norm:{m}"] = h.scores[f"am:{m}"] / h.scores[f"am_tokens:{m}"]
            if mbr and all(f"am:{m}" in h.scores for h in r.hypotheses):
                texts = [h.text for h in r.hypotheses]
                errs = expected_errors(texts, [h.scores[f"am:{m}"] for h in r.hypotheses])
                for h, e in zip(r.hypotheses, errs, strict=True):
                    h.scores[f"mbr:{m}"] = -e
        for s in systems:
            for h in r.hypotheses:
                h.scores.setdefault(f"rank:{s}", float(len(r.hypotheses)))
        for j, h in enumerate(r.hypotheses):
            h.scores[FIRST_PASS] = 1.0 if j == 0 else 0.0
    return records


def feature_names(records: Iterable[NBest]) -> list[str]:
    """Score keys every hypothesis of every usable record has (finite values): the candidate features."""
    common: set[str] | None = None
    order: dict[str, None] = {}
    for r in records:
        if not r.ok or not r.hypotheses:
            continue
        for h in r.hypotheses:
            keys = {k for k, v in h.scores.items() if k not in NOT_FEATURES and not k.startswith("am_tokens")}
            keys = {k for k in keys if isinstance(h.scores[k], int | float) and math.isfinite(h.scores[k])}
            common = keys if common is None else common & keys
            for k in h.scores:
                order.setdefault(k)
    return [k for k in order if common and k in common]
