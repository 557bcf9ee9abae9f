"""Audio decoding to 16 kHz mono float32, and cutting long recordings into windows.

Decoding goes through PyAV (FFmpeg) as packaged by faster-whisper, so wav, flac, mp3, m4a and ogg at any
sample rate and channel count come out the same way. Every failure is an :class:`AudioError` whose
message says what is wrong with the file, not a decoder traceback.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
MIN_SAMPLES = SAMPLE_RATE // 100  # 10 ms: less than one Whisper frame is not speech


class AudioError(Exception):
    """The audio of an utterance cannot be used."""


def load_audio(source: str, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Decode ``source`` (a path, or a Kaldi command ending in ``|``) to mono float32 at 16 kHz."""
    from faster_whisper.audio import decode_audio

    if source.rstrip().endswith("|"):
        proc = subprocess.run(source.rstrip()[:-1], shell=True, capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise AudioError(
                f"command failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()[:200]}"
            )
        data: str | io.BytesIO = io.BytesIO(proc.stdout)
        if not proc.stdout:
            raise AudioError("command produced no audio")
    else:
        path = Path(source)
        if not path.exists():
            raise AudioError(f"file not found: {path}")
        if path.is_dir():
            raise AudioError(f"is a folder, not an audio file: {path}")
        if path.stat().st_size == 0:
            raise AudioError(f"empty file (0 bytes): {path}")
        data = str(path)
    try:
        audio = decode_audio(data, sampling_rate=SAMPLE_RATE)
    except Exception as e:  # PyAV raises many types (InvalidDataError, ValueError, IndexError ...)
        raise AudioError(f"cannot decode audio ({type(e).__name__}: {str(e).strip()[:160]})") from None
    if start is not None or end is not None:
        a = int(round((start or 0.0) * SAMPLE_RATE))
        b = len(audio) if end is None else int(round(end * SAMPLE_RATE))
        if a >= len(audio):
            raise AudioError(
                f"segment starts at {start:.2f} s, after the end of the audio ({len(audio) / SAMPLE_RATE:.2f} s)"
            )
        audio = audio[a:b]
    if len(audio) < MIN_SAMPLES:
        raise AudioError(f"no audio (zero length: {len(audio)} samples)")
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)


@dataclass(frozen=True)
class AudioWindow:
    """A slice of a recording, in samples."""

    start: int
    end: int

    @property
    def seconds(self) -> tuple[float, float]:
        return self.start / SAMPLE_RATE, self.end / SAMPLE_RATE


def split_windows(
    audio: np.ndarray, max_seconds: float = WINDOW_SECONDS, search_seconds: float = 5.0
) -> list[AudioWindow]:
    """Cut a recording into windows of at most ``max_seconds``.

    Each cut is placed at the quietest 100 ms within the last ``search_seconds`` of the window, so words
    are rarely split between windows (Whisper sees 30 s at a time; text is joined afterwards).
    """
    n = len(audio)
    limit = int(max_seconds * SAMPLE_RATE)
    if n <= limit:
        return [AudioWindow(0, n)]
    hop = SAMPLE_RATE // 100
    frame = SAMPLE_RATE // 10
    windows: list[AudioWindow] = []
    start = 0
    while n - start > limit:
        lo = start + limit - int(search_seconds * SAMPLE_RATE)
        hi = start + limit
        seg = audio[lo:hi]
        energy = np.convolve(seg.astype(np.float64) ** 2, np.ones(frame), mode="valid")[::hop]
        cut = lo + int(np.argmin(energy)) * hop + frame // 2 if len(energy) else hi
        windows.append(AudioWindow(start, cut))
        start = cut
    windows.append(AudioWindow(start, n))
    return windows
