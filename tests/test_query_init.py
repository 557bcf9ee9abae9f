"""Queries fitted to Whisper's decoder (rescore.deep.query_init): the alignment and the regression on made-up
numbers, and on the real path (SmolLM2, Whisper tiny.en, the tiny set) that the fitted blocks attend more like
Whisper's decoder than the untrained ones while the model stays the plain LM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rescore.deep.query_init import align_tokens, first_char, ridge


def test_first_char_skips_the_leading_space():
    assert first_char((3, 7), "the cat") == 4
    assert first_char((3, 4), "the cat") == 3  # a token of spaces only: its start


def test_lm_tokens_meet_the_whisper_token_that_covers_their_first_letter():
    text = "the catalogue sat"
    lm = [(0, 3), (3, 7), (7, 13), (13, 17)]  # "the", " cat", "alogue", " sat"
    whisper = [(-1, 3), (3, 13), (13, 17)]  # " the", " catalogue", " sat" (Whisper's leading space shifted off)
    assert align_tokens(lm, whisper, text) == [0, 1, 1, 2]
    assert align_tokens([(0, 3)], [(5, 9)], text) == [-1]


def test_ridge_recovers_a_linear_map_and_scores_it_on_held_out_groups():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 12, generator=g)
    w, b = torch.randn(12, 5, generator=g), torch.randn(5, generator=g)
    y = x @ w + b + 0.01 * torch.randn(600, 5, generator=g)
    fit = ridge(x, y, [i // 10 for i in range(600)])
    assert fit.r2 > 0.99
    torch.testing.assert_close(fit.weight, w, atol=0.02, rtol=0.02)
    noise = ridge(x, torch.randn(600, 5, generator=g), [i // 10 for i in range(600)])
    assert noise.r2 < 0.05  # nothing to explain: held out, the fit says so


@pytest.mark.model
def test_fitted_queries_attend_like_whispers_decoder_and_leave_the_lm_as_it_is(tiny_manifest):
    from rescore.deep.model import collate
    from rescore.deep.query_init import attention_agreement, fit_queries
    from rescore.deep.train import Example
    from rescore.deep.xattn import XAttnConfig, build_xattn
    from rescore.io.datasets import load_dataset
    from rescore.whisper.encoder import WhisperEncoder

    torch.manual_seed(0)
    model = build_xattn(XAttnConfig(every=10, max_hypotheses=3, q_init=True)).eval()
    utts = [u for u in load_dataset(tiny_manifest).utterances if u.reference][:6]
    states = {u.id: s for u, s, _ in WhisperEncoder("whisper-tiny.en").states(utts)}
    examples = [Example(u.id, states[u.id].astype(np.float16), u.reference, [u.reference], u.id) for u in utts]
    batch = collate(
        [e.id for e in examples[:2]],
        [e.states.astype(np.float32) for e in examples[:2]],
        ["", ""],
        [e.hypotheses for e in examples[:2]],
    )
    before = attention_agreement(model, examples)
    fits = fit_queries(model, examples)
    after = attention_agreement(model, examples)
    assert len(fits) == len(model.blocks) == 3
    for b, a in zip(before, after, strict=True):
        assert a.overlap > b.overlap + 0.1  # in-sample: the fit reproduces Whisper's attention, the random start not
    ids, attn, positions, _ = model.build_inputs(batch, with_targets=False)
    with torch.no_grad():
        plain = model.llm(input_ids=ids, attention_mask=attn, position_ids=positions).logits
        torch.testing.assert_close(model.logits(batch), plain)  # gates still shut: the plain LM


def test_cli_q_init_is_passed_on_and_refused_without_the_encoders_kv(deep_train_cli):
    """The option's mapping only (training is replaced; the real fit is tested above)."""
    run, seen = deep_train_cli.run, deep_train_cli.configs
    encoder = ["--recipe", "encoder"]  # queries are fitted for encoder frames
    for extra in ([], ["--q-init"]):
        assert "stopped before training" in run([*encoder, *extra]).output
    assert [c.model.q_init for c in seen] == [False, True]
    without_the_encoders_kv = (
        [*encoder, "--q-init", "--kv-init", "none"],
        [*encoder, "--q-init", "--kv-init", "whisper-base"],
        ["--q-init"],  # the default recipe's blocks have no K/V from Whisper
    )
    for bad in without_the_encoders_kv:
        result = run(bad)
        assert result.exit_code != 0 and "--q-init" in result.output and len(seen) == 2


def test_bench_variant_base_audio_q_is_base_audio_with_fitted_queries():
    from eval.bench_xattn import variant_config

    base, fitted = variant_config("base-audio"), variant_config("base-audio-q")
    assert (base.q_init, fitted.q_init) == (False, True)
    assert {**base.to_dict(), "q_init": True} == fitted.to_dict()
