"""Ranker, weights config, tuning and cross-validation logic; the CLI's refusals. Fast: no model runs here
(the fake scorer below only feeds the logic; the real scorers are tested in test_lm.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rescore.cli import app
from rescore.evaluate.scoring import rerank_comparison
from rescore.records import Hypothesis, NBest, read_nbest, write_nbest
from rescore.rerank.grid import cross_validate, tune
from rescore.rerank.ranker import (
    MissingScoreError,
    Ranker,
    RerankConfig,
    Weights,
    recording_of,
    rerank_iter,
    score_nbest,
)
from rescore.score import TextScore

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar".split()  # noqa: SIM905


class CountingScorer:
    """Scores a text by minus its character count; remembers every (context, text) it was asked."""

    name = "fake"
    info: dict = {}

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[TextScore]:
        self.calls.extend(pairs)
        return [TextScore(-float(len(t)), len(t)) for _, t in pairs]

    def score(self, texts: Sequence[str], context: str = "") -> list[float]:
        return [s.logprob for s in self.score_pairs([(context, t) for t in texts])]


def rec(rid: str, texts: list[str], am: list[float], lm: list[float] | None = None, ref: str | None = None) -> NBest:
    hyps = []
    for j, t in enumerate(texts):
        scores = {"am": am[j], "am_tokens": float(len(t.split()) or 1)}
        if lm is not None:
            scores["lm:fake"] = lm[j]
        hyps.append(Hypothesis(t, scores=scores))
    return NBest(id=rid, reference=ref, hypotheses=hyps)


def test_ranker_picks_weighted_best_and_sets_total() -> None:
    r = rec("u1", ["a b", "a b c"], am=[-1.0, -2.0], lm=[-10.0, -11.0])
    Ranker(Weights({"am": 1.0, "lm:fake": 1.0}, 0.0)).rank(r)
    assert r.chosen == 0 and r.hypotheses[0].scores["total"] == pytest.approx(-11.0)
    Ranker(Weights({"am": 1.0, "lm:fake": 1.0}, 2.5)).rank(r)  # the length bonus tips it to the longer one
    assert r.chosen == 1 and r.hypotheses[1].scores["total"] == pytest.approx(-13.0 + 7.5)


def test_ranker_names_record_and_missing_score() -> None:
    r = rec("utt-7", ["a", "b"], am=[-1.0, -2.0])
    with pytest.raises(MissingScoreError, match=r"utt-7: hypothesis 0 has no lm:fake"):
        Ranker(Weights({"am": 1.0, "lm:fake": 0.5})).rank(r)


def test_score_nbest_dedupes_keeps_scores_and_rescores_on_new_context() -> None:
    records = [rec("a-1", ["x y", "x y", "z"], am=[0, 0, 0]), NBest(id="bad", error="decode failed")]
    s = CountingScorer()
    score_nbest(records, s, context="ctx")
    assert [h.scores["lm:fake"] for h in records[0].hypotheses] == [-3.0, -3.0, -1.0]
    assert records[1].hypotheses == [] and records[1].error == "decode failed"
    n = len(s.calls)
    score_nbest(records, s, context="ctx")  # same context: nothing to do
    assert len(s.calls) == n
    score_nbest(records, s, context="other")
    assert len(s.calls) == n + 3 and s.calls[-1] == ("other", "z")


def test_rerank_iter_previous_uses_chosen_transcripts_of_the_same_recording() -> None:
    records = [
        rec("rec1-0001", ["first one", "first"], am=[0.0, -5.0]),
        rec("rec2-0001", ["other", "other two"], am=[0.0, -5.0]),
        rec("rec1-0002", ["second", "second two"], am=[0.0, -5.0]),
        rec("rec1-0003", ["third"], am=[0.0]),
    ]
    s = CountingScorer()
    out = list(rerank_iter(records, [s], Weights({"am": 1.0, "lm:fake": 0.0}), context="P", previous=1))
    assert {r.id for r in out} == {r.id for r in records} and all(r.chosen == 0 for r in out)
    ctx = {t: c for c, t in s.calls}
    assert ctx["first one"] == "P" and ctx["other"] == "P"
    assert ctx["second"] == "P\nfirst one"
    assert ctx["third"] == "P\nsecond"  # only the previous 1
    assert recording_of(records[0]) == "rec1"


def test_rerank_iter_previous_on_long_form_windows() -> None:
    from rescore.records import Window

    w1 = rec("x", ["one", "won"], am=[0.0, -1.0]).hypotheses
    w2 = rec("x", ["two longer", "too"], am=[0.0, -1.0]).hypotheses
    whole = rec("long-1", ["one two longer", "won two longer"], am=[0.0, -1.0])
    whole.windows = [Window(0.0, 30.0, w1), Window(30.0, 60.0, w2)]
    s = CountingScorer()
    # the fake LM prefers short texts: window 2 picks "too", a join absent from the whole-recording list
    (out,) = rerank_iter([whole], [s], Weights({"am": 1.0, "lm:fake": 1.0}), context="P", previous=2)
    assert out.ok and out.text("rerank") == "one too"
    assert out.hypotheses[out.chosen].scores["am"] == pytest.approx(-1.0)  # summed over the chosen windows
    assert ("P\none", "too") in s.calls and ("P", "one") in s.calls


def test_rerank_iter_passes_records_it_cannot_score_through_and_goes_on() -> None:
    """A record the weights cannot judge (a score they need is missing) keeps its first pass, with the reason."""
    from rescore.rerank.ranker import SKIPPED_KEY

    good = rec("g", ["a", "b"], am=[-1.0, 0.0])
    bad = NBest(id="b", hypotheses=[Hypothesis("no scores")])
    out = list(rerank_iter([bad, good], [CountingScorer()], Weights({"am": 1.0, "lm:fake": 0.1})))
    assert out[0].ok and out[0].chosen is None and out[0].text("rerank") == "no scores"
    assert "b: hypothesis 0 has no am" in out[0].extra[SKIPPED_KEY] and "total" not in out[0].hypotheses[0].scores
    assert out[1].ok and out[1].chosen == 1


def constructed(n: int = 120, seed: int = 0, w_true: float = 0.3, b_true: float = 0.8) -> list[NBest]:
    """Utterances whose correct hypothesis is the argmax of am + w_true*lm + b_true*words, by a margin."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        ref = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 9))))
        texts, am, lm = [], [], []
        for _ in range(5):
            t = ref.split()
            op = rng.integers(3)
            if op == 0 and len(t) > 1:
                del t[int(rng.integers(len(t)))]
            elif op == 1:
                t.insert(int(rng.integers(len(t) + 1)), str(rng.choice(WORDS)))
            else:
                t[int(rng.integers(len(t)))] = "zulu"
            texts.append(" ".join(t))
        texts.insert(int(rng.integers(6)), ref)
        for _ in texts:
            a, lm_ = float(rng.normal(-5, 2)), float(rng.normal(-30, 6))
            am.append(a)
            lm.append(lm_)
        totals = [a + w_true * x + b_true * len(t.split()) for a, x, t in zip(am, lm, texts, strict=True)]
        c = texts.index(ref)
        best_other = max(v for j, v in enumerate(totals) if j != c)
        am[c] += best_other - totals[c] + 1.0  # the reference wins under the true weights, by a margin
        records.append(rec(f"s{i}-{i:04d}", texts, am, lm, ref=ref))
    return records


