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

from rescore.correct.guards import GuardConfig, check_output, clean_output
from rescore.evaluate.metrics import edit_counts, normalize
from rescore.records import NBest

EDIT_RATIOS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
NOVEL_WORDS = (0, 1, 2, 4)


def recorded_guards(record: NBest) -> GuardConfig | None:
    """The guard settings a corrected record was last decided with (None: none stored, e.g. an old file).

    After :func:`reguard` turned the corrector off, the settings before that (``prior_guard_config``).
    """
    c = record.correction or {}
    d = c.get("guard_config") or c.get("prior_guard_config")
    return GuardConfig.from_dict(d) if isinstance(d, dict) else None


def abstain_text(record: NBest, reranked: str) -> str:
    """What the record's template writes when the corrector abstains (see ``PromptTemplate.fallback``)."""
    from rescore.correct.prompts import TemplateError, load_template

    name = (record.correction or {}).get("template")
    try:
        return load_template(name).abstain_text(reranked) if name else reranked
    except (TemplateError, OSError):
        return reranked


def reguard(record: NBest, guards: GuardConfig | None, vocab: set[str] | None = None) -> NBest:
    """A copy of a corrected record decided again under ``guards`` from its stored (cleaned) output.

    ``guards=None`` turns the corrector off: every record keeps its reranked text. ``vocab`` (normalized
    words) defaults to the vocabulary words the record stored when it was corrected (``guard_vocabulary``),
    so the novel-word guard counts as the corrector did; give it to override. ``guards.quote`` is kept as
    recorded (it shaped the prompt, so the output cannot be re-decided without it); a ``clean`` other than
    recorded re-derives the cleaned text from the raw output.
    """
    out = copy.deepcopy(record)
    c = out.correction
    if not out.ok or not out.hypotheses or not c or "cleaned" not in c:
        return out
    reranked = out.text("rerank")
    if guards is None:
        out.corrected = abstain_text(out, reranked)
        if c.get("guard_config") is not None:  # kept, so a later reguard / tune_guards still finds them
            c["prior_guard_config"] = c["guard_config"]
        c.update(accepted=False, reason="corrector off (tuned guards)", changed=False, guard_config=None)
        return out
    recorded = recorded_guards(out) or GuardConfig()
    guards = replace(guards, quote=recorded.quote)
    if guards.clean != recorded.clean and isinstance(c.get("output"), str):
        c["cleaned"] = clean_output(c["output"])[0] if guards.clean else c["output"].strip()
    if vocab is None:
        vocab = set(c.get("guard_vocabulary") or ())
    truncated = bool(c.get("truncated", str(c.get("reason", "")).startswith("runaway output (hit")))
    texts = [h.text for h in out.hypotheses]
    verdict = check_output(c["cleaned"], texts, reranked, guards, vocab=vocab, truncated=truncated)
    out.corrected = c["cleaned"] if verdict.accepted else abstain_text(out, reranked)
    c.update(accepted=verdict.accepted, reason=verdict.reason, changed=verdict.accepted and verdict.changed)
    c["guards_accepted"] = verdict.accepted  # what verification (verify.reverify) starts from
    c["guard_config"] = asdict(guards)
    return out


def _base_guards(records: Sequence[NBest]) -> GuardConfig:
    """The guard settings (thresholds aside) the records were corrected with; they must agree."""
    seen: dict[str, GuardConfig] = {}
    for r in records:
        g = recorded_guards(r) or GuardConfig()
        seen.setdefault(repr(replace(g, max_edit_ratio=None, max_novel_words=None)), g)
    if len(seen) > 1:
        raise ValueError(
            f"the records were corrected under {len(seen)} different guard settings "
            f"({'; '.join(list(seen)[:2])}): tune them separately or give the base settings"
        )
    return next(iter(seen.values()))


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
    corrector neither helps nor harms, the guards should trust it less, not more. ``base`` (the settings
    other than the two thresholds) and ``vocab`` default to what the records were corrected with, so a
    file alone tunes as the corrector that wrote it would (see :func:`reguard`).
    """
    recs = [r for r in records if r.ok and r.hypotheses and r.reference is not None and r.correction]
    if not recs:
        raise ValueError("no corrected record with a reference to tune the guards on")
    base = base or _base_guards(recs)
    tried: list[tuple[float | None, int | None, float]] = [(None, None, corpus_wer([reguard(r, None) for r in recs]))]
    for ratio, novel in itertools.product(edit_ratios, novel_words):
        g = replace(base, max_edit_ratio=ratio, max_novel_words=novel)
        tried.append((ratio, novel, corpus_wer([reguard(r, g, vocab) for r in recs])))
    # stable min: the first of equal WERs wins, and the list runs from off through strict to loose
    ratio, novel, wer = min(tried, key=lambda t: round(t[2], 9))
    guards = None if ratio is None else replace(base, max_edit_ratio=ratio, max_novel_words=novel)
    return GuardTuning(guards, wer, tried, len(recs))
