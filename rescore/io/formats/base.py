"""What every importer shares: the error type, one way to build a record, references, atomic writes.

Conventions for imported records (see the package docstring for the per-format score keys):
- hypotheses keep the order the file gives, best first, and their position as ``scores["rank"]`` (0-based
  float), so the recognizer's ranking stays a feature (a prior) when other scores are added or lists merged;
- ``recognizer = {"backend": "import", "format": NAME, "source": FILE}``;
- references go into ``reference``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rescore.records import Hypothesis, NBest

RANK_KEY = "rank"


class FormatError(ValueError):
    """A foreign n-best file that cannot be imported; the message is one line naming the file and the line
    or the id at fault."""


def make_record(
    uid: str,
    texts: Sequence[str],
    *,
    fmt: str,
    source: str | os.PathLike[str],
    scores: Sequence[dict[str, float]] | None = None,
    reference: str | None = None,
    extra: dict | None = None,
) -> NBest:
    """One imported record: hypotheses in file order with ``rank``, the given scores, the reference."""
    hyps = []
    for j, text in enumerate(texts):
        s = {RANK_KEY: float(j)}
        if scores is not None:
            s.update(scores[j])
        hyps.append(Hypothesis(text=" ".join(str(text).split()), scores=s))
    return NBest(
        id=uid,
        reference=reference,
        recognizer={"backend": "import", "format": fmt, "source": str(source)},
        hypotheses=hyps,
        extra=dict(extra or {}),
    )


def parse_float(value: str, where: str) -> float:
    """A score field as a float; ``tensor(-1.5)`` and ``tensor(-1.5, device='cuda:0')`` (what ESPnet writes
    with ``str(hyp.score)``) are accepted too."""
    v = value.strip()
    if v.startswith("tensor(") and v.endswith(")"):
        v = v[len("tensor(") : -1].split(",")[0]
    try:
        return float(v)
    except ValueError:
        raise FormatError(f"{where}: score {value.strip()!r} is not a number") from None


def check_unique(ids: Iterable[tuple[str, str]], path: str | os.PathLike[str]) -> None:
    """FormatError at the first id seen twice; ``ids`` yields (id, where it was seen)."""
    seen: dict[str, str] = {}
    for uid, where in ids:
        if uid in seen:
            raise FormatError(f"{path}: duplicate id {uid!r} ({where}; first at {seen[uid]})")
        seen[uid] = where


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a folder, expected a file") from None
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})") from None


def json_lines(path: str | os.PathLike[str], lines: list[str] | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSONL file; a line that is not JSON is a
    FormatError naming the file and line."""
    for lineno, line in enumerate(read_lines(path) if lines is None else lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}:{lineno}: not JSON ({e.msg})") from None


def read_references(path: str | os.PathLike[str]) -> dict[str, str]:
    """References by id from a JSONL manifest (``id`` + ``text``/``reference``) or a Kaldi-style ``text``
    file (``ID words ...``)."""
    lines = read_lines(path)
    refs: dict[str, str] = {}
    first = next((ln for ln in lines if ln.strip()), "")
    as_json = first.lstrip().startswith("{")
    rows = (
        json_lines(path, lines) if as_json else ((lineno, line) for lineno, line in enumerate(lines, 1) if line.strip())
    )
    for lineno, row in rows:
        if as_json:
            text = row.get("text", row.get("reference")) if isinstance(row, dict) else None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(text, str):
                raise FormatError(f"{path}:{lineno}: expected an object with 'id' and 'text' strings")
            uid = row["id"]
        else:
            uid, _, text = row.strip().partition(" ")
        if uid in refs:
            raise FormatError(f"{path}:{lineno}: duplicate id {uid!r}")
        refs[uid] = " ".join(text.split())
    return refs


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
