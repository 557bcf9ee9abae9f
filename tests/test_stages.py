"""Stage options: what each stage is built from, the precedence rules, and the defects fixed on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescore.pipeline import ConfigError, build_stages, load_config
from rescore.rerank.ranker import LMSpec, RerankConfig, Weights
from rescore.stages import CorrectOptions, CorrectStage, DeepOptions, RerankOptions, TranscribeOptions
from rescore.stages.deep import MODEL_CONFIG, deep_model_dir
from rescore.stages.rerank import plan_rerank


def test_rerank_summed_am_gets_weights_on_its_own_scale() -> None:
    norm = plan_rerank(RerankOptions()).weights
    summed = plan_rerank(RerankOptions(am="am")).weights
    assert norm.scores == {"am_norm": 1.0, "lm:smollm2-135m": 0.016} and norm.length_bonus == 0.05
    assert summed.scores["am"] == 1.0 and "am_norm" not in summed.scores
    assert summed.scores["lm:smollm2-135m"] > 5 * norm.scores["lm:smollm2-135m"] and summed.length_bonus > 0.1
    with pytest.raises(ValueError, match="no default weights"):
        plan_rerank(RerankOptions(am="ctc"))
    own = plan_rerank(RerankOptions(am="ctc", lm_weight=[0.5], length_bonus=0.2)).weights
    assert own.scores == {"ctc": 1.0, "lm:smollm2-135m": 0.5} and own.length_bonus == 0.2


def test_rerank_config_file_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "w.json"
    RerankConfig(
        Weights({"am_norm": 1.0, "lm:qwen2.5-0.5b": 0.01}, 0.05), [LMSpec("qwen2.5-0.5b", "llamacpp")], "ctx", 1
    ).save(cfg)
    p = plan_rerank(RerankOptions(weights=str(cfg)))
    assert (p.lms, p.backend, p.context, p.previous) == (["qwen2.5-0.5b"], "llamacpp", "ctx", 1)
    assert p.weights.scores["lm:qwen2.5-0.5b"] == 0.01
    assert plan_rerank(RerankOptions(weights=str(cfg), context="other", previous=0)).context == "other"
    with pytest.raises(ValueError, match="differ from the ones"):
        plan_rerank(RerankOptions(weights=str(cfg), lm=["smollm2-135m"]))
    with pytest.raises(ValueError, match="2 LM weight"):
        plan_rerank(RerankOptions(lm_weight=[0.1, 0.2]))


def test_transcribe_passes_only_what_the_backend_takes() -> None:
    o = TranscribeOptions(backend="pocketsphinx")
    opts = o.recognizer_options()
    assert "model" not in opts and "compute_type" not in opts and "language" not in opts  # defaults it lacks
    with pytest.raises(ValueError, match="pocketsphinx' does not take compute_type"):
        from rescore.registry import make_recognizer

        make_recognizer(
            "pocketsphinx", **TranscribeOptions(backend="pocketsphinx", compute_type="int8").recognizer_options()
        )
    ct2 = TranscribeOptions().recognizer_options()
    assert {"nbest", "beam_size", "batch_size", "device", "compute_type", "language"} <= set(ct2)
    assert "word_lm" not in ct2  # a ctc option, unset


def test_deep_model_folder_is_recognised_by_the_file_training_writes(tmp_path: Path) -> None:
    from rescore.deep import CONFIG_FILE

    assert MODEL_CONFIG == CONFIG_FILE
    (tmp_path / "config.json").write_text("{}")  # what the stage used to look for: not a deep model
    with pytest.raises(ValueError, match="holds no trained model"):
        deep_model_dir(DeepOptions(checkpoint=str(tmp_path)))
    (tmp_path / CONFIG_FILE).write_text("{}")
    assert deep_model_dir(DeepOptions(checkpoint=str(tmp_path))) == tmp_path


def test_pipeline_sets_guard_thresholds_and_checks_stage_options(tmp_path: Path) -> None:
    over = {"correct": {"max_edit_ratio": 0.5, "max_novel_words": -1}}
    cfg = load_config(input="data/tiny", preset="correct", overrides=over)
    stage = next(s for s in build_stages(cfg) if s.name == "correct")
    assert stage.config.guards.max_edit_ratio == 0.5 and stage.config.guards.max_novel_words is None
    with pytest.raises(ConfigError, match="no default weights"):
        build_stages(load_config(input="data/tiny", preset="fast", overrides={"rerank": {"am": "ctc"}}))
    assert [s.name for s in build_stages(load_config(input="data/tiny", preset="first-pass"))] == ["transcribe"]


def test_adapter_precedence_lives_in_the_library(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "rescore-lora.json").write_text(json.dumps({"llm": "smollm2-135m", "template": "1best", "domain": "d"}))
    stage = CorrectStage(CorrectOptions(adapter=str(adapter)))
    c = stage.config
    assert (c.llm, c.backend, c.template, c.domain) == ("smollm2-135m", "transformers", "1best", "d")
    assert any("transformers" in n for n in stage.notes) and any("trained on smollm2-135m" in n for n in stage.notes)
    c = CorrectStage(CorrectOptions(adapter=str(adapter), prompt="nbest", domain="mine", backend="transformers")).config
    assert (c.template, c.domain) == ("nbest", "mine")


def test_cli_option_a_backend_does_not_take_is_one_line(tiny_manifest: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rescore.cli import app

    args = ["transcribe", str(tiny_manifest), "-o", str(tmp_path / "o.jsonl"), "--backend", "pocketsphinx"]
    res = CliRunner().invoke(app, [*args, "--compute-type", "int8"])
    assert res.exit_code == 2 and "does not take compute_type" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["transcribe", str(tiny_manifest), "-o", str(tmp_path / "o.jsonl"), "--backend", "x"])
    assert res.exit_code == 2 and "unknown recognizer backend 'x'" in res.output


@pytest.mark.model
def test_transcription_keeps_the_manifests_speaker(tmp_path: Path, tiny_dir: Path, tiny_rows: list[dict]) -> None:
    from rescore.io.datasets import load_dataset
    from rescore.stages.transcribe import TranscribeOptions, TranscribeStage, utterance_record

    row = dict(tiny_rows[0], speaker="reader-1", audio=str(tiny_dir / tiny_rows[0]["audio"]))
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    (utt,) = load_dataset(tmp_path / "manifest.jsonl").utterances
    (rec,) = TranscribeStage(TranscribeOptions(nbest=2, beam_size=2)).process([utterance_record(utt)])
    assert rec.ok and rec.extra["speaker"] == "reader-1"
