"""Acoustic verification of corrections (rescore.correct.verify): logic with fakes, then the real models."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescore.correct.verify import AudioVerifier, record_weights, reverify, word_edits_only
from rescore.records import Hypothesis, NBest
from rescore.rerank.ranker import Weights
from rescore.score import TextScore


class FakeAcoustic:
    """Teacher forcing stand-in: a fixed log-probability per text (logic tests only)."""

    def __init__(self, table: dict[str, float], model: str = "m") -> None:
        self.table = table
        self.am_key, self.tokens_key = f"am:{model}", f"am_tokens:{model}"
        self.calls: list[list[str]] = []

    def score(self, records: list[NBest]) -> list[NBest]:
        for r in records:
            self.calls.append([h.text for h in r.hypotheses])
            for h in r.hypotheses:
                if h.text in self.table:
                    h.scores.update({self.am_key: self.table[h.text], self.tokens_key: 4.0})
        return records


class FakeLM:
    name = "fake"
    info: dict = {}

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.contexts: list[str] = []

    def score(self, texts, context=""):  # pragma: no cover - unused
        return [self.table[t] for t in texts]

    def score_pairs(self, pairs):
        self.contexts += [c for c, _ in pairs]
        return [TextScore(self.table[t], 4) for _, t in pairs]


def reranked(weights: Weights, audio: str | None = "x.flac") -> NBest:
    r = NBest(
        id="u1",
        audio=audio,
        recognizer={"backend": "ctranslate2", "model": "m"},
        hypotheses=[
            Hypothesis("drained of men", scores={"am": -4.0, "am_tokens": 4.0, "am_norm": -1.0, "lm:fake": -10.0}),
            Hypothesis("drained of man", scores={"am": -6.0, "am_tokens": 4.0, "am_norm": -1.5, "lm:fake": -9.0}),
        ],
        chosen=0,
    )
    r.extra["rerank"] = {"weight_scores": weights.scores, "length_bonus": weights.length_bonus, "backend": "hf"}
    r.extra["lm_context"] = {"lm:fake": "a domain prompt"}
    return r


WEIGHTS = Weights({"am_norm": 1.0, "lm:fake": 0.1}, 0.0)


def verifier(acoustic: dict[str, float], lm: dict[str, float]) -> tuple[AudioVerifier, FakeAcoustic, FakeLM]:
    a, m = FakeAcoustic(acoustic), FakeLM(lm)
    return AudioVerifier(lambda model: a, lambda name, backend: m), a, m


def test_an_edit_the_audio_does_not_support_loses():
    rec = reranked(WEIGHTS)
    v, a, lm = verifier(
        {"drained of men": -4.0, "drained of man": -6.0, "drained of mean": -9.0}, {"drained of mean": -8.0}
    )
    verdict = v.verify(rec, "drained of mean")
    assert verdict.checked and not verdict.taken and "not supported" in verdict.reason
    assert verdict.proposal_scores["am_norm"] == pytest.approx(-9.0 / 4.0)
    # own scores re-forced for every hypothesis and the proposal, so that all stand on one footing
    assert a.calls == [["drained of men", "drained of man", "drained of mean"]]
    assert lm.contexts == ["a domain prompt"]  # the LM scores the proposal after the record's context
    assert rec.hypotheses[0].scores["am"] == -4.0 and len(rec.hypotheses) == 2  # the record is not touched


def test_an_edit_the_audio_prefers_is_taken():
    rec = reranked(WEIGHTS)
    v, _, _ = verifier(
        {"drained of men": -4.0, "drained of man": -6.0, "drained of mean": -2.0}, {"drained of mean": -9.5}
    )
    verdict = v.verify(rec, "drained of mean")
    assert verdict.checked and verdict.taken and verdict.proposal_total > verdict.rival_total
    high = AudioVerifier(v.acoustic, v.lm, margin=10.0).verify(rec, "drained of mean")
    assert not high.taken  # the margin is what the proposal must win by


def test_text_only_records_are_left_to_the_guards():
    v, a, _ = verifier({}, {})
    verdict = v.verify(reranked(WEIGHTS, audio=None), "anything")
    assert not verdict.checked and verdict.taken and "guards alone" in verdict.reason
    assert a.calls == []


def test_unscorable_weights_keep_the_reranked_text():
    v, _, _ = verifier({"drained of mean": -1.0}, {})
    verdict = v.verify(reranked(Weights({"ctc": 1.0}, 0.0)), "drained of mean")
    assert not verdict.checked and not verdict.taken and "ctc" in verdict.reason
    # an acoustic model that cannot score the text (e.g. too long for the decoder): not verified, not taken
    verdict = v.verify(reranked(WEIGHTS), "a text the fake does not know")
    assert not verdict.checked and not verdict.taken


def test_per_model_keys_score_only_the_proposal():
    w = Weights({"am:m": 1.0, "am_norm:m": 0.5, "mbr:m": 1.0, "rank:m": -0.1}, 0.1)
    rec = reranked(w)
    for h, s in zip(rec.hypotheses, (-4.0, -6.0), strict=True):
        h.scores.update({"am:m": s, "am_tokens:m": 4.0, "rank:m": float(rec.hypotheses.index(h))})
    v, a, _ = verifier({"drained of mean": -5.0}, {})
    verdict = v.verify(rec, "drained of mean")
    assert a.calls == [["drained of mean"]]  # the hypotheses keep their scores
    assert verdict.checked and verdict.proposal_scores["rank:m"] == 3.0  # no system proposed it: worst rank
    assert "mbr:m" in verdict.proposal_scores


def test_weights_of_a_record_never_reranked_are_the_recognizers_own():
    rec = reranked(WEIGHTS)
    rec.extra.pop("rerank")
    w, ratio = record_weights(rec)
    assert set(w.scores) == {"am_norm"} and ratio == 0.0


def test_reverify_decides_a_stored_correction_again():
    rec = reranked(WEIGHTS)
    rec.corrected = "drained of mean"
    rec.correction = {"accepted": True, "changed": True, "cleaned": "drained of mean", "reason": "ok"}
    v, _, _ = verifier(
        {"drained of men": -4.0, "drained of man": -6.0, "drained of mean": -9.0}, {"drained of mean": -8.0}
    )
    out = reverify(rec, v)
    assert out.corrected == "drained of men" and not out.correction["accepted"]
    assert out.correction["verification"]["checked"] and rec.corrected == "drained of mean"


# ------------------------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def tiny_record(tiny_dir: Path, tiny_rows: list[dict]) -> NBest:
    from rescore.stages.rerank import RerankOptions, RerankStage
    from rescore.stages.transcribe import TranscribeOptions, TranscribeStage

    row = next(r for r in tiny_rows if r["text"] == "he was not an ill disposed young man")
    rec = NBest(id=row["id"], audio=str(tiny_dir / row["audio"]), reference=row["text"])
    rec = TranscribeStage(TranscribeOptions(model="whisper-tiny.en", nbest=4)).process([rec])[0]
    return RerankStage(RerankOptions()).process([rec])[0]


def test_real_verifier_rejects_a_wrong_word_and_keeps_the_right_one(tiny_record: NBest):
    """tiny.en and smollm2-135m: a one-word edit away from the audio loses; the reranked text itself wins."""
    from rescore.stages.correct import CorrectOptions, CorrectStage

    v = CorrectStage(CorrectOptions(llm="smollm2-135m", verify_with=[])).verifier()  # the rerank weights judge
    chosen = tiny_record.text("rerank")
    assert "ill disposed young man" in chosen.lower().replace("-", " ")
    wrong = v.verify(tiny_record, chosen.replace("young man", "young men"))
    assert wrong.checked and not wrong.taken, wrong
    assert wrong.proposal_scores["am_norm"] < 0  # a real forced log-probability per token
    assert wrong.proposal_scores["am_tokens"] >= 8
    assert wrong.scored_text == chosen.replace("young man", "young men")
    recased = v.verify(tiny_record, chosen.upper())  # no word changed: nothing for the audio to decide
    assert not recased.checked and recased.taken and "case and punctuation" in recased.reason


def test_only_word_edits_are_scored():
    """Case and punctuation changes are not the audio's business (Whisper scores them a nat or two lower)."""
    assert (
        word_edits_only("the stirring of the powers.", "The stirring of the powers.") == "the stirring of the powers."
    )
    assert word_edits_only("drained of men.", "Drained of man!") == "drained of man!"
    assert word_edits_only("he said, we go", '"He said, we go') == "he said, we go"
    assert word_edits_only("a b c", "a x c d") == "a x c d"
    assert word_edits_only("Chapter 17 when", "Chapter seventeen, when") == "Chapter 17 when"  # normalizer: 17


def test_real_second_opinion_judges_by_whisper_base(tiny_record: NBest):
    """The default judge: whisper-base's summed score (end token included), a model other than the recognizer."""
    from rescore.stages.correct import CorrectOptions, CorrectStage

    v = CorrectStage(CorrectOptions(llm="smollm2-135m")).verifier()
    chosen = tiny_record.text("rerank")
    wrong = v.verify(tiny_record, chosen.replace("young man", "young men"))
    assert (
        wrong.checked
        and not wrong.taken
        and set(wrong.proposal_scores) == {"am:whisper-base", "am_tokens:whisper-base"}
    )
    assert wrong.weights == "1*am:whisper-base + 0*words"
    cut = v.verify(tiny_record, chosen.split(" young")[0])  # stopping early costs the end token and the words
    assert cut.checked and not cut.taken
