"""Guard thresholds applied after the fact, and tuned on a held-out training set.

The LLM's raw output is stored in each corrected record, so other guard thresholds can be tried without
asking the LLM again: :func:`reguard` re-decides one record, :func:`tune_guards` picks the thresholds
that give the lowest WER on corrections of a training set (never the set being reported), and those
thresholds then re-decide the reported set's records.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from rescore.correct.guards import GuardConfig, check_output
from rescore.metrics import edit_counts, normalize
from rescore.records import NBest

EDIT_RATIOS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
NOVEL_WORDS = (0, 1, 2, 4)


def reguard(record: NBest, guards: GuardConfig | None, vocab: set[str] | None = None) -> NBest:
    """A copy of a corrected record decided again under ``guards`` from its stored (cleaned) output.

    ``guards=None`` turns the corrector off: every record keeps its reranked text.
    """
    out = copy.deepcopy(record)
    c = out.correction
    if not out.ok or not out.hypotheses or not c or "cleaned" not in c:
        return out
    reranked = out.text("rerank")
    if guards is None:
        out.corrected = reranked
        c.update(accepted=False, reason="corrector off (tuned guards)", changed=False, guard_config=None)
        return out
    truncated = bool(c.get("truncated", str(c.get("reason", "")).startswith("runaway output (hit")))
    texts = [h.text for h in out.hypotheses]
    verdict = check_output(c["cleaned"], texts, reranked, guards, vocab=vocab, truncated=truncated)
    out.corrected = c["cleaned"] if verdict.accepted else reranked
    c.update(accepted=verdict.accepted, reason=verdict.reason, changed=verdict.accepted and verdict.changed)
    c["guard_config"] = asdict(guards)
    return out


@dataclass
class GuardTuning:
    """The chosen thresholds and the WER (errors / reference words) of every setting tried.

    ``guards`` is None when keeping the reranked text everywhere (the corrector off) did best.
    """

    guards: GuardConfig | None
    wer: float
    tried: list[tuple[float | None, int | None, float]]  # (max_edit_ratio, max_novel_words, WER); None: off
    utterances: int


def corpus_wer(records: Sequence[NBest]) -> float:
    refs = [normalize(r.reference or "") for r in records]
    hyps = [normalize(r.corrected if r.corrected is not None else r.text("rerank")) for r in records]
    c = edit_counts(refs, hyps)
    return float(c.errors.sum() / max(c.ref.sum(), 1))


def tune_guards(
    records: Iterable[NBest],
    base: GuardConfig | None = None,
    *,
    vocab: set[str] | None = None,
    edit_ratios: Sequence[float] = EDIT_RATIOS,
    novel_words: Sequence[int] = NOVEL_WORDS,
) -> GuardTuning:
    """Edit budget and novel-word limit with the lowest WER on ``records`` (corrected, with references).

    Turning the corrector off is one of the settings: a corrector that harms the tuning set at every
    threshold is switched off rather than trusted. Ties go to the stricter setting (off first): where the
    corrector neither helps nor harms, the guards should trust it less, not more.
    """
    base = base or GuardConfig()
    recs = [r for r in records if r.ok and r.hypotheses and r.reference is not None and r.correction]
    if not recs:
        raise ValueError("no corrected record with a reference to tune the guards on")
    tried: list[tuple[float | None, int | None, float]] = [(None, None, corpus_wer([reguard(r, None) for r in recs]))]
    for ratio, novel in itertools.product(edit_ratios, novel_words):
        g = replace(base, max_edit_ratio=ratio, max_novel_words=novel)
        tried.append((ratio, novel, corpus_wer([reguard(r, g, vocab) for r in recs])))
    # stable min: the first of equal WERs wins, and the list runs from off through strict to loose
    ratio, novel, wer = min(tried, key=lambda t: round(t[2], 9))
    guards = None if ratio is None else replace(base, max_edit_ratio=ratio, max_novel_words=novel)
    return GuardTuning(guards, wer, tried, len(recs))
