"""Deep fusion as a stage: the trained speech-LLM decodes the audio again, an alternative system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from rescore.models import cache_dir
from rescore.records import NBest
from rescore.registry import make_recognizer
from rescore.stages.base import BaseStage, StageOptions, file_digest
from rescore.stages.transcribe import record_utterance

MODEL_CONFIG = "deep-config.json"  # what `rescore deep train` writes into its model folder


class DeepOptions(StageOptions):
    """Deep fusion decoding from a trained model folder (see ``rescore deep``)."""

    enabled: bool = False
    checkpoint: str | None = None
    beam_size: int = Field(4, ge=1)
    nbest: int = Field(4, ge=1)
    batch_size: int = Field(4, ge=1)
    device: str = "auto"
    threads: int = Field(0, ge=0)


def default_model_dir() -> Path:
    """Where ``rescore deep train`` writes its model by default."""
    return cache_dir() / "deep" / "model"


def deep_model_dir(o: DeepOptions) -> Path:
    """The configured model folder, else the default one; ValueError when it holds no trained model."""
    path = Path(o.checkpoint) if o.checkpoint else default_model_dir()
    if not (path / MODEL_CONFIG).is_file():
        raise ValueError(f"deep fusion: {path} holds no trained model ({MODEL_CONFIG}); run `rescore deep train`")
    return path


class DeepStage(BaseStage):
    """Decodes the utterances of placeholder records with the speech-LLM (its own n-best records)."""

    name = "deep"
    source = "audio"

    def __init__(self, options: DeepOptions) -> None:
        super().__init__(options)
        self.batch_size = options.batch_size

    def options(self) -> dict[str, Any]:
        path = Path(self.opts.checkpoint) if self.opts.checkpoint else default_model_dir()  # type: ignore[attr-defined]
        return self.opts.model_dump() | {"checkpoint_digest": file_digest(path)}

    def build(self) -> Any:
        o: DeepOptions = self.opts  # type: ignore[assignment]
        return make_recognizer(
            "deep",
            model=deep_model_dir(o),
            beam_size=o.beam_size,
            nbest=o.nbest,
            batch_size=o.batch_size,
            device=o.device,
            threads=o.threads,
        )

    def process(self, records: list[NBest]) -> list[NBest]:
        return list(self.load().recognize([record_utterance(r) for r in records]))
