"""Re-deciding stored corrections under other guard thresholds, and tuning them on a training set."""

from __future__ import annotations

import pytest

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


# ------------------------------------------------------------------ settings stored with the correction


class ScriptedLLM:
    """Stands in for the LLM only (its answer per record is scripted); prompt rendering, cleaning, guards and
    the stored metadata are the corrector's real ones."""

    info = {"backend": "scripted", "model": "scripted"}

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers  # a hypothesis quoted in the prompt -> the answer

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int):
        from rescore.correct.llm import Generation

        user = messages[-1]["content"]
        answer = next(a for key, a in self.answers.items() if f'"{key}"' in user)
        return Generation(answer, len(user.split()), len(answer.split()), 0, False, 0.01)


# (reference, the recognizer's hypothesis, the LLM's answer): two fixes that bring in an entity-list word,
# two harmful edits that bring in a word of no list; each is one word edit, so only the novel-word guard
# tells them apart, and only with the vocabulary
CASES = [
    ("we deploy with kubernetes", "we deploy with cooper", 'Corrected: "we deploy with kubernetes"'),
    ("they test it on jenkins", "they test it on jenkin", "they test it on jenkins"),
    ("the cat sat down", "the cat sat down", "the bat sat down"),
    ("a dog ran off", "a dog ran off", "a fog ran off"),
]


def _corrected_with_vocabulary(tmp_path, guards: GuardConfig):
    from rescore.correct import CorrectorConfig, LLMCorrector
    from rescore.records import read_nbest, write_nbest

    (tmp_path / "entities.txt").write_text("Kubernetes\nJenkins\nTerraform\n")
    cfg = CorrectorConfig(entities=str(tmp_path / "entities.txt"), guards=guards)
    corrector = LLMCorrector(cfg, llm=ScriptedLLM({hyp: out for _, hyp, out in CASES}))
    recs = [
        corrector.correct(NBest(id=f"u{i}", reference=ref, hypotheses=[Hypothesis(hyp, [], {"am": -1.0})]))
        for i, (ref, hyp, _) in enumerate(CASES)
    ]
    write_nbest(tmp_path / "corrected.jsonl", recs)
    return cfg, corrector, recs, list(read_nbest(tmp_path / "corrected.jsonl"))


def test_corrections_store_the_guard_settings_and_the_vocabulary_they_used(tmp_path) -> None:
    from rescore.correct.tuning import recorded_guards

    guards = GuardConfig(min_edit_budget=2, max_length_ratio=3.0, max_novel_words=0)
    _, _, recs, stored = _corrected_with_vocabulary(tmp_path, guards)
    fix, _, harm, _ = stored
    assert recorded_guards(fix) == guards and fix.correction["vocabulary_size"] == 3
    assert fix.correction["guard_vocabulary"] == ["kubernetes"] and harm.correction["guard_vocabulary"] == []
    assert fix.correction["cleaned"] == "we deploy with kubernetes" and fix.correction["accepted"]
    assert not harm.correction["accepted"]
    for before, after in zip(recs, stored, strict=True):  # the file alone re-decides as the corrector did
        again = reguard(after, recorded_guards(after))
        assert (again.corrected, again.correction["reason"]) == (before.corrected, before.correction["reason"])
    assert not reguard(fix, guards, vocab=set()).correction["accepted"]  # an explicit vocabulary overrides


def test_tune_guards_on_a_corrected_file_chooses_as_the_benchmark_does(tmp_path) -> None:
    from dataclasses import replace

    from typer.testing import CliRunner

    from rescore.cli import app

    cfg, corrector, recs, stored = _corrected_with_vocabulary(tmp_path, GuardConfig(min_edit_budget=2))
    bench = tune_guards(recs, cfg.guards, vocab=corrector.vocab)  # what eval/bench_correct.py --tune-guards does
    from_file = tune_guards(stored)  # what `rescore correct tune-guards FILE` does: nothing but the records
    assert from_file.guards == bench.guards and from_file.tried == bench.tried and from_file.wer == bench.wer
    assert bench.guards == replace(cfg.guards, max_edit_ratio=0.0, max_novel_words=0) and bench.wer == 0.0
    # without the vocabulary the fixes look like the harmful edits and the corrector goes off: the choice
    # above depends on the vocabulary having been read back
    assert tune_guards(stored, vocab=set()).guards is None
    res = CliRunner().invoke(app, ["correct", "tune-guards", str(tmp_path / "corrected.jsonl")])
    assert res.exit_code == 0, res.output
    assert "chosen: max_edit_ratio 0.0, max_novel_words 0 (0.00 %" in res.output


def test_reguard_keeps_what_it_cannot_change_and_refuses_mixed_settings() -> None:
    from rescore.correct.tuning import recorded_guards

    r = _record("a", "a b c", ["a b c"], "a b d")
    r.correction.update(output='Answer: "a b d"', guard_config={**vars(GuardConfig(quote=False)), "future": 1})
    assert recorded_guards(r) == GuardConfig(quote=False)  # keys of newer versions are ignored
    again = reguard(r, GuardConfig(quote=True, clean=False, max_novel_words=None))
    assert again.correction["guard_config"]["quote"] is False  # it shaped the prompt: stays as recorded
    assert again.correction["cleaned"] == 'Answer: "a b d"'  # another `clean`: re-derived from the raw output
    off = reguard(r, None)
    assert off.correction["guard_config"] is None and recorded_guards(off) == GuardConfig(quote=False)
    other = _record("b", "a b c", ["a b c"], "a b c")
    with pytest.raises(ValueError, match="different guard settings"):
        tune_guards([r, other])
    assert tune_guards([r, other], GuardConfig()).utterances == 2  # explicit settings override


def test_guard_config_refuses_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="max_edit_ratio -1"):
        GuardConfig(max_edit_ratio=-1)
    with pytest.raises(ValueError, match="max_novel_words 0.5"):
        GuardConfig(max_novel_words=0.5)  # type: ignore[arg-type]
    assert GuardConfig(max_edit_ratio=None, max_novel_words=None).max_edit_ratio is None
