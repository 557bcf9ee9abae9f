import numpy as np
import pytest

from rescore.evaluate.metrics import (
    bootstrap_ci,
    edit_counts,
    error_rate,
    normalize,
    oracle_curve,
    paired_bootstrap,
    paired_change,
)


def test_counts_match_hand_alignment():
    c = edit_counts(["a b c d", "x y"], ["a x c", "x y z"])
    assert c.sub.tolist() == [1, 0] and c.dele.tolist() == [1, 0] and c.ins.tolist() == [0, 1]
    assert c.ref.tolist() == [4, 2]
    assert c.rate() == pytest.approx(3 / 6)


def test_empty_reference_counts_insertions():
    c = edit_counts(["", "a"], ["x y", "a"])
    assert c.ins.tolist() == [2, 0] and c.ref.tolist() == [0, 1]


def test_normalizers_differ():
    ref, hyp = "Mister Smith's 2 dogs.", "mr smith's two dogs"
    assert error_rate([ref], [hyp], "none").rate > error_rate([ref], [hyp], "basic").rate
    assert error_rate([ref], [hyp], "whisper").rate == 0.0
    with pytest.raises(ValueError):
        normalize("x", "nope")
    assert normalize("beauty\u2019s rose", "whisper") == normalize("beauty's rose", "whisper")


def test_cer():
    e = error_rate(["abcd"], ["abxd"], "none", chars=True)
    assert e.rate == pytest.approx(0.25) and e.substitutions == 1


def test_oracle_is_monotone_and_exact():
    refs = ["the cat sat", "a dog ran"]
    nbests = [["the bat sat", "the cat sat"], ["a dog ran"]]
    curve = oracle_curve(refs, nbests)
    assert curve == pytest.approx([1 / 6, 0.0])
    assert oracle_curve(["a b"], [[]]) == pytest.approx([1.0])


def test_bootstrap_contains_point_and_paired():
    rng = np.random.default_rng(1)
    ref = rng.integers(5, 20, 200)
    err = rng.binomial(ref, 0.1)
    lo, hi = bootstrap_ci(err, ref)
    assert lo < err.sum() / ref.sum() < hi
    assert paired_bootstrap(err, np.zeros_like(err), ref) == 0.0
    assert paired_bootstrap(err, err + 1, ref) == 1.0


def test_paired_change_counts_gain_and_harm_per_utterance():
    before = np.array([2, 0, 1, 3])
    after = np.array([0, 1, 1, 1])  # two better, one worse, one the same; 4 errors fewer in all
    change = paired_change(before, after, np.array([5, 5, 5, 5]))
    assert (change.better, change.worse, change.unchanged) == (2, 1, 1)
    assert change.p < 0.5  # fewer errors in most resamples
    assert paired_change(after, before, np.array([5, 5, 5, 5])).p > 0.5


def test_score_report_gives_one_wer_and_prints_it():
    from rescore.evaluate.scoring import score_records
    from rescore.records import Hypothesis, NBest

    records = [
        NBest(id="a", reference="the cat sat", hypotheses=[Hypothesis("The cat sat.")]),
        NBest(id="b", reference="on the mat", hypotheses=[Hypothesis("on a mat")]),
    ]
    report = score_records(records)
    assert report.rate() == 1 / 6  # Whisper's normalizer: case and punctuation do not count
    assert report.rate("none") == 3 / 6
    assert report.rate(chars=True) > 0
    line = str(report.wer[0])
    assert line.startswith("WER") and "%" in line and "of 6 words" in line
    with pytest.raises(KeyError, match="nope"):
        report.rate("nope")
