"""Kaldi n-best text: ``lattice-to-nbest`` names the n-best of utterance ``UTT`` as ``UTT-1``, ``UTT-2``, ...
(``s << key << "-" << (k+1)`` in latbin/lattice-to-nbest.cc, costs unscaled again after the search), and
``nbest-to-linear ark:nbest.lats ark,t:ali ark,t:words.int ark,t:lm_cost ark,t:ac_cost`` writes one line
per path; ``utils/int2sym.pl -f 2- words.txt`` turns the word ids into words:

    UTT-1 word word ...        (the text file, imported)
    UTT-1 123.45               (lm_cost / ac_cost, optional: one cost per path)

Costs are negated log-likelihoods, so they are imported negated: the acoustic cost as ``am`` (summed,
unscaled acoustic log-likelihood), the graph cost (LM, pronunciation and transition costs) as ``lm:kaldi``.
The paths of one utterance are ranked by their ``-N`` suffix.
"""

from __future__ import annotations

import os
from pathlib import Path

from rescore.io.formats.base import FormatError, make_record, parse_float, read_lines
from rescore.records import NBest


def _key(key: str, where: str) -> tuple[str, int]:
    uid, dash, n = key.rpartition("-")
    if not dash or not uid or not n.isdigit() or int(n) < 1:
        raise FormatError(f"{where}: key {key!r} is not UTT-N (an n-best path of lattice-to-nbest)")
    return uid, int(n)


def _costs(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormatError(f"{path}:{lineno}: expected 'UTT-N cost'")
        if parts[0] in out:
            raise FormatError(f"{path}:{lineno}: duplicate id {parts[0]!r}")
        out[parts[0]] = parse_float(parts[1], f"{path}:{lineno}")
    return out


def read_kaldi(
    path: str | os.PathLike[str],
    *,
    ac_cost: str | os.PathLike[str] | None = None,
    lm_cost: str | os.PathLike[str] | None = None,
) -> list[NBest]:
    path = Path(path)
    paths: dict[str, dict[int, tuple[str, str]]] = {}  # utt -> n -> (text, key)
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        key, _, text = line.strip().partition(" ")
        if key in seen:
            raise FormatError(f"{path}:{lineno}: duplicate id {key!r} (first at line {seen[key]})")
        seen[key] = lineno
        uid, n = _key(key, f"{path}:{lineno}")
        paths.setdefault(uid, {})[n] = (text, key)
    if not paths:
        raise FormatError(f"{path}: no n-best paths in the file")
    costs = {name: _costs(Path(p)) for name, p in (("am", ac_cost), ("lm:kaldi", lm_cost)) if p is not None}
    files = {"am": ac_cost, "lm:kaldi": lm_cost}
    records = []
    for uid, by_n in paths.items():
        ranked = [by_n[n] for n in sorted(by_n)]
        scores = []
        for _, key in ranked:
            s = {}
            for name, table in costs.items():
                if key not in table:
                    raise FormatError(f"{files[name]}: no cost for id {key!r}")
                s[name] = -table[key]
            scores.append(s)
        records.append(make_record(uid, [t for t, _ in ranked], fmt="kaldi", source=path, scores=scores))
    return records
