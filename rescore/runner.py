"""The one place records stream through a stage: resume by id, failures kept as records, order, timing.

Every stage (first pass, rerank, correct, deep fusion, CTC scoring ...) is a :class:`Stage`: a name, the
options that determine its output (hashed for the run cache) and ``process(batch) -> records``. The CLI
commands, ``rescore run`` and the Ray engine all hand a stage to :func:`run_stage`, which reads what an
earlier interrupted run left, processes the rest in batches through an :class:`Engine`, appends each result
as one flushed line, and returns what happened. Ctrl-C stops between lines, so the file stays valid and a
rerun resumes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rescore.records import NBest, NBestWriter


@runtime_checkable
class Stage(Protocol):
    """One step of the pipeline over n-best records.

    ``process`` gets a batch of successful records and returns one record per input, any order (the
    runner puts them back in input order); a record the stage cannot handle comes back with ``error`` set.
    It raises only for bugs or for a failure that concerns the whole stage (a model that cannot load).
    ``batch_size`` ``None`` means the stage needs its whole input in one call (e.g. rerank conditioned on
    the previous utterances). Models are loaded on first use, so a stage is cheap to build and picklable.
    """

    name: str
    batch_size: int | None

    def options(self) -> dict[str, Any]: ...

    def process(self, records: list[NBest]) -> list[NBest]: ...


class Engine(Protocol):
    """How a stage's batches are executed: in this process, or spread over Ray actors (:mod:`rescore.scale`)."""

    def map(self, stage: Stage, records: list[NBest]) -> Iterator[NBest]: ...


def batches(items: Sequence[Any], size: int | None) -> Iterator[list[Any]]:
    """Consecutive slices of ``size`` items (all at once when ``size`` is None or 0)."""
    if not size:
        if items:
            yield list(items)
        return
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def in_input_order(batch: list[NBest], results: Iterable[NBest], stage: str) -> list[NBest]:
    """The stage's results sorted like its input; a missing, extra or renamed record is a stage bug."""
    by_id = {r.id: r for r in results}
    wanted = [r.id for r in batch]
    if set(by_id) != set(wanted) or len(by_id) != len(wanted):
        missing = sorted(set(wanted) - set(by_id))[:3]
        extra = sorted(set(by_id) - set(wanted))[:3]
        raise RuntimeError(f"stage {stage!r} returned other records than it got (missing {missing}, extra {extra})")
    return [by_id[i] for i in wanted]


class LocalEngine:
    """Runs each batch in this process, one after the other."""

    def map(self, stage: Stage, records: list[NBest]) -> Iterator[NBest]:
        for batch in batches(records, stage.batch_size):
            t0 = time.perf_counter()
            done = in_input_order(batch, stage.process(batch), stage.name)
            per_record = (time.perf_counter() - t0) / max(1, len(done))
            for r in done:
                r.timing.setdefault(stage.name, round(per_record, 4))
            yield from done


def record_errors(
    records: Iterable[NBest], fn: Callable[[NBest], NBest | None], label: str, errors: tuple[type[BaseException], ...]
) -> list[NBest]:
    """Apply ``fn`` to each record; an exception of the ``errors`` kinds (what a record can cause) becomes
    the record's ``error`` ("label: message") and the batch goes on. Anything else is a bug and propagates."""
    out = []
    for r in records:
        try:
            r = fn(r) or r
        except errors as e:
            r.error = f"{label}: {e}"
        out.append(r)
    return out


@dataclass
class StageRun:
    """What :func:`run_stage` did: counts, failures (id, message), time, audio covered, interruption."""

    stage: str
    path: Path
    total: int
    resumed: int = 0
    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    passed_on: list[tuple[str, str]] = field(default_factory=list)  # failed upstream, written unchanged
    seconds: float = 0.0
    audio_seconds: float = 0.0
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.resumed + self.written == self.total

    @property
    def real_time_factor(self) -> float | None:
        return self.seconds / self.audio_seconds if self.audio_seconds else None


def run_stage(
    stage: Stage,
    records: Sequence[NBest],
    output: str | os.PathLike[str],
    *,
    resume: bool = True,
    engine: Engine | None = None,
    on_record: Callable[[NBest], None] | None = None,
    on_start: Callable[[StageRun], None] | None = None,
) -> StageRun:
    """Stream ``records`` through ``stage`` into the n-best file ``output``.

    With ``resume``, ids already successfully in ``output`` are kept and skipped; failed ones are retried.
    Records that failed upstream are written unchanged (the failure stays visible downstream) and are not
    handed to the stage. Each result is appended and flushed at once; KeyboardInterrupt stops the stream
    and is reported as ``interrupted`` with the file valid. ``on_start`` sees the counts before the first
    record (``total``, ``resumed``), ``on_record`` every record written.
    """
    engine = engine or LocalEngine()
    writer = NBestWriter(output, resume=resume)
    result = StageRun(stage.name, Path(output), total=len(records))
    todo = [r for r in records if r.id not in writer.done]
    result.resumed = len(records) - len(todo)
    if on_start:
        on_start(result)
    t0 = time.perf_counter()
    with writer:
        try:
            live = []
            for r in todo:
                if r.ok:
                    live.append(r)
                    continue
                writer.write(r)
                result.written += 1
                result.passed_on.append((r.id, r.error or ""))
                if on_record:
                    on_record(r)
            for r in engine.map(stage, live):
                writer.write(r)
                result.written += 1
                if r.ok:
                    result.audio_seconds += r.duration or 0.0
                else:
                    result.failed.append((r.id, r.error or ""))
                if on_record:
                    on_record(r)
        except KeyboardInterrupt:
            result.interrupted = True
    result.seconds = time.perf_counter() - t0
    return result
