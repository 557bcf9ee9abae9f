"""Train a deep-fusion model on cached Whisper encoder states: the gated cross-attention blocks (default,
:mod:`rescore.deep.xattn`, on first-pass n-best records) or the prefix bridge (and optional LoRA adapters).

The LM stays frozen; the loss is on transcript tokens only. AdamW with linear warm-up and cosine decay
over whichever runs out first, ``max_steps`` or the time budget, so a time-boxed run still anneals.
Checkpoints (weights, optimizer, step, position in the epoch, elapsed time) are written atomically every
``save_every`` steps; rerunning the same command resumes from the last one.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rescore.deep import CONFIG_FILE, PRECISIONS, XATTN_KEY
from rescore.deep.model import Batch, BeamHypothesis, SpeechLLM, SpeechLLMConfig, collate
from rescore.deep.noise import HypothesisNoise
from rescore.deep.xattn import XAttnConfig, XAttnLM, build_deep_model

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"


@dataclass
class Example:
    id: str
    states: np.ndarray  # [T, D] float16
    text: str
    hypotheses: list[str] = field(default_factory=list)  # first-pass n-best, best first (cross-attention model)
    group: str = ""  # the utterance (one per audio, whichever n-best list): held-out splits keep it whole


@dataclass
class TrainConfig:
    """Options of one training run (saved beside the model, so the run is documented and resumable)."""

    train: list[str] = field(default_factory=list)  # n-best JSONL (cross-attention) / manifests (bridge)
    dev: str | None = None  # None: a held-out share (dev_fraction) of the training utterances
    out: str = "deep-model"
    model: XAttnConfig | SpeechLLMConfig = field(default_factory=XAttnConfig)
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_steps: int = 2000
    budget_minutes: float = 0.0  # 0: no time limit
    budget_clock: str = "wall"  # wall | cpu (this process's CPU time: fair budgets on a shared machine)
    limit: int = 0  # first N utterances of each training set (0: all)
    dev_limit: int = 40  # dev utterances for the dev loss and WER (0: all)
    eval_every: int = 100  # steps between dev-loss evaluations (0: only at the end)
    wer_every: int = 0  # steps between dev WER evaluations (greedy; 0: never during training)
    stop_wer: float = 0.0  # stop when dev WER (fraction) falls below this (0: never)
    save_every: int = 50
    max_frames: int = 1500  # longer training utterances are skipped (30 s)
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0: torch's default)
    dev_fraction: float = 0.1  # held-out utterances when no dev set is given
    keep_best: bool = False  # the saved model is the one of the lowest dev loss (early stopping)
    patience: int = 0  # stop after this many dev evaluations without a better dev loss (0: never)
    # cross-attention model: after training, the length floor of the lowest greedy WER on (up to this many of)
    # the dev / held-out examples is saved with the model (XAttnConfig.min_length_ratio); 0: no choice made
    floor_examples: int = 40
    precision: str = "auto"  # training's autocast: auto (bf16 on CUDA, float32 on CPU), bf16 or fp32
    gate_lr_mult: float = 10.0  # the gates' learning rate over the others' (a gate is one number per block)
    # cross-attention model: share of training examples whose hypotheses get look-alike words in place of some
    # of theirs, alike in every hypothesis (rescore.deep.noise.HypothesisNoise; 0: none), and the share of
    # such an example's distinct words replaced. Held-out losses and decoding see the hypotheses unchanged.
    hyp_noise: float = 0.0
    hyp_noise_words: float = 0.15

    def clock(self) -> Callable[[], float]:
        """The budget's clock (``budget_clock``): this process's CPU time or the wall clock."""
        if self.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"budget_clock must be 'wall' or 'cpu', not {self.budget_clock!r}")
        return time.process_time if self.budget_clock == "cpu" else time.perf_counter

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        m = d.get("model", {})
        d["model"] = SpeechLLMConfig.from_dict(m) if "bridge" in m else XAttnConfig.from_dict(m)
        return cls(**d)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is available")
    return device


def autocast(device: str, precision: str = "auto") -> Any:
    """bf16 autocast on CUDA, float32 on CPU (``auto``: CPU bf16 matmuls are slower on most machines); ``bf16``
    on CPU too, for CPUs with bf16 matrix units (AMX: a training step in about 0.75 of the time, eval/RESULTS.md)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" or (precision == "auto" and device == "cuda"):
        return torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)
    return nullcontext()


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
    """``(train, dev)``: a random ``fraction`` of the utterances (whole groups) held out for early stopping."""
    groups = sorted({e.group or e.id for e in examples})
    rng = random.Random(seed)
    rng.shuffle(groups)
    dev = set(groups[: max(1, round(fraction * len(groups)))]) if fraction > 0 and len(groups) > 1 else set()
    return [e for e in examples if (e.group or e.id) not in dev], [e for e in examples if (e.group or e.id) in dev]


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


def lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Warm-up, then cosine decay to ``min_lr_ratio`` over steps or time, whichever is further along."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    progress = step / max(1, cfg.max_steps)
    if cfg.budget_minutes > 0:
        progress = max(progress, elapsed / (60 * cfg.budget_minutes))
    progress = min(1.0, progress)
    cos = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm * cos


@torch.no_grad()
def dev_loss(model: SpeechLLM | XAttnLM, examples: Sequence[Example], batch_size: int, device: str) -> float:
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
    model: SpeechLLM | XAttnLM,
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
                    hyps = model.choose(make_batch(examples, idx), nbest)  # type: ignore[union-attr]
                else:
                    hyps = model.generate(make_batch(examples, idx), beam_size, nbest, max_new_tokens, **floor)
            for i, h in zip(idx, hyps, strict=True):
                yield examples[i], h
    finally:
        model.train(was)


def dev_wer(model: SpeechLLM | XAttnLM, examples: Sequence[Example], batch_size: int, device: str) -> float:
    """Greedy-decoding corpus WER (Whisper normalizer) on the examples."""
    from rescore.evaluate.metrics import error_rate

    refs, hyps = [], []
    for ex, h in transcribe_examples(model, examples, batch_size, device):
        refs.append(ex.text)
        hyps.append(h[0][0] if h else "")
    return error_rate(refs, hyps).rate


LENGTH_FLOORS = (0.0, 0.5, 0.7, 0.8, 0.9)


def floored(
    model: XAttnLM, examples: Sequence[Example], base: dict[str, str], ratio: float, batch_size: int, device: str
) -> dict[str, str]:
    """Greedy outputs under a length floor, from the outputs ``base`` without one: a floor changes only the
    outputs shorter than it, so only those are decoded again."""
    out = dict(base)
    if ratio <= 0:
        return out
    short = [
        ex
        for ex in examples
        if len(model.tokenizer(base[ex.id], add_special_tokens=False)["input_ids"])
        < model.length_floors([ex.hypotheses], ratio)[0]
    ]
    for ex, h in transcribe_examples(model, short, batch_size, device, 1, 1, None, ratio):
        out[ex.id] = h[0].text if h else ""
    return out


def choose_length_floor(
    model: XAttnLM, examples: Sequence[Example], batch_size: int, device: str, ratios: Sequence[float] = LENGTH_FLOORS
) -> tuple[float, dict[float, float]]:
    """The length floor (``XAttnConfig.min_length_ratio``) of the lowest greedy WER on ``examples``, which must
    be held-out training or dev examples, never a reported set; ties go to the lower floor. Returns it and
    the WER of each."""
    from rescore.evaluate.metrics import error_rate

    examples = list(examples)
    decoded = transcribe_examples(model, examples, batch_size, device, 1, 1, None, 0.0)
    base = {ex.id: (h[0].text if h else "") for ex, h in decoded}
    refs = [ex.text for ex in examples]
    wer: dict[float, float] = {}
    for r in ratios:
        hyps = floored(model, examples, base, r, batch_size, device)
        wer[r] = error_rate(refs, [hyps[ex.id] for ex in examples]).rate
    best = min(ratios, key=lambda r: (round(wer[r], 6), r))
    return best, wer


def start_queries(model: XAttnLM, examples: Sequence[Example], cfg: TrainConfig, record: Callable) -> float:
    """Fit the blocks' queries to Whisper's (rescore.deep.query_init) before step 1; returns the seconds it took
    on the budget's clock, which count against the training budget."""
    from rescore.deep.query_init import fit_queries

    clock = cfg.clock()
    t0 = clock()
    fits = fit_queries(model, examples, seed=cfg.seed)
    seconds = clock() - t0
    record(
        {
            "step": 0,
            "q_init_r2": [round(f.r2, 4) for f in fits],
            "q_init_alpha": [f.alpha for f in fits],
            "elapsed": round(seconds, 1),
        }
    )
    return seconds


def _save_checkpoint(path: Path, model: SpeechLLM | XAttnLM, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"trainable": model.trainable_state_dict(), "optimizer": opt.state_dict(), **state}, tmp)
    os.replace(tmp, path)


