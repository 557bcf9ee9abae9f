"""The real Whisper tiny.en (CTranslate2 int8) on real speech."""

import numpy as np
import pytest
import soundfile as sf

from rescore.evaluate.scoring import score_records
from rescore.io.datasets import Utterance, load_dataset
from rescore.recognize import combine_windows
from rescore.records import Hypothesis, Window
from rescore.registry import make_recognizer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def recognizer():
    return make_recognizer("ctranslate2", model="whisper-tiny.en", device="cpu", nbest=8, beam_size=8)


@pytest.fixture(scope="module")
def tiny_records(recognizer, tiny_manifest):
    return list(recognizer.recognize(load_dataset(tiny_manifest).utterances))


def test_tiny_wer_and_nbest(tiny_records):
    assert len(tiny_records) == 10 and all(r.ok for r in tiny_records)
    report = score_records(tiny_records)
    wer = {e.normalizer: e.rate for e in report.wer}
    assert wer["whisper"] < 0.10
    assert report.oracle[-1] <= report.oracle[0]
    for r in tiny_records:
        texts = [h.text for h in r.hypotheses]
        assert len(texts) == 8 and len(set(texts)) == 8, r.id
        ranked = [h.scores["am_norm"] for h in r.hypotheses]
        assert ranked == sorted(ranked, reverse=True), r.id
        h = r.hypotheses[0]
        assert h.scores["am"] == pytest.approx(h.scores["am_norm"] * h.scores["am_tokens"])
        assert h.scores["am_tokens"] == len(h.tokens)
        assert r.duration and r.recognizer["model"] == "whisper-tiny.en"


def test_long_form_windows(recognizer, tiny_dir, tmp_path):
    rows = ["jfk", "1089-134691-0001", "sense_and_sensibility_01_austen_64kb-0870", "1089-134686-0000"]
    parts = [sf.read(tiny_dir / "audio" / f"{r}.flac", dtype="float32")[0] for r in rows]
    gap = np.zeros(8000, dtype=np.float32)
    audio = np.concatenate([x for p in parts for x in (p, gap)])
    assert len(audio) > 35 * 16000
    sf.write(tmp_path / "long.flac", audio, 16000)
    (rec,) = recognizer.recognize([Utterance("long", str(tmp_path / "long.flac"))])
    assert rec.ok and len(rec.windows) >= 2
    assert rec.windows[-1].end == pytest.approx(len(audio) / 16000, abs=0.01)
    text = rec.hypotheses[0].text.lower()
    assert "ask not what your country" in text and "dashwood" in text
    assert len(rec.hypotheses) == 8


def test_combine_windows_enumerates_best_sums():
    def w(*scores):
        return Window(0, 1, [Hypothesis(f"h{s}", [], {"am_norm": s, "am": s}) for s in scores])

    hyps = combine_windows([w(-1, -2, -5), w(-1, -1.5)], 4)
    assert [h.text for h in hyps] == ["h-1 h-1", "h-1 h-1.5", "h-2 h-1", "h-2 h-1.5"]
    assert [h.scores["am_norm"] for h in hyps] == [-2, -2.5, -3, -3.5]
