"""The first pass as a stage: utterances (carried in placeholder records) -> n-best records.

With several models (``model = ["whisper-tiny.en", "whisper-base"]``) each recognizer decodes the batch
and their records are merged into the n-best union (:mod:`rescore.recognize.union`). With ``ascore`` the union is
scored as it goes: every hypothesis with every model (``am:<model>``, ``am_tokens:<model>``, as the ascore
stage writes them) against the encoder output that model's first pass computed (ctranslate2 backend).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import Field, field_validator, model_validator

from rescore.io.datasets import Utterance
from rescore.records import NBest
from rescore.registry import accepted_options, acoustic_scorers, make_recognizer, recognizers
from rescore.stages.base import BaseStage, StageOptions

UTTERANCE_KEY = "utterance"  # placeholder record -> the utterance (audio span, reference) to recognize


SPEAKER_KEY = "speaker"  # record.extra[SPEAKER_KEY]: the manifest's speaker of the utterance


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

    backend: str = Field(
        "ctranslate2",
        description="First-pass recognizer: ctranslate2, openai-whisper (same Whisper model), ctc (a CTC head over"
        " Whisper encoder states; the package ships one, `model`: another checkpoint) or pocketsphinx.",
    )
    model: str | list[str] | None = Field(
        None,
        description="whisper-tiny.en (default of the Whisper backends), whisper-base, or a model folder/file."
        " Several (a list, or the flag repeated): the n-best union of their lists (system combination, see"
        " `rescore merge`).",
    )
    nbest: int = Field(8, ge=1, description="Hypotheses kept per utterance.")
    beam_size: int = Field(8, ge=1, description="Beam width (at least `nbest`).")
    batch_size: int = Field(8, ge=1, description="30 s windows decoded together.")
    device: str = Field("auto", description="auto, cpu or cuda.")
    compute_type: str = Field("auto", description="auto (int8 on CPU, float16 on CUDA) or a CTranslate2 type.")
    language: str = Field("en", description="Language code for multilingual models, or auto.")
    word_lm: str | None = Field(
        None,
        description="ctc backend: word n-gram LM fused into the search: pocketsphinx (its en-US trigram, the"
        " default), an LM file pocketsphinx reads (ARPA or binary), or none.",
    )
    lm_weight: float | None = Field(
        None, description="ctc backend: weight of the word LM's log-probability (default: tuned)."
    )
    word_bonus: float | None = Field(
        None, description="ctc backend: score added per word, offsetting the LM's cost (default: tuned)."
    )
    distinct: bool = Field(
        False,
        description="ctranslate2: keep the `nbest` best hypotheses that differ after normalisation (not only in"
        " punctuation or case), from a beam twice as wide searched for 8 times more finished hypotheses (at most"
        " 128).",
    )
    ascore: bool = Field(
        False,
        description="With several models (a ctranslate2 union): score every hypothesis of the union with every"
        " model (am:<model>, by teacher forcing), reusing each model's encoder output from its own decoding.",
    )

    @field_validator("model")
    @classmethod
    def _one_or_several(cls, v: str | list[str] | None) -> str | list[str] | None:
        if not isinstance(v, list):
            return v
        if len(set(v)) != len(v):
            raise ValueError(f"a model is given twice: {', '.join(v)}")
        if not v:
            return None
        return v[0] if len(v) == 1 else v  # one model in a list is the same run (and cache) as a string

    @model_validator(mode="after")
    def _ascore_needs_a_union(self) -> TranscribeOptions:
        if self.ascore and (not isinstance(self.model, list) or recognizers.canonical(self.backend) != "ctranslate2"):
            raise ValueError("ascore scores a union as it goes: it needs several models and the ctranslate2 backend")
        return self

    @property
    def models(self) -> list[str | None]:
        """The models to run: one (``None``: the backend's default), or the systems of a union."""
        return list(self.model) if isinstance(self.model, list) else [self.model]

    def recognizer_options(self, model: str | None = None) -> dict[str, Any]:
        """The options for the backend: every explicitly set one, and the defaults the backend takes
        (for a union, those of one of its ``model``s; by default the first)."""
        opts = self.model_dump(exclude={"backend", "model", "ascore"}, exclude_none=True)
        model = model if model is not None else self.models[0]
        if model is not None:
            opts["model"] = model
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

    def options(self) -> dict[str, Any]:
        d = super().options()
        for added_later in ("distinct", "ascore"):
            if not d.get(added_later):
                del d[added_later]  # off, the stage hashes (and reuses its cached files) as before
        return d

    def build(self) -> Any:
        o: TranscribeOptions = self.opts  # type: ignore[assignment]
        if len(o.models) == 1:
            return make_recognizer(o.backend, **o.recognizer_options())
        from rescore.recognize.union import UnionRecognizer

        models = [m for m in o.models if m is not None]
        recs = [make_recognizer(o.backend, **o.recognizer_options(m)) for m in models]
        if not o.ascore:
            return UnionRecognizer(recs, models)
        scorers = [  # the recognizer's loaded model shared; the scores are those of the ascore stage
            acoustic_scorers.create(
                "whisper",
                m,
                device=r.device,
                compute_type=r.compute_type,
                batch_size=o.batch_size,
                language=o.language,
                ct2_model=r.model,
            )
            for m, r in zip(models, recs, strict=True)
        ]
        return UnionRecognizer(recs, models, scorers=scorers)

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.load().info)

    def process(self, records: list[NBest]) -> list[NBest]:
        utterances = [record_utterance(r) for r in records]
        out = list(self.load().recognize(utterances))
        speakers = {u.id: u.speaker for u in utterances if u.speaker}
        for r in out:  # kept so that cross-validation can hold a speaker out whole (rescore tune)
            if r.id in speakers:
                r.extra.setdefault(SPEAKER_KEY, speakers[r.id])
        return out
