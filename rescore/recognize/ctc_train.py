"""Training of the CTC head on cached Whisper encoder states, inside a wall-clock budget.

The encoder is frozen, so its states are computed once per utterance (:class:`rescore.whisper.encoder.WhisperEncoder`
caches them) and every epoch is a read from memory. The learning-rate schedule follows the fraction of
the budget spent (warm-up, then cosine decay to zero), so a run given 40 minutes anneals properly
whatever the machine's speed. A slice of the training utterances is held out to pick the checkpoint:
the evaluation sets are never seen by training nor by the choice of the checkpoint.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rescore.io.datasets import load_dataset
from rescore.recognize.ctc_decode import ctc_greedy
from rescore.recognize.ctc_head import CharVocab, CTCHeadConfig, build_ctc_head, default_checkpoint, save_ctc_head
from rescore.train.scaffold import Budget, EarlyStopping, held_out_split, stable_share, warmup_cosine

DEFAULT_SETS = ("an4-train", "arctic-cathy", "speechocean-train")


@dataclass
class TrainConfig:
    """What to train on and for how long. ``minutes`` is wall-clock; ``max_epochs`` caps it as well."""

    sets: list[str] = field(default_factory=lambda: [f"../shared/data/{s}" for s in DEFAULT_SETS])
    output: str = ""
    minutes: float = 40.0
    max_epochs: int = 200
    batch_frames: int = 2500  # encoder frames per batch (50 per second)
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of the budget
    heldout: float = 0.05  # fraction of training utterances held out to pick the checkpoint
    time_masks: int = 2
    time_mask_frac: float = 0.08
    feature_masks: int = 2
    feature_mask_width: int = 48
    noise: float = 0.05
    threads: int = 1  # on a shared, oversubscribed CPU one thread per process is fastest
    seed: int = 0
    cached_only: bool = False
    init: str = ""  # start from this checkpoint's weights (its head config wins) instead of from scratch
    head: CTCHeadConfig = field(default_factory=CTCHeadConfig)


@dataclass
class Example:
    id: str
    states: np.ndarray  # [T, D] float16
    labels: list[int]


def load_examples(
    sets: list[str],
    head: CTCHeadConfig,
    log: Callable[[str], None] = print,
    cached_only: bool = False,
    skip: set[str] | None = None,
) -> tuple[list[Example], list[str]]:
    """Encoder states and label sequences of every usable utterance (states come from the cache).

    ``cached_only`` skips utterances whose states are not cached yet instead of computing them (another
    process may be filling the cache: training picks them up at the next epoch); ``skip`` lists ids
    already loaded.
    """
    from rescore.whisper.encoder import WhisperEncoder

    vocab = CharVocab(head.vocab)
    enc = WhisperEncoder(head.encoder, compute_type=head.encoder_compute_type)
    skip = skip or set()
    examples, problems = [], []
    for src in sets:
        ds = load_dataset(src)
        problems += [str(i) for i in ds.issues]
        t0, n = time.perf_counter(), 0
        utts = [u for u in ds.utterances if f"{ds.name}/{u.id}" not in skip]
        if cached_only:
            cached = [u for u in utts if enc._key(u).exists()]
            if len(cached) < len(utts):
                log(f"{src}: {len(utts) - len(cached)} utterances not cached yet, left out for now")
            utts = cached
        for utt, states, err in enc.states(utts):
            if err is not None or states is None:
                problems.append(f"{utt.id}: {err}")
                continue
            labels = vocab.encode(utt.reference or "")
            out_len = math.ceil(len(states) / head.stride)
            if not labels or _min_frames(labels) > out_len:
                problems.append(f"{utt.id}: transcript too long for {out_len} frames or empty")
                continue
            examples.append(Example(f"{ds.name}/{utt.id}", states.astype(np.float16), labels))
            n += 1
        if n:
            log(f"{src}: {n} utterances loaded ({time.perf_counter() - t0:.0f} s)")
    return examples, problems


def is_heldout(example_id: str, fraction: float) -> bool:
    """A stable split by id hash, so utterances added between epochs land on the same side every time."""
    return stable_share(example_id) < fraction


def _min_frames(labels: list[int]) -> int:
    """CTC needs one frame per label plus a blank between equal neighbours."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:], strict=False))


