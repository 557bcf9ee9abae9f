"""Final transcripts in the files Whisper's own CLI writes: txt, tsv, json, srt, vtt.

The layouts follow openai-whisper's ``whisper/utils.py`` (``WriteTXT``, ``WriteSRT``, ``WriteVTT``,
``WriteTSV``, ``WriteJSON``) so that tools that read Whisper's output read ours. Differences, because a run
covers many recordings: ``transcripts.tsv`` is one table of all utterances (id, text, error) instead of
one segment table per file, and ``transcripts.json`` holds every utterance with Whisper-style segments.

Cues (subtitle segments) come from the recognizer's windows. A long recording's text is split per window
only when the split is exact: the text is a join of one hypothesis text per window in exactly one way
(e.g. the first pass, or a rerank that chose window by window). Otherwise, e.g. after an LLM correction
that rewrote across windows, the whole utterance is one cue.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from rescore.records import NBest

FORMATS = ("txt", "tsv", "json", "srt", "vtt")
TEXT_STAGES = ("auto", "first-pass", "rerank", "correct")  # what NBest.text accepts
TSV_NAME = "transcripts.tsv"
JSON_NAME = "transcripts.json"
_MAX_NAME = 200  # bytes; most filesystems allow 255, leave room for a suffix and the extension


@dataclass(frozen=True)
class Cue:
    """One subtitle segment: seconds from the start of the utterance's audio, and its text."""

    start: float
    end: float
    text: str


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """Whisper's timestamp: ``[HH:]MM:SS.mmm`` (SRT wants hours always and a comma)."""
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def safe_name(record_id: str) -> str:
    """A file name from an id: anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``.

    Ids of audio folders are relative paths (``a/b``): they become flat names (``a_b``), never paths that
    leave the output folder. Long ids are cut and keep a hash of the whole id so they stay distinct.
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "_", record_id).lstrip(".") or "_"
    if len(name.encode()) > _MAX_NAME:
        name = name[: _MAX_NAME - 9] + "-" + _digest(record_id)
    return name


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def file_names(ids: Iterable[str]) -> dict[str, str]:
    """A distinct safe name per id, also on case-insensitive filesystems: clashes get a hash of the id."""
    ids = list(dict.fromkeys(ids))
    count: dict[str, int] = {}
    for i in ids:
        key = safe_name(i).casefold()
        count[key] = count.get(key, 0) + 1
    return {i: safe_name(i) if count[safe_name(i).casefold()] == 1 else f"{safe_name(i)}-{_digest(i)}" for i in ids}


def window_split(record: NBest, text: str) -> list[str] | None:
    """The text of each window when ``text`` is a join of one hypothesis per window in exactly one way.

    Joins follow :func:`rescore.recognize.combine_windows`: stripped texts, empty ones left out, one
    space between. ``None`` when there is no such join or more than one (the split would be a guess).
    """
    options = [sorted({h.text.strip() for h in w.hypotheses}) or [""] for w in record.windows]
    if not options:
        return None
    text = text.strip()

    @cache
    def ways(k: int, pos: int) -> int:  # joins of windows k.. that spell text[pos:], counted up to 2
        if k == len(options):
            return int(pos >= len(text))
        n = 0
        for part in options[k]:
            if not part:
                n += ways(k + 1, pos)
            elif text.startswith(part, pos):
                end = pos + len(part)
                if end == len(text):
                    n += ways(k + 1, end)
                elif text[end] == " ":
                    n += ways(k + 1, end + 1)
            if n >= 2:
                return 2
        return n

    if ways(0, 0) != 1:
        return None
    parts, pos = [], 0
    for k, opts in enumerate(options):
        for part in opts:
            if not part and ways(k + 1, pos) == 1:
                parts.append("")
                break
            if part and text.startswith(part, pos):
                end = pos + len(part)
                nxt = end if end == len(text) else end + 1
                if (end == len(text) or text[end] == " ") and ways(k + 1, nxt) == 1:
                    parts.append(part)
                    pos = nxt
                    break
    return parts


def cues(record: NBest, stage: str = "auto") -> list[Cue]:
    """The subtitle cues of a record's text at ``stage``: one per window when exact, else one in all."""
    text = record.text(stage).strip()
    if not record.ok or not text:
        return []
    if record.windows:
        parts = window_split(record, text)
        if parts is not None:
            return [Cue(w.start, w.end, p) for w, p in zip(record.windows, parts, strict=True) if p]
        return [Cue(record.windows[0].start, record.windows[-1].end, text)]
    return [Cue(0.0, float(record.duration or 0.0), text)]


