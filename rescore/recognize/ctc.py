"""A CTC recognizer: the CTC head (:mod:`rescore.recognize.ctc_head`) over frozen Whisper encoder states, and a
prefix beam search (:mod:`rescore.recognize.ctc_decode`) turning its posteriors into n-best records scored by
their CTC log-probability, so every later stage works on them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rescore.io.datasets import Utterance
from rescore.recognize.base import in_batches
from rescore.recognize.ctc_decode import (
    LM_WEIGHT,
    WORD_BONUS,
    Fusion,
    Lexicon,
    WordLM,
    ctc_prefix_beam_search,
    logsumexp,
)
from rescore.recognize.ctc_head import load_ctc_head, resolve_checkpoint
from rescore.records import Hypothesis, NBest


class CTCRecognizer:
    """Whisper encoder states (cached) -> trained CTC head -> prefix beam search n-best.

    Options not listed here are refused (``TypeError``): the head is English only and reads encoder
    states of one compute type, so ``language`` and ``compute_type`` are accepted only where they agree
    with it ("en"/"auto", "auto"/the head's type); ``device`` is where the encoder runs.
    """

    def __init__(
        self,
        model: str = "default",
        *,
        beam_size: int = 8,
        nbest: int = 8,
        batch_size: int = 8,
        device: str = "cpu",
        compute_type: str = "auto",
        language: str | None = "en",
        cpu_threads: int = 0,
        lexicon: str | None = "cmudict",
        word_lm: str | None = "pocketsphinx",
        lm_weight: float = LM_WEIGHT,
        word_bonus: float = WORD_BONUS,
        lm_beam: int = 32,
    ) -> None:
        import torch

        from rescore.whisper.encoder import WhisperEncoder

        if nbest < 1 or beam_size < 1 or batch_size < 1:
            raise ValueError("nbest, beam_size and batch_size must be at least 1")
        if language not in (None, "", "en", "auto"):
            raise ValueError(f"the CTC head spells English only, not language {language!r}")
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        from rescore.io.models import MODELS

        # a Whisper model name (the CLI's default --model) means the default head over that encoder
        spec = "default" if model in ("default", "", None) or model in MODELS else model
        self.path, _ = resolve_checkpoint(spec)
        try:
            self.head = load_ctc_head(spec)  # the spec, not the path: the head's meta says where it comes from
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        if model in MODELS and self.head.config.encoder != model:
            raise ValueError(f"the default CTC head reads {self.head.config.encoder} states, not {model}")
        cfg = self.head.config
        if compute_type not in (None, "", "auto", cfg.encoder_compute_type):
            raise ValueError(
                f"the CTC head was trained on {cfg.encoder_compute_type} encoder states: compute_type must be"
                f" auto or {cfg.encoder_compute_type}, not {compute_type!r}"
            )
        self.encoder = WhisperEncoder(
            cfg.encoder, device=device, compute_type=cfg.encoder_compute_type, batch_size=batch_size
        )
        self.beam_size = max(beam_size, nbest)
        self.nbest = nbest
        self.batch_size = batch_size
        self.lexicon: Lexicon | None = None
        if lexicon == "cmudict":
            try:
                self.lexicon = Lexicon.cmudict(self.head.vocab)
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
        elif lexicon not in (None, "", "none"):
            path = Path(lexicon)  # type: ignore[arg-type]
            if not path.exists():
                raise ValueError(f"lexicon not found: {path} (expected 'cmudict', 'none' or a word list file)")
            words = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            self.lexicon = Lexicon(words, self.head.vocab, str(path))
        self.fusion: Fusion | None = None
        if word_lm not in (None, "", "none"):
            try:
                lm = WordLM.pocketsphinx() if word_lm == "pocketsphinx" else WordLM(word_lm)  # type: ignore[arg-type]
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
            self.fusion = Fusion(lm, lm_weight, word_bonus)
            self.beam_size = max(self.beam_size, lm_beam)  # word-end LM scores reorder late: keep more prefixes
        self.info: dict[str, Any] = {
            "backend": "ctc",
            "word_lm": None if self.fusion is None else self.fusion.lm.name,
            "lm_weight": None if self.fusion is None else lm_weight,
            "word_bonus": None if self.fusion is None else word_bonus,
            "model": str(self.path),
            "model_source": self.head.meta["checkpoint"]["source"],
            "encoder": cfg.encoder,
            "units": "chars",
            "lexicon": self.lexicon.name if self.lexicon else None,
            "beam_size": self.beam_size,
            "nbest": nbest,
        }

    def log_posteriors(self, states: list[np.ndarray]) -> list[np.ndarray]:
        """Per-frame CTC log-posteriors of each utterance's encoder states."""
        import torch

        lengths = torch.tensor([len(s) for s in states])
        x = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
        for i, s in enumerate(states):
            x[i, : len(s)] = torch.from_numpy(s)
        with torch.inference_mode():
            lp, out_len = self.head(x, lengths)
        return [lp[i, : out_len[i]].numpy() for i in range(len(states))]

    def _hypotheses(self, log_probs: np.ndarray) -> list[Hypothesis]:
        # label sequences that differ only in leading, trailing or doubled spaces read the same: merge them
        merged: dict[str, tuple[list[int], float]] = {}
        for labels, score in ctc_prefix_beam_search(
            log_probs, self.beam_size, self.beam_size, self.head.blank, lexicon=self.lexicon, fusion=self.fusion
        ):
            text = self.head.vocab.decode(labels)
            if text in merged:
                merged[text] = (merged[text][0], logsumexp(merged[text][1], score))
            else:
                merged[text] = (list(self.head.vocab.encode(text)), score)
        ranked = sorted(merged.items(), key=lambda kv: kv[1][1], reverse=True)[: self.nbest]
        hyps = []
        for text, (labels, score) in ranked:
            n = max(len(labels), 1)
            # am: what the search ranked by (CTC, plus the fused word LM when there is one)
            scores = {"am": score, "am_tokens": float(n), "am_norm": score / n, "ctc": score}
            if self.fusion is not None:
                lm = self.fusion.sentence(text)
                scores["word_lm"] = lm
                scores["ctc"] = score - self.fusion.weight * lm - self.fusion.bonus * len(text.split())
            hyps.append(Hypothesis(text, labels, scores))
        return hyps

    def _batch(self, utts: list[Utterance]) -> Iterator[NBest]:
        t0 = time.perf_counter()
        got = list(self.encoder.states(utts))
        ok = [(u, s) for u, s, e in got if e is None and s is not None and len(s)]
        posts = self.log_posteriors([s for _, s in ok]) if ok else []
        by_id = {u.id: lp for (u, _), lp in zip(ok, posts, strict=True)}
        elapsed = time.perf_counter() - t0
        for u, s, err in got:
            rec = NBest(id=u.id, audio=u.audio, reference=u.reference, recognizer=dict(self.info))
            if u.id not in by_id:
                rec.error = err or "no audio frames"
                yield rec
                continue
            t1 = time.perf_counter()
            rec.hypotheses = self._hypotheses(by_id[u.id])
            rec.duration = round(len(s) / 50, 3)  # type: ignore[arg-type]
            rec.timing = {"transcribe": round(elapsed / len(utts) + time.perf_counter() - t1, 4)}
            yield rec

    def recognize(self, utterances: Iterable[Utterance]) -> Iterator[NBest]:
        """Yield one n-best record per utterance, in input order."""
        for batch in in_batches(utterances, self.batch_size):
            yield from self._batch(batch)