def test_tune_finds_the_known_best_weights() -> None:
    records = constructed()
    result = tune(records, keys=["lm:fake"], folds=4)
    w = result.weights
    assert result.wer == 0.0
    assert w.scores["am"] == 1.0
    # zero errors = inside the region of weights that pick every reference, which holds the true (0.3, 0.8)
    assert 0.2 <= w.scores["lm:fake"] <= 0.4 and 0.3 <= w.length_bonus <= 1.3
    cv = result.cv
    assert cv is not None and cv.folds == 4 and len(cv.chosen) == len(records) and len(cv.fold_weights) == 4
    assert cv.comparison.after.rate < 0.02 < cv.comparison.before.rate
    assert cv.comparison.oracle == 0.0 and cv.comparison.gap_closed > 0.9
    assert cv.comparison.better > 50 and cv.comparison.p_value < 0.01


def test_cross_validate_never_uses_a_fold_it_reports() -> None:
    records = constructed(n=40, seed=1)
    for r in records[:20]:  # half of the set: the true weights differ, a CV figure must show the cost
        for h in r.hypotheses:
            h.scores["lm:fake"] *= -1
    cv = cross_validate(records, ["lm:fake"], folds=5)
    in_sample = tune(records, keys=["lm:fake"])
    assert cv.comparison.after.rate >= in_sample.wer


