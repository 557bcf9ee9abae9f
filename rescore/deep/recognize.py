"""A trained deep-fusion model as a recognizer: n-best records out (so score/rerank/correct apply).

The gated cross-attention model (:mod:`rescore.deep.xattn`) reads a first-pass record (its hypotheses, the
reranked choice first, and its audio) and writes a new one (:meth:`DeepFusionRecognizer.rewrite`); the prefix
bridge reads the audio alone (:meth:`DeepFusionRecognizer.recognize`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rescore.deep import DECODE_MODES
from rescore.io.datasets import Utterance
from rescore.records import Hypothesis, NBest

FIRST_PASS_KEY = "first_pass"  # extra["first_pass"] = {"recognizer": ..., "texts": [...]}: what the model read

if TYPE_CHECKING:  # torch is imported when a model is loaded, not with this module
    from rescore.deep.model import BeamHypothesis

STAGE = "deep"  # the pipeline stage's name: the run report sums ``timing[stage]`` per stage
# write: beam search writes the transcript; choose: the model scores the prompt's own hypotheses (XAttnLM.choose:
# one utterance's candidates, each ending in eos). Both rank by the log-prob per step, the records' am_norm. auto:
# write where the model can, else choose (a model over Whisper's predictions needs the transcript: it only chooses)


def _hypothesis(h: BeamHypothesis) -> Hypothesis:
    """Scores as the other recognizers write them, so ``rerank``'s default ``am_norm`` weights apply."""
    steps = float(max(h.steps, 1))
    return Hypothesis(h.text, h.tokens, {"am": h.score, "am_tokens": steps, "am_norm": h.score / steps})


