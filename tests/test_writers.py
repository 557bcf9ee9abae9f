"""Final transcripts: the same bytes as Whisper's own writers, exact per-window cues, failures listed."""

import csv
import io
import json

import pytest
from whisper import utils as wutils

from rescore.io.writers import (
    FORMATS,
    JSON_NAME,
    TSV_NAME,
    Cue,
    cues,
    file_names,
    format_timestamp,
    safe_name,
    srt_text,
    txt_text,
    vtt_text,
    window_split,
    write_transcripts,
)
from rescore.recognize.base import combine_windows
from rescore.records import Hypothesis, NBest, Window


def _whisper(writer_cls, segments, tmp_path) -> str:
    buf = io.StringIO()
    writer_cls(str(tmp_path)).write_result({"segments": segments, "text": ""}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("seconds", [0.0, 0.0004, 0.0005, 1.9996, 59.999, 61.25, 3599.9995, 3600.0, 4000.5, 36000.123])
def test_timestamps_match_whisper(seconds):
    for hours, marker in ((False, "."), (True, ",")):
        assert format_timestamp(seconds, hours, marker) == wutils.format_timestamp(seconds, hours, marker)


def test_srt_vtt_txt_match_whisper_writers(tmp_path):
    segs = [Cue(0.0, 29.48, " hello world "), Cue(29.48, 3601.2, "a --> b"), Cue(3601.2, 3605.0, "the end")]
    whisper_segs = [{"start": c.start, "end": c.end, "text": c.text} for c in segs]
    assert srt_text(segs) == _whisper(wutils.WriteSRT, whisper_segs, tmp_path)
    assert vtt_text(segs) == _whisper(wutils.WriteVTT, whisper_segs, tmp_path)
    assert txt_text(segs) == _whisper(wutils.WriteTXT, whisper_segs, tmp_path)
    assert srt_text(segs).startswith("1\n00:00:00,000 --> 00:00:29,480\nhello world\n\n2\n")
    assert "a -> b" in vtt_text(segs) and vtt_text([]) == "WEBVTT\n\n"


def _window(start, end, *texts):
    return Window(start, end, [Hypothesis(t, scores={"am_norm": -float(i)}) for i, t in enumerate(texts)])


def _long_record() -> NBest:
    """A recording cut into three windows, combined the way the recognizers combine them."""
    windows = [
        _window(0.0, 28.5, "He hoped there would be stew.", "He hoped there would be a stew."),
        _window(28.5, 30.0, ""),  # silence: the window adds no text
        _window(30.0, 55.25, "Turnips and carrots.", "Turnips and carrot."),
    ]
    return NBest(id="long", duration=55.25, hypotheses=combine_windows(windows, 4), windows=windows)


def test_first_pass_and_window_choices_split_per_window():
    r = _long_record()
    assert r.text("first-pass") == "He hoped there would be stew. Turnips and carrots."
    assert cues(r, "first-pass") == [
        Cue(0.0, 28.5, "He hoped there would be stew."),
        Cue(30.0, 55.25, "Turnips and carrots."),
    ]
    r.chosen = next(i for i, h in enumerate(r.hypotheses) if h.text.endswith("a stew. Turnips and carrot."))
    assert [c.text for c in cues(r, "rerank")] == ["He hoped there would be a stew.", "Turnips and carrot."]
    assert window_split(r, r.text("rerank")) == ["He hoped there would be a stew.", "", "Turnips and carrot."]


def test_text_no_window_join_spells_is_one_cue():
    r = _long_record()
    r.corrected = "He hoped there would be stew, turnips and carrots."
    assert window_split(r, r.corrected) is None
    assert cues(r) == [Cue(0.0, 55.25, r.corrected)]
    assert cues(r, "first-pass")[0].end == 28.5  # the stage's own text still splits


def test_ambiguous_split_is_one_cue():
    windows = [_window(0.0, 10.0, "a b", "a"), _window(10.0, 20.0, "c", "b c")]
    r = NBest(id="amb", duration=20.0, hypotheses=[Hypothesis("a b c")], windows=windows)
    assert window_split(r, "a b c") is None  # "a b"+"c" or "a"+"b c": no way to know which
    assert cues(r) == [Cue(0.0, 20.0, "a b c")]
    assert window_split(r, "a c") == ["a", "c"]  # one way only: exact


def test_short_utterance_is_one_cue_over_its_duration():
    r = NBest(id="s", duration=3.5, hypotheses=[Hypothesis(" Hello. ")])
    assert cues(r) == [Cue(0.0, 3.5, "Hello.")]
    assert cues(NBest(id="e", duration=1.0, hypotheses=[Hypothesis("")])) == []


def test_file_names_are_safe_and_distinct():
    assert safe_name("103-1240-0000") == "103-1240-0000"
    assert safe_name("../sub dir/a:b") == "_sub_dir_a_b"
    assert "/" not in safe_name("a/b") and safe_name("...") == "_"
    assert len(safe_name("x" * 1000).encode()) <= 200
    names = file_names(["a/b", "a_b", "A_B", "c"])
    assert names["c"] == "c" and len({n.casefold() for n in names.values()}) == 4


def test_write_transcripts_all_formats(tmp_path):
    good = NBest(id="sub/utt 1", audio="sub/utt 1.flac", duration=2.0, hypotheses=[Hypothesis("Hello\tthere.")])
    failed = NBest(id="broken", audio="broken.flac", error="cannot decode audio:\nbad header")
    records = [good, _long_record(), failed]
    paths = write_transcripts(records, tmp_path / "out", formats=FORMATS)
    names = sorted(p.name for p in paths)
    per_record = [f"{n}.{ext}" for n in ("long", "sub_utt_1") for ext in ("srt", "txt", "vtt")]
    assert names == sorted([*per_record, TSV_NAME, JSON_NAME])
    assert all(p.exists() for p in paths)
    out = tmp_path / "out"
    assert (out / "long.txt").read_text() == "He hoped there would be stew.\nTurnips and carrots.\n"
    assert (out / "long.srt").read_text().count(" --> ") == 2
    rows = list(csv.reader((out / TSV_NAME).open(encoding="utf-8"), delimiter="\t"))
    assert rows == [
        ["id", "text", "error"],
        ["sub/utt 1", "Hello there.", ""],
        ["long", "He hoped there would be stew. Turnips and carrots.", ""],
        ["broken", "", "cannot decode audio: bad header"],
    ]
    data = json.loads((out / JSON_NAME).read_text(encoding="utf-8"))
    by_id = {t["id"]: t for t in data["transcripts"]}
    assert by_id["broken"]["error"].startswith("cannot decode") and by_id["broken"]["segments"] == []
    assert [s["start"] for s in by_id["long"]["segments"]] == [0.0, 30.0]


def test_write_transcripts_default_and_stage(tmp_path):
    r = _long_record()
    r.corrected = "He hoped for stew."
    paths = write_transcripts([r], tmp_path, stage="first-pass")
    assert sorted(p.name for p in paths) == ["long.txt", TSV_NAME]
    assert "stew. Turnips" in (tmp_path / TSV_NAME).read_text()
    write_transcripts([r], tmp_path)  # auto: the corrected text
    assert (tmp_path / "long.txt").read_text() == "He hoped for stew.\n"


def test_unknown_format_or_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'docx'.*txt, tsv, json, srt, vtt"):
        write_transcripts([], tmp_path, formats=("txt", "docx"))
    with pytest.raises(ValueError, match="unknown stage 'deep'"):
        write_transcripts([], tmp_path, stage="deep")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_real_long_recording_gets_one_cue_per_window(tiny_dir, tmp_path):
    """Whisper tiny.en on a real 53-70 s recording: the first pass splits exactly at its windows."""
    from rescore.io.datasets import load_dataset
    from rescore.registry import make_recognizer

    manifest = tiny_dir.parent / "longform" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("no shared longform set")
    utt = min(load_dataset(manifest).utterances, key=lambda u: u.duration or 1e9)
    rec = make_recognizer("ctranslate2", model="whisper-tiny.en", device="cpu", nbest=2, beam_size=2)
    (record,) = rec.recognize([utt])
    assert record.ok and len(record.windows) >= 2
    write_transcripts([record], tmp_path, formats=("srt", "vtt", "tsv"), stage="first-pass")
    srt = (tmp_path / f"{safe_name(record.id)}.srt").read_text()
    spoken = [w for w in record.windows if w.hypotheses and w.hypotheses[0].text.strip()]
    assert srt.count(" --> ") == len(spoken)
    assert format_timestamp(record.windows[-1].end, True, ",") in srt
    assert " ".join(c.text for c in cues(record, "first-pass")) == record.text("first-pass").strip()
