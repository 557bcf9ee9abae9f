"""Find the utterances of an input: an audio folder, a JSONL manifest, a LibriSpeech or a Kaldi folder.

Loading never stops at the first bad entry: each problem becomes an :class:`InputIssue` naming the item,
and the good utterances are returned beside them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".aac"}


@dataclass
class Utterance:
    """Where one utterance's audio is, and its reference if known.

    ``audio`` is a path, or for Kaldi ``wav.scp`` entries ending in ``|`` a shell command whose output is
    the audio. ``start``/``end`` (seconds) select a segment of it.
    """

    id: str
    audio: str
    reference: str | None = None
    duration: float | None = None
    start: float | None = None
    end: float | None = None
    speaker: str | None = None


@dataclass
class InputIssue:
    """A problem with one item of the input: a bad manifest line, a duplicate id, a missing file."""

    item: str
    message: str
    utterance_id: str | None = None  # set when the problem belongs to an utterance that cannot be processed

    def __str__(self) -> str:
        return f"{self.item}: {self.message}"


@dataclass
class Dataset:
    name: str
    kind: str
    utterances: list[Utterance]
    issues: list[InputIssue]

    def references(self) -> dict[str, str]:
        return {u.id: u.reference for u in self.utterances if u.reference is not None}


def shared_data_dir() -> Path:
    """The folder of named data sets (``an4-train``, ``librispeech-dev`` ...): ``$RESCORE_DATA``, else a
    ``shared/data`` folder in the working directory or one above it (a checkout beside its data)."""
    if os.environ.get("RESCORE_DATA"):
        return Path(os.environ["RESCORE_DATA"])
    for root in (Path.cwd(), Path.cwd().parent):
        if (root / "shared" / "data").is_dir():
            return root / "shared" / "data"
    raise FileNotFoundError("no data folder: set RESCORE_DATA, or run next to shared/data; or name the sets")


def load_dataset(source: str | Path) -> Dataset:
    """Detect the kind of ``source`` and load it."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_file():
        if path.suffix.lower() in {".jsonl", ".json"}:
            return load_manifest(path)
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            return Dataset(path.stem, "file", [Utterance(path.stem, str(path))], [])
        raise ValueError(f"{path}: not a manifest (.jsonl) nor an audio file ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    if (path / "wav.scp").exists():
        return load_kaldi(path)
    if (path / "manifest.jsonl").exists():
        return load_manifest(path / "manifest.jsonl")
    if next(path.rglob("*.trans.txt"), None) is not None:
        return load_librispeech(path)
    return load_audio_folder(path)


def _dedupe(items: list[Utterance], issues: list[InputIssue], where: str) -> list[Utterance]:
    seen: dict[str, Utterance] = {}
    for u in items:
        if u.id in seen:
            issues.append(InputIssue(u.id, f"duplicate id in {where}; keeping the first ({seen[u.id].audio})"))
            continue
        seen[u.id] = u
    return list(seen.values())


def load_manifest(path: str | Path) -> Dataset:
    """JSONL, one utterance a line: ``id``, ``audio`` (relative to the manifest), optional ``text``,
    ``duration``, ``speaker``, ``start``, ``end``."""
    path = Path(path)
    items: list[Utterance] = []
    issues: list[InputIssue] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            issues.append(InputIssue(where, f"not JSON ({e.msg})"))
            continue
        if not isinstance(d, dict):
            issues.append(InputIssue(where, "not a JSON object"))
            continue
        missing = [k for k in ("id", "audio") if not isinstance(d.get(k), str) or not d.get(k)]
        if missing:
            issues.append(InputIssue(where, f"missing field(s) {', '.join(missing)}"))
            continue
        ref = d.get("text", d.get("reference"))
        audio = Path(d["audio"])
        if not audio.is_absolute():
            audio = path.parent / audio
        items.append(
            Utterance(
                id=d["id"],
                audio=str(audio),
                reference=ref if isinstance(ref, str) else None,
                duration=_float_or_none(d.get("duration")),
                start=_float_or_none(d.get("start")),
                end=_float_or_none(d.get("end")),
                speaker=str(d["speaker"]) if d.get("speaker") is not None else None,
            )
        )
    name = path.parent.name if path.name == "manifest.jsonl" else path.stem
    return Dataset(name, "manifest", _dedupe(items, issues, path.name), issues)


def _float_or_none(v: object) -> float | None:
    try:
        return float(v) if v is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def load_librispeech(root: str | Path) -> Dataset:
    """A LibriSpeech-style tree: ``*.trans.txt`` files of ``ID TEXT`` lines beside ``ID.flac``."""
    root = Path(root)
    items: list[Utterance] = []
    issues: list[InputIssue] = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            audio = next(
                (trans.parent / f"{uid}{ext}" for ext in (".flac", ".wav") if (trans.parent / f"{uid}{ext}").exists()),
                None,
            )
            if audio is None:
                issues.append(InputIssue(uid, f"no audio file beside {trans.name}:{lineno}", uid))
                continue
            items.append(Utterance(uid, str(audio), reference=text, speaker=uid.split("-")[0]))
    return Dataset(root.name, "librispeech", _dedupe(items, issues, "transcripts"), issues)


def _read_table(path: Path, issues: list[InputIssue], min_fields: int = 2) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    if not path.exists():
        return table
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < min_fields:
            issues.append(InputIssue(f"{path.name}:{lineno}", "expected 'ID VALUE'"))
            continue
        if parts[0] in table:
            issues.append(InputIssue(parts[0], f"duplicate id in {path.name}; keeping the first"))
            continue
        table[parts[0]] = parts[1:]
    return table


def load_kaldi(root: str | Path) -> Dataset:
    """A Kaldi data dir: ``wav.scp`` (paths, or commands ending in ``|``), ``text``, optional ``segments``."""
    root = Path(root)
    issues: list[InputIssue] = []
    wavs = {k: v[0].strip() for k, v in _read_table(root / "wav.scp", issues).items()}
    texts = {k: (v[0].strip() if v else "") for k, v in _read_table(root / "text", issues, 1).items()}
    items: list[Utterance] = []

    def resolve(entry: str) -> str:
        if entry.endswith("|"):
            return entry
        p = Path(entry)
        return str(p if p.is_absolute() else root / p)

    if (root / "segments").exists():
        for seg_id, rest in _read_table(root / "segments", issues).items():
            parts = rest[0].split()
            try:
                rec, start, end = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                issues.append(InputIssue(seg_id, "segments line must be 'SEG REC START END'", seg_id))
                continue
            if rec not in wavs:
                issues.append(InputIssue(seg_id, f"recording {rec} not in wav.scp", seg_id))
                continue
            if end <= start and end != -1:
                issues.append(InputIssue(seg_id, f"segment end {end} is not after start {start}", seg_id))
                continue
            items.append(
                Utterance(seg_id, resolve(wavs[rec]), texts.get(seg_id), start=start, end=None if end == -1 else end)
            )
    else:
        items = [Utterance(uid, resolve(entry), texts.get(uid)) for uid, entry in wavs.items()]
    return Dataset(root.name, "kaldi", items, issues)


def load_audio_folder(root: str | Path) -> Dataset:
    """Every audio file under ``root`` (recursive). Ids are paths relative to ``root`` without extension;
    a ``NAME.txt`` beside ``NAME.wav`` is taken as its reference."""
    root = Path(root)
    items: list[Utterance] = []
    issues: list[InputIssue] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        uid = p.relative_to(root).with_suffix("").as_posix()
        ref_path = p.with_suffix(".txt")
        ref = ref_path.read_text(encoding="utf-8").strip() if ref_path.exists() else None
        items.append(Utterance(uid, str(p), reference=ref))
    if not items:
        issues.append(InputIssue(str(root), f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) found"))
    return Dataset(root.name, "folder", _dedupe(items, issues, "folder"), issues)
