"""WER and CER under several normalizers, n-best oracle, bootstrap intervals, paired comparisons.

Alignment is jiwer's; everything else works on per-utterance error counts so that corpus figures,
oracles and resampling all come from the same numbers.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache

import jiwer
import numpy as np

Normalizer = Callable[[str], str]


@cache
def _english() -> Normalizer:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@cache
def _basic() -> Normalizer:
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def _none(text: str) -> str:
    return " ".join(text.split())


def _hyporadise(text: str) -> str:
    """HyPoradise's convention (its references are lower case without punctuation): lower case, punctuation
    and symbols (Unicode categories P*, S*) deleted, apostrophes kept, whitespace collapsed. Deleted, not
    spaced: "re-structuring" -> "restructuring". On the HyPoradise test files this gives 1-best WER 8.37 %
    (ATIS) and 11.64 % (CHiME-4) against the paper's 8.3 and 11.1 (no normalisation: 8.40 and 12.69)."""
    text = "".join(c for c in text.lower() if c == "'" or not unicodedata.category(c).startswith(("P", "S")))
    return " ".join(text.split())


NORMALIZERS: dict[str, Callable[[], Normalizer]] = {
    "none": lambda: _none,
    "basic": _basic,  # lower case, punctuation and symbols removed (Whisper's BasicTextNormalizer)
    "whisper": _english,  # Whisper's English normalizer: spellings, numbers, contractions
    "hyporadise": lambda: _hyporadise,  # HyPoradise's references: lower case, no punctuation (see _hyporadise)
}


_TYPOGRAPHIC = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def normalize(text: str, normalizer: str = "whisper") -> str:
    """Apply a normalizer; typographic quotes and dashes become ASCII first (Whisper's rules expect ASCII)."""
    if normalizer not in NORMALIZERS:
        raise ValueError(f"unknown normalizer {normalizer!r}: expected one of {', '.join(NORMALIZERS)}")
    if normalizer != "none":
        text = text.translate(_TYPOGRAPHIC)
    return " ".join(NORMALIZERS[normalizer]()(text).split())


@dataclass
class Counts:
    """Per-utterance edit counts against the reference (arrays of equal length)."""

    sub: np.ndarray
    dele: np.ndarray
    ins: np.ndarray
    ref: np.ndarray

    @property
    def errors(self) -> np.ndarray:
        return self.sub + self.dele + self.ins

    def rate(self) -> float:
        total = int(self.ref.sum())
        return float(self.errors.sum() / total) if total else float("nan")


def edit_counts(refs: Sequence[str], hyps: Sequence[str], *, chars: bool = False) -> Counts:
    """Per-utterance substitutions, deletions, insertions and reference length (words or characters)."""
    n = len(refs)
    sub, dele, ins, ref = (np.zeros(n, dtype=np.int64) for _ in range(4))
    idx = [i for i in range(n) if refs[i].strip()]
    for i in range(n):
        if not refs[i].strip():  # jiwer refuses empty references: everything hypothesised is inserted
            h = hyps[i].strip()
            ins[i] = len(h.replace(" ", "")) if chars else len(h.split())
    if idx:
        r = [refs[i] for i in idx]
        h = [hyps[i] for i in idx]
        out = jiwer.process_characters(r, h) if chars else jiwer.process_words(r, h)
        for j, (align, ref_tokens) in enumerate(zip(out.alignments, out.references, strict=True)):
            i = idx[j]
            ref[i] = len(ref_tokens)
            for chunk in align:
                if chunk.type == "substitute":
                    sub[i] += chunk.ref_end_idx - chunk.ref_start_idx
                elif chunk.type == "delete":
                    dele[i] += chunk.ref_end_idx - chunk.ref_start_idx
                elif chunk.type == "insert":
                    ins[i] += chunk.hyp_end_idx - chunk.hyp_start_idx
    return Counts(sub, dele, ins, ref)


