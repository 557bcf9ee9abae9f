"""A results page of named sections: each benchmark owns the text between ``<!-- begin NAME -->`` and
``<!-- end NAME -->`` and rewrites only that; an index at the top says which sections hold each capability's figures.

The functions over the page's text are pure; :func:`update_section` and :func:`update_index` apply them to a file
under an exclusive lock on the file itself, so benchmarks finishing together keep both sections.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

INDEX = "index"
STAMP = re.compile(r"_written (\S+ \S+)")


@dataclass(frozen=True)
class Section:
    """One section of a page: its name, when it was written, and its first heading (or first line)."""

    name: str
    written: str
    title: str


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def stamp(written: str | None = None) -> str:
    """The line a section starts with: when (``YYYY-MM-DD HH:MM``, default now) and on what it was written."""
    return f"_written {written or time.strftime('%Y-%m-%d %H:%M')} on {machine()}_"


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"<!-- begin {name} -->") + r".*?" + re.escape(f"<!-- end {name} -->"), re.S)


def put_section(text: str, name: str, markdown: str, *, first: bool = False, written: str | None = None) -> str:
    """``text`` with section ``name`` replaced by ``markdown`` (stamped); a new section is appended, or with
    ``first`` put before every other section."""
    block = f"<!-- begin {name} -->\n{stamp(written)}\n\n{markdown.strip()}\n<!-- end {name} -->"
    pattern = _pattern(name)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    if first:
        head, sep, rest = text.partition("\n<!-- begin ")
        return f"{head.rstrip()}\n\n{block}\n{sep}{rest}" if sep else f"{head.rstrip()}\n\n{block}\n"
    return text.rstrip() + "\n\n" + block + "\n"


def sections(text: str) -> list[Section]:
    """The sections of a page, in file order (the index left out)."""
    found = []
    for m in re.finditer(r"<!-- begin (.*?) -->\n(.*?)<!-- end \1 -->", text, re.S):
        if m.group(1) == INDEX:
            continue
        body = m.group(2)
        written = STAMP.search(body)
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("_written")]
        heading = next((ln for ln in lines if ln.startswith("#")), lines[0] if lines else "")
        title = heading.lstrip("#").strip().replace("|", "/")
        found.append(Section(m.group(1), written.group(1) if written else "", title))
    return found


def index_markdown(found: Sequence[Section], headlines: Mapping[str, Sequence[str]], command: str) -> str:
    """The index: each capability's sections with their dates, then every section with its title. A headline
    naming no section is an error, so a renamed or dropped section cannot leave the index pointing nowhere."""
    by_name = {s.name: s for s in found}
    missing = [n for names in headlines.values() for n in names if n not in by_name]
    if missing:
        raise ValueError(f"the index names sections the page does not have: {', '.join(missing)}")
    rows = [
        f"| {topic} | {', '.join(f'`{n}` ({by_name[n].written[:10]})' for n in names)} |"
        for topic, names in headlines.items()
    ]
    named = {n for names in headlines.values() for n in names}
    other = [s.name for s in found if s.name not in named]
    return "\n".join(
        [
            "### Index: where the current figures are",
            "",
            f"Written by `{command}` from the sections below (search for `begin NAME`).",
            "",
            "| capability | sections |",
            "|---|---|",
            *rows,
            *(["", f"Not in the table above: {', '.join(f'`{n}`' for n in other)}."] if other else []),
            "",
            f"Every section, in file order ({len(found)}):",
            "",
            "| section | written | title |",
            "|---|---|---|",
            *(f"| `{s.name}` | {s.written} | {s.title} |" for s in found),
        ]
    )


def with_index(text: str, headlines: Mapping[str, Sequence[str]], command: str) -> str:
    """``text`` with its index rewritten from its sections, placed first."""
    return put_section(text, INDEX, index_markdown(sections(text), headlines, command), first=True)


def edit_page(path: Path, edit: Callable[[str], str], header: str) -> None:
    """Apply ``edit`` to the page's text (``header`` for a page not there yet) under an exclusive lock on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = edit(f.read() or header)
        f.seek(0)
        f.truncate()
        f.write(text)


def update_section(path: Path, name: str, markdown: str, *, header: str) -> None:
    """Replace (or append) section ``name`` of the page at ``path``."""
    edit_page(path, lambda text: put_section(text, name, markdown), header)


def update_index(path: Path, headlines: Mapping[str, Sequence[str]], *, header: str, command: str) -> None:
    """Rewrite the index of the page at ``path`` from its sections."""
    edit_page(path, lambda text: with_index(text, headlines, command), header)
