"""PocketSphinx: a classic HMM/GMM recognizer with a 3-gram LM, whose n-best comes from its lattice.

The en-US acoustic model, dictionary and language model ship inside the ``pocketsphinx`` PyPI package,
so nothing is downloaded. It is weaker than Whisper and makes different errors (near-homophones,
word splits), which is what a second pass with a language model can fix.

Scores: PocketSphinx reports path scores as ``logmath_exp`` of its integer log scores (acoustic plus
weighted LM, its own scale); ``am`` is their natural logarithm, ``am_tokens`` the number of words. The
first hypothesis is the decoder's best path (``hyp()``); the others follow in n-best score order.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rescore.io.audio import SAMPLE_RATE, AudioError, load_audio, split_windows
from rescore.io.datasets import Utterance
from rescore.recognize.base import combine_windows
from rescore.records import Hypothesis, NBest, Window

FLOOR = -1e4  # log of a score that underflowed to 0


def _ln(x: float) -> float:
    return math.log(x) if x > 0 else FLOOR


class PocketSphinxRecognizer:
    """n-best lists from PocketSphinx's bundled en-US model, or a user's acoustic model folder (``model``,
    PocketSphinx's ``hmm``) with its ``lm`` and ``dict``.

    ``model=None`` is the bundled model. Options it does not take (a Whisper ``beam_size``, ``device``...)
    raise ``TypeError`` here rather than being silently ignored.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        nbest: int = 8,
        max_candidates: int = 64,
        lm: str | None = None,
        dict: str | None = None,  # noqa: A002 - PocketSphinx's option name
    ) -> None:
        from pocketsphinx import Decoder

        if nbest < 1:
            raise ValueError("nbest must be at least 1")
        kwargs: dict[str, Any] = {"samprate": SAMPLE_RATE, "loglevel": "ERROR"}
        if model is not None:
            if not Path(model).expanduser().is_dir():  # a Whisper model name would fail deep inside the decoder
                raise ValueError(f"{model}: not a PocketSphinx acoustic model folder (model=None: the bundled en-US)")
            kwargs["hmm"] = str(Path(model).expanduser())
        if lm:
            kwargs["lm"] = lm
        if dict:
            kwargs["dict"] = dict
        self.decoder = Decoder(**kwargs)
        self.nbest = nbest
        self.max_candidates = max(max_candidates, nbest)
        self.info: dict[str, Any] = {
            "backend": "pocketsphinx",
            "model": kwargs.get("hmm", "en-us (pocketsphinx package)"),
            "nbest": nbest,
        }

    def decode(self, audio: np.ndarray) -> list[Hypothesis]:
        """The n-best hypotheses of one stretch of 16 kHz audio."""
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        d = self.decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        best = d.hyp()
        scored: dict[str, float] = {}
        for h in itertools.islice(d.nbest(), self.max_candidates):
            text = " ".join(h.hypstr.split())
            if text not in scored:  # the same words through other pronunciations or fillers
                scored[text] = _ln(h.score)
            if len(scored) >= self.nbest * 2:
                break
        ranked = sorted(scored.items(), key=lambda kv: kv[1], reverse=True)
        if best is not None:
            top = " ".join(best.hypstr.split())
            top_score = scored.get(top, ranked[0][1] if ranked else _ln(best.score))
            ranked = [(top, top_score)] + [(t, s) for t, s in ranked if t != top]
        hyps = []
        for text, am in ranked[: self.nbest]:
            n = float(max(len(text.split()), 1))
            hyps.append(Hypothesis(text, [], {"am": am, "am_tokens": n, "am_norm": am / n}))
        return hyps

    def _one(self, u: Utterance) -> NBest:
        rec = NBest(id=u.id, audio=u.audio, reference=u.reference, recognizer=dict(self.info))
        try:
            audio = load_audio(u.audio, u.start, u.end)
        except AudioError as e:
            rec.error = str(e)
            return rec
        t0 = time.perf_counter()
        try:
            windows = [Window(*w.seconds, self.decode(audio[w.start : w.end])) for w in split_windows(audio)]
        except RuntimeError as e:  # PocketSphinx reports decoder failures this way
            rec.error = f"pocketsphinx: {e}"
            return rec
        rec.duration = round(len(audio) / SAMPLE_RATE, 3)
        rec.hypotheses = combine_windows(windows, self.nbest)
        if len(windows) > 1:
            rec.windows = windows
        rec.timing = {"transcribe": round(time.perf_counter() - t0, 4)}
        return rec

    def recognize(self, utterances: Iterable[Utterance]) -> Iterator[NBest]:
        """Yield one n-best record per utterance, in input order."""
        for u in utterances:
            yield self._one(u)