def _batches(examples: list[Example], batch_frames: int, rng: random.Random) -> list[list[Example]]:
    """Length-sorted buckets (little padding), shuffled."""
    order = sorted(examples, key=lambda e: len(e.states) + rng.random() * 20)
    batches, cur, longest = [], [], 0
    for ex in order:
        longest_new = max(longest, len(ex.states))
        if cur and longest_new * (len(cur) + 1) > batch_frames:
            batches.append(cur)
            cur, longest_new = [], len(ex.states)
        cur.append(ex)
        longest = longest_new
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _collate(batch: list[Example]):  # noqa: ANN202 - torch tensors
    import torch

    lengths = torch.tensor([len(e.states) for e in batch])
    x = torch.zeros(len(batch), int(lengths.max()), batch[0].states.shape[1])
    for i, e in enumerate(batch):
        x[i, : len(e.states)] = torch.from_numpy(e.states.astype(np.float32))
    targets = torch.tensor([c for e in batch for c in e.labels])
    target_lengths = torch.tensor([len(e.labels) for e in batch])
    return x, lengths, targets, target_lengths


def _augment(x, lengths, cfg: TrainConfig, gen):  # noqa: ANN001, ANN202 - torch tensors
    """SpecAugment on encoder states: time spans and feature bands zeroed, a little Gaussian noise."""
    import torch

    x = x.clone()
    b, _, d = x.shape
    for i in range(b):
        n = int(lengths[i])
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, max(1, int(n * cfg.time_mask_frac)) + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, n - w) + 1, (1,), generator=gen))
            x[i, s : s + w] = 0.0
        for _ in range(cfg.feature_masks):
            w = int(torch.randint(0, cfg.feature_mask_width + 1, (1,), generator=gen))
            s = int(torch.randint(0, d - w + 1, (1,), generator=gen))
            x[i, :, s : s + w] = 0.0
    if cfg.noise:
        x = x + cfg.noise * torch.randn(x.shape, generator=gen)
    return x


def evaluate_heldout(head, examples: list[Example], batch_frames: int) -> tuple[float, float]:  # noqa: ANN001
    """Mean CTC loss per label and greedy character error rate on ``examples``."""
    import jiwer
    import torch

    head.eval()
    loss_sum, labels_sum, refs, hyps = 0.0, 0, [], []
    with torch.inference_mode():
        for batch in _batches(examples, batch_frames, random.Random(0)):
            x, lengths, targets, target_lengths = _collate(batch)
            lp, out_len = head(x, lengths)
            loss = torch.nn.functional.ctc_loss(
                lp.transpose(0, 1),
                targets,
                out_len,
                target_lengths,
                blank=head.blank,
                reduction="sum",
                zero_infinity=True,
            )
            loss_sum += float(loss)
            labels_sum += int(target_lengths.sum())
            for i, e in enumerate(batch):
                refs.append(head.vocab.decode(e.labels))
                hyps.append(head.vocab.decode(ctc_greedy(lp[i, : out_len[i]].numpy(), head.blank)))
    head.train()
    return loss_sum / max(labels_sum, 1), float(jiwer.cer(refs, hyps))


