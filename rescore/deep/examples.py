"""Training examples of a deep-fusion model: cached Whisper encoder states, the reference, and (for the
cross-attention model) the first-pass hypotheses it reads; held-out splits, batches and hypothesis noise."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rescore.deep.model import Batch, collate
from rescore.deep.noise import HypothesisNoise


@dataclass
class Example:
    """One training or held-out utterance as the model reads it."""

    id: str
    states: np.ndarray  # [T, D] float16
    text: str
    hypotheses: list[str] = field(default_factory=list)  # first-pass n-best, best first (cross-attention model)
    group: str = ""  # the utterance (one per audio, whichever n-best list): held-out splits keep it whole


def load_examples(
    sources: Sequence[str],
    encoder: str,
    *,
    limit: int = 0,
    max_frames: int = 0,
    window: str = "padded",
    on_issue: Callable[[str], None],
) -> list[Example]:
    """Encoder states (from the cache, computing missing ones) and references of the utterances of sources.

    Utterances without a reference, with unreadable audio, or longer than ``max_frames`` are reported
    through ``on_issue`` (one line naming the item) and left out.
    """
    from rescore.io.datasets import load_dataset
    from rescore.whisper.encoder import WhisperEncoder

    enc = WhisperEncoder(encoder, window=window)
    examples: list[Example] = []
    for src in sources:
        ds = load_dataset(src)
        for issue in ds.issues:
            on_issue(f"{src}: {issue}")
        utts = ds.utterances[:limit] if limit else ds.utterances
        with_ref = [u for u in utts if u.reference and u.reference.strip()]
        for u in utts:
            if u not in with_ref:
                on_issue(f"{u.id}: no reference transcript, not used for training")
        for utt, states, error in enc.states(with_ref):
            if states is None:
                on_issue(f"{utt.id}: {error}")
            elif max_frames and states.shape[0] > max_frames:
                on_issue(f"{utt.id}: {states.shape[0]} frames, longer than --max-frames {max_frames}; skipped")
            else:
                examples.append(Example(utt.id, states.astype(np.float16), utt.reference or ""))
    return examples


def load_nbest_examples(
    files: Sequence[str],
    encoder: str,
    *,
    limit: int = 0,
    max_frames: int = 0,
    window: str = "padded",
    on_issue: Callable[[str], None],
) -> list[Example]:
    """One example per record of the n-best files (first-pass hypotheses, reference, encoder states).

    The same utterance in several lists (tiny.en and base) gives one example per list, sharing its states
    and its ``group``. Records without a reference, hypotheses or readable audio are reported and left out.
    """
    from rescore.io.datasets import Utterance
    from rescore.records import read_nbest
    from rescore.whisper.encoder import WhisperEncoder

    enc = WhisperEncoder(encoder, window=window)
    records = []
    for f in files:
        recs = list(read_nbest(f, strict=False))
        for r in recs[:limit] if limit else recs:
            if not r.ok or not r.hypotheses or not (r.reference or "").strip() or not r.audio:
                on_issue(f"{f}: {r.id}: no reference, hypotheses or audio; not used")
            else:
                records.append((f, r))
    utts: dict[str, Utterance] = {}
    for _, r in records:
        utts.setdefault(r.audio, Utterance(id=r.id, audio=r.audio, reference=r.reference, duration=r.duration))
    states: dict[str, np.ndarray] = {}
    for utt, s, error in enc.states(list(utts.values())):
        if s is None:
            on_issue(f"{utt.id}: {error}")
        elif max_frames and s.shape[0] > max_frames:
            on_issue(f"{utt.id}: {s.shape[0]} frames, longer than --max-frames {max_frames}; skipped")
        else:
            states[utt.audio] = s.astype(np.float16)
    return [
        Example(f"{Path(f).stem}/{r.id}", states[r.audio], r.reference or "", [h.text for h in r.hypotheses], r.audio)
        for f, r in records
        if r.audio in states
    ]


def held_out(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """``(train, dev)``: a seeded ``fraction`` of the utterances (whole groups: an audio's lists together) held out
    for early stopping."""
    from rescore.train.scaffold import held_out_split

    return held_out_split(examples, fraction, seed=seed, group=lambda e: e.group or e.id, minimum=1)


def batches(examples: Sequence[Example], batch_size: int, seed: int) -> list[list[int]]:
    """One epoch of batches of similar length (less padding), in random order."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    pool = batch_size * 32
    out: list[list[int]] = []
    for s in range(0, len(order), pool):
        chunk = sorted(order[s : s + pool], key=lambda i: examples[i].states.shape[0])
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def make_batch(
    examples: Sequence[Example], idx: Sequence[int], noise: HypothesisNoise | None = None, seed: str = ""
) -> Batch:
    """The examples ``idx`` as one batch; with ``noise``, their hypotheses corrupted, drawn from ``seed`` (the
    run's seed and the batch's place in it, so a resumed run draws the same noise)."""
    ex = [examples[i] for i in idx]
    states = [e.states.astype(np.float32) for e in ex]
    hyps = [e.hypotheses for e in ex]
    if noise is not None and noise.active:
        rng = random.Random(seed)
        hyps = [noise(h, rng) for h in hyps]
    return collate([e.id for e in ex], states, [e.text for e in ex], hyps)
