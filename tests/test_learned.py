"""The learned reranker's logic on constructed lists (the real-model path: eval/bench_rerank.py learned
and test_pipeline's default preset): it finds which score tells the better hypothesis, and the derived
features are what the docstrings say."""

from __future__ import annotations

import random

import pytest

from rescore.records import Hypothesis, NBest
from rescore.rerank.features import add_derived, expected_errors, feature_names
from rescore.rerank.learned import fit_weights, hypothesis_errors, train_reranker


def constructed(n: int = 40, seed: int = 0) -> list[NBest]:
    """The reference is always among the hypotheses; 'good' is higher on it, 'noise' is random."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ref = f"the cat number {i} sat on the mat"
        wrong = [f"the cat number {i} sat on a mat", f"a cat number {i} sat on the hat", f"cat number {i} sat"]
        texts = [*wrong[: rng.randint(1, 3)], ref]
        rng.shuffle(texts)
        hyps = []
        for t in texts:
            good = (2.0 if t == ref else 0.0) + rng.gauss(0, 0.5)
            hyps.append(Hypothesis(t, scores={"good": good, "noise": rng.gauss(0, 1), "am": -len(t) / 10}))
        out.append(NBest(id=f"u{i}", hypotheses=hyps, reference=ref))
    return out


def test_fit_finds_the_informative_score() -> None:
    w = fit_weights(constructed(), ["good", "noise"])
    assert w.scores["good"] > 5 * abs(w.scores["noise"])


def test_cross_validated_training_beats_the_first_hypothesis() -> None:
    result = train_reranker(constructed(60), ["good", "noise"], folds=5)
    assert result.cv is not None and result.cv.after.rate < result.cv.before.rate and result.cv.better > result.cv.worse
    assert set(result.cv_by_c) == {0.01, 0.1, 1.0, 10.0} and result.c in result.cv_by_c
    with pytest.raises(ValueError, match="too few"):
        train_reranker(constructed(3), ["good"], folds=5)


def test_derived_features() -> None:
    r = NBest(
        id="u",
        hypotheses=[
            Hypothesis("a b c", scores={"am:x": -3.0, "am_tokens:x": 4.0, "rank:x": 0.0}),
            Hypothesis("a b d", scores={"am:x": -3.5, "am_tokens:x": 4.0}),
            Hypothesis("z", scores={"am:x": -9.0, "am_tokens:x": 2.0, "rank:x": 1.0}),
        ],
        reference="a b c",
    )
    add_derived([r])
    h = r.hypotheses
    assert h[0].scores["am_norm:x"] == -0.75 and h[1].scores["rank:x"] == 3.0  # not proposed: list length
    assert h[2].scores["mbr:x"] < h[1].scores["mbr:x"] < 0  # the outlier disagrees with the probable ones
    assert "am_tokens:x" not in feature_names([r]) and {"am:x", "am_norm:x", "mbr:x", "rank:x"} <= set(
        feature_names([r])
    )
    assert list(hypothesis_errors(r)) == [0, 1, 3]
    assert expected_errors(["a", "a"], [0.0, 0.0]) == [0.0, 0.0]


@pytest.mark.model
def test_tune_learned_and_rerank_with_the_saved_config(tmp_path) -> None:
    """`rescore tune --method learned` on a dev file, then `rerank --config` applies it (derived features and
    all) with the real smollm2 LM."""
    from typer.testing import CliRunner

    from rescore.cli import app
    from rescore.records import read_nbest, write_nbest
    from rescore.rerank.ranker import RerankConfig

    recs = constructed(30)
    for r in recs:
        for h in r.hypotheses:
            h.scores["am:x"], h.scores["am_tokens:x"] = h.scores["good"] * 3, 5.0
    write_nbest(tmp_path / "dev.jsonl", recs[:20])
    write_nbest(tmp_path / "test.jsonl", recs[20:])
    cfg = tmp_path / "learned.json"
    args = ["tune", str(tmp_path / "dev.jsonl"), "-o", str(cfg), "--method", "learned", "--folds", "4"]
    res = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "test.jsonl")])
    assert res.exit_code == 0, res.output
    tuned = RerankConfig.load(cfg)
    assert tuned.tuning["method"] == "learned" and "mbr:x" in tuned.weights.scores and tuned.tuning["report"]
    res = CliRunner().invoke(
        app, ["rerank", str(tmp_path / "test.jsonl"), "-o", str(tmp_path / "r.jsonl"), "--config", str(cfg)]
    )
    assert res.exit_code == 0, res.output
    out = list(read_nbest(tmp_path / "r.jsonl"))
    assert all("mbr:x" in h.scores and "lm:smollm2-135m" in h.scores for r in out for h in r.hypotheses)
    right = sum(r.text("rerank") == r.reference for r in out)
    assert right > sum(r.text("first-pass") == r.reference for r in out) and right >= 8


def test_truncation_guard_never_picks_a_cut_hypothesis() -> None:
    from rescore.rerank.ranker import Ranker, Weights
    from rescore.stages.rerank import RerankOptions, plan_rerank

    r = NBest(
        id="u",
        hypotheses=[
            Hypothesis("chapter one it was a dark and stormy night", scores={"lm": -60.0}),
            Hypothesis("chapter one", scores={"lm": -12.0}),
            Hypothesis("chapter one it was a dark and stormy knight", scores={"lm": -58.0}),
        ],
    )
    w = Weights({"lm": 1.0}, 0.0)
    assert Ranker(w).rank(NBest.from_dict(r.to_dict())).chosen == 1  # summed LM alone prefers the cut one
    assert Ranker(w, min_length_ratio=0.5).rank(r).chosen == 2
    assert plan_rerank(RerankOptions(weights="shipped")).min_length_ratio == 0.5
    assert plan_rerank(RerankOptions(weights="shipped", min_length_ratio=0.0)).min_length_ratio == 0.0


def test_signs_bound_the_weights_and_record_weights_count() -> None:
    """A feature that misleads on these lists gets a negative weight free, zero when bounded to +; the length
    bonus bounded to + cannot reward the short hypothesis."""
    recs = constructed(60)
    for r in recs:
        for h in r.hypotheses:
            h.scores["misleading"] = -h.scores["good"]
    assert fit_weights(recs, ["misleading"]).scores["misleading"] < 0
    bounded = fit_weights(recs, ["good", "misleading"], signs={"misleading": 1, "words": 1})
    assert bounded.scores["misleading"] == 0.0 and bounded.length_bonus >= 0.0 and bounded.scores["good"] > 0
    # a set weighted 0 teaches nothing: the fit equals the fit on the others alone (but for the standardisation,
    # which sees every pair)
    half = len(recs) // 2
    weighted = fit_weights(recs, ["good", "noise"], record_weights=[1.0] * half + [0.0] * (len(recs) - half))
    alone = fit_weights(recs[:half], ["good", "noise"])
    assert weighted.scores["good"] == pytest.approx(alone.scores["good"], rel=0.02)


def test_first_pass_feature_is_a_margin() -> None:
    from rescore.rerank.features import FIRST_PASS
    from rescore.rerank.learned import rerank_copy
    from rescore.rerank.ranker import Weights

    r = NBest(id="u", hypotheses=[Hypothesis("a b", scores={"s": 1.0}), Hypothesis("a c", scores={"s": 1.4})])
    add_derived([r])
    assert [h.scores[FIRST_PASS] for h in r.hypotheses] == [1.0, 0.0]
    assert rerank_copy([r], Weights({"s": 1.0}))[0].chosen == 1
    assert rerank_copy([r], Weights({"s": 1.0, FIRST_PASS: 0.5}))[0].chosen == 0  # 0.4 better is not enough


def test_cross_validation_folds_hold_a_speaker_out_whole() -> None:
    from rescore.rerank.learned import _folds

    recs = constructed(30)
    for i, r in enumerate(recs):
        r.extra["speaker"] = f"spk{i % 6}"
    folds = _folds(recs, 5, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(30))
    for f in folds:
        speakers = {recs[i].extra["speaker"] for i in f}
        assert all(recs[j].extra["speaker"] not in speakers for g in folds if g is not f for j in g)
    plain = constructed(30)  # no speakers: by utterance, as before
    assert [len(f) for f in _folds(plain, 5, seed=0)] == [6] * 5
