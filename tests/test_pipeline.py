"""``rescore run``: config validation, stage caching by hash, reports rendered in a real browser, Ray engine."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from rescore.cli import app
from rescore.pipeline import ConfigError, load_config, run_pipeline
from rescore.records import read_nbest

runner = CliRunner()


def test_config_rejects_unknown_keys_and_presets(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('input = "data/tiny"\n[transcribe]\nmodle = "whisper-base"\n')
    with pytest.raises(ConfigError, match="transcribe.modle"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(input="data/tiny", preset="nope")
    with pytest.raises(ConfigError, match="nbest"):
        load_config(input="data/tiny", overrides={"transcribe": {"nbest": 0}})
    c = load_config(input="data/tiny", preset="first-pass", overrides={"transcribe": {"nbest": 4}})
    assert not c.rerank.enabled and c.transcribe.nbest == 4 and c.run_name == "tiny"


@pytest.mark.model
def test_run_caches_stages_and_writes_reports(tiny_manifest, tmp_path):
    over = {"output": str(tmp_path), "name": "t", "limit": 3, "transcribe": {"nbest": 4}}
    cfg = load_config(input=str(tiny_manifest), preset="first-pass", overrides=over)
    results, summary = run_pipeline(cfg)
    assert not results[0].cached and summary.scored == 3 and summary.stages[0].wer < 0.2
    results, _ = run_pipeline(cfg)
    assert results[0].cached
    over["transcribe"] = {"nbest": 2}
    results, _ = run_pipeline(load_config(input=str(tiny_manifest), preset="first-pass", overrides=over))
    assert not results[0].cached and len(list(tmp_path.glob("t/01-transcribe.*.jsonl"))) == 2
    d = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert d["stages"][0]["stage"] == "transcribe" and len(d["oracle"]) == 2
    assert "| transcribe |" in (tmp_path / "t" / "report.md").read_text()
    assert 'input = "' in (tmp_path / "t" / "config.toml").read_text()


@pytest.mark.model
@pytest.mark.browser
def test_html_report_renders_in_chromium(tiny_manifest, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian chromium is installed by scripts/test.sh"
    cfg = load_config(
        input=str(tiny_manifest), preset="first-pass", overrides={"output": str(tmp_path), "name": "r", "limit": 2}
    )
    run_pipeline(cfg)
    page = tmp_path / "r" / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 1000 and float(np.std(pixels[..., :3])) > 0.05  # not a blank page
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert "<table" in dom and "transcribe" in dom and dom.count("<img") == 4


@pytest.mark.model
def test_cli_run_and_compare(tiny_manifest, tmp_path):
    args = ["run", str(tiny_manifest), "--preset", "first-pass", "--output", str(tmp_path), "--limit", "2"]
    res = runner.invoke(app, [*args, "--name", "a"])
    assert res.exit_code == 0, res.output
    assert "transcribe" in res.stdout and "WER %" in res.stdout
    runner.invoke(app, [*args, "--name", "b"])
    res = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    assert "runs compared" in res.stdout and (tmp_path / "c.html").stat().st_size > 10_000
    res = runner.invoke(app, ["run", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "missing.toml" in res.output


@pytest.mark.model
@pytest.mark.slow
def test_ray_engine_matches_local(tiny_manifest, tmp_path):
    """Transcription and reranking through Ray Data actors write the same records as the local engine."""
    pytest.importorskip("ray")
    import ray

    over = {"output": str(tmp_path), "limit": 3, "transcribe": {"nbest": 3, "device": "cpu"}, "ray": {"batch_size": 2}}
    local = load_config(input=str(tiny_manifest), preset="fast", overrides={**over, "name": "local"})
    dist = load_config(input=str(tiny_manifest), preset="fast", overrides={**over, "name": "ray", "engine": "ray"})
    try:
        local_results, _ = run_pipeline(local)
        ray_results, _ = run_pipeline(dist)
    finally:
        ray.shutdown()

    def strip(path):
        return [{k: v for k, v in r.to_dict().items() if k != "timing"} for r in read_nbest(path)]

    for a, b in zip(local_results, ray_results, strict=True):
        assert a.name == b.name
        got, want = strip(b.path), strip(a.path)
        assert [r["id"] for r in got] == [r["id"] for r in want]
        for g, w in zip(got, want, strict=True):
            assert g.get("chosen") == w.get("chosen") and [h["text"] for h in g["hypotheses"]] == [
                h["text"] for h in w["hypotheses"]
            ]
            for hg, hw in zip(g["hypotheses"], w["hypotheses"], strict=True):
                assert hg["scores"] == pytest.approx(hw["scores"], abs=1e-3)


def test_ray_actor_threads_follow_the_option_the_driver_or_the_cores(monkeypatch):
    """Ray would give each actor OMP_NUM_THREADS=1; the engine passes the option, the driver's own setting, or the
    cores shared among the actors."""
    from rescore.scale import RayEngine

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert RayEngine(actors=1).actor_threads() == "8"
    assert RayEngine(actors=3).actor_threads() == "2"
    assert RayEngine(actors=16).actor_threads() == "1"
    assert RayEngine(actors=2, threads_per_actor=3).actor_threads() == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert RayEngine(actors=2).actor_threads() == "5"


@pytest.mark.model
def test_changing_a_later_stage_reruns_only_that_stage(tiny_manifest, tmp_path):
    over = {"output": str(tmp_path), "name": "s", "limit": 2, "transcribe": {"nbest": 4}}
    results, summary = run_pipeline(load_config(input=str(tiny_manifest), preset="fast", overrides=over))
    assert [(r.name, r.cached) for r in results] == [("transcribe", False), ("rerank", False)]
    rec = results[1].records[0]
    assert rec.chosen is not None and "lm:smollm2-135m" in rec.hypotheses[0].scores and rec.timing["rerank"] >= 0
    assert [s.stage for s in summary.stages] == ["transcribe", "rerank"]
    over["rerank"] = {"context": "A passage from a novel."}
    results, _ = run_pipeline(load_config(input=str(tiny_manifest), preset="fast", overrides=over))
    assert [r.cached for r in results] == [True, False]


@pytest.mark.model
def test_default_preset_is_the_union_and_the_shipped_reranker(tiny_manifest, tmp_path):
    over = {"output": str(tmp_path), "name": "u", "limit": 2, "transcribe": {"nbest": 4}}
    results, summary = run_pipeline(load_config(input=str(tiny_manifest), overrides=over))
    assert [r.name for r in results] == ["transcribe", "rerank"]
    for rec in results[-1].records:
        assert rec.recognizer["backend"] == "union" and rec.chosen is not None
        assert {"am:whisper-tiny.en", "am:whisper-base", "lm:smollm2-135m"} <= set(rec.hypotheses[0].scores)
        assert "am:whisper-base" in rec.extra["rerank"]["weights"]
    assert [s.stage for s in summary.stages] == ["transcribe", "rerank"]


@pytest.mark.model
def test_correct_preset_runs_every_stage(tiny_manifest, tmp_path):
    over = {"output": str(tmp_path), "name": "d", "limit": 1, "transcribe": {"nbest": 4}}
    results, summary = run_pipeline(load_config(input=str(tiny_manifest), preset="correct", overrides=over))
    assert [r.name for r in results] == ["transcribe", "rerank", "correct"]
    (rec,) = results[-1].records
    assert rec.corrected and rec.correction["llm"] == "qwen2.5-0.5b" and "accepted" in rec.correction
    assert rec.chosen is not None and rec.timing["correct"] > 0
    assert [s.stage for s in summary.stages] == ["transcribe", "rerank", "correct"]


@pytest.mark.model
def test_cli_run_names_each_failed_item_once(tmp_path, speech):
    """A folder with a good file, an empty one and a text file named .wav: every later stage passes the failures on,
    and the run still names each of them once."""
    import soundfile as sf

    audio, rate, _ = speech
    folder = tmp_path / "folder"
    folder.mkdir()
    sf.write(folder / "good.wav", audio, rate)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("not audio, a text file\n")
    args = ["run", str(folder), "--preset", "fast", "--output", str(tmp_path / "runs")]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    for item in ("empty", "notes"):
        lines = [line for line in res.output.splitlines() if line.startswith("failed") and item in line]
        assert len(lines) == 1, res.output
    (result,) = [line for line in res.output.splitlines() if line.startswith("rerank:")]
    assert "2 failed" in result, res.output  # the good file went through both stages


def test_cli_run_takes_the_rerank_config_before_loading_any_model(tmp_path):
    args = ["run", "data/tiny", "--rerank-config", str(tmp_path / "none.json"), "--output", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "none.json: not a rerank config" in res.output
    assert not (tmp_path / "tiny").exists()  # refused before the run started
