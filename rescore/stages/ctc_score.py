"""CTC scoring as a stage: the CTC head's log-probability of every hypothesis, from any recognizer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rescore.records import NBest
from rescore.registry import acoustic_scorers
from rescore.stages.base import BaseStage, StageOptions


class CTCScoreOptions(StageOptions):
    """See ``rescore ctc score``: the head (a checkpoint or ``default``) and the score key it writes."""

    model: str = Field(
        "default", description="CTC head checkpoint, or default (the cache's trained head, else the shipped one)."
    )
    key: str = Field("ctc", description="Score key to write.")
    batch_size: int = Field(8, ge=1, description="Utterances encoded together.")


class CTCScoreStage(BaseStage):
    """Adds ``scores[key]`` to each hypothesis; a record whose audio fails gets ``error`` set."""

    name = "ctc-score"

    def __init__(self, options: CTCScoreOptions) -> None:
        super().__init__(options)
        self.batch_size = options.batch_size

    def build(self) -> Any:
        o: CTCScoreOptions = self.opts  # type: ignore[assignment]
        return acoustic_scorers.create("ctc", o.model, key=o.key, batch_size=o.batch_size)

    def process(self, records: list[NBest]) -> list[NBest]:
        return list(self.load().score(records))
