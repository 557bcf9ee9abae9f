"""The one n-best record format every stage reads and writes.

One JSON object per line and per utterance. Stages add fields and score keys and never drop them, so a
file can go through transcribe -> rerank -> correct -> score and keep its whole history. Unknown keys
survive a read/write round trip (``extra``), so files written by newer versions are not damaged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A line of an n-best file that cannot be read as a record."""


@dataclass
class Hypothesis:
    """One candidate transcript with its named scores (``am``, ``am_tokens``, ``lm:NAME``, ``total`` ...)."""

    text: str
    tokens: list[int] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hypothesis:
        if not isinstance(d, dict) or not isinstance(d.get("text"), str):
            raise RecordError("hypothesis without a text string")
        return cls(text=d["text"], tokens=list(d.get("tokens") or []), scores=dict(d.get("scores") or {}))


@dataclass
class Window:
    """The n-best of one window of a long recording (start/end in seconds of the utterance)."""

    start: float
    end: float
    hypotheses: list[Hypothesis]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Window:
        return cls(
            start=float(d["start"]),
            end=float(d["end"]),
            hypotheses=[Hypothesis.from_dict(h) for h in d.get("hypotheses", [])],
        )


@dataclass
class NBest:
    """An utterance with its n-best list and everything later stages learned about it.

    ``error`` is set (and ``hypotheses`` empty) when the utterance could not be processed: the failure
    stays in the file, next to the successes, and a rerun retries it.
    """

    id: str
    audio: str | None = None
    duration: float | None = None
    reference: str | None = None
    recognizer: dict[str, Any] = field(default_factory=dict)
    hypotheses: list[Hypothesis] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    chosen: int | None = None
    corrected: str | None = None
    correction: dict[str, Any] | None = None
    timing: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def best(self) -> Hypothesis | None:
        """The hypothesis the latest ranking stage picked (the recognizer's first when none did)."""
        if not self.hypotheses:
            return None
        return self.hypotheses[self.chosen or 0]

    def text(self, stage: str = "auto") -> str:
        """The system output at a stage: ``first-pass``, ``rerank``, ``correct`` or ``auto`` (the latest)."""
        if stage not in {"auto", "first-pass", "rerank", "correct"}:
            raise ValueError(f"unknown stage {stage!r}")
        if stage in {"auto", "correct"} and self.corrected is not None:
            return self.corrected
        if not self.hypotheses:
            return ""
        if stage == "first-pass":
            return self.hypotheses[0].text
        return self.best.text  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        if not d["windows"]:
            del d["windows"]
        d = {k: v for k, v in d.items() if v is not None or k in {"id", "error"}}
        d.update(extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NBest:
        if not isinstance(d, dict):
            raise RecordError("record is not a JSON object")
        if not isinstance(d.get("id"), str) or not d["id"]:
            raise RecordError("record without an 'id' string")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["hypotheses"] = [Hypothesis.from_dict(h) for h in d.get("hypotheses") or []]
        kwargs["windows"] = [Window.from_dict(w) for w in d.get("windows") or []]
        chosen = kwargs.get("chosen")
        if chosen is not None and not (isinstance(chosen, int) and 0 <= chosen < len(kwargs["hypotheses"])):
            raise RecordError(f"record {d['id']}: 'chosen' {chosen!r} is not a hypothesis index")
        return cls(**kwargs, extra={k: v for k, v in d.items() if k not in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def read_nbest(path: str | os.PathLike[str], *, strict: bool = True) -> Iterator[NBest]:
    """Yield the records of an n-best JSONL file.

    A last line without its newline is what an interrupted writer leaves: it is skipped. Any other bad
    line raises :class:`RecordError` naming the line, or is skipped when ``strict`` is false.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield NBest.from_dict(json.loads(line))
        except (json.JSONDecodeError, RecordError, TypeError, KeyError, ValueError) as e:
            if lineno == len(lines) and not line.endswith("\n"):
                continue  # torn tail of an interrupted write
            if strict:
                raise RecordError(f"{path}:{lineno}: {e}") from e


def write_nbest(path: str | os.PathLike[str], records: Iterable[NBest]) -> int:
    """Write records to ``path`` atomically (a temporary file renamed over it). Returns the count."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def _lock_beside(path: Path) -> Any:
    """An exclusive, non-blocking lock on a hidden file beside ``path``; WriterBusyError when it is held."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, one writer per file is then the caller's care
        return None
    f = open(path.with_name(f".{path.name}.lock"), "a")  # noqa: SIM115 - closed by NBestWriter.close
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise WriterBusyError(f"{path}: another writer has it open; wait for it to finish or write elsewhere") from None
    return f


class WriterBusyError(OSError):
    """Another writer has the file open: two writers would lose each other's lines."""


class NBestWriter:
    """Appends records one line at a time, flushed, so an interrupted run leaves a valid file.

    With ``resume`` the existing file is read first: successful records are kept and their ids reported
    in :attr:`done`, failed records and a torn last line are dropped so that they are retried. One writer
    per file: a second one (another process, or the same) is refused with :class:`WriterBusyError` instead
    of rewriting the file under the first and losing its lines (a lock on ``.NAME.lock`` beside it).
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(21, "is a folder", str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_beside(self.path)
        self.done: set[str] = set()
        try:
            kept: list[NBest] = []
            if resume and self.path.exists():
                kept = [r for r in read_nbest(self.path, strict=False) if r.ok]
                self.done = {r.id for r in kept}
            write_nbest(self.path, kept)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except BaseException:
            if self._lock is not None:
                self._lock.close()
            raise

    def write(self, record: NBest) -> None:
        self._f.write(record.to_json() + "\n")
        self._f.flush()
        self.done.add(record.id)

    def close(self) -> None:
        self._f.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock; the empty lock file stays (removing it would race)
            self._lock = None

    def __enter__(self) -> NBestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
