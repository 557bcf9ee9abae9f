"""The pipeline's stages: each a small class with a name, options and ``process(records) -> records``.

They register by name in :data:`rescore.registry.stages`; the runner (:mod:`rescore.runner`) streams
records through any of them, from the CLI, ``rescore run`` or Ray.

Each name below is imported from its module on first use: every CLI call reads the stages' option models to
make its flags, and should not load every stage's library (numpy, the corrector, deep fusion) to do so.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from rescore.registry import stages as _registry

_MODULES = {  # module -> the names it defines here
    "ascore": ("AScoreOptions", "AScoreStage"),
    "base": ("BaseStage", "StageOptions"),
    "correct": ("CorrectOptions", "CorrectStage"),
    "ctc_score": ("CTCScoreOptions", "CTCScoreStage"),
    "deep": ("DeepOptions", "DeepStage"),
    "rerank": ("RerankOptions", "RerankStage"),
    "transcribe": ("TranscribeOptions", "TranscribeStage", "record_utterance", "utterance_record"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
STAGES = {  # registry name (the class's ``name``) -> its class
    "transcribe": "rescore.stages.transcribe:TranscribeStage",
    "rerank": "rescore.stages.rerank:RerankStage",
    "correct": "rescore.stages.correct:CorrectStage",
    "deep": "rescore.stages.deep:DeepStage",
    "ctc-score": "rescore.stages.ctc_score:CTCScoreStage",
    "ascore": "rescore.stages.ascore:AScoreStage",
}
for _name, _where in STAGES.items():
    _registry.register(_name, _where)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


if TYPE_CHECKING:
    from rescore.stages.ascore import AScoreOptions, AScoreStage
    from rescore.stages.base import BaseStage, StageOptions
    from rescore.stages.correct import CorrectOptions, CorrectStage
    from rescore.stages.ctc_score import CTCScoreOptions, CTCScoreStage
    from rescore.stages.deep import DeepOptions, DeepStage
    from rescore.stages.rerank import RerankOptions, RerankStage
    from rescore.stages.transcribe import TranscribeOptions, TranscribeStage, record_utterance, utterance_record

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
