"""A union first pass that scores as it goes: each model's encoder output reused for acoustic scoring.

``TranscribeOptions(model=[...], ascore=True)``: every union hypothesis gets ``am:<model>`` and
``am_tokens:<model>`` from every model, computed against the encoder output of that model's own first pass
(``CT2WhisperRecognizer.recognize(on_encoder_output=...)``, ``WhisperScorer.score(memories=...)``), equal
to what the ascore stage computes from the audio.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from rescore.recognize.union import UnionRecognizer
from rescore.records import Hypothesis, NBest, Window
from rescore.stages import TranscribeOptions, TranscribeStage

MODELS = ["whisper-tiny.en", "whisper-base"]
# teacher-forced scores from the kept encoder output against those from the audio: the same arithmetic up to
# the batch the encoder ran in (int8 GEMM over a different number of windows), so float noise only
NOISE_PER_TOKEN = 0.01


def test_ascore_option_is_checked_and_hashes_as_before():
    plain = TranscribeStage(TranscribeOptions(model=MODELS))
    assert "ascore" not in plain.options()  # off: the stage's cache identity is what it was
    scored = TranscribeStage(TranscribeOptions(model=MODELS, ascore=True))
    assert scored.options()["ascore"] is True and scored.options() != plain.options()
    assert "ascore" not in TranscribeOptions(model=MODELS, ascore=True).recognizer_options()
    with pytest.raises(ValidationError, match="several models"):
        TranscribeOptions(model="whisper-base", ascore=True)
    with pytest.raises(ValidationError, match="ctranslate2"):
        TranscribeOptions(backend="openai-whisper", model=MODELS, ascore=True)


class _FakeRecognizer:
    """Two utterances: u1 one window, u2 two windows; the 'encoder output' names model, record and window."""

    batch_size = 8

    def __init__(self, model: str) -> None:
        self.model = model
        self.info = {"backend": "fake", "model": model}
        self.calls: list[list[str]] = []

    def recognize(self, utts, *, on_encoder_output=None):
        self.calls.append(list(utts))
        for u in utts:
            rec = NBest(id=u, audio=f"{u}.wav", recognizer=dict(self.info), timing={"transcribe": 1.0})
            n = 2 if u == "u2" else 1
            wins = [
                Window(30.0 * k, 30.0 * (k + 1), [Hypothesis(f"{u} w{k}", [], {"am_norm": -0.1})]) for k in range(n)
            ]
            rec.hypotheses = [Hypothesis(" ".join(w.hypotheses[0].text for w in wins), [], {"am_norm": -0.1})]
            if n > 1:
                rec.windows = wins
            if on_encoder_output is not None:
                for k in range(n):
                    on_encoder_output(rec, k, f"{self.model}/{u}/{k}")
            yield rec


class _FakeScorer:
    def __init__(self, model: str) -> None:
        self.model = model
        self.seen: list[tuple[str, object]] = []

    def score(self, records, memories):
        for r, m in zip(records, memories, strict=True):
            self.seen.append((r.id, m))
            for h in r.hypotheses:
                h.scores[f"am:{self.model}"] = -1.0
        return records


def test_union_hands_each_model_its_own_encoder_output_per_window():
    recs = [_FakeRecognizer(m) for m in ("a", "b")]
    scorers = [_FakeScorer(m) for m in ("a", "b")]
    union = UnionRecognizer(recs, ["a", "b"], scorers=scorers, chunk=2)
    out = list(union.recognize(["u1", "u2", "u3"]))
    assert [r.id for r in out] == ["u1", "u2", "u3"]
    assert recs[0].calls == [["u1", "u2"], ["u3"]]  # encoder output is kept for a chunk at a time
    for name, s in zip(("a", "b"), scorers, strict=True):
        assert s.seen == [("u1", [f"{name}/u1/0"]), ("u2", [f"{name}/u2/0", f"{name}/u2/1"]), ("u3", [f"{name}/u3/0"])]
    for r in out:
        assert all({"am:a", "am:b"} <= set(h.scores) for h in r.hypotheses)
        assert {"ascore:a", "ascore:b"} <= set(r.timing)
        assert r.timing["transcribe"] == pytest.approx(2.0 + r.timing["ascore:a"] + r.timing["ascore:b"], abs=1e-3)
    assert union.info["ascore"] is True
    with pytest.raises(ValueError, match="scorers"):
        UnionRecognizer(recs, ["a", "b"], scorers=scorers[:1])


# -- real models ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_utts(tiny_manifest):
    from rescore.io.datasets import load_dataset

    return load_dataset(tiny_manifest).utterances[:3]


def _copy(records: list[NBest]) -> list[NBest]:
    return [NBest.from_dict(json.loads(r.to_json())) for r in records]


def _hyps(r: NBest) -> list[Hypothesis]:
    return [*r.hypotheses, *(h for w in r.windows for h in w.hypotheses)]


def _assert_same_scores(ours: list[NBest], theirs: list[NBest]) -> None:
    """The union's own am:<model> scores equal the ascore stage's, the first pass the same."""
    for a, b in zip(ours, theirs, strict=True):
        assert a.id == b.id and a.ok and b.ok
        assert not a.extra.get("ascore_issues") and not b.extra.get("ascore_issues")
        assert [h.text for h in _hyps(a)] == [h.text for h in _hyps(b)]
        for ha, hb in zip(_hyps(a), _hyps(b), strict=True):
            for m in MODELS:
                am, n = f"am:{m}", f"am_tokens:{m}"
                assert ha.scores[n] == hb.scores[n], (a.id, ha.text, m)
                assert abs(ha.scores[am] - hb.scores[am]) / ha.scores[n] < NOISE_PER_TOKEN, (a.id, ha.text, m)
            assert ha.scores["am:whisper-tiny.en"] != ha.scores["am:whisper-base"]


@pytest.mark.model
def test_recognizer_hands_out_the_encoder_output_it_decoded_from(tiny_utts):
    from rescore.registry import make_recognizer
    from rescore.score.acoustic import WhisperScorer

    rec = make_recognizer("ctranslate2", model="whisper-tiny.en", device="cpu", nbest=4, beam_size=4)
    plain = list(rec.recognize(tiny_utts))
    kept: dict[tuple[str, int], np.ndarray] = {}
    hooked = list(rec.recognize(tiny_utts, on_encoder_output=lambda r, k, m: kept.setdefault((r.id, k), m)))
    for a, b in zip(hooked, plain, strict=True):  # asking for it changes nothing (but the timing)
        a.timing = b.timing = {}
        assert a.to_json() == b.to_json()
    assert sorted(kept) == sorted((u.id, 0) for u in tiny_utts)
    scorer = WhisperScorer("whisper-tiny.en", device="cpu", ct2_model=rec.model)
    assert scorer.model is rec.model  # the loaded model is shared
    from rescore.io.audio import load_audio

    for u in tiny_utts[:1]:
        m = kept[(u.id, 0)]
        assert m.dtype == np.float32 and m.shape == (1500, 384)
        (again,) = scorer.encode([scorer.mel(load_audio(u.audio))])
        assert np.abs(again - m).max() < 0.05 * np.abs(m).max()
    _, none = rec._decode([scorer.mel(load_audio(tiny_utts[0].audio))])
    assert none is None  # not asked for: not kept


@pytest.mark.model
def test_union_scores_equal_the_ascore_stage(tiny_utts):
    from rescore.stages import AScoreOptions, AScoreStage, utterance_record

    opts = {"model": MODELS, "device": "cpu", "nbest": 4, "beam_size": 4}
    scored = TranscribeStage(TranscribeOptions(**opts, ascore=True)).process([utterance_record(u) for u in tiny_utts])
    plain = TranscribeStage(TranscribeOptions(**opts)).process([utterance_record(u) for u in tiny_utts])
    staged = AScoreStage(AScoreOptions(models=MODELS, device="cpu")).process(_copy(plain))
    _assert_same_scores(scored, staged)
    assert all("ascore:whisper-base" in r.timing for r in scored)


@pytest.mark.model
def test_longform_union_is_scored_window_by_window():
    from rescore.io.datasets import load_dataset
    from rescore.registry import make_recognizer
    from rescore.score.acoustic import WhisperScorer
    from tests.conftest import SHARED_DATA

    manifest = SHARED_DATA / "longform" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("no long-form set")
    utt = min(load_dataset(manifest).utterances, key=lambda u: u.duration or 1e9)
    recs = [make_recognizer("ctranslate2", model=m, device="cpu", nbest=2, beam_size=2) for m in MODELS]
    scorers = [WhisperScorer(m, device="cpu", ct2_model=r.model) for m, r in zip(MODELS, recs, strict=True)]
    (ours,) = list(UnionRecognizer(recs, MODELS, scorers=scorers).recognize([utt]))
    assert len(ours.windows) >= 2 and all(w.hypotheses for w in ours.windows)
    (plain,) = list(UnionRecognizer(recs, MODELS).recognize([utt]))
    theirs = _copy([plain])
    for s in scorers:
        theirs = s.score(theirs)  # from the audio, window by window
    _assert_same_scores([ours], theirs)
