"""Acoustic scoring by teacher forcing (rescore.score.acoustic, the ascore stage and ``rescore ascore``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rescore.records import Hypothesis, NBest, read_nbest, write_nbest
from rescore.score.acoustic import CORRECTED_KEY, ISSUES_KEY, SKIP_KEY, combination, score_keys

MODEL = "whisper-tiny.en"
AM, AM_TOKENS = score_keys(MODEL)
# measured (eval/RESULTS.md, librispeech-dev, 320 hypotheses): per token, the torch decoder (float32) differs
# from the recognizer's int8 beam-search scores by 0.006 on average, 95th percentile 0.016 (a 1-token
# hypothesis: 0.22); CTranslate2's own forced decoding (int8) by 0.0017, at most 0.012. On the tiny set the
# largest differences are 0.026 and 0.012.
TORCH_NOISE_MEAN, TORCH_NOISE_MAX = 0.02, 0.06
CT2_NOISE_MEAN, CT2_NOISE_MAX = 0.006, 0.025


def test_score_keys_and_combination():
    assert score_keys("whisper-base") == ("am:whisper-base", "am_tokens:whisper-base")
    w1 = [Hypothesis("Hello there."), Hypothesis("Hello, there.")]
    w2 = [Hypothesis(""), Hypothesis("General Kenobi.")]
    w3 = [Hypothesis("You are bold.")]
    picked = combination("Hello, there. General Kenobi. You are bold.", [w1, w2, w3])
    assert picked == [w1[1], w2[1], w3[0]]
    assert combination("Hello there. You are bold.", [w1, w2, w3]) == [w1[0], w2[0], w3[0]]  # empty window
    assert combination("Hello there. General", [w1, w2, w3]) is None
    assert combination("Hello there. General Kenobi. You are bold. Extra", [w1, w2, w3]) is None


def test_text_is_tokenized_as_whisper_does():
    """openai-whisper's BPE, not a packaged tokenizer.json (whisper-base's splits " the" into " " + "the")."""
    from rescore.whisper.tokenizer import whisper_encoding

    multilingual = whisper_encoding(True, 99, 50257)
    assert multilingual.encode(" Every promise of the soul") == [2048, 6228, 295, 264, 5133]
    assert whisper_encoding(False, 0, 50256).encode(" Every promise of the soul") == [3887, 6991, 286, 262, 5848]
    assert whisper_encoding(True, 99, 12345) is None  # another vocabulary: the model's own file is used


def test_stage_options_are_checked():
    from pydantic import ValidationError

    from rescore.registry import stages
    from rescore.stages import AScoreOptions, AScoreStage

    assert stages.factory("ascore") is AScoreStage
    with pytest.raises(ValidationError):
        AScoreOptions(models=[])
    with pytest.raises(ValidationError):
        AScoreOptions(models=["whisper-base", "whisper-base"])
    with pytest.raises(ValidationError):
        AScoreOptions(method="openai")
    stage = AScoreStage(AScoreOptions(models=[MODEL]))
    assert stage.options()["models"] == [MODEL] and stage._model is None  # nothing loads before use


# -- real models ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer():
    from rescore.score.acoustic import WhisperScorer

    return WhisperScorer(MODEL, device="cpu")


@pytest.fixture(scope="module")
def own_records(tiny_manifest):
    """tiny.en's own 4-best of three tiny utterances, with the scores its beam search reported."""
    from rescore.io.datasets import load_dataset
    from rescore.registry import make_recognizer

    rec = make_recognizer("ctranslate2", model=MODEL, device="cpu", nbest=4, beam_size=4)
    return list(rec.recognize(load_dataset(tiny_manifest).utterances[:3]))


def _copy(records):
    return [NBest.from_dict(json.loads(r.to_json())) for r in records]


def _per_token_diff(records):
    return np.array(
        [
            (h.scores[AM] - h.scores["am"]) / h.scores[AM_TOKENS]
            for r in records
            for h in r.hypotheses
            if r.extra.get(SKIP_KEY) is None
        ]
    )


@pytest.mark.model
def test_own_hypotheses_agree_with_recognizer_am(scorer, own_records):
    out = scorer.score(_copy(own_records))
    for r in out:
        assert r.ok and SKIP_KEY not in r.extra and ISSUES_KEY not in r.extra
        for h in r.hypotheses:
            assert h.scores[AM_TOKENS] == h.scores["am_tokens"] + 1  # the end token counts
            assert h.scores[AM] < 0
    d = np.abs(_per_token_diff(out))
    assert d.mean() < TORCH_NOISE_MEAN and d.max() < TORCH_NOISE_MAX, (d.mean(), d.max())


