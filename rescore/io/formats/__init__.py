"""Bring your own n-best: readers for other toolkits' n-best files, writers back to them, content sniffing.

Each format is one module; every reader returns rescore records (:class:`rescore.records.NBest`) built the
same way (:func:`rescore.io.formats.base.make_record`): hypotheses in the file's order with ``scores["rank"]``
(0-based position, so the list's own ranking is a feature after merges), per-hypothesis scores under named
keys, the reference in ``reference``, ``recognizer = {"backend": "import", "format", "source"}``.

| format | input | score keys |
|---|---|---|
| ``hyporadise`` | JSON list of ``{input, output, score or am_score, id?}`` | ``am_norm`` (per-token log-prob) |
| ``nemo`` | beams ``.tsv`` (``text<TAB>score``, beam_size lines per utterance) + manifest | ``am`` (decoder score) |
| ``espnet`` | decode folder with ``{n}best_recog/text`` + ``score`` | ``am`` (beam search score) |
| ``kaldi`` | n-best text ``UTT-N words`` (+ nbest-to-linear cost files) | ``am``, ``lm:kaldi`` (negated) |
| ``tsv`` / ``jsonl`` | rows of (id, text[, score]) | ``am`` (or ``score_key``) |

Bad input raises :class:`FormatError` (one line naming the file and the line or id) before anything is
written; writers write a temporary file and rename it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rescore.io.formats import espnet, hyporadise, kaldi, nemo, plain
from rescore.io.formats.base import RANK_KEY, FormatError, read_references
from rescore.records import NBest, RecordError, read_nbest

__all__ = [
    "EXPORTERS",
    "IMPORTERS",
    "RANK_KEY",
    "FormatError",
    "export_records",
    "import_records",
    "read_any_nbest",
    "read_references",
    "sniff",
]

IMPORTERS: dict[str, Callable[..., list[NBest]]] = {
    "hyporadise": hyporadise.read_hyporadise,
    "nemo": nemo.read_nemo,
    "espnet": espnet.read_espnet,
    "kaldi": kaldi.read_kaldi,
    "tsv": plain.read_tsv,
    "jsonl": plain.read_jsonl,
}
EXPORTERS: dict[str, Callable[..., int]] = {
    "hyporadise": hyporadise.write_hyporadise,
    "tsv": plain.write_tsv,
    "text": plain.write_text,
}
# the options each importer takes (the others are refused with a one-line error)
OPTIONS: dict[str, set[str]] = {
    "hyporadise": set(),
    "nemo": {"manifest", "beam_size", "score_key"},
    "espnet": {"score_key"},
    "kaldi": {"ac_cost", "lm_cost"},
    "tsv": {"score_key"},
    "jsonl": {"score_key"},
}


def _first_char(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        while chunk := f.read(4096):
            s = chunk.lstrip()
            if s:
                return s[0]
    return ""


def sniff(path: str | os.PathLike[str]) -> str | None:
    """The format of ``path`` where its content says so unambiguously: ``rescore`` (our n-best JSONL),
    ``hyporadise`` (a JSON list whose items have ``input`` and ``output``) or ``espnet`` (a folder with
    ``1best_recog/``); None otherwise (NeMo, Kaldi and plain tables look alike: name the format)."""
    path = Path(path)
    if path.is_dir():
        return "espnet" if espnet.looks_like(path) else None
    if not path.is_file():
        return None
    first = _first_char(path)
    if first == "[":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return "hyporadise" if hyporadise.looks_like(data) else None
    if first == "{":
        with open(path, encoding="utf-8", errors="replace") as f:
            line = next((ln for ln in f if ln.strip()), "")
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            return "rescore"  # let read_nbest name the bad line
        return "rescore" if isinstance(d, dict) and ("hypotheses" in d or "error" in d) else None
    return None


def import_records(
    fmt: str, path: str | os.PathLike[str], *, reference: str | os.PathLike[str] | None = None, **options: Any
) -> list[NBest]:
    """Read a foreign n-best file (``fmt`` one of :data:`IMPORTERS`, or ``auto`` to sniff); references from
    ``reference`` (JSONL manifest or Kaldi ``text`` file) replace the file's own."""
    if fmt == "auto":
        found = sniff(path)
        if found is None or found == "rescore":
            what = "already a rescore n-best file" if found == "rescore" else "format not recognised"
            raise FormatError(f"{path}: {what}; name the format ({', '.join(IMPORTERS)})")
        fmt = found
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(IMPORTERS)}")
    given = {k: v for k, v in options.items() if v is not None}
    refused = sorted(set(given) - OPTIONS[fmt])
    if refused:
        raise ValueError(f"format {fmt} takes no {', '.join('--' + k.replace('_', '-') for k in refused)}")
    records = IMPORTERS[fmt](path, **given)
    if reference is not None:
        refs = read_references(reference)
        for r in records:
            if r.id in refs:
                r.reference = refs[r.id]
    return records


def read_any_nbest(path: str | os.PathLike[str]) -> list[NBest]:
    """Records of our n-best JSONL or of a foreign file whose format :func:`sniff` recognises
    (HyPoradise JSON, an ESPnet decode folder); anything else is read as our JSONL (RecordError names the
    bad line). Raises FormatError or RecordError."""
    fmt = sniff(path)
    if fmt in (None, "rescore"):
        if Path(path).is_dir():
            raise RecordError(f"{path}: is a folder, not an n-best file (nor an ESPnet decode folder)")
        return list(read_nbest(path))
    return import_records(fmt, path)


def export_records(fmt: str, records: Iterable[NBest], path: str | os.PathLike[str], *, stage: str = "auto") -> int:
    """Write records in ``fmt`` (one of :data:`EXPORTERS`) with the text of ``stage``; returns the count."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORTERS)}")
    if stage not in {"auto", "first-pass", "rerank", "correct"}:
        raise ValueError(f"unknown stage {stage!r}: expected auto, first-pass, rerank or correct")
    return EXPORTERS[fmt](records, path, stage=stage)
