"""Whisper through CTranslate2: batched beam search that keeps the n best hypotheses with their scores.

CTranslate2 ranks hypotheses by log-probability divided by their token count (``length_penalty=1``); the
record keeps that (``am_norm``), the summed log-probability (``am``) and the count (``am_tokens``) so that
later stages can apply their own length terms.

``distinct=True`` keeps the n best hypotheses that differ after normalisation (most of a plain 8-best
differs only in punctuation and case). The beam is doubled (``DISTINCT_BEAM_FACTOR``) and the search
asked for ``DISTINCT_FACTOR`` times more finished hypotheses (at most ``DISTINCT_MAX_HYPOTHESES``), of
which the first n distinct are kept; ``extra["distinct"]`` records how many raw hypotheses each window
needed. CTranslate2 returns up to ``beam_size * patience`` hypotheses and stops once that many have
finished, so ``patience`` grows with them. Measured on the way there: a beam of 32 with 32 hypotheses
(patience 1) stops at the first sentence end, where 32 truncated transcripts have finished, and
truncates the 1-best itself (tiny.en, librispeech-dev, first 30 utterances: 1-best WER 4.2 -> 6.7 %);
the same beam of 8 with patience 8 keeps the 1-best but finds as few as 4 distinct in 64 on some
utterances; beam 16 with patience 4 found 13 or more on every probe.

Windows without speech (silence, noise, a cut file) get the empty transcript instead of Whisper's "you":
see :mod:`rescore.recognize.no_speech` for the VAD and no-speech-probability tests and their options.

Each batch of windows is encoded once (``Whisper.encode``) and the beam search (``generate``, and language
detection) runs on that encoder output, as faster-whisper does: the same results as passing the features.
A caller that wants the encoder output too (to score other text against the same windows, see
``UnionRecognizer``) passes ``on_encoder_output`` to :meth:`CT2WhisperRecognizer.recognize`:
it is called with each record, the window's index and the window's encoder output ([1500, dim] float32),
and otherwise nothing of it is kept beyond the batch being decoded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rescore.device import resolve_device
from rescore.io.audio import SAMPLE_RATE, AudioError, load_audio, split_windows
from rescore.io.datasets import Utterance
from rescore.io.models import resolve_model
from rescore.recognize.base import combine_windows
from rescore.recognize.no_speech import NoSpeechGate, WindowCheck, apply_checks
from rescore.recognize.union import distinct_hypotheses
from rescore.records import Hypothesis, NBest, Window

N_FRAMES = 3000  # Whisper's 30 s input
DISTINCT_BEAM_FACTOR = 2  # --distinct: the beam widened this many times ...
DISTINCT_FACTOR = 8  # ... and raw (finished) hypotheses asked for per hypothesis kept ...
DISTINCT_MAX_HYPOTHESES = 128  # ... at most (beam search patience grows with them)

# (record, window index, that window's encoder output [frames, dim] float32): see ``recognize``
EncoderOutputHook = Callable[[NBest, int, np.ndarray], None]


@dataclass
class _Prepared:
    """An utterance decoded and cut into windows with their features, or the reason it failed."""

    utt: Utterance
    duration: float = 0.0
    spans: list[tuple[float, float]] | None = None
    features: list[np.ndarray] | None = None
    speech: list[float] | None = None  # VAD speech seconds per window (None: VAD off)
    error: str | None = None


class CT2WhisperRecognizer:
    """Whisper n-best recognition with CTranslate2 (int8 on CPU, float16 on CUDA by default).

    ``batch_size`` windows are decoded together; audio decoding, VAD and feature extraction of the next
    batch run in a background thread while the current one decodes. ``no_speech_threshold``,
    ``logprob_threshold``, ``vad`` and ``vad_threshold`` decide which windows hold no speech (``None`` or
    ``vad=False`` switch a test off). ``distinct`` doubles the beam, asks the search for more finished
    hypotheses (a larger ``patience``) and keeps the ``nbest`` first that are distinct after normalisation.
    """

    def __init__(
        self,
        model: str = "whisper-tiny.en",
        *,
        device: str = "auto",
        compute_type: str = "auto",
        beam_size: int = 8,
        nbest: int = 8,
        batch_size: int = 8,
        language: str = "en",
        cpu_threads: int = 0,
        max_length: int = 448,
        no_speech_threshold: float | None = 0.6,
        logprob_threshold: float | None = -1.0,
        vad: bool = True,
        vad_threshold: float = 0.5,
        distinct: bool = False,
    ) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor

        if nbest < 1 or beam_size < 1 or batch_size < 1:
            raise ValueError("nbest, beam_size and batch_size must be at least 1")
        self.model_name = model
        self.path = resolve_model(model, kind="whisper-ct2")
        if not (Path(self.path) / "model.bin").exists():
            raise ValueError(f"{self.path}: not a CTranslate2 Whisper folder (no model.bin)")
        self.device = resolve_device(device)
        if compute_type == "auto":
            compute_type = "float16" if self.device == "cuda" else "int8"
        self.compute_type = compute_type
        self.beam_size = max(beam_size, nbest)
        self.nbest = nbest
        self.distinct = distinct
        # the raw hypotheses asked for: the n best, or with ``distinct`` enough to find n distinct ones
        self.num_hypotheses = nbest
        self.patience = 1.0  # the search stops once beam_size * patience hypotheses are finished
        if distinct:
            self.beam_size *= DISTINCT_BEAM_FACTOR
            self.num_hypotheses = max(nbest, min(DISTINCT_FACTOR * nbest, DISTINCT_MAX_HYPOTHESES))
            self.patience = float(-(-self.num_hypotheses // self.beam_size))
        self.batch_size = batch_size
        self.max_length = max_length
        self.model = ctranslate2.models.Whisper(
            str(self.path),
            device=self.device,
            compute_type=compute_type,
            intra_threads=cpu_threads or (os.cpu_count() or 1),
        )
        self.tokenizer = tokenizers.Tokenizer.from_file(str(Path(self.path) / "tokenizer.json"))
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self.eot = self._token("<|endoftext|>")
        self.language = language
        # what "distinct" means: Whisper's English normalizer, or its basic one for other languages
        self.normalizer = "whisper" if language == "en" or not self.model.is_multilingual else "basic"
        self.gate = NoSpeechGate(no_speech_threshold, logprob_threshold, vad, vad_threshold)
        if self.model.is_multilingual and language != "auto" and self.tokenizer.token_to_id(f"<|{language}|>") is None:
            raise ValueError(f"unknown language code {language!r} for {model}")
        self.info: dict[str, Any] = {
            "backend": "ctranslate2",
            "model": model,
            "device": self.device,
            "compute_type": compute_type,
            "beam_size": self.beam_size,
            "nbest": nbest,
            "language": language if self.model.is_multilingual else "en",
            **self.gate.info,
        }
        if distinct:
            self.info.update(
                distinct=True, num_hypotheses=self.num_hypotheses, patience=self.patience, normalizer=self.normalizer
            )

    def _token(self, text: str) -> int:
        tid = self.tokenizer.token_to_id(text)
        if tid is None:
            raise ValueError(f"{self.path}: tokenizer lacks {text}")
        return tid

    def _prompt(self, language: str | None) -> list[int]:
        prompt = [self._token("<|startoftranscript|>")]
        if self.model.is_multilingual:
            prompt += [self._token(f"<|{language or 'en'}|>"), self._token("<|transcribe|>")]
        return prompt + [self._token("<|notimestamps|>")]

    def _prepare(self, utt: Utterance) -> _Prepared:
        try:
            audio = load_audio(utt.audio, utt.start, utt.end)
        except AudioError as e:
            return _Prepared(utt, error=str(e))
        spans, feats = [], []
        windows = split_windows(audio)
        for w in windows:
            mel = self.features(audio[w.start : w.end], padding=N_FRAMES * 160)[:, :N_FRAMES]
            feats.append(np.ascontiguousarray(mel, dtype=np.float32))
            spans.append(w.seconds)
        speech = self.gate.speech_seconds(audio, [(w.start, w.end) for w in windows])
        return _Prepared(utt, duration=len(audio) / SAMPLE_RATE, spans=spans, features=feats, speech=speech)

    def _decode(
        self, features: list[np.ndarray], keep: bool = False
    ) -> tuple[list[tuple[list[Hypothesis], float, float, int]], list[np.ndarray] | None]:
        """Each window's n-best, its no-speech probability, the best hypothesis' average log-probability and
        the number of raw hypotheses read to fill the n-best; with ``keep``, each window's encoder output too.

        The windows are encoded once and the search runs on the encoder output (``generate`` takes it in
        place of the features)."""
        import ctranslate2

        batch = ctranslate2.StorageView.from_array(np.stack(features))
        # kept output is read on the CPU; generate moves CPU encoder output back to the device itself
        encoded = self.model.encode(batch, to_cpu=keep and self.device != "cpu")
        memories = None
        if keep:
            mem = np.array(encoded, dtype=np.float32)  # a copy: it outlives the StorageView
            memories = [mem[j] for j in range(mem.shape[0])]
        if self.model.is_multilingual and self.language == "auto":
            langs = [r[0][0].strip("<|>") for r in self.model.detect_language(encoded)]
        else:
            langs = [self.language] * len(features)
        results = self.model.generate(
            encoded,
            [self._prompt(lang) for lang in langs],
            beam_size=self.beam_size,
            num_hypotheses=self.num_hypotheses,
            patience=self.patience,
            return_scores=True,
            length_penalty=1.0,
            max_length=self.max_length,
            return_no_speech_prob=True,
        )
        out = []
        for r in results:
            hyps = []
            for ids, score in zip(r.sequences_ids, r.scores, strict=True):
                ids = [t for t in ids if t < self.eot]
                n = max(len(ids), 1)
                text = self.tokenizer.decode(ids).strip()
                hyps.append(Hypothesis(text, ids, {"am": score * n, "am_tokens": float(n), "am_norm": score}))
            seq_len = len(r.sequences_ids[0]) if r.sequences_ids else 0
            avg_logprob = r.scores[0] * seq_len / (seq_len + 1) if r.scores else float("-inf")  # as faster-whisper
            read = len(hyps)
            if self.distinct:
                hyps, read = distinct_hypotheses(hyps, self.nbest, self.normalizer)
            out.append((hyps, float(r.no_speech_prob), avg_logprob, read))
        return out, memories

    def _run_batch(self, prepared: list[_Prepared], hook: EncoderOutputHook | None = None) -> Iterator[NBest]:
        good = [p for p in prepared if p.error is None]
        feats = [f for p in good for f in p.features]  # type: ignore[union-attr]
        t0 = time.perf_counter()
        decoded: list[tuple[list[Hypothesis], float, float, int]] = []
        memories: list[np.ndarray] = []  # only with a hook: this batch's encoder output, per window
        for i in range(0, len(feats), self.batch_size):
            part, mem = self._decode(feats[i : i + self.batch_size], keep=hook is not None)
            decoded += part
            memories += mem or []
        elapsed = time.perf_counter() - t0
        pos = 0
        for p in prepared:
            u = p.utt
            rec = NBest(id=u.id, audio=u.audio, reference=u.reference, recognizer=dict(self.info))
            if p.error is not None:
                rec.error = p.error
                yield rec
                continue
            n = len(p.features)  # type: ignore[arg-type]
            part = decoded[pos : pos + n]
            windows = [Window(s, e, h) for (s, e), (h, _, _, _) in zip(p.spans, part, strict=True)]  # type: ignore[arg-type]
            speech = p.speech or [None] * n
            checks = [
                self.gate.decide(WindowCheck(pr, lp, sp)) for (_, pr, lp, _), sp in zip(part, speech, strict=True)
            ]
            if self.distinct:
                rec.extra["distinct"] = {
                    "raw": self.num_hypotheses,
                    "read": [d[3] for d in part],  # raw hypotheses read per window to find the distinct ones
                    "found": [len(d[0]) for d in part],  # distinct ones found (fewer than nbest: the beam ran out)
                }
            apply_checks(windows, checks, rec)
            pos += n
            rec.duration = round(p.duration, 3)
            if self.distinct and len(windows) > 1:  # joins of distinct windows can still coincide
                wide = combine_windows(windows, DISTINCT_FACTOR * self.nbest)
                rec.hypotheses = distinct_hypotheses(wide, self.nbest, self.normalizer)[0]
            else:
                rec.hypotheses = combine_windows(windows, self.nbest)
            if len(windows) > 1:
                rec.windows = windows
            rec.timing = {"transcribe": round(elapsed * n / max(len(feats), 1), 4)}
            if hook is not None:
                for k in range(n):
                    hook(rec, k, memories[pos - n + k])
            yield rec

    def recognize(
        self, utterances: Iterable[Utterance], *, on_encoder_output: EncoderOutputHook | None = None
    ) -> Iterator[NBest]:
        """Yield one n-best record per utterance, in input order.

        ``on_encoder_output(record, window, memory)``, if given, is called for every window of every record
        that was decoded (window 0 alone for a record of one window; ``record.windows[k]`` otherwise), before
        the record is yielded, with the encoder output the search ran on."""
        utts = list(utterances)
        groups = [utts[i : i + self.batch_size] for i in range(0, len(utts), self.batch_size)]
        if not groups:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:

            def submit(group: list[Utterance]) -> Future[list[_Prepared]]:
                return pool.submit(lambda: [self._prepare(u) for u in group])

            pending = submit(groups[0])
            for k in range(len(groups)):
                prepared = pending.result()
                if k + 1 < len(groups):
                    pending = submit(groups[k + 1])
                yield from self._run_batch(prepared, on_encoder_output)
