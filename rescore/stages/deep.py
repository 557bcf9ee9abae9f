"""Deep fusion as a stage: a trained model writes the transcript again, an alternative system.

The gated cross-attention model (the default of ``rescore deep train``) reads the previous stage's records
(their n-best and audio); a prefix-bridge model reads the input utterances' audio alone. Which one a folder
holds is read from its config file, so the stage takes its input from the right place.

The cross-attention model's answer is verified like any correction (``verify``): the text guards first, then
the audio (``rescore.correct.verify``); when either refuses, the record's ``corrected`` is the input record's
own text, so ``text()`` is what the deep stage stands by, and ``correction`` says what it proposed and why it was
kept or not. Its beams stay as they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from rescore.deep import CONFIG_FILE as MODEL_CONFIG
from rescore.deep import XATTN_KEY, DecodeMode
from rescore.io.models import cache_dir, file_digest
from rescore.records import NBest
from rescore.registry import make_recognizer
from rescore.stages.base import BaseStage, PathStr, StageOptions, make_verifier, option_guards
from rescore.stages.transcribe import record_utterance


class DeepOptions(StageOptions):
    """Deep fusion decoding from a trained model folder (see ``rescore deep``)."""

    enabled: bool = Field(False, description="Run the deep-fusion stage (off unless a model is trained).")
    checkpoint: PathStr | None = Field(
        None, description="Model folder from `rescore deep train` (default: the cache's deep folder)."
    )
    beam_size: int = Field(4, ge=1, description="Beam width when the model writes the transcript.")
    nbest: int = Field(4, ge=1, description="Hypotheses kept per utterance when it writes.")
    decode: DecodeMode = Field(
        "auto",
        description="write: the model writes the transcript (beam search); choose: it ranks the first-pass hypotheses"
        " it reads; auto: write where the model can, else choose.",
    )
    batch_size: int = Field(4, ge=1, description="Utterances decoded together.")
    device: str = Field("auto", description="auto, cpu or cuda.")
    threads: int = Field(0, ge=0, description="PyTorch threads (0: the default).")
    verify: bool = Field(
        True, description="Verify the model's output as a correction: the guards, then the audio's judges."
    )
    verify_with: list[str] = Field(["whisper-base"], description="Acoustic models that judge the model's output.")
    verify_margin: float = Field(0.0, description="How much better the output must score to replace the first pass.")
    max_edit_ratio: float = Field(0.3, description="Guard: largest share of words the output may change (<0: off).")
    max_novel_words: int = Field(1, description="Guard: words not in any hypothesis the output may add (<0: off).")


def default_model_dir() -> Path:
    """Where ``rescore deep train`` writes its model by default."""
    return cache_dir() / "deep" / "model"


def reads_nbest(path: Path) -> bool:
    """Whether the model folder holds a gated cross-attention model (it reads n-best records); a folder
    without a model counts as one, the default architecture."""
    try:
        return XATTN_KEY in json.loads((path / MODEL_CONFIG).read_text())
    except (OSError, ValueError):
        return True


def deep_model_dir(o: DeepOptions) -> Path:
    """The configured model folder, else the default one; ValueError when it holds no trained model."""
    path = Path(o.checkpoint) if o.checkpoint else default_model_dir()
    if not (path / MODEL_CONFIG).is_file():
        raise ValueError(f"deep fusion: {path} holds no trained model ({MODEL_CONFIG}); run `rescore deep train`")
    return path


class DeepStage(BaseStage):
    """A trained deep-fusion model as a stage: the cross-attention model rewrites the previous stage's records (its
    answer verified as a correction), the prefix bridge decodes the utterances' audio."""

    name = "deep"

    def __init__(self, options: DeepOptions) -> None:
        super().__init__(options)
        self.batch_size = options.batch_size
        path = Path(options.checkpoint) if options.checkpoint else default_model_dir()
        self.source = "records" if reads_nbest(path) else "audio"  # type: ignore[misc]
        self._verifier: Any = None  # loaded at the first edit to check

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
            decode=o.decode,
            device=o.device,
            threads=o.threads,
        )

    def process(self, records: list[NBest]) -> list[NBest]:
        if self.source == "records":
            rewritten = list(self.load().rewrite(records))
            if self.opts.verify:  # type: ignore[attr-defined]
                by_id = {r.id: r for r in records}
                rewritten = [self.verified(by_id[d.id], d) if d.id in by_id else d for d in rewritten]
            return rewritten
        return list(self.load().recognize([record_utterance(r) for r in records]))

    def verified(self, source: NBest, deep: NBest) -> NBest:
        """``deep`` with ``corrected``: its answer where the guards and the audio accept it as an edit of the
        ``source`` record's reranked text, else the source's own text; ``correction`` says which and why."""
        from rescore.correct.verify import checked_proposal

        if not deep.ok or not deep.hypotheses or not source.hypotheses:
            return deep
        o: DeepOptions = self.opts  # type: ignore[assignment]
        guards = option_guards(o.max_edit_ratio, o.max_novel_words)
        if self._verifier is None:  # its scorers load at the first edit to check
            self._verifier = make_verifier(o.verify_with, margin=o.verify_margin, device=o.device)
        deep.corrected, deep.correction = checked_proposal(source, deep.hypotheses[0].text, guards, self._verifier)
        return deep
