"""A learned reranker: pairwise logistic regression (scikit-learn) over named hypothesis features.

For every utterance with a reference, each pair of hypotheses with different word-error counts is one
training example: the feature difference, labelled by which of the two has fewer errors, weighted by how
many errors apart they are. The fitted model is linear, so it is written as ordinary rerank
:class:`~rescore.rerank.ranker.Weights` (one weight per score key, the word count as the length bonus) and
applied by the same :class:`~rescore.rerank.ranker.Ranker`; only the derived features
(:func:`rescore.rerank.features.add_derived`) have to be added first. The regularisation strength is chosen by
k-fold cross-validation on the training records themselves, so a reported set is never looked at.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from rescore.evaluate.metrics import normalize
from rescore.evaluate.scoring import RerankComparison, rerank_comparison
from rescore.records import NBest
from rescore.rerank.ranker import Ranker, Weights, words

C_GRID = (0.01, 0.1, 1.0, 10.0)


def hypothesis_errors(record: NBest, normalizer: str = "whisper") -> np.ndarray:
    """Word errors of each hypothesis against the record's reference."""
    ref = normalize(record.reference or "", normalizer).split()
    return np.array([Levenshtein.distance(ref, normalize(h.text, normalizer).split()) for h in record.hypotheses])


def feature_matrix(record: NBest, features: Sequence[str]) -> np.ndarray:
    """[hypotheses, features + 1]: the named scores and the word count (last column)."""
    return np.array([[h.scores[f] for f in features] + [words(h.text)] for h in record.hypotheses], dtype=float)


def pairwise_examples(
    records: Sequence[NBest],
    features: Sequence[str],
    normalizer: str = "whisper",
    record_weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature differences of hypothesis pairs, labels (1: the first is better) and weights (the error gap,
    times the record's weight when ``record_weights`` are given)."""
    xs, ys, ws = [], [], []
    for n, r in enumerate(records):
        errors = hypothesis_errors(r, normalizer)
        x = feature_matrix(r, features)
        i, j = np.triu_indices(len(errors), 1)
        keep = errors[i] != errors[j]
        i, j = i[keep], j[keep]
        if not len(i):
            continue
        d = x[i] - x[j]
        label = (errors[i] < errors[j]).astype(int)
        gap = np.abs(errors[i] - errors[j]).astype(float)
        if record_weights is not None:
            gap = gap * record_weights[n]
        xs += [d, -d]
        ys += [label, 1 - label]
        ws += [gap, gap]
    if not xs:
        raise ValueError("no utterance has hypotheses with different error counts: nothing to learn from")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def fit_weights(
    records: Sequence[NBest],
    features: Sequence[str],
    *,
    c: float = 1.0,
    record_weights: Sequence[float] | None = None,
    signs: dict[str, int] | None = None,
    normalizer: str = "whisper",
) -> Weights:
    """Pairwise logistic regression on standardised differences, returned as rerank weights.

    ``signs`` (feature -> +1 or -1; ``words`` for the length bonus) bounds a weight to that sign: a length bonus
    that cannot go negative cannot reward a truncated hypothesis, whatever short utterances taught. With
    ``signs`` the fit is a bounded L-BFGS (scipy) of the same objective as scikit-learn's."""
    x, y, w = pairwise_examples(records, features, normalizer, record_weights=record_weights)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    if signs:
        coef = _bounded_logistic(x / scale, y, w, c, [signs.get(f, 0) for f in [*features, "words"]]) / scale
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, fit_intercept=False, max_iter=2000)
        model.fit(x / scale, y, sample_weight=w)
        coef = model.coef_[0] / scale
    return Weights({f: float(v) for f, v in zip(features, coef[:-1], strict=True)}, float(coef[-1]))


def _bounded_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float, signs: Sequence[int]) -> np.ndarray:
    """argmin_b  C * sum_i w_i log(1 + exp(-s_i x_i.b)) + |b|^2 / 2, each b_k of the sign ``signs[k]`` (0: free)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    s = 2.0 * y - 1.0

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        m = s * (x @ b)
        value = c * float(w @ np.logaddexp(0.0, -m)) + 0.5 * float(b @ b)
        grad = -c * (x.T @ (w * s * expit(-m))) + b
        return value, grad

    bounds = [(0.0, None) if k > 0 else (None, 0.0) if k < 0 else (None, None) for k in signs]
    return minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds).x


def _folds(records: Sequence[NBest], k: int, seed: int) -> list[list[int]]:
    """``k`` folds of record indices; a speaker's records (``extra["speaker"]``, as transcription keeps the
    manifest's) stay in one fold, so a figure is never fitted on the voice it is reported on."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(str(r.extra.get("speaker") or r.id), []).append(i)
    order = list(groups)
    random.Random(seed).shuffle(order)
    if len(order) < k:  # too few speakers to fold by: by utterance
        order, groups = [str(i) for i in range(len(records))], {str(i): [i] for i in range(len(records))}
        random.Random(seed).shuffle(order)
    return [[i for g in order[f::k] for i in groups[g]] for f in range(k)]


