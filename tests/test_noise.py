"""Hypothesis noise for training the cross-attention model: the same look-alike word in every hypothesis, only in
the drawn share of examples, reproducible from its seed, and never in the held-out loss."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rescore.deep.noise import HypothesisNoise, look_alike_key

TARGETS = ["the cat sat on the mat", "then the cap fell", "a cab came at ten", "than that"]


def test_look_alikes_share_first_letters_and_length():
    assert look_alike_key("then", 2) == look_alike_key("than", 2)
    assert look_alike_key("then", 2) != look_alike_key("thermometer", 2)
    noise = HypothesisNoise(examples=1.0).fit(TARGETS)
    rng = random.Random(0)
    for _ in range(20):
        s = noise.substitute("cat", rng)
        assert s in {"cap", "cab"}  # two letters and the length agree, never the word itself
    assert noise.substitute("on", rng) is None  # no other word starts with "o" at that length


def test_every_hypothesis_gets_the_same_substitutes():
    noise = HypothesisNoise(examples=1.0, words=1.0).fit(TARGETS)
    hyps = noise(["The cat sat.", "the cat sad", "THE CAT SAT"], random.Random(1))
    assert hyps[0] == hyps[2]  # one normalised form, one substitute per word
    assert hyps[0].split()[1] == hyps[1].split()[1] != "cat"
    assert hyps[0].split()[1] in {"cap", "cab"}


def test_examples_not_drawn_are_only_normalised():
    noise = HypothesisNoise(examples=0.0).fit(TARGETS)
    assert not noise.active
    assert noise(["The Cat, sat."], random.Random(0)) == ["the cat sat"]
    half = HypothesisNoise(examples=0.5, words=1.0).fit(TARGETS)
    changed = sum(half(["the cat sat"], random.Random(i)) != ["the cat sat"] for i in range(400))
    assert 150 < changed < 250  # about half the examples


def test_noise_is_reproducible_from_its_seed_and_rejects_bad_shares():
    noise = HypothesisNoise(examples=1.0, words=0.5).fit(TARGETS)
    hyps = ["then the cat sat on the mat", "the cat sat on a mat"]
    assert noise(hyps, random.Random("0-1-7")) == noise(hyps, random.Random("0-1-7"))
    with pytest.raises(ValueError, match="shares"):
        HypothesisNoise(examples=1.5)
    with pytest.raises(ValueError, match="shares"):
        HypothesisNoise(words=0.0)


def test_make_batch_corrupts_only_with_noise_and_the_same_way_for_one_seed():
    from rescore.deep.examples import Example, make_batch

    states = np.zeros((3, 4), dtype=np.float16)
    ex = [Example("u0", states, "the cat sat", ["the cat sat", "the cat sad"])]
    noise = HypothesisNoise(examples=1.0, words=1.0).fit(TARGETS)
    assert make_batch(ex, [0]).hypotheses == [["the cat sat", "the cat sad"]]
    noisy = make_batch(ex, [0], noise, seed="0-0-0").hypotheses
    assert noisy == make_batch(ex, [0], noise, seed="0-0-0").hypotheses
    assert noisy[0][0].split()[1] in {"cap", "cab"}
    assert make_batch(ex, [0], noise, seed="0-0-0").texts == ["the cat sat"]  # the target is never touched
