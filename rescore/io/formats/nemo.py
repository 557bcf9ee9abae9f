"""NeMo beam-search output: the ``.tsv`` that ``scripts/asr_language_modeling/ngram_lm/eval_beamsearch_ngram.py``
writes (``--preds_output_folder``) and ``neural_rescorer/eval_neural_rescorer.py`` reads (``--beams_file``):
``beam_size x num_eval_examples`` lines of ``beam_candidate_text<TAB>score``, no header, the beams of one
utterance on consecutive lines, utterances in the order of the evaluation manifest (the rescorer reads the
ground truth of line ``i`` from manifest line ``i // beam_size``). The manifest is NeMo's JSON-lines
manifest (``audio_filepath``, ``duration``, ``text``), so it is required: it names the utterances.

Ids: the manifest's ``id`` if it has one, else the stem of ``audio_filepath``. The score is the decoder's
total (with an n-gram LM, NeMo's ``final_score = acoustic_score + beam_alpha*lm_score + beam_beta*seq_length``)
and goes into ``score_key`` (default ``am``). Without ``beam_size`` it is inferred as lines / manifest
entries, which must divide exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

from rescore.io.formats.base import FormatError, check_unique, json_lines, make_record, parse_float, read_lines
from rescore.records import NBest


def _manifest(path: Path) -> list[dict]:
    rows = []
    for lineno, d in json_lines(path):
        if not isinstance(d, dict) or not (isinstance(d.get("audio_filepath"), str) or isinstance(d.get("id"), str)):
            raise FormatError(f"{path}:{lineno}: expected a NeMo manifest line with 'audio_filepath'")
        d["_line"] = lineno
        rows.append(d)
    if not rows:
        raise FormatError(f"{path}: empty manifest")
    return rows


def read_nemo(
    path: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    beam_size: int | None = None,
    score_key: str = "am",
) -> list[NBest]:
    path = Path(path)
    beams: list[tuple[str, float]] = []
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue  # pandas.read_csv (what NeMo reads it with) skips blank lines too
        text, tab, score = line.rpartition("\t")
        if not tab:
            raise FormatError(f"{path}:{lineno}: expected 'text<TAB>score'")
        beams.append((text, parse_float(score, f"{path}:{lineno}")))
    if not beams:
        raise FormatError(f"{path}: no beams in the file")
    if beam_size is not None and beam_size < 1:
        raise FormatError(f"{path}: beam size must be at least 1")
    if beam_size is not None and len(beams) % beam_size:
        raise FormatError(f"{path}: {len(beams)} lines is not a multiple of the beam size {beam_size}")
    if manifest is None:
        raise FormatError(f"{path}: a NeMo beams file needs the manifest it was decoded from (--manifest)")
    man = _manifest(Path(manifest))
    if beam_size is None:
        if len(beams) % len(man):
            raise FormatError(
                f"{path}: {len(beams)} lines for {len(man)} manifest entries is not a whole number of beams each "
                "(give --beam-size)"
            )
        beam_size = len(beams) // len(man)
    if beam_size < 1:
        raise FormatError(f"{path}: beam size must be at least 1")
    if len(beams) % beam_size:
        raise FormatError(f"{path}: {len(beams)} lines is not a multiple of the beam size {beam_size}")
    if len(beams) // beam_size != len(man):
        raise FormatError(
            f"{path}: {len(beams) // beam_size} utterances of {beam_size} beams, but {manifest} has {len(man)} entries"
        )
    records = []
    for i, m in enumerate(man):
        uid = m["id"] if isinstance(m.get("id"), str) else Path(m["audio_filepath"]).stem
        chunk = beams[i * beam_size : (i + 1) * beam_size]
        ref = m.get("text")
        r = make_record(
            uid,
            [t for t, _ in chunk],
            fmt="nemo",
            source=path,
            scores=[{score_key: s} for _, s in chunk],
            reference=" ".join(ref.split()) if isinstance(ref, str) else None,
        )
        r.audio = m.get("audio_filepath")
        if isinstance(m.get("duration"), int | float):
            r.duration = float(m["duration"])
        r.recognizer["beam_size"] = beam_size
        records.append(r)
    check_unique(((r.id, f"manifest line {m['_line']}") for r, m in zip(records, man, strict=True)), manifest)
    return records
