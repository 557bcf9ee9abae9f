import json

import pytest

from rescore.io.datasets import load_dataset


def test_manifest_tiny(tiny_manifest):
    ds = load_dataset(tiny_manifest)
    assert ds.kind == "manifest" and len(ds.utterances) == 10 and not ds.issues
    assert all(u.reference for u in ds.utterances)


def test_manifest_issues_are_named(bad_inputs):
    ds = load_dataset(bad_inputs)
    msgs = [str(i) for i in ds.issues]
    assert any("manifest.jsonl:8" in m and "missing field" in m for m in msgs)
    assert any("manifest.jsonl:9" in m and "not JSON" in m for m in msgs)
    assert any(m.startswith("stereo48k:") and "duplicate" in m for m in msgs)
    assert [u.id for u in ds.utterances] == ["stereo48k", "mono8k", "empty", "corrupt", "zero", "missing"]


def test_audio_folder_recursive_with_references(tmp_path, tiny_dir):
    (tmp_path / "a" / "b").mkdir(parents=True)
    src = tiny_dir / "audio" / "jfk.flac"
    (tmp_path / "a" / "b" / "jfk.flac").write_bytes(src.read_bytes())
    (tmp_path / "a" / "b" / "jfk.txt").write_text("ask not\n")
    (tmp_path / "a" / "notes.md").write_text("not audio")
    ds = load_dataset(tmp_path)
    assert ds.kind == "folder"
    assert [(u.id, u.reference) for u in ds.utterances] == [("a/b/jfk", "ask not")]


def test_empty_folder_is_an_issue(tmp_path):
    ds = load_dataset(tmp_path)
    assert not ds.utterances and "no audio files" in str(ds.issues[0])


def test_librispeech_folder(tmp_path, tiny_dir):
    chapter = tmp_path / "1089" / "134686"
    chapter.mkdir(parents=True)
    for uid in ("1089-134686-0000", "1089-134686-0001"):
        (chapter / f"{uid}.flac").write_bytes((tiny_dir / "audio" / f"{uid}.flac").read_bytes())
    (chapter / "1089-134686.trans.txt").write_text(
        "1089-134686-0000 HE HOPED\n1089-134686-0001 STUFF IT\n1089-134686-0002 NO AUDIO\n"
    )
    ds = load_dataset(tmp_path)
    assert ds.kind == "librispeech"
    assert [u.reference for u in ds.utterances] == ["HE HOPED", "STUFF IT"]
    assert ds.issues[0].utterance_id == "1089-134686-0002"


def test_kaldi_with_segments(tmp_path, tiny_dir):
    jfk = tiny_dir / "audio" / "jfk.flac"
    (tmp_path / "wav.scp").write_text(f"rec1 {jfk}\nrec2 flac -dc {jfk} |\n")
    (tmp_path / "text").write_text("seg1 and so my fellow americans\nseg2 ask not\n")
    (tmp_path / "segments").write_text("seg1 rec1 0.0 3.0\nseg2 rec2 3.0 -1\nseg3 rec9 0 1\nseg4 rec1 5 2\n")
    ds = load_dataset(tmp_path)
    assert ds.kind == "kaldi"
    seg1, seg2 = ds.utterances
    assert (seg1.start, seg1.end, seg1.reference) == (0.0, 3.0, "and so my fellow americans")
    assert seg2.audio.endswith("|") and seg2.end is None
    assert {i.utterance_id for i in ds.issues} == {"seg3", "seg4"}


def test_kaldi_without_segments(tmp_path, tiny_dir):
    jfk = tiny_dir / "audio" / "jfk.flac"
    (tmp_path / "wav.scp").write_text(f"jfk {jfk}\njfk {jfk}\n")
    (tmp_path / "text").write_text("jfk ask not\n")
    ds = load_dataset(tmp_path)
    assert [(u.id, u.reference) for u in ds.utterances] == [("jfk", "ask not")]
    assert "duplicate" in str(ds.issues[0])


def test_unknown_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="not a manifest"):
        load_dataset(tmp_path / "x.csv")


def test_manifest_relative_audio(tmp_path, tiny_dir):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "j", "audio": str(tiny_dir / "audio/jfk.flac")}) + "\n")
    assert load_dataset(m).utterances[0].audio == str(tiny_dir / "audio/jfk.flac")
