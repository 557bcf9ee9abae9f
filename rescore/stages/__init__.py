"""The pipeline's stages: each a small class with a name, options and ``process(records) -> records``.

They register by name in :data:`rescore.registry.stages`; the runner (:mod:`rescore.runner`) streams
records through any of them, from the CLI, ``rescore run`` or Ray.
"""

from rescore.registry import stages as _registry
from rescore.stages.ascore import AScoreOptions, AScoreStage
from rescore.stages.base import BaseStage, StageOptions
from rescore.stages.correct import CorrectOptions, CorrectStage
from rescore.stages.ctc_score import CTCScoreOptions, CTCScoreStage
from rescore.stages.deep import DeepOptions, DeepStage
from rescore.stages.rerank import RerankOptions, RerankStage
from rescore.stages.transcribe import TranscribeOptions, TranscribeStage, record_utterance, utterance_record

for _stage in (TranscribeStage, RerankStage, CorrectStage, DeepStage, CTCScoreStage, AScoreStage):
    _registry.register(_stage.name, _stage)

__all__ = [
    "AScoreOptions",
    "AScoreStage",
    "BaseStage",
    "CTCScoreOptions",
    "CTCScoreStage",
    "CorrectOptions",
    "CorrectStage",
    "DeepOptions",
    "DeepStage",
    "RerankOptions",
    "RerankStage",
    "StageOptions",
    "TranscribeOptions",
    "TranscribeStage",
    "record_utterance",
    "utterance_record",
]