@pytest.mark.model
def test_ct2_method_agrees_closer(own_records):
    from rescore.score.acoustic import WhisperScorer

    ct2 = WhisperScorer(MODEL, device="cpu", method="ct2")
    d = np.abs(_per_token_diff(ct2.score(_copy(own_records[:1]))))
    assert d.mean() < CT2_NOISE_MEAN and d.max() < CT2_NOISE_MAX, (d.mean(), d.max())


@pytest.mark.model
def test_missing_words_or_end_token_score_lower(scorer, own_records):
    for r in _copy(own_records):
        full = r.hypotheses[0]
        words = full.text.split()
        r.hypotheses = [
            Hypothesis(full.text),
            Hypothesis(" ".join(words[:-1])),  # last word missing
            Hypothesis(" ".join(words[:-3])),  # last three words missing
        ]
        scored = scorer.score([r])[0]
        am = [h.scores[AM] for h in scored.hypotheses]
        assert am[0] > am[1] and am[0] > am[2], (r.id, am)
    # the end token itself: after the whole text it is likely, after a cut one it is not
    audio_rec = own_records[0]
    from rescore.io.audio import load_audio

    memory = scorer.encode([scorer.mel(load_audio(audio_rec.audio))])[0]
    toks = scorer.tokenize(audio_rec.hypotheses[0].text)
    full_lp, cut_lp = scorer.token_log_probs(memory, [toks, toks[:-3]])
    assert full_lp[-1] > -0.5 and cut_lp[-1] < -3, (full_lp[-1], cut_lp[-1])
    assert full_lp.sum() > cut_lp.sum()


@pytest.mark.model
def test_token_and_end_probabilities_match_independent_decoders(scorer, own_records):
    """Every token's log-probability against openai-whisper's decoder on the same weights (float32, to 1e-3),
    and the end token's against CTranslate2's own int8 decoder (generate with the text as a forced prefix)."""
    import ctranslate2
    import torch
    import whisper

    from rescore.io.audio import load_audio
    from rescore.whisper.weights import convert_ct2_to_openai

    rec = own_records[1]
    memory = scorer.encode([scorer.mel(load_audio(rec.audio))])[0]
    lists = [scorer.tokenize(h.text) for h in rec.hypotheses[:2]] + [scorer.tokenize(rec.hypotheses[0].text)[:-2]]
    ours = scorer.token_log_probs(memory, lists)

    ow = whisper.load_model(str(convert_ct2_to_openai(MODEL)), device="cpu").eval()
    banned = torch.tensor(scorer.suppress)
    for toks, lp in zip(lists, ours, strict=True):
        seq = scorer.prompt + toks + [scorer.eot]
        with torch.no_grad():
            logits = ow.decoder(torch.tensor([seq[:-1]]), torch.from_numpy(memory)[None])[0].float()
        logits[:, banned] = float("-inf")  # Whisper's decoding never emits these: normalise without them
        logits[len(scorer.prompt) - 1, scorer.suppress_begin] = float("-inf")
        ref = torch.log_softmax(logits, -1)[torch.arange(len(seq) - 1), torch.tensor(seq[1:])]
        np.testing.assert_allclose(lp, ref[len(scorer.prompt) - 1 :].numpy(), atol=1e-3)

        # CTranslate2: the text forced as the prompt's continuation, logits of the step after it
        res = scorer.model.generate(
            ctranslate2.StorageView.from_array(memory[None]),
            [scorer.prompt + toks],
            beam_size=1,
            max_length=2 * (len(toks) + 2),
            return_logits_vocab=True,
            suppress_blank=False,
        )[0]
        step = np.asarray(res.logits[0], dtype=np.float64)[len(toks)]
        ok = step > -1e30  # suppressed ids come back as the lowest float
        end = step[scorer.eot] - np.log(np.exp(step[ok] - step[ok].max()).sum()) - step[ok].max()
        assert lp[-1] == pytest.approx(end, abs=0.05 + 0.05 * abs(end)), (lp[-1], end)


