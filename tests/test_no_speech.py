"""Windows without speech: real silence, noise and a cut file give the empty transcript, flagged; speech is kept."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from rescore.evaluate.scoring import score_records
from rescore.io.datasets import Utterance, load_dataset
from rescore.recognize.no_speech import NoSpeechGate, WindowCheck
from rescore.records import NBest
from rescore.rerank.ranker import Ranker, Weights

OFF = {"no_speech_threshold": None, "vad": False}  # the recognizer as it was before the gate


def test_gate_decides_as_faster_whisper():
    """No speech: VAD found none, or a high no-speech probability with an unconfident transcript."""
    gate = NoSpeechGate(vad=False)
    assert gate.decide(WindowCheck(0.7, -1.5, None)).decided_by == "probability"
    assert gate.decide(WindowCheck(0.7, -0.5, None)).decided_by is None  # a confident transcript is kept
    assert gate.decide(WindowCheck(0.5, -2.0, None)).decided_by is None
    assert gate.decide(WindowCheck(0.1, -0.1, 0.0)).decided_by == "vad"
    assert gate.decide(WindowCheck(0.99, -3.0, 0.0)).decided_by == "vad"  # VAD first: it names the reason
    assert NoSpeechGate(None, vad=False).decide(WindowCheck(0.99, -3.0, None)).decided_by is None
    assert NoSpeechGate(0.6, None, vad=False).decide(WindowCheck(0.7, -0.1, None)).decided_by == "probability"


@pytest.fixture(scope="module")
def non_speech(tmp_path_factory, tiny_dir) -> list[Utterance]:
    """5 s of digital silence, white and pink noise at a moderate level (RMS 0.05), and a FLAC cut after 5 kB."""
    d = tmp_path_factory.mktemp("non_speech")
    rate, n = 16000, 5 * 16000
    rng = np.random.default_rng(0)
    sf.write(d / "silence.wav", np.zeros(n, np.float32), rate)
    sf.write(d / "white.wav", (0.05 * rng.standard_normal(n)).astype(np.float32), rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.fft.rfftfreq(n)[1:])  # 1/f power
    spectrum[0] = 0
    pink = np.fft.irfft(spectrum, n)
    sf.write(d / "pink.wav", (0.05 * pink / pink.std()).astype(np.float32), rate)
    (d / "cut.flac").write_bytes((tiny_dir / "audio" / "jfk.flac").read_bytes()[:5000])
    return [Utterance(p.stem, str(p)) for p in (d / "silence.wav", d / "white.wav", d / "pink.wav", d / "cut.flac")]


@pytest.fixture(scope="module")
def gated():
    from rescore.recognize.ctranslate2 import CT2WhisperRecognizer

    return CT2WhisperRecognizer("whisper-tiny.en", device="cpu", nbest=8, beam_size=8)


@pytest.fixture(scope="module")
def plain():
    from rescore.recognize.ctranslate2 import CT2WhisperRecognizer

    return CT2WhisperRecognizer("whisper-tiny.en", device="cpu", nbest=8, beam_size=8, **OFF)


def _assert_flagged(rec: NBest, decided_by: str) -> dict:
    assert rec.ok and rec.duration
    assert [h.text for h in rec.hypotheses] == [""]
    assert rec.hypotheses[0].scores == {"am": 0.0, "am_tokens": 1.0, "am_norm": 0.0}
    flag = rec.extra["no_speech"]
    assert 0.0 <= flag["probability"] <= 1.0 and flag["decided_by"] == decided_by
    return flag


@pytest.mark.model
def test_non_speech_gives_one_empty_hypothesis(gated, plain, non_speech):
    before = list(plain.recognize(non_speech))
    assert all(r.ok and r.hypotheses[0].text.strip() for r in before)  # what Whisper writes there: "you" ...
    records = list(gated.recognize(non_speech))
    assert [r.id for r in records] == [u.id for u in non_speech]
    for rec, old in zip(records, before, strict=True):
        flag = _assert_flagged(rec, "vad")
        assert flag["vad_speech_seconds"] == 0.0
        assert flag["suppressed"] == old.hypotheses[0].text
        back = NBest.from_dict(rec.to_dict())  # the flag survives the file
        assert back.extra["no_speech"] == flag and [h.text for h in back.hypotheses] == [""]
    assert records[0].recognizer["vad"] is True and records[0].recognizer["no_speech_threshold"] == 0.6


@pytest.mark.model
def test_no_speech_probability_alone_catches_noise(non_speech):
    """Without VAD, the no-speech probability and the low average log-probability flag the noise."""
    from rescore.recognize.ctranslate2 import CT2WhisperRecognizer

    rec = CT2WhisperRecognizer("whisper-tiny.en", device="cpu", nbest=4, beam_size=4, vad=False)
    for r in rec.recognize(non_speech[1:3]):  # white, pink: measured p 0.86, avg log-prob -1.5 and -1.6
        flag = _assert_flagged(r, "probability")
        assert flag["probability"] > 0.6 and flag["vad_speech_seconds"] is None


@pytest.mark.model
def test_real_speech_transcribes_as_before(gated, plain, tiny_manifest):
    utts = load_dataset(tiny_manifest).utterances
    new, old = list(gated.recognize(utts)), list(plain.recognize(utts))
    for a, b in zip(new, old, strict=True):
        assert a.ok and "no_speech" not in a.extra and "no_speech_windows" not in a.extra, a.id
        assert [h.text for h in a.hypotheses] == [h.text for h in b.hypotheses], a.id
        assert [h.scores for h in a.hypotheses] == [h.scores for h in b.hypotheses], a.id


@pytest.mark.model
def test_silent_window_of_a_long_recording(gated, plain, tiny_dir, tmp_path):
    """Speech then 30 s of silence: the second window is emptied and listed; the speech keeps its text."""
    audio, rate = sf.read(tiny_dir / "audio" / "sense_and_sensibility_01_austen_64kb-0880.flac", dtype="float32")
    sf.write(tmp_path / "short.wav", audio, rate)
    sf.write(tmp_path / "long.wav", np.concatenate([audio, np.zeros(30 * rate, np.float32)]), rate)
    (short,) = plain.recognize([Utterance("short", str(tmp_path / "short.wav"))])
    (rec,) = gated.recognize([Utterance("long", str(tmp_path / "long.wav"))])
    assert rec.ok and len(rec.windows) == 2 and "no_speech" not in rec.extra
    (entry,) = rec.extra["no_speech_windows"]
    assert entry["index"] == 1 and entry["decided_by"] == "vad" and entry["vad_speech_seconds"] == 0.0
    assert [h.text for h in rec.windows[1].hypotheses] == [""]
    assert rec.hypotheses[0].text == short.hypotheses[0].text == "He was not an ill-disposed young man."


@pytest.mark.model
def test_no_speech_record_is_ranked_and_scored(gated, non_speech):
    """Downstream: the ranker picks the empty hypothesis; scoring counts the words it misses."""
    (rec,) = gated.recognize(non_speech[:1])
    Ranker(Weights({"am": 1.0}, length_bonus=0.5)).rank(rec)
    assert rec.chosen == 0 and rec.text() == ""
    rec.reference = "hello world"
    report = score_records([rec])
    wer = {e.normalizer: e for e in report.wer}["whisper"]
    assert wer.rate == 1.0 and report.oracle == [1.0]


@pytest.mark.model
def test_openai_whisper_backend_flags_silence(non_speech, tiny_dir):
    from rescore.recognize.openai_whisper import OpenAIWhisperRecognizer

    speech = Utterance("speech", str(tiny_dir / "audio" / "sense_and_sensibility_01_austen_64kb-0880.flac"))
    utts = [non_speech[0], speech]
    old = list(OpenAIWhisperRecognizer("whisper-tiny.en", device="cpu", nbest=4, beam_size=4, **OFF).recognize(utts))
    new = list(OpenAIWhisperRecognizer("whisper-tiny.en", device="cpu", nbest=4, beam_size=4).recognize(utts))
    assert old[0].hypotheses[0].text.strip()  # "you"
    flag = _assert_flagged(new[0], "vad")
    assert flag["suppressed"] == old[0].hypotheses[0].text
    assert "no_speech" not in new[1].extra
    assert [h.text for h in new[1].hypotheses] == [h.text for h in old[1].hypotheses]
    assert new[1].hypotheses[0].text == "He was not an ill-disposed young man."
