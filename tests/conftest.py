"""Shared fixtures: the real tiny set (../shared/data/tiny, else the bundled copy) and audio variants."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RESCORE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    shared = SHARED_DATA / "tiny"
    return shared if (shared / "manifest.jsonl").exists() else REPO / "data" / "tiny"


@pytest.fixture(scope="session")
def tiny_manifest(tiny_dir: Path) -> Path:
    return tiny_dir / "manifest.jsonl"


@pytest.fixture(scope="session")
def tiny_rows(tiny_manifest: Path) -> list[dict]:
    return [json.loads(line) for line in tiny_manifest.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def speech(tiny_dir: Path, tiny_rows: list[dict]) -> tuple[np.ndarray, int, str]:
    """A real short utterance: (samples, rate, reference)."""
    row = next(r for r in tiny_rows if r["id"].endswith("0880"))
    audio, rate = sf.read(tiny_dir / row["audio"], dtype="float32")
    return audio, rate, row["text"]


@pytest.fixture()
def bad_inputs(tmp_path: Path, speech: tuple[np.ndarray, int, str]) -> Path:
    """A manifest mixing good audio in odd formats with every kind of broken item."""
    import scipy.signal

    audio, rate, text = speech
    d = tmp_path / "set"
    (d / "audio").mkdir(parents=True)
    sf.write(d / "audio/stereo48k.wav", np.stack([audio, audio], 1).repeat(3, 0), rate * 3)  # 48 kHz stereo
    sf.write(d / "audio/mono8k.flac", scipy.signal.resample_poly(audio, 1, 2).astype(np.float32), rate // 2)
    (d / "audio/empty.wav").write_bytes(b"")
    (d / "audio/corrupt.flac").write_bytes(b"fLaC" + os.urandom(2000))
    sf.write(d / "audio/zero.wav", np.zeros(0, dtype=np.float32), rate)
    lines = [
        {"id": "stereo48k", "audio": "audio/stereo48k.wav", "text": text},
        {"id": "mono8k", "audio": "audio/mono8k.flac", "text": text},
        {"id": "empty", "audio": "audio/empty.wav", "text": text},
        {"id": "corrupt", "audio": "audio/corrupt.flac", "text": text},
        {"id": "zero", "audio": "audio/zero.wav", "text": text},
        {"id": "missing", "audio": "audio/missing.wav", "text": text},
        {"id": "stereo48k", "audio": "audio/mono8k.flac", "text": "duplicate"},
        {"audio": "audio/mono8k.flac"},
    ]
    body = "\n".join(json.dumps(x) for x in lines) + "\nthis is not json\n"
    (d / "manifest.jsonl").write_text(body)
    return d / "manifest.jsonl"


@pytest.fixture()
def deep_train_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """`rescore deep train` with the training replaced, for tests of the options' mapping (training itself is
    tested on real models): ``run(extra_args)`` invokes it on an empty n-best file and returns the CLI result;
    ``configs`` holds the TrainConfig each run handed to training."""
    from typer.testing import CliRunner

    import rescore.deep.train
    from rescore.cli import app

    configs: list = []

    def capture(cfg, **_):
        configs.append(cfg)
        raise ValueError("stopped before training")

    monkeypatch.setattr(rescore.deep.train, "train", capture)
    nbest = tmp_path / "n.jsonl"
    nbest.write_text("")
    base = ["deep", "train", "--train", str(nbest), "-o", str(tmp_path / "m")]
    return SimpleNamespace(run=lambda extra: CliRunner().invoke(app, base + list(extra)), configs=configs)


# Fixtures that load real weights: a test asking for one is a `model` test wherever it is (the quick subset,
# `pytest -m "not model and not slow"`, must not load a model by way of a fixture).
REAL_MODEL_FIXTURES = {"real_model", "audio_batch", "prediction_model", "tiny_record"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)