class DeepFusionRecognizer:
    """A trained deep-fusion model over cached Whisper encoder states, one :class:`NBest` per utterance: the
    cross-attention model rewrites first-pass records, the bridge transcribes audio."""

    def __init__(
        self,
        model: str | Path,
        *,
        beam_size: int = 4,
        nbest: int = 4,
        batch_size: int = 4,
        device: str = "auto",
        threads: int = 0,
        decode: str = "auto",
    ) -> None:
        import torch

        from rescore.deep.xattn import XAttnLM, load_deep_model
        from rescore.train.scaffold import training_device
        from rescore.whisper.encoder import WhisperEncoder

        if threads:
            torch.set_num_threads(threads)
        self.device = training_device(device)
        self.model = load_deep_model(Path(model), self.device)
        self.reads_nbest = isinstance(self.model, XAttnLM)
        writes = getattr(self.model, "writes", True)  # the bridge always writes
        if decode == "auto":
            decode = "write" if writes else "choose"
        if decode not in DECODE_MODES or (decode == "choose" and not self.reads_nbest):
            raise ValueError(f"decode {decode!r}: one of {', '.join(DECODE_MODES)} ('choose' needs an xattn model)")
        if decode == "write" and not writes:
            raise ValueError(
                f"{model}: the model reads Whisper's predictions on the transcript (memory prediction) and can only "
                "choose among the first-pass hypotheses: decode 'choose'"
            )
        self.decode = decode
        cfg = self.model.config
        self.encoder = WhisperEncoder(cfg.encoder, window=getattr(cfg, "encoder_window", "padded"))
        self.beam_size, self.nbest, self.batch_size = beam_size, min(nbest, beam_size), batch_size
        self.info: dict[str, Any] = {
            "backend": "deep-fusion",
            "model": str(model),
            "encoder": cfg.encoder,
            "encoder_window": self.encoder.window,
            "llm": cfg.llm,
            "beam_size": beam_size,
            "nbest": self.nbest,
        }
        if self.reads_nbest:
            self.info["decode"] = decode
            self.info["architecture"] = f"xattn every {cfg.every}, memory {cfg.memory}, mixer {cfg.mixer}" + (
                "" if cfg.audio else ", no audio"
            )
        else:
            self.info["bridge"] = f"{cfg.bridge.reducer}+{cfg.bridge.mixer}"

    def _decode(self, items: list[tuple[Utterance, np.ndarray]], first: list[NBest] | None = None) -> Iterator[NBest]:
        from rescore.deep.model import collate
        from rescore.train.scaffold import autocast

        t0 = time.perf_counter()
        hyps = [prompt_texts(r) for r in first] if first else None
        batch = collate([u.id for u, _ in items], [s for _, s in items], ["" for _ in items], hyps)
        with autocast(self.device):
            if self.decode == "choose":
                results = self.model.choose(batch, nbest=self.nbest)
            else:
                results = self.model.generate(batch, beam_size=self.beam_size, nbest=self.nbest)
        per_utt = (time.perf_counter() - t0) / len(items)
        for k, ((utt, states), hyps) in enumerate(zip(items, results, strict=True)):
            extra = {}
            if first:
                extra[FIRST_PASS_KEY] = {"recognizer": first[k].recognizer, "texts": prompt_texts(first[k])}
            yield NBest(
                id=utt.id,
                audio=utt.audio,
                duration=utt.duration if utt.duration is not None else states.shape[0] / 50,
                reference=utt.reference,
                recognizer=dict(self.info),
                hypotheses=[_hypothesis(h) for h in hyps],  # in the model's order (see DECODE_MODES)
                timing={STAGE: round(per_utt, 4)},
                extra=extra,
            )

    def rewrite(self, records: Iterable[NBest]) -> Iterator[NBest]:
        """The cross-attention model over first-pass records (hypotheses + audio), one new record each, in order;
        a record without hypotheses or readable audio becomes an error record."""
        if not self.reads_nbest:
            raise ValueError("this deep-fusion model (prefix bridge) reads audio, not n-best records")
        records = list(records)
        by_id = {r.id: r for r in records}
        usable = [r for r in records if r.ok and r.hypotheses and r.audio]
        utts = [Utterance(id=r.id, audio=r.audio or "", reference=r.reference, duration=r.duration) for r in usable]
        states = {u.id: (s, e) for u, s, e in self.encoder.states(utts)}
        pending: list[tuple[Utterance, np.ndarray]] = []
        for r in records:
            s, error = states.get(r.id, (None, r.error or "no hypotheses or audio to read"))
            if s is None:
                yield from self._flush(pending, by_id)
                pending = []
                yield NBest(id=r.id, audio=r.audio, reference=r.reference, recognizer=dict(self.info), error=error)
                continue
            pending.append((Utterance(id=r.id, audio=r.audio or "", reference=r.reference, duration=r.duration), s))
            if len(pending) >= self.batch_size:
                yield from self._flush(pending, by_id)
                pending = []
        yield from self._flush(pending, by_id)

    def recognize(self, utterances: Iterable[Utterance]) -> Iterator[NBest]:
        """Batches of similar utterances in input order; an utterance whose audio fails becomes an error record."""
        if self.reads_nbest:
            raise ValueError("this deep-fusion model reads first-pass n-best records: give it records (rewrite)")
        pending: list[tuple[Utterance, np.ndarray]] = []
        for utt, states, error in self.encoder.states(utterances):
            if states is None:
                yield from self._flush(pending)
                pending = []
                yield NBest(
                    id=utt.id, audio=utt.audio, reference=utt.reference, recognizer=dict(self.info), error=error
                )
                continue
            pending.append((utt, states))
            if len(pending) >= self.batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def _flush(
        self, items: list[tuple[Utterance, np.ndarray]], first: dict[str, NBest] | None = None
    ) -> Iterator[NBest]:
        if not items:
            return
        try:
            yield from self._decode(items, [first[u.id] for u, _ in items] if first is not None else None)
        except Exception as e:  # a batch that cannot be decoded: retry one by one so only the bad item fails
            if len(items) == 1:
                u = items[0][0]
                yield NBest(id=u.id, audio=u.audio, reference=u.reference, recognizer=dict(self.info), error=str(e))
                return
            for item in items:
                yield from self._flush([item], first)


def prompt_texts(record: NBest) -> list[str]:
    """A first-pass record's hypotheses for the prompt: the reranked choice first, then the others in order."""
    texts = [h.text for h in record.hypotheses]
    chosen = record.chosen or 0
    if 0 < chosen < len(texts):
        texts.insert(0, texts.pop(chosen))
    return texts
