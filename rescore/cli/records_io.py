"""Reading the inputs of a command: n-best files and reference sets, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rescore.cli.console import fail, warn


def read_records(path: Path) -> list[Any]:
    """The records of an n-best file, or exit 2 naming the file (and line) that cannot be read.

    A HyPoradise JSON list or an ESPnet decode folder is recognised by its content and imported on the fly
    (``rescore.io.formats.read_any_nbest``); other foreign formats need ``rescore import``."""
    from rescore.io.formats import FormatError, read_any_nbest
    from rescore.records import RecordError

    try:
        return read_any_nbest(path)
    except (OSError, RecordError, FormatError) as e:
        raise fail(str(e)) from None


def load_records(path: Path, reference: Path | None) -> list[Any]:
    """An n-best file's records with references attached from a manifest or dataset folder."""
    from rescore.evaluate.scoring import attach_references
    from rescore.io.datasets import load_dataset

    records = read_records(path)
    refs = None
    if reference is not None:
        try:
            ds = load_dataset(reference)
        except (FileNotFoundError, ValueError) as e:
            raise fail(str(e)) from None
        for issue in ds.issues:
            warn(f"reference {issue}")
        refs = ds.references()
    return attach_references(records, refs)


def read_text_option(value: str | None, file: Path | None, option: str, default: Any = None) -> Any:
    """``--X`` or ``--X-file`` (not both): the text given, read from the file, or ``default``."""
    if value is not None and file is not None:
        raise fail(f"give --{option} or --{option}-file, not both")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise fail(f"cannot read --{option}-file {file}: {e.strerror or e}") from None
    return value if value is not None else default
