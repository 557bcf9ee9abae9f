"""The CLI end to end with the real model: bad input is named, the batch goes on, reruns resume."""

import json

import pytest
from typer.testing import CliRunner

from rescore.cli import app
from rescore.records import read_nbest

pytestmark = pytest.mark.model
runner = CliRunner()


def test_bad_inputs_named_batch_continues_and_resumes(bad_inputs, tmp_path):
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["transcribe", str(bad_inputs), "-o", str(out), "--batch-size", "2"])
    assert res.exit_code == 1, res.output
    for needle in (
        "manifest.jsonl:8",
        "manifest.jsonl:9",
        "duplicate",
        "empty file",
        "cannot decode",
        "zero length",
        "not found",
        "4 utterance(s) failed",
        "3 input item(s) skipped",
    ):
        assert needle in res.output, needle
    recs = {r.id: r for r in read_nbest(out)}
    assert set(recs) == {"stereo48k", "mono8k", "empty", "corrupt", "zero", "missing"}
    assert recs["stereo48k"].ok and recs["mono8k"].ok and "not an ill" in recs["mono8k"].hypotheses[0].text
    assert not recs["corrupt"].ok and "cannot decode" in recs["corrupt"].error

    # rerun: the two good ones are kept, the four failures retried (and fail again), nothing is lost
    res = runner.invoke(app, ["transcribe", str(bad_inputs), "-o", str(out)])
    assert "resuming: 2 of 6" in res.output and res.exit_code == 1
    assert sorted(r.id for r in read_nbest(out)) == sorted(recs)

    res = runner.invoke(app, ["score", str(out), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["scored"] == 2 and len(d["failed"]) == 4 and d["wer"]["whisper"]["rate"] < 0.2


def test_score_table_oracle_and_alignment(tiny_manifest, tmp_path):
    out = tmp_path / "tiny.jsonl"
    res = runner.invoke(app, ["transcribe", str(tiny_manifest), "-o", str(out), "--limit", "3", "--nbest", "4"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", str(out), "--reference", str(tiny_manifest), "--align"])
    assert res.exit_code == 0, res.output
    for needle in ("whisper", "basic", "none", "95 % CI", "k=4", "REF:", "HYP:"):
        assert needle in res.stdout, needle


def test_unknown_model_and_unwritable_output(tiny_manifest, tmp_path):
    res = runner.invoke(
        app, ["transcribe", str(tiny_manifest), "-o", str(tmp_path / "o.jsonl"), "--model", "whisper-huge"]
    )
    assert res.exit_code == 2 and "unknown model 'whisper-huge'" in res.output
    (tmp_path / "afile").write_text("x")  # a parent that is a file: unwritable even for root
    res = runner.invoke(app, ["transcribe", str(tiny_manifest), "-o", str(tmp_path / "afile" / "o.jsonl")])
    assert res.exit_code == 2 and "cannot write" in res.output


def test_unwritable_output_path_is_a_folder(tiny_manifest, tmp_path):
    res = runner.invoke(app, ["transcribe", str(tiny_manifest), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "cannot write" in res.output


def test_models_lists_installed():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "whisper-tiny.en" in res.stdout and "qwen2.5-0.5b" in res.stdout
