"""Score n-best records: the bridge between the record format and the pure metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import jiwer

from rescore.evaluate.metrics import NORMALIZERS, ErrorRate, error_rate, normalize, oracle_curve
from rescore.records import NBest


@dataclass
class ScoreReport:
    """Everything ``rescore score`` prints, as data."""

    stage: str
    utterances: int
    scored: int
    failed: list[str]
    missing_reference: list[str]
    wer: list[ErrorRate]
    cer: list[ErrorRate]
    oracle: list[float] = field(default_factory=list)  # WER at k = 1..N, Whisper normalizer
    features: dict[str, float] = field(default_factory=dict)  # score key -> share of hypotheses that have it

    def rate(self, normalizer: str = "whisper", *, chars: bool = False) -> float:
        """The corpus WER (CER with ``chars``) as a fraction, under one normalizer (default Whisper's English one,
        the usual one for reporting); ``wer``/``cer`` hold every normalizer's with counts and intervals."""
        for e in self.cer if chars else self.wer:
            if e.normalizer == normalizer:
                return e.rate
        raise KeyError(f"no {'CER' if chars else 'WER'} under normalizer {normalizer!r} (scored: {self.scored})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["wer"] = {e.normalizer: e.to_dict() for e in self.wer}
        d["cer"] = {e.normalizer: e.to_dict() for e in self.cer}
        d["oracle"] = {str(k): v for k, v in enumerate(self.oracle, 1)}
        return d


def attach_references(records: Iterable[NBest], references: dict[str, str] | None) -> list[NBest]:
    """Fill ``reference`` from a manifest's id -> text map (the map wins over what the record holds)."""
    out = []
    for r in records:
        if references and r.id in references:
            r.reference = references[r.id]
        out.append(r)
    return out


def score_records(
    records: Sequence[NBest], *, stage: str = "auto", normalizers: Sequence[str] = tuple(NORMALIZERS)
) -> ScoreReport:
    """Corpus WER/CER per normalizer and the n-best oracle curve of the records that have a reference.

    Failed records (``error`` set) are not scored and are listed, so a figure never hides them.
    """
    failed = [r.id for r in records if not r.ok]
    missing = [r.id for r in records if r.ok and r.reference is None]
    scored = [r for r in records if r.ok and r.reference is not None]
    refs = [r.reference or "" for r in scored]
    hyps = [r.text(stage) for r in scored]
    wer = [error_rate(refs, hyps, n) for n in normalizers] if scored else []
    cer = [error_rate(refs, hyps, n, chars=True) for n in normalizers] if scored else []
    oracle = oracle_curve(refs, [[h.text for h in r.hypotheses] for r in scored]) if scored else []
    return ScoreReport(stage, len(records), len(scored), failed, missing, wer, cer, oracle, features_present(records))


NOT_FEATURES = frozenset({"total", "am_tokens"})  # the ranker's output and a count, not evidence
ACOUSTIC_KEYS = ("am", "am_norm", "ctc")


def features_present(records: Iterable[NBest]) -> dict[str, float]:
    """The score keys the hypotheses carry (what a ranker could use), each with the share of hypotheses that
    have it, in order of first appearance; ``total`` and ``am_tokens`` are left out."""
    counts: dict[str, int] = {}
    n = 0
    for r in records:
        if not r.ok:
            continue
        for h in r.hypotheses:
            n += 1
            for k in h.scores:
                if k not in NOT_FEATURES:
                    counts[k] = counts.get(k, 0) + 1
    return {k: c / n for k, c in counts.items()} if n else {}


def describe_features(features: dict[str, float]) -> str:
    """``features: lm:smollm2-135m, rank (text-only: no acoustic score)``; a key on only some hypotheses
    shows its share."""
    if not features:
        return "features: none (no scores on the hypotheses)"
    parts = [k if share >= 1 else f"{k} ({100 * share:.0f} % of hypotheses)" for k, share in sorted(features.items())]
    note = "" if any(k in features for k in ACOUSTIC_KEYS) else " (text-only: no acoustic score)"
    return f"features: {', '.join(parts)}{note}"


def alignment_text(record: NBest, stage: str = "auto", normalizer: str = "whisper") -> str:
    """jiwer's visual alignment of one record's output against its reference."""
    ref = normalize(record.reference or "", normalizer)
    hyp = normalize(record.text(stage), normalizer)
    if not ref:
        return f"REF: (empty)\nHYP: {hyp}"
    out = jiwer.process_words(ref, hyp)
    text = jiwer.visualize_alignment(out, show_measures=False, skip_correct=False)
    return text.replace("=== SENTENCE 1 ===", "").strip("\n")


@dataclass
class RerankComparison:
    """First pass vs reranked output on the same utterances: WERs, share of the oracle gap, per-utterance."""

    utterances: int
    before: ErrorRate
    after: ErrorRate
    oracle: float
    gap_closed: float  # (before - after) / (before - oracle); nan when the oracle is the 1-best
    better: int
    worse: int
    unchanged: int
    p_value: float  # paired bootstrap: share of resamples in which the reranked output is not better

    def to_dict(self) -> dict:
        return asdict(self)


def rerank_comparison(records: Sequence[NBest], *, normalizer: str = "whisper") -> RerankComparison:
    """Compare the recognizer's first hypothesis with the chosen one, for records with a reference."""
    from rescore.evaluate.metrics import bootstrap_ci, edit_counts, paired_change

    scored = [r for r in records if r.ok and r.hypotheses and r.reference is not None]
    if not scored:
        raise ValueError("no reranked record with a reference to compare")
    refs = [normalize(r.reference or "", normalizer) for r in scored]
    a = edit_counts(refs, [normalize(r.text("first-pass"), normalizer) for r in scored])
    b = edit_counts(refs, [normalize(r.text("rerank"), normalizer) for r in scored])

    def rate(c) -> ErrorRate:
        lo, hi = bootstrap_ci(c.errors, c.ref)
        return ErrorRate(normalizer, "word", c.rate(), *(int(x.sum()) for x in (c.sub, c.dele, c.ins, c.ref)), lo, hi)

    oracle = oracle_curve(
        [r.reference or "" for r in scored], [[h.text for h in r.hypotheses] for r in scored], normalizer
    )
    before, after = rate(a), rate(b)
    change = paired_change(a.errors, b.errors, a.ref)
    gap = before.rate - oracle[-1]
    return RerankComparison(
        utterances=len(scored),
        before=before,
        after=after,
        oracle=oracle[-1],
        gap_closed=(before.rate - after.rate) / gap if gap > 0 else float("nan"),
        better=change.better,
        worse=change.worse,
        unchanged=change.unchanged,
        p_value=change.p,
    )
