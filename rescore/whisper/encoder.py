"""Whisper encoder states of utterances, computed with CTranslate2 and cached on disk.

The CTC head and the deep-fusion bridge both train on frozen encoder states: computing them once per
utterance and model and keeping them in the cache folder turns every later epoch into a disk read.
States are trimmed to the audio's length (50 frames per second) and stored as float16 ``.npy``.

Two windows (``WINDOWS``): ``padded`` encodes every window padded to Whisper's 30 s, as Whisper was trained and
as its decoder reads it; ``own`` encodes each window at its own length, about a tenth of the CPU time on short
utterances. The two give different states (mean per-frame cosine
0.88-0.99), so a model trained on one must be decoded on the same one: the choice is part of the cache's name
and of a deep model's config.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rescore.device import resolve_device
from rescore.io.audio import SAMPLE_RATE, load_audio, split_windows
from rescore.io.datasets import Utterance
from rescore.io.models import cache_dir, resolve_model

FRAMES_PER_SECOND = 50  # Whisper encoder: 3000 mel frames (30 s) -> 1500 states
N_MEL_FRAMES = 3000
WINDOWS = ("padded", "own")


def _content_hash(audio: str) -> str:
    """SHA-1 of an audio file's bytes (the path itself when it cannot be read: the error comes later)."""
    try:
        st = os.stat(audio)
    except OSError:
        return audio
    return _file_sha1(audio, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=65536)
def _file_sha1(path: str, mtime_ns: int, size: int) -> str:  # stat fields: a rewritten file is hashed again
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha1").hexdigest()
    except OSError:
        return path


@dataclass
class _Item:
    """One utterance on its way out of :meth:`WhisperEncoder.states`: waiting for encoding while ``audio`` is set."""

    utt: Utterance
    key: Path = Path()
    audio: np.ndarray | None = None
    states: np.ndarray | None = None
    error: str | None = None


class WhisperEncoder:
    """Frozen Whisper encoder (CTranslate2) with an on-disk cache of its outputs per utterance."""

    def __init__(
        self,
        model: str = "whisper-tiny.en",
        *,
        device: str = "cpu",
        compute_type: str = "auto",
        batch_size: int = 8,
        cache: Path | None = None,
        window: str = "padded",
    ) -> None:
        if window not in WINDOWS:
            raise ValueError(f"encoder window must be one of {', '.join(WINDOWS)}, not {window!r}")
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        self.model_name = model
        self.path = resolve_model(model, kind="whisper-ct2")
        self.device = resolve_device(device)
        if compute_type == "auto":
            compute_type = "float16" if self.device == "cuda" else "int8"
        self.model = ctranslate2.models.Whisper(
            str(self.path), device=self.device, compute_type=compute_type, intra_threads=os.cpu_count() or 1
        )
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self.batch_size = batch_size
        self.window = window
        tag = f"{Path(model).name}-{compute_type}" + ("" if window == "padded" else f"-{window}")
        self.cache = cache or cache_dir() / "encoder" / tag

    def _key(self, utt: Utterance) -> Path:
        # keyed by the audio's bytes, not its path or mtime: a re-copied data folder keeps its cache
        h = hashlib.sha1(f"{_content_hash(utt.audio)}|{utt.start}|{utt.end}".encode()).hexdigest()[:20]
        return self.cache / h[:2] / f"{h}.npy"

    def encode_audio(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Encoder states [frames, dim] (float32) of each 16 kHz waveform; long audio is windowed."""
        mels, owners, lengths = [], [], []
        for i, audio in enumerate(audios):
            for w in split_windows(audio):
                seg = audio[w.start : w.end]
                n_states = max(1, int(np.ceil(len(seg) / SAMPLE_RATE * FRAMES_PER_SECOND)))
                # the first 2 * n_states frames of the padded window's features: the same values, cut to the audio
                width = N_MEL_FRAMES if self.window == "padded" else 2 * n_states
                mel = self.features(seg, padding=N_MEL_FRAMES * 160)[:, :width]
                mels.append(np.ascontiguousarray(mel, dtype=np.float32))
                owners.append(i)
                lengths.append(n_states)
        # padded windows share one shape and batch; own-length ones are encoded one by one, since padding a
        # batch to its longest would change the shorter ones' states (the encoder has no attention mask)
        batch_size = self.batch_size if self.window == "padded" else 1
        states: list[np.ndarray] = []
        for s in range(0, len(mels), batch_size):
            states.extend(self._encode(mels[s : s + batch_size], lengths[s : s + batch_size]))
        result: list[list[np.ndarray]] = [[] for _ in audios]
        for owner, st in zip(owners, states, strict=True):
            result[owner].append(st)
        return [np.concatenate(r, 0) for r in result]

    def _encode(self, mels: list[np.ndarray], lengths: list[int]) -> list[np.ndarray]:
        """One ``encode`` call over mels of one shape, each output trimmed to its length."""
        import ctranslate2

        out = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(np.stack(mels)), to_cpu=True))
        return [out[j, :n].astype(np.float32) for j, n in enumerate(lengths)]

    def states(self, utterances: Iterable[Utterance]) -> Iterator[tuple[Utterance, np.ndarray | None, str | None]]:
        """Yield ``(utterance, states, error)`` in input order: cached states are read, missing ones computed
        in batches and stored.

        An item waits until every earlier missing one is encoded (callers pair outputs with their inputs);
        a waiting cached item holds only its cache path, so a mostly cached set stays light in memory.
        """
        queue: deque[_Item] = deque()
        pending: list[_Item] = []

        def ready(flush: bool = False) -> Iterator[tuple[Utterance, np.ndarray | None, str | None]]:
            if flush and pending:
                encoded = self.encode_audio([it.audio for it in pending])  # type: ignore[misc]
                for it, st in zip(pending, encoded, strict=True):
                    key = it.key
                    key.parent.mkdir(parents=True, exist_ok=True)
                    tmp = key.with_name(key.name + f".{os.getpid()}.tmp.npy")
                    np.save(tmp, st.astype(np.float16))
                    os.replace(tmp, key)
                    it.states, it.audio = st, None
                pending.clear()
            while queue and queue[0].audio is None:
                it = queue.popleft()
                if it.error is None and it.states is None:
                    it.states = np.load(it.key).astype(np.float32)
                yield it.utt, it.states, it.error

        for utt in utterances:
            try:
                key = self._key(utt)
            except OSError as e:
                queue.append(_Item(utt, error=str(e)))
                yield from ready()
                continue
            if key.exists():
                queue.append(_Item(utt, key))
                yield from ready()
                continue
            try:
                audio = load_audio(utt.audio, utt.start, utt.end)
            except Exception as e:  # AudioError and anything odd: name the item, go on
                queue.append(_Item(utt, error=str(e)))
                yield from ready()
                continue
            item = _Item(utt, key, audio=audio)
            queue.append(item)
            pending.append(item)
            yield from ready(flush=len(pending) >= self.batch_size)
        yield from ready(flush=True)
