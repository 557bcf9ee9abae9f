"""Rerank weights tuned on a dev set: a grid, then a pattern-search refinement, minimising corpus WER;
``cross_validate`` reports what the weights are worth on utterances they were not tuned on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rescore.evaluate.metrics import edit_counts, normalize
from rescore.evaluate.scoring import RerankComparison, rerank_comparison
from rescore.records import NBest
from rescore.rerank.ranker import (
    LENGTH_GRID,
    LM_GRID,
    RANK_KEY,
    RANK_WEIGHT,
    MissingScoreError,
    Weights,
    lm_key,
    score_nbest,
    words,
)
from rescore.score import LMScorer


@dataclass
class _Problem:
    """Dense arrays for fast search: fixed part of the total, free features, per-hypothesis errors."""

    ids: list[str]
    base: np.ndarray  # [U, K] fixed-weight part of the total (-inf where no hypothesis)
    feats: np.ndarray  # [U, K, F] scores whose weights are searched (LM keys..., words)
    errors: np.ndarray  # [U, K] word errors of each hypothesis (Whisper normalizer)
    ref_len: np.ndarray  # [U]

    def evaluate(self, w: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """Total errors and soft (expected under softmax) errors for each weight row of ``w`` [C, F]."""
        errs, soft = [], []
        for s in range(0, len(w), chunk):
            t = self.base[:, :, None] + np.einsum("ukf,cf->ukc", self.feats, w[s : s + chunk])  # [U, K, C]
            pick = np.argmax(t, axis=1)  # [U, C]
            errs.append(np.take_along_axis(self.errors, pick, axis=1).sum(0))
            z = t - t.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            soft.append((p * self.errors[:, :, None]).sum((0, 1)))
        return np.concatenate(errs), np.concatenate(soft)

    def choose(self, w: np.ndarray) -> np.ndarray:
        return np.argmax(self.base + self.feats @ w, axis=1)

    def subset(self, idx: np.ndarray) -> _Problem:
        return _Problem(
            [self.ids[i] for i in idx], self.base[idx], self.feats[idx], self.errors[idx], self.ref_len[idx]
        )


def _build(records: Sequence[NBest], keys: Sequence[str], fixed: dict[str, float], normalizer: str) -> _Problem:
    recs = [r for r in records if r.ok and r.hypotheses and r.reference is not None]
    if not recs:
        raise ValueError("no record with hypotheses and a reference to tune on")
    k_max = max(len(r.hypotheses) for r in recs)
    u = len(recs)
    base = np.full((u, k_max), -np.inf)
    feats = np.zeros((u, k_max, len(keys) + 1))
    errors = np.zeros((u, k_max))
    for i, r in enumerate(recs):
        for j, h in enumerate(r.hypotheses):
            missing = [k for k in (*fixed, *keys) if k not in h.scores]
            if missing:
                raise MissingScoreError(f"{r.id}: hypothesis {j} has no {', '.join(missing)} score")
            base[i, j] = sum(w * h.scores[k] for k, w in fixed.items())
            feats[i, j] = [*(h.scores[k] for k in keys), words(h.text)]
    refs = [normalize(r.reference or "", normalizer) for r in recs]
    ref_len = np.zeros(u)
    for j in range(k_max):
        hyps = [normalize(r.hypotheses[j].text, normalizer) if j < len(r.hypotheses) else "" for r in recs]
        c = edit_counts(refs, hyps)
        errors[:, j] = c.errors
        ref_len = c.ref.astype(float)
    return _Problem([r.id for r in recs], base, feats, errors, ref_len)


@dataclass
class TunedWeights:
    """The weights found, their in-sample WER and, when asked, the cross-validated comparison."""

    weights: Weights
    wer: float
    evaluated: int
    cv: CVReport | None = None


@dataclass
class CVReport:
    """k-fold cross-validation: every utterance ranked with weights tuned on the other folds."""

    folds: int
    seed: int
    chosen: dict[str, int]
    fold_weights: list[Weights]
    comparison: RerankComparison

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "seed": self.seed,
            "fold_weights": [asdict(w) for w in self.fold_weights],
            **self.comparison.to_dict(),
        }


def _spread(x: np.ndarray, valid: np.ndarray) -> float:
    """Mean within-utterance range of a score: the scale on which its weight matters."""
    hi = np.where(valid, x, -np.inf).max(1)
    lo = np.where(valid, x, np.inf).min(1)
    r = (hi - lo)[valid.sum(1) > 1]
    v = float(r.mean()) if len(r) else 0.0
    return v if v > 1e-9 else 1.0


def _search(
    p: _Problem, lm_grid: Sequence[float], length_grid: Sequence[float], rounds: int = 8, starts: int = 5
) -> tuple[np.ndarray, tuple[float, float], int]:
    """Grid over all free weights, then pattern search (one coordinate at a time, shrinking steps).

    Grids are relative: a weight of 1 makes a feature's typical within-utterance spread equal to that of
    the fixed part (the acoustic score), so the same grid fits summed and per-token scores alike.
    """
    n_lm = p.feats.shape[2] - 1
    valid = np.isfinite(p.base)
    base_spread = _spread(np.where(valid, p.base, 0.0), valid)
    scale = [base_spread / _spread(p.feats[:, :, f], valid) for f in range(n_lm + 1)]
    axes = [np.asarray(lm_grid, float) * scale[f] for f in range(n_lm)]
    axes.append(np.asarray(length_grid, float) * scale[-1])
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    errs, soft = p.evaluate(grid)
    evaluated = len(grid)
    best_w, best_key = grid[0], (np.inf, np.inf)
    for start in np.lexsort((soft, errs))[:starts]:  # refine from the few best grid points
        w, key, n = _refine(p, grid[start].copy(), (float(errs[start]), float(soft[start])), axes, n_lm, rounds)
        evaluated += n
        if key < best_key:
            best_w, best_key = w, key
    return best_w, best_key, evaluated


def _refine(
    p: _Problem, w: np.ndarray, key: tuple[float, float], axes: list[np.ndarray], n_lm: int, rounds: int
) -> tuple[np.ndarray, tuple[float, float], int]:
    """Pattern search: move one weight at a time while it helps, then halve the steps."""
    evaluated = 0
    steps = np.array([0.5 * float(np.min(np.diff(a))) if len(a) > 1 else 0.1 for a in axes])
    for _ in range(rounds):
        improved = True
        while improved:
            improved = False
            cand = []
            for d in range(len(w)):
                for sign in (-1, 1):
                    c = w.copy()
                    c[d] += sign * steps[d]
                    if d < n_lm and c[d] < 0:
                        continue
                    cand.append(c)
            if not cand:
                break
            cand_arr = np.stack(cand)
            e, s = p.evaluate(cand_arr)
            evaluated += len(cand_arr)
            i = int(np.lexsort((s, e))[0])
            if (e[i], s[i]) < key:
                w, key, improved = cand_arr[i], (float(e[i]), float(s[i])), True
        steps /= 2
    return w, key, evaluated


AM_CHOICES = ({"am": 1.0}, {"am_norm": 1.0})
RANK_CHOICE = {RANK_KEY: RANK_WEIGHT}


def _problems(
    records: Sequence[NBest], keys: Sequence[str], fixed: dict[str, float] | None, normalizer: str
) -> list[tuple[dict[str, float], _Problem]]:
    """One search problem per prior to try: ``fixed`` if given, else summed ``am``, ``am_norm`` and ``rank``,
    each where every hypothesis has it (MissingScoreError, about the first, when none is there).

    ``am_norm`` (what the recognizer ranked by) lets the tuner fall back to the recognizer's own choice;
    summed ``am`` with a length bonus is the usual shallow-fusion form; ``rank`` (-1 per list position) is
    the prior of a text-only imported list. The dev set decides.
    """
    choices = [dict(fixed)] if fixed is not None else [dict(c) for c in (*AM_CHOICES, RANK_CHOICE)]
    out = []
    first_error: MissingScoreError | None = None
    for c in choices:
        try:
            out.append((c, _build(records, keys, c, normalizer)))
        except MissingScoreError as e:
            first_error = first_error or e
    if not out:
        assert first_error is not None
        raise first_error
    return out


def _fit(
    problems: list[tuple[dict[str, float], _Problem]],
    idx: np.ndarray | None,
    lm_grid: Sequence[float],
    length_grid: Sequence[float],
) -> tuple[dict[str, float], np.ndarray, int]:
    """The best (fixed part, free weights) over the problems, on the utterances ``idx`` (all if None)."""
    best = None
    evaluated = 0
    for fixed, p in problems:
        w, key, n = _search(p if idx is None else p.subset(idx), lm_grid, length_grid)
        evaluated += n
        if best is None or key[0] < best[0]:  # fewer errors; ties keep the earlier (summed am) form
            best = (key[0], fixed, w)
    assert best is not None
    return best[1], best[2], evaluated


def tune(
    records: Sequence[NBest],
    scorers: Sequence[LMScorer] = (),
    *,
    keys: Sequence[str] | None = None,
    context: str = "",
    fixed: dict[str, float] | None = None,
    normalizer: str = "whisper",
    lm_grid: Sequence[float] = LM_GRID,
    length_grid: Sequence[float] = LENGTH_GRID,
    folds: int = 0,
    seed: int = 0,
) -> TunedWeights:
    """Weights of the LM scores and the length bonus minimising corpus WER on ``records``.

    The LM scores are taken with ``scorers`` (after ``context``) where missing; ``keys`` names score keys
    already in the records instead. ``fixed`` weights are not searched (default: the best of ``am``: 1,
    ``am_norm``: 1 and, for text-only lists, ``rank``: -1, among those the records have). With ``folds`` >= 2
    the result also carries a k-fold cross-validated report.
    """
    for s in scorers:
        score_nbest(records, s, context=context)
    keys = list(keys) if keys is not None else [lm_key(s.name) for s in scorers]
    problems = _problems(records, keys, fixed, normalizer)
    best_fixed, w, evaluated = _fit(problems, None, lm_grid, length_grid)
    p = dict((tuple(f), q) for f, q in problems)[tuple(best_fixed)]
    errs, _ = p.evaluate(w[None])
    weights = _weights(best_fixed, keys, w)
    result = TunedWeights(weights, float(errs[0] / p.ref_len.sum()), evaluated)
    if folds >= 2:
        result.cv = _cross_validate(records, problems, keys, folds, seed, lm_grid, length_grid, normalizer)
    return result


def _weights(fixed: dict[str, float], keys: Sequence[str], w: np.ndarray) -> Weights:
    return Weights(
        {**fixed, **{k: round(float(x), 6) for k, x in zip(keys, w[:-1], strict=True)}}, round(float(w[-1]), 6)
    )


def _cross_validate(
    records: Sequence[NBest],
    problems: list[tuple[dict[str, float], _Problem]],
    keys: Sequence[str],
    folds: int,
    seed: int,
    lm_grid: Sequence[float],
    length_grid: Sequence[float],
    normalizer: str,
) -> CVReport:
    ids = problems[0][1].ids
    by_fixed = {tuple(f): q for f, q in problems}
    u = len(ids)
    folds = min(folds, u)
    order = np.random.default_rng(seed).permutation(u)
    chosen: dict[str, int] = {}
    fold_weights = []
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        fixed, w, _ = _fit(problems, train, lm_grid, length_grid)
        fold_weights.append(_weights(fixed, keys, w))
        picks = by_fixed[tuple(fixed)].subset(test).choose(w)
        chosen.update({ids[i]: int(c) for i, c in zip(test, picks, strict=True)})
    by_id = {r.id: r for r in records}
    held_out = []
    for rid in ids:
        r = by_id[rid]
        held_out.append(NBest(id=r.id, reference=r.reference, hypotheses=r.hypotheses, chosen=chosen[rid]))
    return CVReport(folds, seed, chosen, fold_weights, rerank_comparison(held_out, normalizer=normalizer))


def cross_validate(
    records: Sequence[NBest],
    keys: Sequence[str],
    *,
    folds: int = 5,
    seed: int = 0,
    fixed: dict[str, float] | None = None,
    normalizer: str = "whisper",
) -> CVReport:
    """k-fold cross-validated rerank of records that already carry the ``keys`` scores."""
    problems = _problems(records, keys, fixed, normalizer)
    return _cross_validate(records, problems, keys, folds, seed, LM_GRID, LENGTH_GRID, normalizer)
