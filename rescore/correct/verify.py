"""Acoustic verification: the corrector's answer is one more candidate, and the reranker decides.

The text-level guards let through one-word edits that are close to some hypothesis ("drained of men" ->
"drained of man", "tales" -> "tails"): they never ask the audio. Here the proposal is scored like every
hypothesis was before the reranker chose (teacher-forced through each acoustic model the weights use, and
by each LM), the list's own features (``am_norm:*``, ``mbr:*``, ``rank:*``) are recomputed with it in the
list, and the same weights compare it with the reranked choice. An edit the audio does not support loses.

A record without audio (an imported text-only list) cannot be verified: the guards alone decide and the
verdict says so (``checked`` false).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from rescore.correct.tuning import abstain_text
from rescore.records import Hypothesis, NBest
from rescore.rerank.features import add_derived
from rescore.rerank.ranker import AM_KEYS, CONTEXT_KEY, Ranker, Weights, default_weights
from rescore.score import LMScorer
from rescore.score.acoustic import ISSUES_KEY

OWN_KEYS = {"am", "am_norm", "am_tokens"}  # the recognizer's own beam scores
ACOUSTIC_PREFIXES = ("am:", "am_norm:", "mbr:")  # per-model keys: teacher-forced through that model
DERIVED_FROM_LIST = ("rank:",)  # filled in for a text no system proposed (features.add_derived)


class AcousticScorer(Protocol):
    """What verification needs of :class:`rescore.score.acoustic.WhisperScorer`."""

    am_key: str
    tokens_key: str

    def score(self, records: list[NBest]) -> list[NBest]: ...


@dataclass
class Verdict:
    """The outcome for one proposal. ``checked`` false: it could not be verified (``reason`` says why)."""

    checked: bool
    taken: bool
    reason: str
    weights: str = ""
    proposal_total: float | None = None
    rival_total: float | None = None
    proposal_scores: dict[str, float] = field(default_factory=dict)
    scored_text: str | None = None  # what was scored: the reranked text with the proposal's word edits

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("proposal_total", "rival_total"):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        d["proposal_scores"] = {k: round(v, 4) for k, v in self.proposal_scores.items()}
        return d


class VerificationUnavailable(Exception):
    """The proposal cannot be scored on the scale of the weights (the message says why)."""


def record_weights(record: NBest) -> tuple[Weights, float]:
    """The weights (and truncation guard) the rerank stage chose this record's text with.

    A record that was never reranked is judged by the recognizer's own per-token score and the default
    length bonus: the correction must then be what the recognizer itself prefers.
    """
    info = record.extra.get("rerank") or {}
    scores = info.get("weight_scores")
    if isinstance(scores, dict) and scores:
        w = Weights({str(k): float(v) for k, v in scores.items()}, float(info.get("length_bonus", 0.0)))
        return w, float(info.get("min_length_ratio", 0.0))
    am = next((k for k in AM_KEYS if record.hypotheses and k in record.hypotheses[0].scores), "am_norm")
    return default_weights([], am=am), 0.0


def word_edits_only(reranked: str, proposal: str, normalizer: str = "whisper") -> str:
    """The reranked text with the proposal's word edits applied and its case/punctuation changes left out.

    Whisper scores "The" at the start of a mid-sentence segment, or an added quote, a nat or two lower than
    what it wrote: such changes would drown the evidence about the words (which is all WER counts). Words
    are aligned on their normalized forms; where they agree the reranked spelling is kept.
    """
    from rescore.evaluate.metrics import normalize

    old, new = reranked.split(), proposal.split()
    keys = [[normalize(w, normalizer) for w in ws] for ws in (old, new)]
    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=keys[0], b=keys[1], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        out += old[i1:i2] if op == "equal" else new[j1:j2]
    # a punctuation-only token (normalized to "") the proposal dropped or added is not a word edit
    if [k for k in keys[1] if k] == [k for k in keys[0] if k] and len(out) != len(old):
        return " ".join(old)
    return " ".join(out)


class AudioVerifier:
    """Scores a proposal with the acoustic models and LMs the weights name, then lets the weights decide.

    ``acoustic(model)`` and ``lm(name, backend)`` make (and may cache) scorers: the library does not pick
    backends or devices. ``margin``: how much higher than the reranked choice the proposal's total must be.
    ``weights``: use these instead of each record's own (see :func:`record_weights`).
    """

    def __init__(
        self,
        acoustic: Callable[[str], AcousticScorer],
        lm: Callable[[str, str], LMScorer],
        *,
        margin: float = 0.0,
        weights: Weights | None = None,
        min_length_ratio: float = 0.0,
    ) -> None:
        self.acoustic = acoustic
        self.lm = lm
        self.margin = margin
        self.weights = weights
        self.min_length_ratio = min_length_ratio

    def verify(self, record: NBest, proposal: str) -> Verdict:
        if not record.audio:
            return Verdict(False, True, "no audio (a text-only list): the guards alone decided")
        reranked = record.text("rerank")
        edited = word_edits_only(reranked, proposal)
        if edited == " ".join(reranked.split()):
            return Verdict(False, True, "case and punctuation only: no word for the audio to verify")
        weights, ratio = (self.weights, self.min_length_ratio) if self.weights else record_weights(record)
        try:
            hyps = self._scored_list(record, edited, weights)
        except VerificationUnavailable as e:
            return Verdict(False, False, f"not verified, kept the reranked text: {e}", weights.describe())
        trial = NBest(id=record.id, hypotheses=hyps)
        add_derived([trial])
        Ranker(weights, min_length_ratio=ratio).rank(trial)
        rival = record.chosen or 0
        p_total, r_total = hyps[-1].scores["total"], hyps[rival].scores["total"]
        taken = p_total > r_total + self.margin
        why = "the audio and LMs prefer it" if taken else "the reranked choice scores higher: not supported"
        used = {k: v for k, v in hyps[-1].scores.items() if k in weights.scores or k.startswith("am_tokens")}
        return Verdict(
            True, taken, f"{why} ({p_total - r_total:+.3f})", weights.describe(), p_total, r_total, used, edited
        )

    def _scored_list(self, record: NBest, proposal: str, weights: Weights) -> list[Hypothesis]:
        """Copies of the record's hypotheses with the proposal appended, every key the weights use filled in."""
        hyps = [copy.deepcopy(h) for h in record.hypotheses] + [Hypothesis(proposal)]
        keys = [k for k, w in weights.scores.items() if w]
        if any(k in OWN_KEYS for k in keys):
            self._own_scores(record, hyps)
        models = {k.split(":", 1)[1] for k in keys if k.startswith(ACOUSTIC_PREFIXES)}
        for m in sorted(models):
            self._acoustic_scores(record, hyps, m)
        for k in keys:
            if k.startswith("lm:"):
                self._lm_score(record, hyps[-1], k)
            elif k not in OWN_KEYS and not k.startswith((*ACOUSTIC_PREFIXES, *DERIVED_FROM_LIST, "lm:")):
                raise VerificationUnavailable(f"the weights use {k!r}, which cannot be computed for a new text")
        return hyps

    def _teacher_force(self, record: NBest, hyps: list[Hypothesis], model: str) -> AcousticScorer:
        scorer = self.acoustic(model)
        trial = NBest(
            id=record.id,
            audio=record.audio,
            duration=record.duration,
            recognizer=dict(record.recognizer),
            hypotheses=hyps,
            extra={k: record.extra[k] for k in ("start", "end") if k in record.extra},
        )
        scorer.score([trial])
        missing = [h for h in hyps if scorer.am_key not in h.scores]
        if missing:
            issues = "; ".join(trial.extra.get(ISSUES_KEY) or []) or (trial.extra.get("ascore") or {}).get("skipped")
            raise VerificationUnavailable(f"{model} could not score the text ({issues or 'no score'})")
        return scorer

    def _own_scores(self, record: NBest, hyps: list[Hypothesis]) -> None:
        """``am``/``am_norm`` on one footing: every hypothesis and the proposal teacher-forced through the
        recognizer (its beam scores of the others are not comparable with a forced score of a new text)."""
        model = str(record.recognizer.get("model") or "")
        if not model or record.recognizer.get("backend") not in {"ctranslate2", "openai-whisper"}:
            raise VerificationUnavailable(f"the recognizer ({model or 'unknown'}) is not a Whisper model to score with")
        forced = [Hypothesis(h.text, list(h.tokens)) for h in hyps]
        scorer = self._teacher_force(record, forced, model)
        for h, f in zip(hyps, forced, strict=True):
            am, n = f.scores[scorer.am_key], f.scores[scorer.tokens_key]
            h.scores.update({"am": am, "am_tokens": n, "am_norm": am / n})

    def _acoustic_scores(self, record: NBest, hyps: list[Hypothesis], model: str) -> None:
        """``am:<model>`` for the proposal (the hypotheses already carry theirs; all of them if any lacks it)."""
        todo = hyps if any(f"am:{model}" not in h.scores for h in hyps[:-1]) else hyps[-1:]
        self._teacher_force(record, todo, model)

    def _lm_score(self, record: NBest, hyp: Hypothesis, key: str) -> None:
        info = record.extra.get("rerank") or {}
        scorer = self.lm(key[3:], str(info.get("backend") or "hf"))
        context = (record.extra.get(CONTEXT_KEY) or {}).get(key, "")
        hyp.scores[key] = scorer.score_pairs([(context, hyp.text)])[0].logprob