def test_rerank_comparison_counts() -> None:
    a = rec("a", ["red green blue", "red green blew"], [0, 0], ref="red green blue")
    b = rec("b", ["cat dog", "cat fog"], [0, 0], ref="cat fog")
    c = rec("c", ["seven", "heaven"], [0, 0], ref="seven")
    a.chosen, b.chosen, c.chosen = 1, 1, 0
    cmp = rerank_comparison([a, b, c, NBest(id="x", error="bad")])
    assert cmp.utterances == 3 and (cmp.better, cmp.worse, cmp.unchanged) == (1, 1, 1)
    assert cmp.before.rate == pytest.approx(1 / 6) and cmp.after.rate == pytest.approx(1 / 6)
    assert cmp.oracle == 0.0 and cmp.gap_closed == 0.0


def test_config_round_trip_and_bad_file(tmp_path: Path) -> None:
    from rescore.rerank.ranker import LMSpec

    cfg = RerankConfig(Weights({"am": 1.0, "lm:x": 0.25}, 1.5), [LMSpec("x", "llamacpp")], "ctx é", 2, {"cv": 1})
    cfg.save(tmp_path / "w.json")
    back = RerankConfig.load(tmp_path / "w.json")
    assert back == cfg
    (tmp_path / "bad.json").write_text('{"weights": 3}')
    with pytest.raises(ValueError, match="not a rerank config"):
        RerankConfig.load(tmp_path / "bad.json")


runner = CliRunner()


def test_cli_tune_refuses_to_report_on_tuned_ids(tmp_path: Path) -> None:
    records = constructed(n=10)
    write_nbest(tmp_path / "dev.jsonl", records)
    write_nbest(tmp_path / "test.jsonl", records[5:])
    res = runner.invoke(
        app,
        ["tune", str(tmp_path / "dev.jsonl"), "--report", str(tmp_path / "test.jsonl"), "-o", str(tmp_path / "w.json")],
    )
    assert res.exit_code == 2 and "shares 5 id(s)" in res.output
    assert not (tmp_path / "w.json").exists()


