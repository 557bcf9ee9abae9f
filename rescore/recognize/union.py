"""N-best union (system combination): several recognizers' lists of the same utterances merged into one.

Records are merged per id, in the first list's order (ids only some systems have come after, in their
own list's order, and say which systems they lack). Hypotheses that are equal under a normalizer (the
Whisper normalizer by default) become one hypothesis:

- its ``text`` and ``tokens`` are the written form with the best ``am_norm`` among the proposals (each
  scored by the system that proposed it), so punctuation and case come from the most confident system;
- ``rank:<system>`` is its 0-based position in that system's list (absent: the system did not propose it),
  and ``am:<system>``, ``am_tokens:<system>``, ``am_norm:<system>`` are that system's own recognizer scores
  for its own written form of it (the best one, when the system proposed several forms). With the
  model's name as the system name (the default), these are the keys ``rescore ascore`` fills in by
  teacher forcing for the hypotheses a model did not propose;
- the unqualified ``am``, ``am_tokens`` and ``am_norm`` (and every other score, such as ``lm:*``) are those
  of the kept written form, i.e. of the system whose form was kept. They are therefore defined for every
  hypothesis and ``rescore rerank`` with its default weights works on a union (it ranks by the proposing
  system's per-token score: a mixture of models, so prefer the qualified keys in a tuned reranker). A
  previous ranking's ``total`` is dropped, as are ``chosen`` and ``corrected``: they describe one system's
  list, not the union.

``record.extra["union"]`` says where everything came from: the systems, those missing or failed for this
id, and per hypothesis the systems that proposed it, whose form was kept and the other forms folded into
it (system, rank, text, scores), so that no hypothesis and no score of any input is lost.

The merged list is ordered by the best rank any system gave a hypothesis (ties: the system order), so
hypothesis 0 is the first system's 1-best and the union's first pass is the first system's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rescore.evaluate.metrics import normalize, oracle_curve
from rescore.records import Hypothesis, NBest, Window

UNION_KEY = "union"  # record.extra[UNION_KEY]: provenance of a merged record
RECOGNIZER_KEYS = ("am", "am_tokens", "am_norm")  # the recognizer's own scores, qualified per system
DROPPED_KEYS = ("total",)  # a previous ranking's output: meaningless on the union
WINDOW_TOLERANCE = 0.05  # seconds: windows of two systems coincide when their bounds are this close


class MergeError(ValueError):
    """Inputs that cannot be merged (disagreeing references, a repeated id, bad system names)."""


def system_key(key: str, system: str) -> str:
    """The system-qualified name of a recognizer score: ``am:whisper-base``."""
    return f"{key}:{system}"


def rank_key(system: str) -> str:
    return f"rank:{system}"


def system_name(records: Iterable[NBest], fallback: str) -> str:
    """A system's default name: the model its records were made with, else ``fallback``."""
    for r in records:
        model = r.recognizer.get("model") if r.ok else None
        if isinstance(model, str) and model:
            return model
    return fallback


@dataclass
class _Proposal:
    system: int  # index into the systems
    rank: int
    hyp: Hypothesis

    def key(self) -> tuple[float, int, int]:
        """Higher is better: the system's own per-token score, then the earlier system and rank."""
        am = self.hyp.scores.get("am_norm")
        return (float(am) if am is not None else float("-inf"), -self.system, -self.rank)


def merge_hypotheses(
    lists: Sequence[Sequence[Hypothesis] | None], names: Sequence[str], normalizer: str = "whisper"
) -> tuple[list[Hypothesis], list[dict[str, Any]]]:
    """Union of several systems' n-best lists (``None``: the system has no list) and each hypothesis'
    provenance (``{"systems", "form", "variants"}``), merged under ``normalizer``."""
    groups: dict[str, list[_Proposal]] = {}
    for si, hyps in enumerate(lists):
        for rank, h in enumerate(hyps or []):
            groups.setdefault(normalize(h.text, normalizer), []).append(_Proposal(si, rank, h))

    def order(props: list[_Proposal]) -> tuple[int, int]:
        best = min(props, key=lambda p: (p.rank, p.system))
        return (best.rank, best.system)

    merged: list[Hypothesis] = []
    provenance: list[dict[str, Any]] = []
    for props in sorted(groups.values(), key=order):
        form = max(props, key=_Proposal.key)
        scores = {k: v for k, v in form.hyp.scores.items() if k not in DROPPED_KEYS}
        systems: list[str] = []
        for si in sorted({p.system for p in props}):
            own = max((p for p in props if p.system == si), key=_Proposal.key)  # its best form of it
            name = names[si]
            systems.append(name)
            scores[rank_key(name)] = min(p.rank for p in props if p.system == si)
            for k in RECOGNIZER_KEYS:
                if k in own.hyp.scores:
                    scores[system_key(k, name)] = own.hyp.scores[k]
        merged.append(Hypothesis(form.hyp.text, list(form.hyp.tokens), scores))
        variants = [
            {"system": names[p.system], "rank": p.rank, "text": p.hyp.text, "scores": dict(p.hyp.scores)}
            for p in props
            if p is not form
        ]
        provenance.append({"systems": systems, "form": names[form.system], "variants": variants})
    return merged, provenance


