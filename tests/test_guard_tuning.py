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
        _record(str(i), "red green blue cyan pink", ["red green blue cyan pink", "red green glue cyan pink"], out)
        for i, out in enumerate(["red green blue cyan", "cats dogs mice rats owls", "red green blue cyan pink"])
    ]
    tuned = tune_guards(recs)
    assert tuned.wer == corpus_wer([reguard(r, tuned.guards) for r in recs])
    assert tuned.guards is None  # every threshold lets the one-word deletion through: the corrector goes off
    assert tuned.wer == 0.0 and len(tuned.tried) == 25 and tuned.utterances == 3
    off = reguard(recs[1], None)
    assert off.corrected == "red green blue cyan pink" and off.correction["reason"].startswith("corrector off")


def test_tuning_prefers_strict_guards_when_they_help() -> None:
    # a fix of one word (allowed at any budget) and a harmful rewrite (stopped by a strict budget)
    recs = [
        _record("a", "red green blue cyan pink", ["red green glue cyan pink"], "red green blue cyan pink"),
        _record("b", "red green blue cyan pink", ["red green blue cyan pink"], "cats dogs mice rats owls"),
    ]
    tuned = tune_guards(recs)
    # the fix brings one novel word ("blue"): the strictest setting that takes it allows one
    assert tuned.guards is not None and tuned.guards.max_edit_ratio == 0.0 and tuned.guards.max_novel_words == 1
    assert tuned.wer == 0.0


def test_tuning_keeps_helpful_edits() -> None:
    # the corrector fixes a two-word error that only a looser budget lets through
    recs = [_record("x", "a b c d e f g h i j", ["a b x y e f g h i j"], "a b c d e f g h i j")]
    tuned = tune_guards(recs)
    assert tuned.wer == 0.0 and tuned.guards.max_edit_ratio >= 0.2


def test_cli_tune_guards_writes_the_re_decided_file(tmp_path) -> None:
    from typer.testing import CliRunner

    from rescore.cli import app
    from rescore.records import read_nbest, write_nbest

    harmful = [_record(str(i), "red green blue cyan pink", ["red green blue cyan pink"], "cats dogs") for i in range(3)]
    write_nbest(tmp_path / "train.jsonl", harmful)
    write_nbest(tmp_path / "dev.jsonl", [_record("d", "a b c", ["a b c"], "x y z")])
    result = CliRunner().invoke(
        app,
        ["correct", "tune-guards", str(tmp_path / "train.jsonl"), "--apply", str(tmp_path / "dev.jsonl")]
        + ["-o", str(tmp_path / "out.jsonl")],
    )
    assert result.exit_code == 0, result.output
    assert "chosen: the corrector off" in result.output
    (rec,) = read_nbest(tmp_path / "out.jsonl")
    assert rec.corrected == "a b c" and rec.correction["reason"].startswith("corrector off")
    bad = CliRunner().invoke(app, ["correct", "tune-guards", str(tmp_path / "train.jsonl"), "--apply", "x.jsonl"])
    assert bad.exit_code != 0 and "together" in bad.output
