"""Joint CTC/attention scores: the CTC head's log-probability of each hypothesis of any recognizer (``ctc``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from rescore.io.datasets import Utterance
from rescore.recognize.ctc_head import BLANK, load_ctc_head
from rescore.records import NBest


def ctc_sequence_log_probs(log_probs: np.ndarray, label_seqs: list[list[int]], blank: int = BLANK) -> list[float]:
    """Exact CTC log-probability of each label sequence under per-frame log-posteriors ``[T, V]``.

    The forward algorithm (torch's ``ctc_loss``) sums over every alignment; a sequence that cannot fit in
    ``T`` frames gets ``-inf``.
    """
    import torch

    if not label_seqs:
        return []
    n = len(label_seqs)
    lp = torch.from_numpy(np.ascontiguousarray(log_probs, dtype=np.float32))[:, None, :].expand(-1, n, -1)
    targets = torch.tensor([c for s in label_seqs for c in s], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(
        lp,
        targets,
        torch.full((n,), log_probs.shape[0], dtype=torch.long),
        torch.tensor([len(s) for s in label_seqs], dtype=torch.long),
        blank=blank,
        reduction="none",
        zero_infinity=False,
    )
    return [-float(x) for x in loss]


class CTCScorer:
    """Adds the CTC head's log-probability of each hypothesis (``scores["ctc"]``) to n-best records of any
    recognizer: with Whisper's ``am`` it gives joint CTC/attention scores, as hybrid CTC/attention
    decoders use, for the reranker to weigh. Text is normalised to the head's characters first.
    """

    def __init__(self, model: str = "default", *, batch_size: int = 8, key: str = "ctc") -> None:
        from rescore.whisper.encoder import WhisperEncoder

        self.head = load_ctc_head(None if model == "default" else model)
        cfg = self.head.config
        self.encoder = WhisperEncoder(cfg.encoder, compute_type=cfg.encoder_compute_type, batch_size=batch_size)
        self.batch_size = batch_size
        self.key = key

    def _posteriors(self, states: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            lp, _ = self.head(torch.from_numpy(states)[None])
        return lp[0].numpy()

    def score(self, records: Iterable[NBest]) -> Iterator[NBest]:
        """Yield the records with ``ctc`` scores added; a record whose audio fails gets ``error`` set."""
        batch: list[NBest] = []

        def flush() -> Iterator[NBest]:
            utts = [
                Utterance(r.id, r.audio or "", r.reference, start=r.extra.get("start"), end=r.extra.get("end"))
                for r in batch
            ]
            for rec, (_, states, err) in zip(batch, self.encoder.states(utts), strict=True):
                if err is not None or states is None:
                    rec.error = f"ctc scoring: {err}"
                    yield rec
                    continue
                lp = self._posteriors(states)
                labels = [self.head.vocab.encode(h.text) for h in rec.hypotheses]
                for h, s in zip(rec.hypotheses, ctc_sequence_log_probs(lp, labels, self.head.blank), strict=True):
                    h.scores[self.key] = s if math.isfinite(s) else -1e9
                yield rec
            batch.clear()

        for rec in records:
            if not rec.ok or not rec.hypotheses or not rec.audio:
                yield rec
                continue
            batch.append(rec)
            if len(batch) >= self.batch_size:
                yield from flush()
        if batch:
            yield from flush()
