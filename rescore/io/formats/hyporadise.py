"""HyPoradise JSON (Chen et al., NeurIPS 2023): one JSON list, one object per utterance.

Layout, as the dataset's files ship it (../shared/data/hyporadise and the Hypo2Trans repository):
``{"input": [n-best texts, best first], "output": reference, "score" or "am_score": [one per hypothesis],
"id"?: ...}``. The scores are per-token log-probabilities of the recognizer (Whisper's beam search ranks
by them), so they are imported as ``am_norm``, the key rescore's own recognizer uses for the same thing.
Objects without ``id`` get ``<file stem>-<index, 5 digits>``. ``input1``/``input2`` (text variants of the
list in the CHiME-4 file) are not imported; other unknown keys are kept in the record's ``extra``.

Export writes the same layout: ``id``, ``input`` (the hypotheses in list order), ``output`` (the reference,
"" when unknown), ``am_score`` (when every hypothesis has ``am_norm``) and ``prediction``: the system's
text at the exported stage (``rescore export --stage``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from rescore.io.formats.base import FormatError, atomic_write_text, check_unique, make_record, read_lines
from rescore.records import NBest

SCORE_FIELDS = ("score", "am_score")  # per-token log-probs, imported as am_norm
DROPPED = {"input1", "input2"}
KNOWN = {"id", "input", "output", *SCORE_FIELDS, *DROPPED}


def looks_like(data: object) -> bool:
    """A JSON list whose first element is an object with ``input`` and ``output``: HyPoradise."""
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and {"input", "output"} <= set(data[0])


def read_hyporadise(path: str | os.PathLike[str]) -> list[NBest]:
    path = Path(path)
    text = "\n".join(read_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a JSON list of utterances, found a {type(data).__name__}")
    records = []
    for i, item in enumerate(data):
        where = f"item {i}"
        if not isinstance(item, dict):
            raise FormatError(f"{path}: {where} is not an object")
        uid = item.get("id")
        uid = f"{path.stem}-{i:05d}" if uid is None else str(uid)
        where = f"item {i} (id {uid})"
        texts = item.get("input")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise FormatError(f"{path}: {where}: 'input' must be a list of hypothesis strings")
        if not texts:
            raise FormatError(f"{path}: {where}: empty hypothesis list")
        ref = item.get("output")
        if ref is not None and not isinstance(ref, str):
            raise FormatError(f"{path}: {where}: 'output' (the reference) must be a string")
        scores = None
        field = next((f for f in SCORE_FIELDS if f in item), None)
        if field is not None:
            vals = item[field]
            if not isinstance(vals, list) or len(vals) != len(texts):
                raise FormatError(
                    f"{path}: {where}: '{field}' must be a list of {len(texts)} numbers, one per hypothesis"
                )
            try:
                scores = [{"am_norm": float(v)} for v in vals]
            except (TypeError, ValueError):
                raise FormatError(f"{path}: {where}: '{field}' holds a value that is not a number") from None
        extra = {k: v for k, v in item.items() if k not in KNOWN}
        records.append(
            make_record(
                uid,
                texts,
                fmt="hyporadise",
                source=path,
                scores=scores,
                reference=" ".join(ref.split()) if ref else ref,
                extra=extra,
            )
        )
    check_unique(((r.id, f"item {i}") for i, r in enumerate(records)), path)
    return records


def write_hyporadise(records: Iterable[NBest], path: str | os.PathLike[str], *, stage: str = "auto") -> int:
    """Write records as a HyPoradise JSON list (atomically). Records without hypotheses are left out."""
    items = []
    for r in records:
        if not r.ok or not r.hypotheses:
            continue
        item: dict = {"id": r.id, "input": [h.text for h in r.hypotheses], "output": r.reference or ""}
        if all("am_norm" in h.scores for h in r.hypotheses):
            item["am_score"] = [h.scores["am_norm"] for h in r.hypotheses]
        item["prediction"] = r.text(stage)
        items.append(item)
    atomic_write_text(path, json.dumps(items, ensure_ascii=False, indent=1) + "\n")
    return len(items)
