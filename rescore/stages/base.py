"""What every stage shares: strict, hashable options and lazily loaded models.

A stage is cheap to build and to pickle (Ray ships it to its actors); the models load on first use or on
:meth:`BaseStage.load`, which the CLI calls up front so that a model that cannot load is one clear error.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from rescore.records import NBest


class StageOptions(BaseModel):
    """Options of one stage: unknown keys are errors, the dump is the stage's cache identity. Each field's
    ``Field(description=...)`` is its help, on the command line and in docs/cli.md."""

    model_config = ConfigDict(extra="forbid")


class IsPath:
    """Marks a string option that names a file or folder: the command line takes (and completes) a path."""


PathStr = Annotated[str, IsPath()]


class BaseStage:
    """A :class:`rescore.runner.Stage` with options and a model built once per process."""

    name: ClassVar[str]
    source: ClassVar[str] = "records"  # "audio": the stage reads the input utterances, not the previous stage
    batch_size: int | None = 8

    def __init__(self, options: StageOptions) -> None:
        self.opts = options
        self._model: Any = None

    def options(self) -> dict[str, Any]:
        """What determines this stage's output (options plus digests of the files they name)."""
        return self.opts.model_dump()

    def build(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self) -> Any:
        if self._model is None:
            self._model = self.build()
        return self._model

    def process(self, records: list[NBest]) -> list[NBest]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}  # ship options, not loaded models


def make_verifier(judges: list[str], *, margin: float = 0.0, device: str = "auto") -> Any:
    """An :class:`rescore.correct.verify.AudioVerifier` whose scorers load on first use and are kept.

    ``judges``: acoustic models whose summed scores decide; empty: each record's own rerank weights."""
    from rescore.correct.verify import AudioVerifier
    from rescore.registry import acoustic_scorers, make_scorer
    from rescore.rerank.ranker import Weights
    from rescore.score.acoustic import score_keys

    acoustic: dict[str, Any] = {}
    lms: dict[tuple[str, str], Any] = {}

    def am(model: str) -> Any:
        if model not in acoustic:
            acoustic[model] = acoustic_scorers.create("whisper", model, device=device)
        return acoustic[model]

    def lm(name: str, backend: str) -> Any:
        if (name, backend) not in lms:
            lms[name, backend] = make_scorer(name, backend)
        return lms[name, backend]

    judge = Weights({score_keys(m)[0]: 1.0 for m in judges}, 0.0) if judges else None
    return AudioVerifier(am, lm, margin=margin, weights=judge)


def option_guards(max_edit_ratio: float, max_novel_words: int, **settings: Any) -> Any:
    """The :class:`rescore.correct.guards.GuardConfig` of a stage's options, where a negative edit budget or
    novel-word limit turns that guard off (a config file cannot write None)."""
    from rescore.correct.guards import GuardConfig

    return GuardConfig(
        max_edit_ratio=max_edit_ratio if max_edit_ratio >= 0 else None,
        max_novel_words=max_novel_words if max_novel_words >= 0 else None,
        **settings,
    )
