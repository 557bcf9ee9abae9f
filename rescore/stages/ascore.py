"""Acoustic scoring as a stage: every hypothesis teacher-forced through one or more Whisper models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from rescore.records import NBest
from rescore.registry import acoustic_scorers
from rescore.stages.base import BaseStage, StageOptions


class AScoreOptions(StageOptions):
    """See ``rescore ascore``: the models (each writes ``am:<model>`` and ``am_tokens:<model>``) and how they run."""

    models: list[str] = ["whisper-base"]
    device: str = "auto"
    compute_type: str = "auto"
    batch_size: int = Field(8, ge=1)
    language: str = "en"
    method: Literal["torch", "ct2"] = "torch"

    @field_validator("models")
    @classmethod
    def _some_distinct(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one model is needed")
        if len(set(v)) != len(v):
            raise ValueError("a model is listed twice")
        return v


class AScoreStage(BaseStage):
    """Adds each model's teacher-forced score to every hypothesis; records without audio pass through marked."""

    name = "ascore"

    def __init__(self, options: AScoreOptions) -> None:
        super().__init__(options)
        self.batch_size = options.batch_size

    def build(self) -> Any:
        o: AScoreOptions = self.opts  # type: ignore[assignment]
        return [
            acoustic_scorers.create(
                "whisper",
                m,
                device=o.device,
                compute_type=o.compute_type,
                batch_size=o.batch_size,
                language=o.language,
                method=o.method,
            )
            for m in o.models
        ]

    def process(self, records: list[NBest]) -> list[NBest]:
        for scorer in self.load():
            records = scorer.score(records)
        return records
