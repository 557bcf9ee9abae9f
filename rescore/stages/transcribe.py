"""The first pass as a stage: utterances (carried in placeholder records) -> n-best records."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import Field

from rescore.datasets import Utterance
from rescore.records import NBest
from rescore.registry import accepted_options, make_recognizer, recognizers
from rescore.stages.base import BaseStage, StageOptions

UTTERANCE_KEY = "utterance"  # placeholder record -> the utterance (audio span, reference) to recognize


def utterance_record(u: Utterance) -> NBest:
    """A placeholder record that carries an utterance into the first stage (and through Ray as JSON)."""
    return NBest(id=u.id, audio=u.audio, reference=u.reference, duration=u.duration, extra={UTTERANCE_KEY: asdict(u)})


def record_utterance(r: NBest) -> Utterance:
    """The utterance a placeholder carries (or the record's own id, audio and reference)."""
    if isinstance(r.extra.get(UTTERANCE_KEY), dict):
        return Utterance(**r.extra[UTTERANCE_KEY])
    return Utterance(id=r.id, audio=r.audio or "", reference=r.reference, duration=r.duration)


class TranscribeOptions(StageOptions):
    """First pass (see ``rescore transcribe``). Options a backend does not take are left out when they are
    at their defaults and are an error when set explicitly."""

    backend: str = "ctranslate2"
    model: str | None = None  # None: the backend's own default (whisper-tiny.en for the Whisper backends)
    nbest: int = Field(8, ge=1)
    beam_size: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    device: str = "auto"
    compute_type: str = "auto"
    language: str = "en"
    word_lm: str | None = None  # ctc: pocketsphinx, an ARPA/binary LM file, or none
    lm_weight: float | None = None  # ctc: weight of the word LM [default: tuned]
    word_bonus: float | None = None  # ctc: score added per word [default: tuned]

    def recognizer_options(self) -> dict[str, Any]:
        """The options for the backend: every explicitly set one, and the defaults the backend takes."""
        opts = self.model_dump(exclude={"backend"}, exclude_none=True)
        accepted = accepted_options(recognizers.factory(self.backend))
        if accepted is None:
            return opts
        return {k: v for k, v in opts.items() if k in accepted or k in self.model_fields_set}


class TranscribeStage(BaseStage):
    """Runs a recognizer over the utterances of placeholder records."""

    name = "transcribe"
    source = "audio"

    def __init__(self, options: TranscribeOptions) -> None:
        super().__init__(options)
        self.batch_size = options.batch_size

    def build(self) -> Any:
        o: TranscribeOptions = self.opts  # type: ignore[assignment]
        return make_recognizer(o.backend, **o.recognizer_options())

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.load().info)

    def process(self, records: list[NBest]) -> list[NBest]:
        return list(self.load().recognize([record_utterance(r) for r in records]))