def after_verification(
    guard: Any, record: NBest, proposal: str, verifier: AudioVerifier | None
) -> tuple[bool, str, Verdict | None]:
    """``(accepted, reason, verdict)`` once the verifier has had its say on what the guards decided (a
    :class:`rescore.correct.guards.GuardResult`): only an accepted word-changing edit is checked, since the
    guards are the cheap first filter; ``verdict`` is None when nothing was checked."""
    if not (guard.accepted and guard.changed and verifier is not None):
        return guard.accepted, guard.reason, None
    checked = verifier.verify(record, proposal)
    if checked.taken:
        return True, guard.reason, checked
    return False, f"verification: {checked.reason}", checked


def checked_proposal(
    source: NBest, proposal: str, guards: Any, verifier: AudioVerifier | None
) -> tuple[str, dict[str, Any]]:
    """Another system's answer for ``source`` (deep fusion's) decided as a correction is: the text guards
    (a :class:`rescore.correct.guards.GuardConfig`) against the source's hypotheses and reranked text, then,
    for an accepted word edit, the verifier (None: the guards alone). Returns the text to stand by (the
    proposal, or the source's own text) and what was decided, for the record's ``correction``."""
    from rescore.correct.guards import check_output

    reranked = source.text("rerank")
    verdict = check_output(proposal, [h.text for h in source.hypotheses], reranked, guards)
    accepted, reason, checked = after_verification(verdict, source, proposal, verifier)
    return (proposal if accepted else source.text()), {
        "proposal": proposal,
        "accepted": accepted,
        "changed": accepted and verdict.changed,
        "reason": reason,
        "guards_accepted": verdict.accepted,
        "verification": checked.to_dict() if checked else None,
    }


def reverify(record: NBest, verifier: AudioVerifier) -> NBest:
    """A copy of a corrected record decided again with verification, from its stored proposal.

    Only a proposal the guards accepted and that changed the text is checked (as :class:`LLMCorrector` does);
    evaluation uses this to compare guards alone with guards plus verification on one correction run.
    """
    out = copy.deepcopy(record)
    c = out.correction
    if not out.ok or not c or not c.get("guards_accepted", c.get("accepted")) or "cleaned" not in c:
        return out
    reranked = out.text("rerank")
    if c["cleaned"] == reranked:
        return out
    checked = verifier.verify(out, c["cleaned"])
    taken = checked.taken
    out.corrected = c["cleaned"] if taken else abstain_text(out, reranked)  # as the corrector abstains
    c.update(
        accepted=taken,
        changed=taken,
        guards_accepted=True,
        verification=checked.to_dict(),
        reason=c.get("reason") if taken else f"verification: {checked.reason}",
    )
    return out