def bootstrap_ci(
    errors: np.ndarray, ref_lengths: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus error rate, resampling utterances with replacement."""
    n = len(errors)
    if n == 0 or ref_lengths.sum() == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    rates = errors[idx].sum(1) / np.maximum(ref_lengths[idx].sum(1), 1)
    alpha = (1 - level) / 2
    return float(np.quantile(rates, alpha)), float(np.quantile(rates, 1 - alpha))


def paired_bootstrap(
    errors_a: np.ndarray, errors_b: np.ndarray, ref_lengths: np.ndarray, *, n_resamples: int = 1000, seed: int = 0
) -> float:
    """Share of resamples in which system B does not beat system A (a one-sided p-value for "B better")."""
    n = len(errors_a)
    if n == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    diff = errors_b[idx].sum(1) - errors_a[idx].sum(1)
    return float((diff >= 0).mean())


@dataclass(frozen=True)
class PairedChange:
    """System B against system A on the same utterances: how many utterances it made better, worse and left
    alone, and the paired bootstrap p that B is not better. Accuracy tables show the harm beside the gain."""

    better: int
    worse: int
    unchanged: int
    p: float


def paired_change(errors_a: np.ndarray, errors_b: np.ndarray, ref_lengths: np.ndarray) -> PairedChange:
    """:class:`PairedChange` of per-utterance errors ``errors_b`` against ``errors_a``."""
    return PairedChange(
        better=int((errors_b < errors_a).sum()),
        worse=int((errors_b > errors_a).sum()),
        unchanged=int((errors_b == errors_a).sum()),
        p=paired_bootstrap(errors_a, errors_b, ref_lengths),
    )


def percent(x: float | None, missing: str = "") -> str:
    """A rate as a percentage with two decimals (``missing`` for None or NaN): how every table shows a WER."""
    return missing if x is None or x != x else f"{100 * x:.2f}"


@dataclass
class ErrorRate:
    """A corpus error rate with its counts and 95 % bootstrap interval."""

    normalizer: str
    unit: str  # "word" or "char"
    rate: float
    substitutions: int
    deletions: int
    insertions: int
    reference_length: int
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def __str__(self) -> str:
        what = "WER" if self.unit == "word" else "CER"
        return (
            f"{what} {100 * self.rate:.2f} % ({self.normalizer} normalizer, 95 % CI {100 * self.ci_low:.2f}-"
            f"{100 * self.ci_high:.2f}; S {self.substitutions} D {self.deletions} I {self.insertions} of"
            f" {self.reference_length} {self.unit}s)"
        )


def error_rate(
    refs: Sequence[str], hyps: Sequence[str], normalizer: str = "whisper", *, chars: bool = False
) -> ErrorRate:
    """Corpus WER (or CER with ``chars``) after normalising both sides."""
    r = [normalize(t, normalizer) for t in refs]
    h = [normalize(t, normalizer) for t in hyps]
    c = edit_counts(r, h, chars=chars)
    lo, hi = bootstrap_ci(c.errors, c.ref)
    return ErrorRate(
        normalizer,
        "char" if chars else "word",
        c.rate(),
        int(c.sub.sum()),
        int(c.dele.sum()),
        int(c.ins.sum()),
        int(c.ref.sum()),
        lo,
        hi,
    )


def oracle_curve(refs: Sequence[str], nbests: Sequence[Sequence[str]], normalizer: str = "whisper") -> list[float]:
    """Oracle WER at k = 1..K: each utterance scored by its best hypothesis among the first k.

    Lists shorter than k keep their last (best available) choice.
    """
    if not refs:
        return []
    k_max = max((len(n) for n in nbests), default=0) or 1
    r = [normalize(t, normalizer) for t in refs]
    per_rank = []  # errors of hypothesis j of every utterance (inf where missing)
    for j in range(k_max):
        hyps = [normalize(n[j], normalizer) if j < len(n) else "" for n in nbests]
        c = edit_counts(r, hyps)
        e = c.errors.astype(float)
        # a missing rank cannot be the oracle's pick; an empty list is scored as the empty transcript
        e[[j >= len(n) and not (j == 0 and not n) for n in nbests]] = np.inf
        per_rank.append(e)
        ref_len = c.ref
    if not per_rank:
        return []
    best = np.minimum.accumulate(np.stack(per_rank), axis=0)
    total = ref_len.sum()
    return [float(np.where(np.isinf(b), 0, b).sum() / total) if total else float("nan") for b in best]