def train_ctc_head(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train a head within ``cfg.minutes`` and save the best held-out checkpoint to ``cfg.output``."""
    import torch

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.output) if cfg.output else default_checkpoint()

    previous: dict = {}
    if cfg.init:
        from rescore.recognize.ctc_head import load_ctc_head

        head = load_ctc_head(cfg.init)
        cfg.head = head.config
        previous = {k: v for k, v in head.meta.items() if k != "history"}
        log(f"starting from {cfg.init}")
    else:
        head = build_ctc_head(cfg.head)
    examples, problems = load_examples(cfg.sets, cfg.head, log, cfg.cached_only)
    for p in problems[:20]:
        log(f"skipped {p}")
    if len(problems) > 20:
        log(f"... and {len(problems) - 20} more skipped")
    if not examples:
        raise ValueError("no usable training utterances")
    train, held = held_out_split(examples, cfg.heldout, group=lambda e: e.id)
    if not held:  # nothing held out (tiny sets, or heldout=0): pick the checkpoint on the training data
        log("no utterance held out: the checkpoint is picked on training data")
        held = list(train)
    hours = sum(len(e.states) for e in train) / 50 / 3600
    log(f"training on {len(train)} utterances ({hours:.2f} h), {len(held)} held out")

    head.train()
    n_params = sum(p.numel() for p in head.parameters())
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    budget = Budget(minutes=cfg.minutes)
    stopping = EarlyStopping()  # the checkpoint with the best held-out CER is kept; the budget ends the run
    best: dict = {"cer": math.inf}
    if cfg.init:  # only an improvement over the starting point replaces a checkpoint
        loss0, cer0 = evaluate_heldout(head, held, cfg.batch_frames)
        best = {"cer": cer0, "loss": loss0, "epoch": 0}
        stopping.measure(0, cer0)
        log(f"start: held-out loss {loss0:.3f}, CER {100 * cer0:.1f} %")
    total_minutes = cfg.minutes + float(previous.get("total_minutes", previous.get("train", {}).get("minutes", 0.0)))
    history = []
    step, epoch = 0, 0
    late_heldout: set[str] = set()

    while epoch < cfg.max_epochs and not budget.spent():
        epoch += 1
        if cfg.cached_only and epoch > 1:  # utterances cached since the last epoch join the training
            seen = {e.id for e in train} | {e.id for e in held} | late_heldout
            added, _ = load_examples(cfg.sets, cfg.head, lambda _: None, True, seen)
            late_heldout |= {e.id for e in added if is_heldout(e.id, cfg.heldout)}  # the held-out set stays fixed
            if added:
                train += [e for e in added if not is_heldout(e.id, cfg.heldout)]
                hours = sum(len(e.states) for e in train) / 50 / 3600
                log(f"epoch {epoch}: {len(added)} newly cached utterances added ({len(train)}, {hours:.2f} h)")
        tot, n_lab = 0.0, 0
        for batch in _batches(train, cfg.batch_frames, rng):
            if budget.spent():
                break
            for g in opt.param_groups:
                g["lr"] = cfg.lr * max(warmup_cosine(budget.progress(), warmup=cfg.warmup), 0.01)
            x, lengths, targets, target_lengths = _collate(batch)
            x = _augment(x, lengths, cfg, gen)
            lp, out_len = head(x, lengths)
            loss = torch.nn.functional.ctc_loss(
                lp.transpose(0, 1),
                targets,
                out_len,
                target_lengths,
                blank=head.blank,
                reduction="sum",
                zero_infinity=True,
            )
            opt.zero_grad()
            (loss / int(target_lengths.sum())).backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            opt.step()
            step += 1
            tot += float(loss.detach())
            n_lab += int(target_lengths.sum())
            if step % 50 == 0:
                log(f"  step {step} ({budget.elapsed() / 60:.1f} min): train loss {tot / n_lab:.3f}")
        val_loss, val_cer = evaluate_heldout(head, held, cfg.batch_frames)
        minutes = budget.elapsed() / 60
        row = {"epoch": epoch, "step": step, "minutes": round(minutes, 2), "train_loss": tot / max(n_lab, 1)}
        row |= {"heldout_loss": val_loss, "heldout_cer": val_cer}
        history.append(row)
        log(
            f"epoch {epoch} step {step} {minutes:.1f} min: train loss {row['train_loss']:.3f}, "
            f"held-out loss {val_loss:.3f}, CER {100 * val_cer:.1f} %"
        )
        if stopping.measure(epoch, val_cer):
            best = {"cer": val_cer, "loss": val_loss, "epoch": epoch}
            meta = {
                "train": {k: v for k, v in asdict(cfg).items() if k != "head"},
                "train_utterances": len(train),
                "train_hours": round(hours, 3),
                "heldout_utterances": len(held),
                "params": n_params,
                "total_minutes": total_minutes,
                "previous": previous,
                "best": best,
                "history": history,
            }
            save_ctc_head(head, out, meta)
    summary = {"output": str(out), "epochs": epoch, "steps": step, "params": n_params, "best": best}
    summary |= {"minutes": round(budget.elapsed() / 60, 2), "history": history}
    log(f"saved {out} (epoch {best.get('epoch')}, held-out CER {100 * best['cer']:.1f} %)")
    return summary