def test_cli_rerank_unloadable_model_loses_nothing(tmp_path: Path) -> None:
    write_nbest(tmp_path / "in.jsonl", constructed(n=3))
    (tmp_path / "out.jsonl").write_text(json.dumps({"id": "kept", "hypotheses": []}) + "\n")
    res = runner.invoke(
        app, ["rerank", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--lm", "no-such-lm"]
    )
    assert res.exit_code == 2 and "no-such-lm" in res.output
    assert [r.id for r in read_nbest(tmp_path / "out.jsonl")] == ["kept"]
    res = runner.invoke(
        app, ["rerank", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--backend", "nope"]
    )
    assert res.exit_code == 2 and "unknown LM backend" in res.output


def test_score_shows_rerank_comparison(tmp_path: Path) -> None:
    records = constructed(n=6)
    for r in records:
        Ranker(Weights({"am": 1.0, "lm:fake": 0.3}, 0.8)).rank(r)
    write_nbest(tmp_path / "r.jsonl", records)
    res = runner.invoke(app, ["score", str(tmp_path / "r.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["rerank"]["after"]["rate"] == 0.0 and d["rerank"]["better"] + d["rerank"]["unchanged"] == 6
    res = runner.invoke(app, ["score", str(tmp_path / "r.jsonl")])
    assert "reranked" in res.output and "better/worse/same" in res.output


def test_two_lms_each_with_its_own_weight() -> None:
    class Other(CountingScorer):
        name = "other"

        def score_pairs(self, pairs):
            return [TextScore(float(len(t)), len(t)) for _, t in pairs]  # prefers long texts

    r = rec("e-1", ["short", "much longer"], am=[0.0, 0.0])
    w = Weights({"am": 1.0, "lm:fake": 1.0, "lm:other": 2.0})
    (out,) = rerank_iter([r], [CountingScorer(), Other()], w)
    h = out.hypotheses[1]
    assert set(h.scores) >= {"lm:fake", "lm:other", "total"} and h.scores["total"] == pytest.approx(-11 + 22)
    assert out.chosen == 1
    records = constructed(n=60)
    for x in records:  # a second, useless LM: the tuner should leave it (nearly) out
        for h in x.hypotheses:
            h.scores["lm:other"] = float(len(h.text) % 3)
    res = tune(records, keys=["lm:fake", "lm:other"], fixed={"am": 1.0})
    assert res.wer == 0.0 and set(res.weights.scores) == {"am", "lm:fake", "lm:other"}


class FailingScorer(CountingScorer):
    """Raises ``error`` on any batch holding a text with "bad" in it, scores like CountingScorer otherwise."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[TextScore]:
        if any("bad" in t for _, t in pairs):
            raise self.error
        return super().score_pairs(pairs)


@pytest.mark.parametrize(
    "error",
    [ValueError("text cannot be tokenized"), RuntimeError("CUDA out of memory"), MissingScoreError("no am")],
)
def test_rerank_iter_records_what_a_record_causes_and_goes_on(error: Exception) -> None:
    from rescore.records import Window

    bad = rec("b-1", ["bad text", "other"], am=[0.0, -1.0])
    good = rec("g-1", ["a", "b c"], am=[-1.0, 0.0])
    long_bad = rec("l-1", ["bad one", "ok one"], am=[0.0, -1.0])
    long_bad.windows = [Window(0.0, 30.0, rec("x", ["bad", "ok"], am=[0.0, -1.0]).hypotheses)] * 2
    w = Weights({"am": 1.0, "lm:fake": 0.1})
    out = list(rerank_iter([bad, good], [FailingScorer(error)], w, chunk=1))
    assert type(error).__name__ in (out[0].error or "") and str(error) in (out[0].error or "")
    assert out[1].ok and out[1].chosen == 1
    (win,) = rerank_iter([long_bad], [FailingScorer(error)], w, previous=1)  # window by window
    assert win.error and str(error) in win.error


@pytest.mark.parametrize(
    "error", [TypeError("bad operand"), AttributeError("no .x"), KeyError("k"), NotImplementedError()]
)
def test_rerank_iter_lets_programming_errors_propagate(error: Exception) -> None:
    from rescore.records import Window

    r = rec("b-1", ["bad text", "other"], am=[0.0, -1.0])
    w = Weights({"am": 1.0, "lm:fake": 0.1})
    with pytest.raises(type(error)):
        list(rerank_iter([r], [FailingScorer(error)], w))
    long_bad = rec("l-1", ["bad one", "ok one"], am=[0.0, -1.0])
    long_bad.windows = [Window(0.0, 30.0, rec("x", ["bad", "ok"], am=[0.0, -1.0]).hypotheses)] * 2
    with pytest.raises(type(error)):
        list(rerank_iter([long_bad], [FailingScorer(error)], w, previous=1))


def test_default_weights_follow_the_acoustic_score_they_add_to() -> None:
    from rescore.rerank.ranker import default_weights

    norm = default_weights(["lm:fake"])
    assert norm.scores == {"am_norm": 1.0, "lm:fake": 0.016} and norm.length_bonus == 0.05  # unchanged
    summed = default_weights(["lm:fake"], am="am")
    assert summed.scores == {"am": 1.0, "lm:fake": 0.1} and summed.length_bonus == 0.4
    # on a summed score the LM and the length bonus must be able to outweigh one more word's log-prob:
    # the per-token weights put on summed am keep the shorter hypothesis, the summed defaults do not
    r = rec("s-1", ["a b c", "a b c d"], am=[-5.0, -6.0], lm=[-30.0, -22.0])
    Ranker(Weights({"am": 1.0, "lm:fake": norm.scores["lm:fake"]}, norm.length_bonus)).rank(r)
    assert r.chosen == 0
    Ranker(summed).rank(r)
    assert r.chosen == 1
    with pytest.raises(ValueError, match="no default weights for the acoustic score 'ctc'.*rescore tune"):
        default_weights(["lm:fake"], am="ctc")
