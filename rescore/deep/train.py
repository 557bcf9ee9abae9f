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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rescore.deep import CONFIG_FILE
from rescore.deep.examples import Example, batches, held_out, load_examples, load_nbest_examples, make_batch
from rescore.deep.inference import dev_loss, dev_wer
from rescore.deep.length_floor import save_length_floor
from rescore.deep.model import SpeechLLM, SpeechLLMConfig
from rescore.deep.noise import HypothesisNoise
from rescore.deep.xattn import XAttnLM, build_deep_model
from rescore.deep.xattn_config import XAttnConfig
from rescore.train.scaffold import atomic_write, autocast, training_device

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"


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


def lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Warm-up, then cosine decay to ``min_lr_ratio`` over steps or time, whichever is further along."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    progress = step / max(1, cfg.max_steps)
    if cfg.budget_minutes > 0:
        progress = max(progress, elapsed / (60 * cfg.budget_minutes))
    progress = min(1.0, progress)
    cos = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm * cos


def _save_checkpoint(path: Path, model: SpeechLLM | XAttnLM, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    checkpoint = {"trainable": model.trainable_state_dict(), "optimizer": opt.state_dict(), **state}
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


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
    device = training_device(cfg.device)
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
        save(not cfg.keep_best or not (out / CONFIG_FILE).exists())
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
