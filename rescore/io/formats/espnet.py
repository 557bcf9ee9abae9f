"""ESPnet decode folders: what ``espnet2/bin/asr_inference.py --nbest N`` writes through its DatadirWriter,
one folder per rank, ``<output_dir>/{n}best_recog/`` (n = 1..N), each with Kaldi-style tables keyed by
utterance id: ``text`` (``ID words ...``), ``score`` (``ID <str(hyp.score)>``, the beam search's weighted sum
of decoder, CTC and LM log-probabilities; ``str`` of a torch scalar, so ``tensor(-12.3)`` as well as plain
numbers are read), ``token`` and ``token_int`` (not imported). ``asr.sh`` runs jobs into
``logdir/output.<job>/`` and merges only 1best_recog into the decode folder, so when the given folder has
no ``{n}best_recog`` of its own, the job folders under ``logdir/`` are read and joined.

The score goes into ``score_key`` (default ``am``: summed log-probability, higher is better).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rescore.io.formats.base import FormatError, make_record, parse_float, read_lines
from rescore.records import NBest

_NBEST = re.compile(r"^(\d+)best_recog$")


def nbest_folders(root: Path) -> list[list[Path]]:
    """For each job folder holding ``{n}best_recog`` folders, those folders in rank order."""

    def ranks(d: Path) -> list[Path]:
        found = sorted(
            ((int(m.group(1)), p) for p in d.iterdir() if p.is_dir() and (m := _NBEST.match(p.name))),
        )
        return [p for _, p in found]

    if not root.is_dir():
        return []
    own = ranks(root)
    if own:
        return [own]
    jobs = sorted((p for p in (root / "logdir").glob("output.*") if p.is_dir()), key=lambda p: p.name)
    return [r for r in (ranks(j) for j in jobs) if r]


def looks_like(path: Path) -> bool:
    return bool(nbest_folders(path))


def _table(path: Path, allow_empty_value: bool) -> dict[str, tuple[str, int]]:
    table: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        uid, _, value = line.strip().partition(" ")
        if not value.strip() and not allow_empty_value:
            raise FormatError(f"{path}:{lineno}: expected 'ID VALUE'")
        if uid in table:
            raise FormatError(f"{path}:{lineno}: duplicate id {uid!r}")
        table[uid] = (value.strip(), lineno)
    return table


def read_espnet(path: str | os.PathLike[str], *, score_key: str = "am") -> list[NBest]:
    path = Path(path)
    if not path.is_dir():
        raise FormatError(f"{path}: expected an ESPnet decode folder (with 1best_recog/, 2best_recog/, ...)")
    jobs = nbest_folders(path)
    if not jobs:
        raise FormatError(f"{path}: no 1best_recog/ folder here nor under logdir/output.*/")
    records: list[NBest] = []
    where: dict[str, Path] = {}
    for folders in jobs:
        if folders[0].name != "1best_recog":
            raise FormatError(f"{folders[0].parent}: {folders[0].name} without 1best_recog")
        texts = [_table(f / "text", allow_empty_value=True) for f in folders]
        scores = [_table(f / "score", allow_empty_value=False) if (f / "score").exists() else None for f in folders]
        for uid in texts[0]:
            if uid in where:
                raise FormatError(f"{folders[0] / 'text'}: duplicate id {uid!r} (also in {where[uid]})")
            where[uid] = folders[0] / "text"
            hyps, hyp_scores = [], []
            for f, t, s in zip(folders, texts, scores, strict=True):
                if uid not in t:
                    break  # the beam gave fewer hypotheses for this utterance
                hyps.append(t[uid][0])
                if s is not None:
                    if uid not in s:
                        raise FormatError(f"{f / 'score'}: no score for id {uid!r}")
                    hyp_scores.append({score_key: parse_float(s[uid][0], f"{f / 'score'}:{s[uid][1]}")})
            full = len(hyp_scores) == len(hyps)
            r = make_record(uid, hyps, fmt="espnet", source=path, scores=hyp_scores if full else None)
            records.append(r)
    return records