def _cue_text(text: str) -> str:
    return text.strip().replace("-->", "->")  # "-->" would end the timing line of a cue


def srt_text(segments: Sequence[Cue]) -> str:
    """SRT as Whisper writes it: numbered cues, ``HH:MM:SS,mmm`` times, a blank line after each."""
    return "".join(
        f"{i}\n{format_timestamp(c.start, True, ',')} --> {format_timestamp(c.end, True, ',')}\n{_cue_text(c.text)}\n\n"
        for i, c in enumerate(segments, 1)
    )


def vtt_text(segments: Sequence[Cue]) -> str:
    """WebVTT as Whisper writes it: a ``WEBVTT`` header, ``MM:SS.mmm`` times (hours when needed)."""
    body = "".join(
        f"{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{_cue_text(c.text)}\n\n" for c in segments
    )
    return "WEBVTT\n\n" + body


def txt_text(segments: Sequence[Cue]) -> str:
    """Plain text as Whisper writes it: one line per segment."""
    return "".join(f"{c.text.strip()}\n" for c in segments)


def _cell(text: str) -> str:
    return " ".join(text.split())  # tabs and newlines would break the table


def tsv_text(records: Sequence[NBest], stage: str = "auto") -> str:
    """One line per utterance (``id``, ``text``, ``error``); a failed one has an empty text and its error."""
    lines = ["id\ttext\terror\n"]
    for r in records:
        lines.append(f"{_cell(r.id)}\t{_cell(r.text(stage)) if r.ok else ''}\t{_cell(r.error or '')}\n")
    return "".join(lines)


def json_payload(records: Sequence[NBest], stage: str = "auto") -> dict:
    """Every utterance with its text, Whisper-style ``segments`` (id, start, end, text) and error."""
    return {
        "stage": stage,
        "transcripts": [
            {
                "id": r.id,
                "audio": r.audio,
                "duration": r.duration,
                "text": r.text(stage) if r.ok else "",
                "segments": [{"id": j, **asdict(c)} for j, c in enumerate(cues(r, stage))],
                "error": r.error,
            }
            for r in records
        ],
    }


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The formats, de-duplicated; an unknown name raises ValueError listing the valid ones."""
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown transcript format {', '.join(map(repr, bad))}: expected one of {', '.join(FORMATS)}")
    return formats


def write_transcripts(
    records: Iterable[NBest], out_dir: str | Path, formats: Iterable[str] = ("txt", "tsv"), stage: str = "auto"
) -> list[Path]:
    """Write the transcripts of ``records`` at ``stage`` into ``out_dir``; returns the files written.

    ``txt``, ``srt`` and ``vtt`` give one ``<id>.<ext>`` per successful utterance (failed ones have no
    transcript to write); ``tsv`` and ``json`` give one file for all, failures included with their error.
    """
    formats = check_formats(formats)
    if stage not in TEXT_STAGES:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(TEXT_STAGES)}")
    records = list(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = file_names(r.id for r in records)
    written: list[Path] = []

    def put(name: str, text: str) -> None:
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)

    render = {"txt": txt_text, "srt": srt_text, "vtt": vtt_text}
    for r in records:
        if not r.ok:
            continue
        segments = cues(r, stage)
        for fmt in formats:
            if fmt in render:
                put(f"{names[r.id]}.{fmt}", render[fmt](segments))
    if "tsv" in formats:
        put(TSV_NAME, tsv_text(records, stage))
    if "json" in formats:
        put(JSON_NAME, json.dumps(json_payload(records, stage), ensure_ascii=False, indent=2) + "\n")
    return written
