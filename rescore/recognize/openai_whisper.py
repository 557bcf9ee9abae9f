"""Whisper through openai-whisper (PyTorch), with the n-best taken from its beam search.

openai-whisper's beam search keeps up to ``beam_size`` finished candidates per audio and a
``SequenceRanker`` picks one; :class:`KeepAllRanker` records every candidate with its summed
log-probability before delegating the pick, so the record holds the whole n-best.

The weights come from the installed CTranslate2 model (no hub download): :func:`convert_ct2_to_openai`
reads CTranslate2's ``model.bin`` (spec version 6: a flat list of named arrays, then an alias table) with
numpy, splits the fused query/key/value projections, and saves an openai-whisper checkpoint once into
the cache folder. A user's own openai-whisper ``.pt`` file is accepted as the model too.

Windows without speech get the empty transcript, as in the CTranslate2 backend
(:mod:`rescore.recognize.no_speech`: VAD, and the no-speech probability of openai-whisper's ``DecodingResult``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rescore.device import resolve_device
from rescore.io.audio import SAMPLE_RATE, AudioError, load_audio, split_windows
from rescore.io.datasets import Utterance
from rescore.recognize.base import combine_windows, in_batches
from rescore.recognize.no_speech import NoSpeechGate, WindowCheck, apply_checks
from rescore.records import Hypothesis, NBest, Window
from rescore.whisper.weights import convert_ct2_to_openai


class KeepAllRanker:
    """A ``SequenceRanker`` that remembers every candidate and its summed log-probability, then lets the
    wrapped ranker (openai-whisper's ``MaximumLikelihoodRanker``) pick as usual."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.candidates: list[list[tuple[list[int], float]]] = []

    def rank(self, tokens: list[list[Any]], sum_logprobs: list[list[float]]) -> list[int]:
        self.candidates = [
            [(t.tolist(), float(lp)) for t, lp in zip(ts, lps, strict=True)]
            for ts, lps in zip(tokens, sum_logprobs, strict=True)
        ]
        return self.inner.rank(tokens, sum_logprobs)


def _task_class() -> type:
    """openai-whisper's ``DecodingTask`` made to beam-search several audios at once.

    Upstream (20250625) keeps one copy of the audio features per audio while the beams are
    ``n_audio * beam_size`` rows: cross-attention only broadcasts when ``n_audio`` is 1. Repeating the
    features per beam (and detecting the language on one copy each) makes batches work.
    """
    from whisper.decoding import DecodingTask

    class BatchedBeamTask(DecodingTask):
        def _get_audio_features(self, mel: Any) -> Any:
            return super()._get_audio_features(mel).repeat_interleave(self.n_group, dim=0)

        def _detect_language(self, audio_features: Any, tokens: Any) -> Any:
            return super()._detect_language(audio_features[:: self.n_group], tokens)

    return BatchedBeamTask


class OpenAIWhisperRecognizer:
    """n-best recognition with openai-whisper's own beam search (float32 PyTorch on CPU).

    The no-speech options are the CTranslate2 backend's; an option this backend does not take (e.g.
    ``compute_type``) raises ``TypeError``.
    """

    def __init__(
        self,
        model: str = "whisper-tiny.en",
        *,
        device: str = "auto",
        beam_size: int = 8,
        nbest: int = 8,
        batch_size: int = 8,
        language: str = "en",
        cpu_threads: int = 0,
        no_speech_threshold: float | None = 0.6,
        logprob_threshold: float | None = -1.0,
        vad: bool = True,
        vad_threshold: float = 0.5,
    ) -> None:
        import torch
        import whisper

        if nbest < 1 or beam_size < 1 or batch_size < 1:
            raise ValueError("nbest, beam_size and batch_size must be at least 1")
        device = resolve_device(device, runtime="torch")
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        p = Path(model).expanduser()
        ckpt = p if p.is_file() and p.suffix == ".pt" else convert_ct2_to_openai(model)
        self.model = whisper.load_model(str(ckpt), device=device)
        self.device = device
        self.beam_size = max(beam_size, nbest)
        self.nbest = nbest
        self.batch_size = batch_size
        self.language = language if self.model.is_multilingual else "en"
        self.gate = NoSpeechGate(no_speech_threshold, logprob_threshold, vad, vad_threshold)
        self.tokenizer = whisper.tokenizer.get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=self.language,
            task="transcribe",
        )
        self.info: dict[str, Any] = {
            "backend": "openai-whisper",
            "model": model,
            "checkpoint": str(ckpt),
            "device": device,
            "beam_size": self.beam_size,
            "nbest": nbest,
            "language": self.language,
            **self.gate.info,
        }

    def _decode(self, mels: list[Any]) -> list[tuple[list[Hypothesis], float, float]]:
        """Each window's n-best, its no-speech probability and the picked hypothesis' average log-probability."""
        import torch
        from whisper.decoding import DecodingOptions

        options = DecodingOptions(
            language=self.language,
            beam_size=self.beam_size,
            without_timestamps=True,
            fp16=self.device == "cuda",
        )
        task = _task_class()(self.model, options)
        ranker = KeepAllRanker(task.sequence_ranker)
        task.sequence_ranker = ranker
        results = task.run(torch.stack(mels).to(self.device))
        out = []
        for cands, result in zip(ranker.candidates, results, strict=True):
            hyps = []
            for ids, lp in cands:
                ids = [t for t in ids if t < self.tokenizer.eot]
                n = max(len(ids), 1)
                text = self.tokenizer.decode(ids).strip()
                hyps.append(Hypothesis(text, ids, {"am": lp, "am_tokens": float(n), "am_norm": lp / n}))
            hyps.sort(key=lambda h: h.scores["am_norm"], reverse=True)  # the ranker's order
            out.append((hyps[: self.nbest], float(result.no_speech_prob), float(result.avg_logprob)))
        return out

    def _prepare(self, utt: Utterance) -> tuple[float, list[tuple[float, float]], list[Any], list[float] | None]:
        import torch
        import whisper

        audio = load_audio(utt.audio, utt.start, utt.end)
        spans, mels = [], []
        windows = split_windows(audio)
        for w in windows:
            seg = whisper.pad_or_trim(torch.from_numpy(np.ascontiguousarray(audio[w.start : w.end])))
            mels.append(whisper.log_mel_spectrogram(seg, n_mels=self.model.dims.n_mels))
            spans.append(w.seconds)
        speech = self.gate.speech_seconds(audio, [(w.start, w.end) for w in windows])
        return len(audio) / SAMPLE_RATE, spans, mels, speech

    def _batch(self, utts: list[Utterance]) -> Iterator[NBest]:
        prepared: list[tuple[Utterance, Any, str | None]] = []
        for u in utts:
            try:
                prepared.append((u, self._prepare(u), None))
            except (AudioError, RuntimeError, ValueError) as e:
                prepared.append((u, None, str(e)))
        mels = [m for _, p, _ in prepared if p is not None for m in p[2]]
        t0 = time.perf_counter()
        decoded: list[tuple[list[Hypothesis], float, float]] = []
        for i in range(0, len(mels), self.batch_size):
            decoded += self._decode(mels[i : i + self.batch_size])
        elapsed = time.perf_counter() - t0
        pos = 0
        for u, p, err in prepared:
            rec = NBest(id=u.id, audio=u.audio, reference=u.reference, recognizer=dict(self.info))
            if p is None:
                rec.error = err
                yield rec
                continue
            duration, spans, ms, speech = p
            n = len(ms)
            part = decoded[pos : pos + n]
            windows = [Window(s, e, h) for (s, e), (h, _, _) in zip(spans, part, strict=True)]
            checks = [
                self.gate.decide(WindowCheck(pr, lp, sp))
                for (_, pr, lp), sp in zip(part, speech or [None] * n, strict=True)
            ]
            apply_checks(windows, checks, rec)
            pos += n
            rec.duration = round(duration, 3)
            rec.hypotheses = combine_windows(windows, self.nbest)
            if n > 1:
                rec.windows = windows
            rec.timing = {"transcribe": round(elapsed * n / max(len(mels), 1), 4)}
            yield rec

    def recognize(self, utterances: Iterable[Utterance]) -> Iterator[NBest]:
        """Yield one n-best record per utterance, in input order."""
        for batch in in_batches(utterances, self.batch_size):
            yield from self._batch(batch)