def _same_reference(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _windows_coincide(lists: Sequence[list[Window]]) -> bool:
    first = lists[0]
    return all(
        len(ws) == len(first)
        and all(
            abs(w.start - f.start) <= WINDOW_TOLERANCE and abs(w.end - f.end) <= WINDOW_TOLERANCE
            for w, f in zip(ws, first, strict=True)
        )
        for ws in lists[1:]
    )


def merge_record(records: Sequence[NBest | None], names: Sequence[str], normalizer: str = "whisper") -> NBest:
    """One utterance's records from each system (``None``: the system lacks it) merged into one."""
    present = [(s, r) for s, r in zip(names, records, strict=True) if r is not None]
    if not present:
        raise MergeError("no record to merge")
    rid = present[0][1].id
    refs = [(s, r.reference) for s, r in present if r.reference is not None]
    for s, ref in refs[1:]:
        if not _same_reference(ref, refs[0][1]):
            raise MergeError(
                f"{rid}: the references disagree between systems {refs[0][0]} ({refs[0][1]!r}) and {s} ({ref!r})"
            )
    ok = [(s, r) for s, r in present if r.ok]
    base = ok[0][1] if ok else present[0][1]
    union: dict[str, Any] = {
        "systems": list(names),
        "missing": [s for s, r in zip(names, records, strict=True) if r is None],
        "failed": {s: r.error for s, r in present if not r.ok},
    }
    rec = NBest(
        id=rid,
        audio=base.audio,
        duration=base.duration,
        reference=refs[0][1] if refs else None,
        recognizer={
            "backend": "union",
            "model": "+".join(names),
            "normalizer": normalizer,
            "systems": [{"name": s, **r.recognizer} for s, r in present],
        },
        extra={k: v for k, v in base.extra.items() if k != UNION_KEY},
    )
    others = {s: r.extra for s, r in ok[1:] if r.extra}
    if others:
        union["extra"] = others  # the other systems' record notes (no_speech ...)
    timings = {s: float(r.timing.get("transcribe", 0.0)) for s, r in present if "transcribe" in r.timing}
    if timings:
        rec.timing = {"transcribe": round(sum(timings.values()), 4)}
        rec.timing.update({f"transcribe:{s}": t for s, t in timings.items()})
    dropped = sorted({k for _, r in present for k in ("chosen", "corrected") if getattr(r, k) is not None})
    if dropped:
        union["dropped"] = dropped
    if not ok:
        rec.error = "; ".join(f"{s}: {r.error}" for s, r in present)
        rec.extra[UNION_KEY] = union
        return rec
    by_system: list[NBest | None] = [r if r is not None and r.ok else None for r in records]
    rec.hypotheses, union["hypotheses"] = merge_hypotheses(
        [r.hypotheses if r is not None else None for r in by_system], names, normalizer
    )
    window_lists = [r.windows for _, r in ok]
    if any(window_lists):
        if all(window_lists) and _windows_coincide(window_lists):
            union["windows"] = []
            for k, first in enumerate(ok[0][1].windows):
                hyps, prov = merge_hypotheses(
                    [r.windows[k].hypotheses if r is not None else None for r in by_system], names, normalizer
                )
                rec.windows.append(Window(first.start, first.end, hyps))
                union["windows"].append(prov)
        else:
            union["windows_dropped"] = "the systems' long-form windows differ, so they were not merged"
    rec.extra[UNION_KEY] = union
    return rec


def merge_records(
    lists: Sequence[Iterable[NBest]], names: Sequence[str] | None = None, *, normalizer: str = "whisper"
) -> list[NBest]:
    """The union of several systems' n-best records of the same utterances (see the module docstring).

    ``names`` default to each list's model (:func:`system_name`), else ``system1``, ``system2`` ...; they
    must be distinct. An id twice in one list, or references that disagree for an id: :class:`MergeError`
    naming the id.
    """
    per_system = [list(records) for records in lists]
    if names is None:
        names = [system_name(rs, f"system{i + 1}") for i, rs in enumerate(per_system)]
    names = list(names)
    if len(names) != len(per_system):
        raise MergeError(f"{len(names)} system names for {len(per_system)} lists")
    if len(set(names)) != len(names) or not all(names):
        raise MergeError(f"the system names must be distinct and non-empty: {', '.join(names)}")
    if any(":" in n for n in names):
        raise MergeError(f"a system name cannot contain ':' (it qualifies score keys): {', '.join(names)}")
    index: list[dict[str, NBest]] = []
    order: list[str] = []
    seen: set[str] = set()
    for name, records in zip(names, per_system, strict=True):
        by_id: dict[str, NBest] = {}
        for r in records:
            if r.id in by_id:
                raise MergeError(f"{r.id}: twice in the records of system {name}")
            by_id[r.id] = r
            if r.id not in seen:
                seen.add(r.id)
                order.append(r.id)
        index.append(by_id)
    return [merge_record([by_id.get(rid) for by_id in index], names, normalizer) for rid in order]


# ------------------------------------------------------------------------------------------ the oracle


def system_list(record: NBest, system: str) -> list[Hypothesis]:
    """A system's own n-best list recovered from a merged record (its hypotheses in its rank order); under
    the merge normalizer it is the list that system produced."""
    ranked = [h for h in record.hypotheses if rank_key(system) in h.scores]
    return sorted(ranked, key=lambda h: h.scores[rank_key(system)])


@dataclass
class UnionOracle:
    """1-best and n-best oracle WER of each system and of their union, on the same utterances."""

    utterances: int  # merged records with a reference that every system has
    excluded: int  # records left out: failed, without a reference, or missing from some system
    systems: list[str]
    one_best: dict[str, float]
    oracle: dict[str, float]  # each system's own n-best oracle
    size: dict[str, float]  # mean list length of each system
    union_oracle: float
    union_size: float  # mean number of hypotheses in the union
    normalizer: str = "whisper"
    proposed_by_all: float = field(default=0.0)  # mean share of union hypotheses that every system proposed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def union_oracle(records: Sequence[NBest], normalizer: str = "whisper") -> UnionOracle:
    """The oracle WER of a merged file against each system's own oracle (and their 1-best WERs).

    Only records that every system has, with a reference, are counted, so the figures compare the same
    utterances. ValueError when none is a merged record.
    """
    merged = [r for r in records if UNION_KEY in r.extra]
    if not merged:
        raise ValueError("no merged record (from `rescore merge` or `transcribe --model A --model B`)")
    systems = list(merged[0].extra[UNION_KEY]["systems"])
    use = [
        r
        for r in merged
        if r.ok
        and r.reference is not None
        and not r.extra[UNION_KEY].get("missing")
        and not r.extra[UNION_KEY].get("failed")
    ]
    refs = [r.reference or "" for r in use]
    lists = {s: [[h.text for h in system_list(r, s)] for r in use] for s in systems}

    def mean(xs: Sequence[float]) -> float:
        return float(sum(xs) / len(xs)) if xs else float("nan")

    def oracle(nbests: list[list[str]], k: int | None = None) -> float:
        curve = oracle_curve(refs, [n[:k] if k else n for n in nbests], normalizer)
        return curve[-1] if curve else float("nan")

    everyone = [
        sum(1 for p in r.extra[UNION_KEY]["hypotheses"] if len(p["systems"]) == len(systems)) / len(r.hypotheses)
        for r in use
        if r.hypotheses
    ]
    return UnionOracle(
        utterances=len(use),
        excluded=len(records) - len(use),
        systems=systems,
        one_best={s: oracle(lists[s], 1) for s in systems},
        oracle={s: oracle(lists[s]) for s in systems},
        size={s: mean([len(n) for n in lists[s]]) for s in systems},
        union_oracle=oracle([[h.text for h in r.hypotheses] for r in use]),
        union_size=mean([len(r.hypotheses) for r in use]),
        normalizer=normalizer,
        proposed_by_all=mean(everyone),
    )


# ------------------------------------------------------------------------------ recognition, as a union


def distinct_hypotheses(
    hyps: Sequence[Hypothesis], n: int, normalizer: str = "whisper"
) -> tuple[list[Hypothesis], int]:
    """The first ``n`` hypotheses that differ after normalisation (the first of each class kept, so with a
    best-first list the best-scored written form), and how many of ``hyps`` were read to find them."""
    kept: list[Hypothesis] = []
    seen: set[str] = set()
    read = 0
    for h in hyps:
        if len(kept) >= n:
            break
        read += 1
        key = normalize(h.text, normalizer)
        if key not in seen:
            seen.add(key)
            kept.append(h)
    return kept, read


class UnionRecognizer:
    """Several recognizers over the same utterances, their records merged (:func:`merge_records`).

    Each recognizer decodes the whole batch in turn (each keeps its own batching), so its timing is its
    own; ``names`` default to the models.

    ``scorers`` (one per recognizer, e.g. a :class:`rescore.score.acoustic.WhisperScorer` of the same model files,
    sharing its CTranslate2 model): every hypothesis of the union is scored with every model as it goes
    (``am:<model>``, ``am_tokens:<model>``, as the ascore stage writes them) against the encoder output that
    model's first pass computed for the same window, so that each model's encoder runs once per 30 s window
    for decoding and scoring together. The recognizers must then take ``on_encoder_output`` (the CTranslate2
    Whisper backend does); the encoder output is kept for ``chunk`` utterances at a time (default: the
    largest batch size of the recognizers), and the scoring time is added to the records' ``transcribe``
    timing and named ``ascore:<model>``.
    """

    def __init__(
        self,
        recognizers: Sequence[Any],
        names: Sequence[str] | None = None,
        *,
        scorers: Sequence[Any] | None = None,
        chunk: int | None = None,
    ) -> None:
        if len(recognizers) < 2:
            raise ValueError("a union needs at least two recognizers")
        self.recognizers = list(recognizers)
        self.names = list(names) if names is not None else [str(r.info.get("model")) for r in self.recognizers]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"the systems of a union must be distinct: {', '.join(self.names)}")
        self.scorers = list(scorers) if scorers is not None else None
        if self.scorers is not None and len(self.scorers) != len(self.recognizers):
            raise ValueError(f"{len(self.scorers)} scorers for {len(self.recognizers)} recognizers")
        self.chunk = chunk or max(int(getattr(r, "batch_size", 8)) for r in self.recognizers)
        self.info: dict[str, Any] = {
            "backend": "union",
            "model": "+".join(self.names),
            "systems": [{"name": s, **r.info} for s, r in zip(self.names, self.recognizers, strict=True)],
        }
        if self.scorers is not None:
            self.info["ascore"] = True

    def recognize(self, utterances: Iterable[Any]) -> Iterator[NBest]:
        utts = list(utterances)
        if self.scorers is None:
            lists = [list(r.recognize(utts)) for r in self.recognizers]
            yield from merge_records(lists, self.names)
            return
        for i in range(0, len(utts), self.chunk):
            yield from self._recognize_and_score(utts[i : i + self.chunk])

    def _recognize_and_score(self, utts: list[Any]) -> list[NBest]:
        assert self.scorers is not None
        lists: list[list[NBest]] = []
        kept: list[dict[str, dict[int, Any]]] = []  # per system: record id -> window -> encoder output
        for r in self.recognizers:
            memory: dict[str, dict[int, Any]] = {}

            def keep(rec: NBest, window: int, m: Any, memory: dict[str, dict[int, Any]] = memory) -> None:
                memory.setdefault(rec.id, {})[window] = m

            lists.append(list(r.recognize(utts, on_encoder_output=keep)))
            kept.append(memory)
        merged = merge_records(lists, self.names)
        for name, scorer, memory in zip(self.names, self.scorers, kept, strict=True):
            t0 = time.perf_counter()  # failed records pass the scorer unchanged
            merged = scorer.score(
                merged, [[m[k] for k in sorted(m)] if (m := memory.get(r.id)) else None for r in merged]
            )
            memory.clear()
            live = [r for r in merged if r.ok]
            per_record = (time.perf_counter() - t0) / max(len(live), 1)
            for r in live:
                r.timing[f"ascore:{name}"] = round(per_record, 4)
                r.timing["transcribe"] = round(float(r.timing.get("transcribe", 0.0)) + per_record, 4)
        return merged
