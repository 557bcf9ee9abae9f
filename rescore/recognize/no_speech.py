"""Windows without speech, for the Whisper backends: Whisper writes "you" or "Thank you." over silence and noise.

Two signals, used as faster-whisper uses them. Silero VAD (its ONNX model ships inside faster-whisper and
runs with onnxruntime: nothing is downloaded) marks a window in which it finds no speech at all; it never
cuts audio, so speech it half-misses is still decoded whole. The decoder's no-speech probability marks a
window when it is above ``no_speech_threshold`` and the best hypothesis' average log-probability is below
``logprob_threshold`` (a confident transcript is kept whatever the probability).

A no-speech window gets a single empty hypothesis: every later stage (LM scoring, ranking, correction,
scoring as the empty transcript) handles it like any other record, where an empty list would count as a
failure in ``rescore correct``. The record says why under ``extra["no_speech"]`` (the whole utterance) or
``extra["no_speech_windows"]`` (some windows of a long one), with what Whisper had written there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rescore.io.audio import SAMPLE_RATE
from rescore.records import Hypothesis, NBest, Window


@dataclass
class WindowCheck:
    """What the no-speech signals said about one decoded window."""

    probability: float  # the decoder's no-speech probability
    avg_logprob: float  # of the best hypothesis, over its tokens and the end token (faster-whisper's measure)
    speech_seconds: float | None  # VAD speech (padded as VAD pads it) inside the window; None with VAD off
    decided_by: str | None = None  # "vad", "probability", or None: speech
    suppressed: str = ""  # what the recognizer had written there

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"probability": round(self.probability, 4), "avg_logprob": round(self.avg_logprob, 4)}
        d["vad_speech_seconds"] = None if self.speech_seconds is None else round(self.speech_seconds, 3)
        d.update(decided_by=self.decided_by, suppressed=self.suppressed)
        return d


@dataclass
class NoSpeechGate:
    """The thresholds (recognizer options); ``None`` switches a test off."""

    no_speech_threshold: float | None = 0.6
    logprob_threshold: float | None = -1.0
    vad: bool = True
    vad_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.vad:
            from faster_whisper.vad import get_vad_model

            get_vad_model()  # load it now: a missing onnxruntime is an error at construction, not mid-run

    @property
    def info(self) -> dict[str, Any]:
        return {
            "no_speech_threshold": self.no_speech_threshold,
            "logprob_threshold": self.logprob_threshold,
            "vad": self.vad,
            "vad_threshold": self.vad_threshold,
        }

    def speech_seconds(self, audio: np.ndarray, spans: list[tuple[int, int]]) -> list[float] | None:
        """Seconds of VAD speech inside each ``(start, end)`` sample span of ``audio`` (None with VAD off).

        VAD runs once over the whole recording, so its state carries across window cuts.
        """
        if not self.vad:
            return None
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if len(audio) == 0:
            return [0.0 for _ in spans]
        stamps = get_speech_timestamps(np.asarray(audio, dtype=np.float32), VadOptions(threshold=self.vad_threshold))
        return [sum(max(0, min(e, s["end"]) - max(b, s["start"])) for s in stamps) / SAMPLE_RATE for b, e in spans]

    def decide(self, check: WindowCheck) -> WindowCheck:
        """Set ``check.decided_by`` when the window holds no speech."""
        if check.speech_seconds is not None and check.speech_seconds <= 0.0:
            check.decided_by = "vad"
        elif (
            self.no_speech_threshold is not None
            and check.probability > self.no_speech_threshold
            and (self.logprob_threshold is None or check.avg_logprob < self.logprob_threshold)
        ):
            check.decided_by = "probability"
        return check


def empty_hypotheses() -> list[Hypothesis]:
    """The n-best of a window without speech: the empty transcript (one token, the end of text, at no cost)."""
    return [Hypothesis("", [], {"am": 0.0, "am_tokens": 1.0, "am_norm": 0.0})]


def apply_checks(windows: list[Window], checks: list[WindowCheck], record: NBest) -> None:
    """Empty the no-speech windows' n-best lists and note on ``record`` which windows and why."""
    silent = []
    for k, (w, c) in enumerate(zip(windows, checks, strict=True)):
        if c.decided_by is None:
            continue
        c.suppressed = w.hypotheses[0].text if w.hypotheses else ""
        w.hypotheses = empty_hypotheses()
        silent.append((k, w, c))
    if not silent:
        return
    if len(silent) < len(windows):
        record.extra["no_speech_windows"] = [
            {"index": k, "start": round(w.start, 3), "end": round(w.end, 3), **c.to_dict()} for k, w, c in silent
        ]
        return
    speech = [c.speech_seconds for c in checks]
    record.extra["no_speech"] = {
        "probability": round(min(c.probability for c in checks), 4),  # the weakest of the windows' evidence
        "vad_speech_seconds": None if None in speech else round(sum(speech), 3),  # type: ignore[arg-type]
        "decided_by": "vad" if all(c.decided_by == "vad" for c in checks) else "probability",
        "suppressed": " ".join(c.suppressed for c in checks if c.suppressed),
    }