def check_same_model(out: Path, model: Any) -> None:
    """Resuming: the checkpoint's model must be the one configured (the weights of another, such as blocks that
    attend everywhere against ``attend="reply"``, can have the same shapes and would load silently)."""
    saved = out / "train-config.json"
    if not saved.exists():
        return
    before = TrainConfig.from_dict(json.loads(saved.read_text())).model.to_dict()
    now = model.to_dict()
    changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]
    if changed:
        raise ValueError(f"{out} holds a checkpoint of another model ({'; '.join(changed)}); use another output folder")


def train(
    cfg: TrainConfig,
    *,
    on_issue: Callable[[str], None] = print,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    model: SpeechLLM | XAttnLM | None = None,
    examples: tuple[list[Example], list[Example]] | None = None,
) -> dict[str, Any]:
    """Train, resuming from ``cfg.out`` when it holds a checkpoint. Returns a summary of the run.

    ``on_start(start_step, max_steps)`` and ``on_step(record)`` drive a progress display; every record is
    also appended to ``out/log.jsonl``. ``model`` and ``examples`` may be given to reuse loaded ones.
    """
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    xattn = isinstance(cfg.model, XAttnConfig)
    if examples is None:
        enc, window = cfg.model.encoder, getattr(cfg.model, "encoder_window", "padded")
        load = load_nbest_examples if xattn else load_examples
        train_ex = load(cfg.train, enc, limit=cfg.limit, max_frames=cfg.max_frames, window=window, on_issue=on_issue)
        if cfg.dev:
            dev_ex = load([cfg.dev], enc, limit=cfg.dev_limit, window=window, on_issue=on_issue)
        elif xattn:
            train_ex, dev_ex = held_out(train_ex, cfg.dev_fraction, cfg.seed)
        else:
            dev_ex = []
    else:
        train_ex, dev_ex = examples
    if not train_ex:
        raise ValueError("no training utterances with encoder states and references")
    width = int(train_ex[0].states.shape[1])  # the encoder's width (tiny 384, base 512)
    if isinstance(cfg.model, XAttnConfig):
        cfg.model.fit_width(width)
    else:
        cfg.model.bridge.in_dim = width
    noise = None
    if isinstance(cfg.model, XAttnConfig) and cfg.hyp_noise > 0:
        noise = HypothesisNoise(cfg.hyp_noise, cfg.hyp_noise_words, cfg.model.text_norm)
        noise.fit(e.text for e in train_ex)
    model = model or build_deep_model(cfg.model, device)
    model.train()
    model.llm.eval()  # the LM's dropout stays off; only the new modules train
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    gates = [p for k, p in named if k.endswith("_gate")]
    others = [p for k, p in named if not k.endswith("_gate")]
    params = gates + others
    groups = [{"params": others, "mult": 1.0}] + ([{"params": gates, "mult": cfg.gate_lr_mult}] if gates else [])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    ckpt_path = out / CHECKPOINT_FILE
    step, epoch, pos, elapsed = 0, 0, 0, 0.0
    best, since_best = math.inf, 0
    if ckpt_path.exists():
        check_same_model(out, cfg.model)
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_trainable_state_dict(ck["trainable"])
        opt.load_state_dict(ck["optimizer"])
        step, epoch, pos, elapsed = ck["step"], ck["epoch"], ck["pos"], ck["elapsed"]
        best, since_best = ck.get("best", math.inf), ck.get("since_best", 0)
        on_issue(f"resuming from {ckpt_path} at step {step} ({elapsed / 60:.1f} min trained)")
    (out / "train-config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def record(r: dict[str, Any]) -> None:
        with open(out / LOG_FILE, "a", encoding="utf-8") as log:
            log.write(json.dumps(r) + "\n")
        if on_step:
            on_step(r)

    def save(as_model: bool) -> None:
        state = {"step": step, "epoch": epoch, "pos": pos, "elapsed": elapsed, "best": best, "since_best": since_best}
        _save_checkpoint(ckpt_path, model, opt, state)
        if as_model:
            info = {"train": cfg.to_dict(), "steps": step, "train_seconds": elapsed, "dev_loss": best}
            model.save(out, info)

    if step == 0 and isinstance(model, XAttnLM) and model.config.q_init and model.config.audio:
        elapsed = start_queries(model, train_ex, cfg, record)
    if on_start:
        on_start(step, cfg.max_steps)
    budget = 60 * cfg.budget_minutes if cfg.budget_minutes > 0 else math.inf
    clock = cfg.clock()
    summary: dict[str, Any] = {"stopped": "max_steps"}
    t_last = clock()
    order = batches(train_ex, cfg.batch_size, cfg.seed + epoch)
    try:
        while step < cfg.max_steps:
            if elapsed >= budget:
                summary["stopped"] = "budget"
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, elapsed) * g.get("mult", 1.0)
            loss_sum = tok_sum = 0.0
            for _ in range(cfg.grad_accum):
                if pos >= len(order):
                    epoch, pos = epoch + 1, 0
                    order = batches(train_ex, cfg.batch_size, cfg.seed + epoch)
                with autocast(device, cfg.precision):
                    batch = make_batch(train_ex, order[pos], noise, seed=f"{cfg.seed}-{epoch}-{pos}")
                    loss, n = model.loss(batch)
                (loss / cfg.grad_accum).backward()
                loss_sum += loss.detach().item() * n
                tok_sum += n
                pos += 1
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            now = clock()
            elapsed += now - t_last
            t_last = now
            rec: dict[str, Any] = {
                "step": step,
                "epoch": epoch,
                "loss": loss_sum / max(tok_sum, 1.0),
                "lr": opt.param_groups[0]["lr"],
                "elapsed": round(elapsed, 1),
            }
            if getattr(model, "last_aux", None) is not None:
                rec["aux"] = model.last_aux  # type: ignore[union-attr]
            if getattr(model, "last_choice", None) is not None:
                rec["choice"] = model.last_choice  # type: ignore[union-attr]
            improved = False
            if dev_ex and cfg.eval_every and step % cfg.eval_every == 0:
                rec["dev_loss"] = dev_loss(model, dev_ex, cfg.batch_size, device)
                improved = rec["dev_loss"] < best
                best, since_best = (rec["dev_loss"], 0) if improved else (best, since_best + 1)
            if dev_ex and cfg.wer_every and step % cfg.wer_every == 0:
                rec["dev_wer"] = dev_wer(model, dev_ex, cfg.batch_size, device)
            t_last = clock()  # evaluation time does not count against the training budget
            record(rec)
            if improved and cfg.keep_best:
                save(True)
            if step % cfg.save_every == 0:
                save(not cfg.keep_best)
            if cfg.stop_wer and rec.get("dev_wer", math.inf) < cfg.stop_wer:
                summary["stopped"] = "stop_wer"
                break
            if cfg.patience and since_best >= cfg.patience:
                summary["stopped"] = "patience"
                break
    finally:
        save(not cfg.keep_best or not (out / "deep-config.json").exists())
    summary.update(step=step, epochs=epoch + pos / max(1, len(order)), train_seconds=elapsed)
    summary["train_utterances"], summary["dev_utterances"] = len(train_ex), len(dev_ex)
    if dev_ex:
        summary["dev_loss"] = dev_loss(model, dev_ex, cfg.batch_size, device)
        record({"step": step, "final": True, "dev_loss": summary["dev_loss"], "elapsed": round(elapsed, 1)})
        if cfg.keep_best and summary["dev_loss"] < best:
            best = summary["dev_loss"]
            save(True)
        summary["best_dev_loss"] = min(best, summary["dev_loss"])
    if isinstance(model, XAttnLM):
        summary["gates"] = model.gates()
        if dev_ex and cfg.floor_examples and model.writes:  # the floor bounds writing; a choosing model has none
            summary.update(save_length_floor(out, dev_ex[: cfg.floor_examples], cfg.batch_size, device))
    return summary


def save_length_floor(folder: Path, examples: Sequence[Example], batch_size: int, device: str) -> dict[str, Any]:
    """Choose the saved model's length floor on ``examples`` (held-out training or dev examples) and write it
    into its config; returns what was chosen and the WER of each floor, for the run's summary."""
    from rescore.deep.xattn import load_deep_model

    model = load_deep_model(folder, device)
    ratio, wers = choose_length_floor(model, examples, batch_size, device)
    path = Path(folder) / CONFIG_FILE
    config = json.loads(path.read_text())
    config[XATTN_KEY]["min_length_ratio"] = ratio
    config["length_floor"] = {"chosen_on": f"{len(examples)} dev/held-out examples", "dev_wer": wers}
    path.write_text(json.dumps(config, indent=2))
    return {"min_length_ratio": ratio, "floor_dev_wer": wers}