@pytest.mark.model
def test_unscorable_records_pass_through_marked(scorer, own_records, tmp_path, caplog):
    good = _copy(own_records[:1])[0]
    text_only = NBest(id="text-only", hypotheses=[Hypothesis("no audio at all")])
    missing = NBest(id="missing", audio=str(tmp_path / "gone.flac"), hypotheses=[Hypothesis("gone")])
    corrupt_path = tmp_path / "corrupt.flac"
    corrupt_path.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    corrupt = NBest(id="corrupt", audio=str(corrupt_path), hypotheses=[Hypothesis("broken")])
    failed = NBest(id="failed", audio=good.audio, error="upstream failure")
    long_text = " ".join(["word"] * 500)
    good.hypotheses.append(Hypothesis(long_text))
    good.corrected = good.hypotheses[0].text.lower()
    with caplog.at_level("WARNING", logger="rescore.score.acoustic"):
        out = scorer.score([text_only, good, missing, corrupt, failed])
    assert [r.id for r in out] == ["text-only", good.id, "missing", "corrupt", "failed"]
    for r in (out[0], out[2], out[3]):
        assert r.ok and "skipped" in r.extra[SKIP_KEY], r.id
        assert all(AM not in h.scores for h in r.hypotheses)
        assert any(r.id in m for m in caplog.messages), r.id
    assert "no audio" in out[0].extra[SKIP_KEY]["skipped"]
    assert "file not found" in out[2].extra[SKIP_KEY]["skipped"]
    assert out[4].error == "upstream failure" and SKIP_KEY not in out[4].extra
    scored = out[1]
    assert SKIP_KEY not in scored.extra
    assert all(AM in h.scores for h in scored.hypotheses[:-1])
    assert AM not in scored.hypotheses[-1].scores  # too long for the decoder: flagged, never cut
    (issue,) = scored.extra[ISSUES_KEY]
    assert issue.startswith(f"{MODEL}: hypothesis {len(scored.hypotheses) - 1}") and "tokens" in issue
    assert scored.extra[CORRECTED_KEY][AM] < 0  # the corrector's text is scored too
    # scoring again replaces this model's results instead of piling them up
    again = scorer.score([scored])[0]
    assert again.extra[ISSUES_KEY] == [issue]


@pytest.mark.model
def test_longform_is_scored_window_by_window(scorer):
    from rescore.io.datasets import load_dataset
    from rescore.registry import make_recognizer
    from tests.conftest import SHARED_DATA

    manifest = SHARED_DATA / "longform" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("no long-form set")
    utt = min(load_dataset(manifest).utterances, key=lambda u: u.duration or 1e9)
    rec = make_recognizer("ctranslate2", model=MODEL, device="cpu", nbest=2, beam_size=2)
    (r,) = list(rec.recognize([utt]))
    assert len(r.windows) >= 2
    r.corrected = "not what anyone said"
    (out,) = scorer.score([r])
    for w in out.windows:
        for h in w.hypotheses:
            assert AM in h.scores
            assert abs(h.scores[AM] - h.scores["am"]) / h.scores[AM_TOKENS] < TORCH_NOISE_MAX
    lists = [w.hypotheses for w in out.windows if w.hypotheses]
    for h in out.hypotheses:
        picked = combination(h.text, lists)
        assert picked is not None
        assert h.scores[AM] == pytest.approx(sum(p.scores[AM] for p in picked))
        assert h.scores[AM_TOKENS] == sum(p.scores[AM_TOKENS] for p in picked)
    assert out.extra[ISSUES_KEY] == [
        f"{MODEL}: corrected text: not a combination of the windows' hypotheses: not scored"
    ]

    # without its windows, a long record cannot be scored: passed through, marked
    bare = NBest(id=r.id, audio=r.audio, hypotheses=[Hypothesis(out.hypotheses[0].text)])
    (bare,) = scorer.score([bare])
    assert "longer than one 30 s window" in bare.extra[SKIP_KEY]["skipped"]


@pytest.mark.model
def test_cli_scores_and_names_skipped_records(own_records, tmp_path):
    from rescore.cli import app

    src = tmp_path / "in.jsonl"
    write_nbest(src, [*_copy(own_records[:1]), NBest(id="text-only", hypotheses=[Hypothesis("just text")])])
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["ascore", str(src), "--model", MODEL, "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "text-only" in res.output and "not scored" in res.output
    recs = list(read_nbest(out))
    assert all(AM in h.scores for h in recs[0].hypotheses)
    assert recs[1].extra[SKIP_KEY] == {"skipped": "no audio (a text-only record)"}
    bad = CliRunner().invoke(app, ["ascore", str(src), "--model", "no-such-model", "-o", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "no-such-model" in bad.output
