"""The recognizer protocol, and what every backend shares: long-form n-best combination, batching.

Backends are built by name through :func:`rescore.registry.make_recognizer`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from rescore.records import Hypothesis, NBest, Window


class Recognizer(Protocol):
    """Turns utterances into n-best records, one per utterance, in input order.

    A failed utterance is yielded as a record with ``error`` set: the caller decides what to do, the
    rest of the batch goes on.
    """

    info: dict[str, Any]

    def recognize(self, utterances: Iterable[Any]) -> Iterator[NBest]: ...


def combine_windows(windows: list[Window], nbest: int, rank_key: str = "am_norm") -> list[Hypothesis]:
    """The ``nbest`` best whole-recording hypotheses from per-window n-best lists.

    A whole hypothesis picks one hypothesis per window; its scores are the sums of the picked ones. The
    k best picks under the summed ``rank_key`` are enumerated exactly with a heap (the first is the
    join of every window's best), so each window's alternatives stay available to later stages.
    """
    lists = [w.hypotheses for w in windows if w.hypotheses]
    if not lists:
        return []
    if len(lists) == 1:
        return lists[0][:nbest]

    def total(idx: tuple[int, ...]) -> float:
        return sum(lst[i].scores.get(rank_key, 0.0) for lst, i in zip(lists, idx, strict=True))

    start = (0,) * len(lists)
    heap = [(-total(start), start)]
    seen = {start}
    out: list[Hypothesis] = []
    while heap and len(out) < nbest:
        neg, idx = heapq.heappop(heap)
        picked = [lst[i] for lst, i in zip(lists, idx, strict=True)]
        scores: dict[str, float] = {}
        for h in picked:
            for k, v in h.scores.items():
                scores[k] = scores.get(k, 0.0) + v
        scores[rank_key] = -neg
        text = " ".join(h.text.strip() for h in picked if h.text.strip())
        out.append(Hypothesis(text=text, tokens=[t for h in picked for t in h.tokens], scores=scores))
        for j in range(len(lists)):
            if idx[j] + 1 < len(lists[j]):
                nxt = idx[:j] + (idx[j] + 1,) + idx[j + 1 :]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (-total(nxt), nxt))
    return out


def in_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter): how recognizers batch utterances."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
