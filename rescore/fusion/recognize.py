"""A trained speech-LLM as a recognizer: utterances in, n-best records out (so score/rerank/correct apply)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rescore.datasets import Utterance
from rescore.records import Hypothesis, NBest

if TYPE_CHECKING:  # torch is imported when a model is loaded, not with this module
    from rescore.fusion.model import BeamHypothesis

STAGE = "deep"  # the pipeline stage's name: the run report sums ``timing[stage]`` per stage


def _hypothesis(h: BeamHypothesis) -> Hypothesis:
    """Scores as the other recognizers write them, so ``rerank``'s default ``am_norm`` weights apply."""
    steps = float(max(h.steps, 1))
    return Hypothesis(h.text, h.tokens, {"am": h.score, "am_tokens": steps, "am_norm": h.score / steps})


class DeepFusionRecognizer:
    """Whisper encoder states (cached) -> bridge -> LLM beam search, one :class:`NBest` per utterance."""

    def __init__(
        self,
        model: str | Path,
        *,
        beam_size: int = 4,
        nbest: int = 4,
        batch_size: int = 4,
        device: str = "auto",
        threads: int = 0,
    ) -> None:
        import torch

        from rescore.encoder import WhisperEncoder
        from rescore.fusion.model import load_model
        from rescore.fusion.train import resolve_device

        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.model = load_model(Path(model), self.device)
        self.encoder = WhisperEncoder(self.model.config.encoder)
        self.beam_size, self.nbest, self.batch_size = beam_size, min(nbest, beam_size), batch_size
        cfg = self.model.config
        self.info: dict[str, Any] = {
            "backend": "deep-fusion",
            "model": str(model),
            "encoder": cfg.encoder,
            "llm": cfg.llm,
            "bridge": f"{cfg.bridge.reducer}+{cfg.bridge.mixer}",
            "beam_size": beam_size,
            "nbest": self.nbest,
        }

    def _decode(self, items: list[tuple[Utterance, np.ndarray]]) -> Iterator[NBest]:
        from rescore.fusion.model import collate
        from rescore.fusion.train import autocast

        t0 = time.perf_counter()
        batch = collate([u.id for u, _ in items], [s for _, s in items], ["" for _ in items])
        with autocast(self.device):
            results = self.model.generate(batch, beam_size=self.beam_size, nbest=self.nbest)
        per_utt = (time.perf_counter() - t0) / len(items)
        for (utt, states), hyps in zip(items, results, strict=True):
            yield NBest(
                id=utt.id,
                audio=utt.audio,
                duration=utt.duration if utt.duration is not None else states.shape[0] / 50,
                reference=utt.reference,
                recognizer=dict(self.info),
                hypotheses=[_hypothesis(h) for h in hyps],  # in the beam search's order (by am_norm)
                timing={STAGE: round(per_utt, 4)},
            )

    def recognize(self, utterances: Iterable[Utterance]) -> Iterator[NBest]:
        """Batches of similar utterances in input order; an utterance whose audio fails becomes an error record."""
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

    def _flush(self, items: list[tuple[Utterance, np.ndarray]]) -> Iterator[NBest]:
        if not items:
            return
        try:
            yield from self._decode(items)
        except Exception as e:  # a batch that cannot be decoded: retry one by one so only the bad item fails
            if len(items) == 1:
                u = items[0][0]
                yield NBest(id=u.id, audio=u.audio, reference=u.reference, recognizer=dict(self.info), error=str(e))
                return
            for item in items:
                yield from self._flush([item])
