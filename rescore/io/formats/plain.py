"""Plain n-best tables: TSV rows ``id<TAB>text[<TAB>score]`` or JSONL rows ``{"id", "text", "score"?,
"reference"?}``, one hypothesis a row, best first; the rows of one utterance are consecutive (an id that
comes back after another id's rows is a duplicate). A TSV header line ``id<TAB>text...`` is skipped. The
score goes into the key ``score_key`` (default ``am``: a summed log-probability, higher is better).

Export: ``tsv`` writes ``id<TAB>text`` of the chosen stage, one row per utterance (which imports back as
1-best lists); ``text`` writes the text alone, one line per utterance, in file order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from rescore.io.formats.base import FormatError, atomic_write_text, json_lines, make_record, parse_float, read_lines
from rescore.records import NBest


def _group(rows: list[tuple[str, str, float | None, str | None, str]], path: Path, fmt: str, score_key: str):
    """Consecutive rows of one id -> one record; an id seen again later is a duplicate."""
    records: list[NBest] = []
    done: dict[str, str] = {}
    i = 0
    while i < len(rows):
        uid = rows[i][0]
        if uid in done:
            raise FormatError(
                f"{path}: duplicate id {uid!r} ({rows[i][4]}; its rows must be consecutive, first at {done[uid]})"
            )
        done[uid] = rows[i][4]
        j = i
        while j < len(rows) and rows[j][0] == uid:
            j += 1
        group = rows[i:j]
        has = [s is not None for _, _, s, _, _ in group]
        if any(has) and not all(has):
            raise FormatError(f"{path}: id {uid!r}: some rows have a score and some do not")
        scores = [{score_key: s} for _, _, s, _, _ in group] if all(has) else None
        ref = next((r for *_, r, _ in group if r is not None), None)
        records.append(make_record(uid, [t for _, t, *_ in group], fmt=fmt, source=path, scores=scores, reference=ref))
        i = j
    if not records:
        raise FormatError(f"{path}: no hypotheses in the file")
    return records


def read_tsv(path: str | os.PathLike[str], *, score_key: str = "am") -> list[NBest]:
    path = Path(path)
    rows = []
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if lineno == 1 and parts[0].strip().lower() == "id" and len(parts) >= 2:
            continue  # header
        if len(parts) not in (2, 3) or not parts[0].strip():
            raise FormatError(
                f"{path}:{lineno}: expected 'id<TAB>text' or 'id<TAB>text<TAB>score', found {len(parts)} field(s)"
            )
        score = parse_float(parts[2], f"{path}:{lineno}") if len(parts) == 3 else None
        rows.append((parts[0].strip(), parts[1], score, None, f"line {lineno}"))
    return _group(rows, path, "tsv", score_key)


def read_jsonl(path: str | os.PathLike[str], *, score_key: str = "am") -> list[NBest]:
    path = Path(path)
    rows = []
    for lineno, d in json_lines(path):
        if not isinstance(d, dict) or not isinstance(d.get("text"), str) or d.get("id") in (None, ""):
            raise FormatError(f"{path}:{lineno}: expected an object with 'id' and 'text'")
        if "hypotheses" in d:
            raise FormatError(f"{path}:{lineno}: this is a rescore n-best record, not a plain row (no import needed)")
        score = d.get("score")
        if score is not None and not isinstance(score, int | float):
            raise FormatError(f"{path}:{lineno}: 'score' is not a number")
        ref = d.get("reference")
        rows.append(
            (
                str(d["id"]),
                d["text"],
                None if score is None else float(score),
                ref if isinstance(ref, str) else None,
                f"line {lineno}",
            )
        )
    return _group(rows, path, "jsonl", score_key)


def write_tsv(records: Iterable[NBest], path: str | os.PathLike[str], *, stage: str = "auto") -> int:
    rows = [f"{r.id}\t{r.text(stage)}" for r in records if r.ok]
    atomic_write_text(path, "".join(x + "\n" for x in rows))
    return len(rows)


def write_text(records: Iterable[NBest], path: str | os.PathLike[str], *, stage: str = "auto") -> int:
    rows = [r.text(stage) for r in records if r.ok]
    atomic_write_text(path, "".join(x + "\n" for x in rows))
    return len(rows)
