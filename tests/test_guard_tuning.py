"""Re-deciding stored corrections under other guard thresholds, and tuning them on a training set."""

from __future__ import annotations

from rescore.correct import GuardConfig
from rescore.correct.tuning import corpus_wer, reguard, tune_guards
from rescore.records import Hypothesis, NBest


def _record(rid: str, ref: str, hyps: list[str], output: str) -> NBest:
    r = NBest(id=rid, reference=ref, hypotheses=[Hypothesis(h, [], {"am": -float(i)}) for i, h in enumerate(hyps)])
    r.corrected = output
    r.correction = {"cleaned": output, "accepted": True, "reason": "ok", "output": output}
    return r


def test_reguard_abstains_under_a_tighter_budget() -> None:
    r = _record("a", "the cat sat on the mat", ["the cat sat on the mat"], "the dog sat on a rug")
    loose = reguard(r, GuardConfig(max_edit_ratio=1.0, max_novel_words=None))
    assert loose.corrected == "the dog sat on a rug" and loose.correction["accepted"]
    tight = reguard(r, GuardConfig(max_edit_ratio=0.1, max_novel_words=None))
    assert tight.corrected == "the cat sat on the mat" and not tight.correction["accepted"]
    assert tight.correction["guard_config"]["max_edit_ratio"] == 0.1
    assert r.corrected == "the dog sat on a rug"  # the input record is left as it was


def test_tuning_picks_the_thresholds_that_stop_harmful_edits() -> None:
    # the corrector rewrites freely and is wrong: strict guards win; a tie goes to the stricter setting
    recs = [
        _record(str(i), "one two three four five", ["one two three four five", "one two tree four five"], out)
        for i, out in enumerate(["one two three four", "six seven eight nine ten", "one two three four five"])
    ]
    tuned = tune_guards(recs)
    assert tuned.wer == corpus_wer([reguard(r, tuned.guards) for r in recs])
    assert tuned.guards.max_edit_ratio == 0.0 and tuned.guards.max_novel_words == 0
    assert tuned.wer < corpus_wer(recs) and len(tuned.tried) == 24 and tuned.utterances == 3


def test_tuning_keeps_helpful_edits() -> None:
    # the corrector fixes a two-word error that only a looser budget lets through
    recs = [_record("x", "a b c d e f g h i j", ["a b x y e f g h i j"], "a b c d e f g h i j")]
    tuned = tune_guards(recs)
    assert tuned.wer == 0.0 and tuned.guards.max_edit_ratio >= 0.2
