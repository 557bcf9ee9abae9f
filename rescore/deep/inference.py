"""Running a deep-fusion model on examples: decoding in length-sorted batches, the held-out loss and WER (shared by
training and the length floor's choice); device and autocast are the training scaffold's (rescore.train.scaffold)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rescore.deep.examples import Example, make_batch
from rescore.deep.model import BeamHypothesis
from rescore.train.scaffold import autocast


@torch.no_grad()
def dev_loss(model: Any, examples: Sequence[Example], batch_size: int, device: str) -> float:
    """Token-weighted mean cross-entropy (nats per token) over the examples."""
    was = model.training
    model.eval()
    total = tokens = 0.0
    order = sorted(range(len(examples)), key=lambda i: examples[i].states.shape[0])
    for s in range(0, len(order), batch_size):
        with autocast(device):
            loss, n = model.loss(make_batch(examples, order[s : s + batch_size]))
        total += float(loss) * n
        tokens += n
    model.train(was)
    return total / max(tokens, 1.0)


def transcribe_examples(
    model: Any,
    examples: Sequence[Example],
    batch_size: int,
    device: str,
    beam_size: int = 1,
    nbest: int = 1,
    max_new_tokens: int | None = None,
    min_length_ratio: float | None = None,
    decode: str = "write",
) -> Iterator[tuple[Example, list[BeamHypothesis]]]:
    """Beam search over examples (sorted by length for less padding), yielding each with its n-best.

    ``min_length_ratio``: the cross-attention model's length floor (None: the model's own). ``decode="choose"``:
    the cross-attention model ranks each example's own hypotheses instead (:meth:`XAttnLM.choose`)."""
    was = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: examples[i].states.shape[0])
    floor = {} if min_length_ratio is None else {"min_length_ratio": min_length_ratio}  # the bridge has none
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            with autocast(device):
                if decode == "choose":
                    hyps = model.choose(make_batch(examples, idx), nbest)
                else:
                    hyps = model.generate(make_batch(examples, idx), beam_size, nbest, max_new_tokens, **floor)
            for i, h in zip(idx, hyps, strict=True):
                yield examples[i], h
    finally:
        model.train(was)


def dev_wer(model: Any, examples: Sequence[Example], batch_size: int, device: str) -> float:
    """Greedy-decoding corpus WER (Whisper normalizer) on the examples."""
    from rescore.evaluate.metrics import error_rate

    refs, hyps = [], []
    for ex, h in transcribe_examples(model, examples, batch_size, device):
        refs.append(ex.text)
        hyps.append(h[0][0] if h else "")
    return error_rate(refs, hyps).rate
