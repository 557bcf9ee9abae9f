"""The training scaffold: small parts the CTC head, deep fusion and LoRA loops all use.

Own code rather than transformers' Trainer or Lightning: the loops here are budgeted in wall-clock or CPU
minutes on a shared CPU, with the learning rate following the share of the budget spent, and they train
different things (a head on cached encoder states, hook modules on a frozen LM, a PEFT adapter) with their
own losses and checkpoint formats; a Trainer would need a callback for the budget, a custom scheduler and a
wrapper per model, more code than these parts.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rescore.device import resolve_device

T = TypeVar("T")
PRECISIONS = ("auto", "bf16", "fp32")  # training's autocast
CLOCKS = ("wall", "cpu")


@dataclass
class Budget:
    """How long a run may train: ``minutes`` of the ``clock`` (0: no time limit) and ``max_steps`` (0: none);
    whichever is further along says how far the run is (``progress``), which the schedule follows."""

    minutes: float = 0.0
    max_steps: int = 0
    clock: str = "wall"  # wall: elapsed time; cpu: this process's CPU time (fair on a shared machine)
    _start: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"budget clock must be 'wall' or 'cpu', not {self.clock!r}")
        self._start = self.now()

    def now(self) -> float:
        return time.process_time() if self.clock == "cpu" else time.perf_counter()

    def elapsed(self) -> float:
        """Seconds spent on this budget's clock since it was made."""
        return self.now() - self._start

    def progress(self, step: int = 0) -> float:
        """The share of the budget spent, 0 to 1: by time or by steps, whichever is further along."""
        shares = [step / self.max_steps] if self.max_steps > 0 else []
        if self.minutes > 0:
            shares.append(self.elapsed() / (60 * self.minutes))
        return min(1.0, max(shares, default=0.0))

    def spent(self, step: int = 0) -> bool:
        return (self.minutes > 0 or self.max_steps > 0) and self.progress(step) >= 1.0


def warmup_cosine(progress: float, *, warmup: float = 0.0, floor: float = 0.0) -> float:
    """The learning-rate scale at ``progress`` (0 to 1): linear warm-up over the first ``warmup`` share, then a
    cosine decay to ``floor``."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    rest = (progress - warmup) / (1 - warmup) if warmup < 1 else 1.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, rest)))


def stable_share(key: str) -> float:
    """A number in [0, 1] fixed by ``key`` alone: an id lands on the same side of a split whatever else is loaded."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def held_out_split(
    items: Sequence[T],
    fraction: float,
    *,
    seed: int | None = None,
    group: Callable[[T], Any] | None = None,
    most: int | None = None,
    minimum: int = 0,
) -> tuple[list[T], list[T]]:
    """``(train, held_out)``: a ``fraction`` of the groups (``group(item)``, sortable; default each item by its
    position) held out whole, so one speaker or recording never sits on both sides.

    ``seed`` given: a seeded shuffle of the sorted groups, ``round(fraction * groups)`` of them held out (at least
    ``minimum``, at most ``most``, never all). ``seed`` None: each group by the hash of its
    key (:func:`stable_share`), so an item lands on the same side however many others are loaded."""
    keys = [group(x) if group else i for i, x in enumerate(items)]
    if seed is None:
        held = {k for k in keys if stable_share(str(k)) < fraction}
    else:
        groups = sorted(set(keys))
        n = round(fraction * len(groups)) if fraction > 0 else 0
        if fraction > 0:
            n = max(n, minimum)
        n = min(n, len(groups) - 1, most if most is not None else n)  # training keeps one group at least
        random.Random(seed).shuffle(groups)
        held = set(groups[:n])
    return [x for x, k in zip(items, keys, strict=True) if k not in held], [
        x for x, k in zip(items, keys, strict=True) if k in held
    ]


@dataclass
class EarlyStopping:
    """The best held-out figure so far (lower is better), the state saved at it, and measurements since.

    ``patience``: measurements without improvement before :attr:`should_stop` (0: never stop early)."""

    patience: int = 0
    best: float = math.inf
    best_step: int = 0
    best_state: Any = None
    stale: int = 0
    history: list[list[float]] = field(default_factory=list)

    def measure(self, step: int, value: float, state: Callable[[], Any] | None = None) -> bool:
        """Record ``value`` at ``step``; on a new best keep ``state()`` and return True."""
        self.history.append([step, round(value, 5)])
        if value < self.best:
            self.best, self.best_step, self.stale = value, step, 0
            self.best_state = state() if state else None
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` (a file or a folder) through ``write(tmp)`` beside it, then move it into place: a run killed
    mid-write leaves the previous checkpoint, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    if tmp.is_dir() and path.is_dir():  # os.replace cannot replace a non-empty folder: swap through a name
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def training_device(device: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without one is an error, not a silent CPU run."""
    resolved = resolve_device(device, runtime="torch")
    if resolved == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda but no CUDA device is available")
    return resolved


def autocast(device: str, precision: str = "auto") -> Any:
    """bf16 autocast on CUDA, float32 on CPU (``auto``: CPU bf16 matmuls are slower on most machines); ``bf16``
    on CPU too, for CPUs with bf16 matrix units (AMX)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" or (precision == "auto" and device == "cuda"):
        return torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)
    return nullcontext()
