"""Shallow fusion on n-best lists: LM scores, a weighted ranker, and weights tuned on a dev set.

A hypothesis's total is ``sum_k(w_k * score_k) + b * words`` over named scores: ``am`` (the recognizer's
summed log-prob, weight 1), one ``lm:<name>`` per language model (weight ``w_i``) and a per-word length
bonus ``b``, which offsets the bias of summed log-probabilities towards short hypotheses. Text-only lists
(imported, no acoustic score) use their own order instead: ``rank`` (the 0-based list position) weighted
-1, a prior the LMs can overrule (:func:`default_weights` with ``am="rank"``). ``tune`` picks
the weights that minimise corpus WER on a dev set (grid, then pattern-search refinement), and
``cross_validate`` reports what those weights are worth on utterances they were not tuned on.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rescore.records import Hypothesis, NBest
from rescore.score import LMLoadError, LMScorer

# Relative grids (see _search): 1 = the feature moves the total as much as the acoustic score does.
LM_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
LENGTH_GRID = tuple(float(x) for x in np.arange(-2.0, 3.01, 0.125))
# The default weights and their provenance (data, command, figures) live in rescore/data/default-weights.json.
_DEFAULTS = json.loads((Path(__file__).resolve().parent.parent / "data" / "default-weights.json").read_text())
DEFAULT_NORM_LM_WEIGHT = _DEFAULTS["am_norm"]["lm_weight"]
DEFAULT_NORM_LENGTH_BONUS = _DEFAULTS["am_norm"]["length_bonus"]
DEFAULT_MIN_LENGTH_RATIO = _DEFAULTS["am_norm"]["min_length_ratio"]  # the truncation guard of the default weights
DEFAULT_SUM_LM_WEIGHT = _DEFAULTS["am"]["lm_weight"]
DEFAULT_SUM_LENGTH_BONUS = _DEFAULTS["am"]["length_bonus"]
AM_KEYS = ("am_norm", "am")  # the acoustic scores default_weights has weights for

# Text-only lists (imported n-best without acoustic scores): the list's own order is the prior. `rank` is the
# 0-based position the importer kept, weighted -1 so that with no other evidence the first hypothesis wins.
RANK_KEY = "rank"
RANK_WEIGHT = _DEFAULTS["rank"]["rank_weight"]
DEFAULT_RANK_LM_WEIGHT = _DEFAULTS["rank"]["lm_weight"]
DEFAULT_RANK_LENGTH_BONUS = _DEFAULTS["rank"]["length_bonus"]
DEFAULT_KEYS = (*AM_KEYS, RANK_KEY)  # the keys default_weights has weights for


def default_weights(lm_keys: Sequence[str], am: str = "am_norm") -> Weights:
    """Weights for `rerank` without a tuned config, for the acoustic score ``am`` (its scale sets theirs).

    ``am_norm``: + 0.016 per LM + 0.05 per word; ``am`` (summed): + 0.1 per LM + 0.4 per word; ``rank``
    (text-only lists, no acoustic score: the list's order as a prior, -1 per position): + 0.176 per LM +
    1.75 per word. Another key has no defaults: ValueError (give the weights, or a config from ``rescore tune``).
    """
    if am == "am_norm":
        return Weights({"am_norm": 1.0, **{k: DEFAULT_NORM_LM_WEIGHT for k in lm_keys}}, DEFAULT_NORM_LENGTH_BONUS)
    if am == "am":
        return Weights({"am": 1.0, **{k: DEFAULT_SUM_LM_WEIGHT for k in lm_keys}}, DEFAULT_SUM_LENGTH_BONUS)
    if am == RANK_KEY:
        return Weights(
            {RANK_KEY: RANK_WEIGHT, **{k: DEFAULT_RANK_LM_WEIGHT for k in lm_keys}}, DEFAULT_RANK_LENGTH_BONUS
        )
    raise ValueError(
        f"no default weights for the acoustic score {am!r} (defaults exist for {' and '.join(AM_KEYS)}, and "
        f"{RANK_KEY} for text-only lists): give the LM weights and the length bonus, or a weights config from "
        "`rescore tune`"
    )


def is_text_only(record: NBest, acoustic: str) -> bool:
    """A record whose hypotheses lack the acoustic score ``acoustic`` but all carry their ``rank``: an
    imported text-only list, for the ``rank`` weights."""
    hyps = record.hypotheses
    return bool(hyps) and any(acoustic not in h.scores for h in hyps) and all(RANK_KEY in h.scores for h in hyps)


CONTEXT_KEY = "lm_context"  # record.extra[CONTEXT_KEY][score key] = the context the LM score was taken after


SKIPPED_KEY = "rerank_skipped"  # record.extra[SKIPPED_KEY]: why the record passed through unreranked


class MissingScoreError(ValueError):
    """A hypothesis lacks a score the weights need (names the record, hypothesis and key)."""


# What one record (its texts, its chunk) can make a scorer or the ranker raise: a missing score, text the
# tokenizer refuses (ValueError), a backend failure such as out-of-memory (RuntimeError), a model that cannot
# load. Recorded on the record so the run goes on; anything else (TypeError, KeyError, ...) is a bug and
# propagates, as do the RuntimeError subclasses that are bugs too.
RECORD_ERRORS: tuple[type[Exception], ...] = (MissingScoreError, LMLoadError, ValueError, RuntimeError)
_BUGS: tuple[type[Exception], ...] = (NotImplementedError, RecursionError)


def lm_key(name: str) -> str:
    return f"lm:{name}"


def words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------------------------------------- scoring


def score_nbest(
    records: Sequence[NBest],
    scorer: LMScorer,
    *,
    context: str = "",
    contexts: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[NBest]:
    """Add ``lm:<scorer.name>`` to every hypothesis: log P(text | context), all records in one batch.

    ``contexts`` gives one context per record (e.g. with previous transcripts) instead of ``context``.
    Scores already taken after the same context are kept unless ``overwrite``. Failed records pass.
    """
    key = lm_key(scorer.name)
    pairs: list[tuple[str, str]] = []
    where: list[tuple[NBest, int]] = []
    for i, r in enumerate(records):
        ctx = contexts[i] if contexts is not None else context
        if not r.ok or not r.hypotheses:
            continue
        done = r.extra.get(CONTEXT_KEY, {}).get(key) == ctx
        for j, h in enumerate(r.hypotheses):
            if overwrite or not done or key not in h.scores:
                pairs.append((ctx, h.text))
                where.append((r, j))
    for (r, j), s in zip(where, scorer.score_pairs(pairs), strict=True):
        r.hypotheses[j].scores[key] = s.logprob
    for i, r in enumerate(records):  # only once every score is in: a failed batch leaves no false claim
        if r.ok and r.hypotheses:
            r.extra.setdefault(CONTEXT_KEY, {})[key] = contexts[i] if contexts is not None else context
    return list(records)


# ---------------------------------------------------------------------------------------------- ranking


@dataclass
class Weights:
    """Weights of named scores plus a per-word length bonus."""

    scores: dict[str, float] = field(default_factory=lambda: {"am": 1.0})
    length_bonus: float = 0.0

    def total(self, scores: dict[str, float], text: str) -> float:
        return sum(w * scores[k] for k, w in self.scores.items() if w) + self.length_bonus * words(text)

    def describe(self) -> str:
        terms = " + ".join(f"{w:g}*{k}" for k, w in self.scores.items())
        return f"{terms} + {self.length_bonus:g}*words"


class Ranker:
    """Sets ``total`` on every hypothesis and ``chosen`` to the best (the earlier one on ties)."""

    def __init__(self, weights: Weights, *, min_length_ratio: float = 0.0) -> None:
        self.weights = weights
        # truncation guard: a hypothesis with fewer words than this share of the recognizer's first one is
        # never chosen (Whisper's n-best holds lists cut after the first sentence of a long utterance)
        self.min_length_ratio = min_length_ratio

    def rank(self, nbest: NBest) -> NBest:
        if not nbest.ok or not nbest.hypotheses:
            return nbest
        totals = []
        shortest = self.min_length_ratio * words(nbest.hypotheses[0].text)
        for j, h in enumerate(nbest.hypotheses):
            missing = [k for k, w in self.weights.scores.items() if w and k not in h.scores]
            if missing:
                raise MissingScoreError(f"{nbest.id}: hypothesis {j} has no {', '.join(missing)} score")
            total = self.weights.total(h.scores, h.text)
            totals.append(total if words(h.text) >= shortest else total - 1e6)
        for h, t in zip(nbest.hypotheses, totals, strict=True):
            h.scores["total"] = t
        nbest.chosen = int(np.argmax(totals))
        return nbest


# ---------------------------------------------------------------------------------------------- config


@dataclass
class LMSpec:
    name: str
    backend: str = "hf"


@dataclass
class RerankConfig:
    """What ``tune`` writes and ``rerank --config`` reads: the LMs, their context and the weights."""

    weights: Weights
    lms: list[LMSpec] = field(default_factory=list)
    context: str = ""
    previous: int = 0
    tuning: dict[str, Any] = field(default_factory=dict)  # provenance and cross-validated figures

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> RerankConfig:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
            w = d["weights"]
            return cls(
                weights=Weights({k: float(v) for k, v in w["scores"].items()}, float(w.get("length_bonus", 0.0))),
                lms=[LMSpec(**x) for x in d.get("lms", [])],
                context=d.get("context", ""),
                previous=int(d.get("previous", 0)),
                tuning=d.get("tuning", {}),
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}: not a rerank config ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------- rerank


def recording_of(record: NBest) -> str:
    """The recording an utterance belongs to: ``extra['recording']``, else its id less the last segment."""
    rec = record.extra.get("recording")
    if isinstance(rec, str) and rec:
        return rec
    parts = re.split(r"[-_]", record.id)
    return record.id[: -len(parts[-1]) - 1] if len(parts) > 1 else record.id


def join_context(prompt: str, previous: Sequence[str]) -> str:
    prev = " ".join(t.strip() for t in previous if t.strip())
    if prompt and prev:
        return f"{prompt.rstrip()}\n{prev}"
    return prompt or prev


def rerank_iter(
    records: Iterable[NBest],
    scorers: Sequence[LMScorer],
    weights: Weights,
    *,
    context: str = "",
    previous: int = 0,
    chunk: int = 32,
    min_length_ratio: float = 0.0,
) -> Iterator[NBest]:
    """Score and rank records, yielding each when done; a per-record failure is set as its ``error``.

    Without ``previous`` records are handled in chunks, in order. With ``previous`` N, the context of an
    utterance includes the N transcripts chosen before it in the same recording (:func:`recording_of`),
    so records go in rounds: the k-th utterance of every recording together, after the (k-1)-th. A long
    recording cut into ``windows`` is reranked window by window, each after the N windows chosen before.
    """
    ranker = Ranker(weights, min_length_ratio=min_length_ratio)
    records = list(records)
    if previous <= 0:
        for start in range(0, len(records), chunk):
            yield from _score_and_rank(records[start : start + chunk], scorers, ranker, [context] * chunk)
        return
    groups: dict[str, list[NBest]] = {}
    for r in records:
        if r.ok and len(r.windows) > 1:  # one long recording cut into windows: condition window by window
            yield _rerank_windows(r, scorers, ranker, context, previous)
            continue
        groups.setdefault(recording_of(r), []).append(r)
    if not groups:
        return
    chosen: dict[str, list[str]] = {g: [] for g in groups}
    for k in range(max(len(g) for g in groups.values())):
        rnd = [(g, rs[k]) for g, rs in groups.items() if k < len(rs)]
        ctxs = [join_context(context, chosen[g][-previous:]) for g, _ in rnd]
        for start in range(0, len(rnd), chunk):
            part = rnd[start : start + chunk]
            done = list(_score_and_rank([r for _, r in part], scorers, ranker, ctxs[start : start + chunk]))
            for (g, _), r in zip(part, done, strict=True):
                chosen[g].append(r.text("rerank") if r.ok else "")
            yield from done


def _rerank_windows(record: NBest, scorers: Sequence[LMScorer], ranker: Ranker, prompt: str, previous: int) -> NBest:
    """Choose in each window of a long recording after the previous N windows' choices; join them.

    The joined choice becomes ``chosen``: an existing whole-recording hypothesis with the same text, or a
    new one appended with the chosen windows' scores summed (as the recognizer combines windows).
    """
    picked: list[Hypothesis] = []
    for k, w in enumerate(record.windows):
        if not w.hypotheses:
            continue
        part = NBest(id=f"{record.id}#window{k}", hypotheses=w.hypotheses)
        ctx = join_context(prompt, [h.text for h in picked][-previous:])
        try:
            _score_and_rank([part], scorers, ranker, [ctx])
        except RECORD_ERRORS as e:  # recorded on the record, the run goes on
            if isinstance(e, _BUGS):
                raise
            part.error = str(e)
        if not part.ok:
            record.error = part.error
            return record
        picked.append(w.hypotheses[part.chosen or 0])
    text = " ".join(h.text.strip() for h in picked if h.text.strip())
    for j, h in enumerate(record.hypotheses):
        if h.text == text:
            record.chosen = j
            return record
    scores: dict[str, float] = {}
    for h in picked:
        for key, v in h.scores.items():
            scores[key] = scores.get(key, 0.0) + v
    record.hypotheses.append(Hypothesis(text, [t for h in picked for t in h.tokens], scores))
    record.chosen = len(record.hypotheses) - 1
    return record


def _score_and_rank(records: list[NBest], scorers: Sequence[LMScorer], ranker: Ranker, contexts: list[str]):
    t0 = time.perf_counter()
    live = [i for i, r in enumerate(records) if r.ok and r.hypotheses]
    try:
        for s in scorers:
            score_nbest([records[i] for i in live], s, contexts=[contexts[i] for i in live])
    except RECORD_ERRORS as e:  # a failing batch is recorded on its records, the run goes on
        if isinstance(e, _BUGS):
            raise
        for i in live:
            records[i].error = f"rerank: LM scoring failed: {type(e).__name__}: {e}"
        live = []
    for i in live:
        try:
            ranker.rank(records[i])
        except MissingScoreError as e:  # input the weights cannot judge: the first pass stands, with the reason
            records[i].chosen = None
            for h in records[i].hypotheses:
                h.scores.pop("total", None)
            records[i].extra[SKIPPED_KEY] = str(e)
    for i in live:  # the chunk's time, shared by its records
        records[i].timing["rerank"] = round((time.perf_counter() - t0) / max(1, len(live)), 4)
    return records
