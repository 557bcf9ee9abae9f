"""Acoustic scoring as a stage: every hypothesis teacher-forced through one or more Whisper models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from rescore.records import NBest
from rescore.registry import acoustic_scorers
from rescore.stages.base import BaseStage, StageOptions


class AScoreOptions(StageOptions):
    """See ``rescore ascore``: the models (each writes ``am:<model>`` and ``am_tokens:<model>``) and how they run."""

    models: list[str] = Field(
        ["whisper-base"],
        description="Whisper models to score with (a name or a CTranslate2 folder), each writing am:<model> and"
        " am_tokens:<model>; on the command line, the flag repeated.",
    )
    device: str = Field("auto", description="auto, cpu or cuda.")
    compute_type: str = Field("auto", description="CTranslate2 compute type (auto: int8 on CPU).")
    batch_size: int = Field(8, ge=1, description="Windows encoded together, hypotheses decoded together.")
    language: str = Field("en", description="Language token of multilingual models.")
    method: Literal["torch", "ct2"] = Field(
        "torch", description="torch (fast: one decoder pass per window) or ct2 (CTranslate2 alone, slower)."
    )

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