def rerank_copy(records: Sequence[NBest], weights: Weights, *, min_length_ratio: float = 0.0) -> list[NBest]:
    """Copies of ``records`` ranked with ``weights`` (the inputs are left as they were)."""
    ranker = Ranker(weights, min_length_ratio=min_length_ratio)
    out = []
    for r in records:
        c = NBest.from_dict(r.to_dict())
        ranker.rank(c)
        out.append(c)
    return out


def errors_of_choice(records: Sequence[NBest], normalizer: str = "whisper", *, first_pass: bool = False) -> int:
    """Word errors of the chosen hypotheses (with ``first_pass``: of each list's first, whatever was chosen)."""
    return int(sum(hypothesis_errors(r, normalizer)[0 if first_pass else r.chosen or 0] for r in records))


@dataclass
class LearnedResult:
    """The weights fitted on all records, the chosen regularisation, and the cross-validated figures."""

    weights: Weights
    features: list[str]
    c: float
    cv: RerankComparison | None = None
    cv_by_c: dict[float, int] = field(default_factory=dict)  # held-out word errors for each C tried

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "pairwise logistic regression (scikit-learn)",
            "features": self.features + ["words"],
            "C": self.c,
            "cv_errors_by_C": {str(k): v for k, v in self.cv_by_c.items()},
            **({"cv": self.cv.to_dict()} if self.cv is not None else {}),
        }


def train_reranker(
    records: Sequence[NBest],
    features: Sequence[str],
    *,
    folds: int = 5,
    seed: int = 0,
    c_grid: Sequence[float] = C_GRID,
) -> LearnedResult:
    """Pick C by k-fold CV on ``records``, fit on all of them, and report the held-out-fold rerank."""
    records = [r for r in records if r.ok and r.hypotheses and r.reference is not None]
    if len(records) < max(2, folds):
        raise ValueError(f"{len(records)} usable records: too few to train and cross-validate on")
    parts = _folds(records, folds, seed) if folds >= 2 else []
    by_c: dict[float, int] = {}
    held_out: dict[float, list[NBest]] = {}
    for c in c_grid if parts else ():
        chosen: list[NBest] = []
        for part in parts:
            test = set(part)
            w = fit_weights([r for i, r in enumerate(records) if i not in test], features, c=c)
            chosen += rerank_copy([records[i] for i in part], w)
        by_c[c] = errors_of_choice(chosen)
        held_out[c] = chosen
    best_c = min(by_c, key=lambda c: (by_c[c], c_grid.index(c))) if by_c else 1.0  # ties: the stronger prior
    cv = rerank_comparison(held_out[best_c]) if held_out else None
    return LearnedResult(fit_weights(records, features, c=best_c), list(features), best_c, cv, by_c)
