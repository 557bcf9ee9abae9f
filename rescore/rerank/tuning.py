"""``rescore tune`` as a library call: score a dev set, fit rerank weights, report honestly.

What makes a tuning figure trustworthy lives here, not in the CLI: records that cannot take part are named,
a report set that shares utterances with the dev set is refused (unless forced, and then flagged), and the
dev figure is the k-fold cross-validated one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rescore.evaluate.scoring import RerankComparison, rerank_comparison
from rescore.records import NBest
from rescore.rerank.features import add_derived, feature_names
from rescore.rerank.grid import tune
from rescore.rerank.learned import train_reranker
from rescore.rerank.ranker import LMSpec, Ranker, RerankConfig, Weights, score_nbest
from rescore.score import LMScorer


class OverlapError(ValueError):
    """The report set shares utterances with the set the weights were tuned on."""


def usable_for_tuning(records: Sequence[NBest], what: str) -> tuple[list[NBest], list[str]]:
    """The records that can be tuned or reported on, and a message for each one that cannot."""
    keep, skipped = [], []
    for r in records:
        if not r.ok:
            skipped.append(f"{what}: {r.id} skipped: failed record ({r.error})")
        elif not r.hypotheses:
            skipped.append(f"{what}: {r.id} skipped: no hypotheses")
        elif r.reference is None:
            skipped.append(f"{what}: {r.id} skipped: no reference (use --reference)")
        elif any(not {"am", "am_norm", "rank"} & set(h.scores) for h in r.hypotheses):
            skipped.append(f"{what}: {r.id} skipped: a hypothesis has no 'am', 'am_norm' or 'rank' score")
        else:
            keep.append(r)
    return keep, skipped


def check_disjoint(dev: Sequence[NBest], report: Sequence[NBest], *, force: bool = False) -> str | None:
    """OverlapError when ``report`` shares ids with ``dev``; with ``force`` a warning to show instead."""
    shared = {r.id for r in dev} & {r.id for r in report}
    if not shared:
        return None
    if not force:
        raise OverlapError(
            f"the report set shares {len(shared)} id(s) with the dev set (e.g. {sorted(shared)[0]}): "
            "figures on tuned-on utterances are optimistic; use another set, or force it"
        )
    return f"{len(shared)} reported id(s) were also tuned on; the report figure is optimistic"


@dataclass
class TuneOutcome:
    """The tuned config (ready to save) and the figures behind it."""

    config: RerankConfig
    weights: Weights
    method: str
    in_sample_wer: float | None = None
    cv: RerankComparison | None = None
    folds: int = 0
    settings: int = 0  # weight settings the grid search evaluated, or C values the learned one tried
    report: RerankComparison | None = None
    notes: list[str] = field(default_factory=list)


METHODS = ("grid", "learned")


def tune_rerank(
    dev: Sequence[NBest],
    scorers: Sequence[LMScorer],
    *,
    backend: str,
    method: str = "grid",
    features: Sequence[str] | None = None,
    context: str = "",
    folds: int = 5,
    seed: int = 0,
    report: Sequence[NBest] | None = None,
    dev_name: str = "dev",
    report_name: str = "report",
    on_phase: Callable[[str], Any] | None = None,
) -> TuneOutcome:
    """Score ``dev`` with each LM, fit the weights, and rerank ``report`` (a disjoint set: check with
    :func:`check_disjoint`) with them.

    ``grid``: the LM weights and length bonus on top of the acoustic score (a grid, then refinement).
    ``learned``: pairwise logistic regression over named features (:mod:`rescore.rerank.learned`): ``features``,
    or every score all hypotheses share, plus the derived ones (:mod:`rescore.rerank.features`).
    Both report the k-fold cross-validated rerank of ``dev`` when ``folds`` >= 2.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tuning method {method!r}: expected one of {', '.join(METHODS)}")
    if len(dev) < 2:
        raise ValueError(f"{dev_name}: fewer than 2 usable records to tune on")
    for s in scorers:
        if on_phase:
            on_phase(f"scoring {sum(len(r.hypotheses) for r in dev)} dev hypotheses with {s.name}")
        score_nbest(dev, s, context=context)
    if on_phase:
        on_phase(f"fitting the weights ({method})")
    tuning: dict[str, Any] = {"dev": dev_name, "utterances": len(dev), "normalizer": "whisper", "method": method}
    notes = []
    if method == "learned":
        add_derived(dev)
        feats = list(features) if features else feature_names(dev)
        learned = train_reranker(dev, feats, folds=folds, seed=seed)
        weights, cv, in_sample, settings = learned.weights, learned.cv, None, len(learned.cv_by_c)
        tuning["learned"] = learned.to_dict()
    else:
        result = tune(dev, keys=[f"lm:{s.name}" for s in scorers], folds=folds, seed=seed)
        weights, in_sample, settings = result.weights, result.wer, result.evaluated
        cv = result.cv.comparison if result.cv is not None else None
        tuning["in_sample_wer"] = result.wer
        if result.cv is not None:
            tuning["cv"] = result.cv.to_dict()
    if cv is None:
        notes.append(f"no cross-validation (folds {folds}): the dev figure is in-sample, optimistic")
    comparison = None
    if report is not None:
        for s in scorers:
            score_nbest(report, s, context=context)
        if method == "learned":
            add_derived(report)
        ranker = Ranker(weights)
        for r in report:
            ranker.rank(r)
        comparison = rerank_comparison(report)
        tuning["report"] = {"file": report_name, **comparison.to_dict()}
    config = RerankConfig(weights, [LMSpec(s.name, backend) for s in scorers], context, 0, tuning)
    return TuneOutcome(config, weights, method, in_sample, cv, folds if cv else 0, settings, comparison, notes)
