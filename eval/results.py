"""Write one benchmark's section of eval/RESULTS.md, leaving the other sections as they are.

Each benchmark owns the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``; a section that
is not there yet is appended. Benchmarks call :func:`update_section` with markdown that includes the
command that made the figures.
"""

from __future__ import annotations

import argparse
import fcntl
import platform
import re
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Every figure here was written by a script in eval/ together with the command that reproduces it.
Timings come from the project's 2-core CPU machine, which is shared and noisy: compare the ratios
measured within one run, not absolute numbers across sections. Accuracy figures use the sets in
../shared/data; tuning sets and reported sets are named in each section.
"""


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def publish(markdown: str, section: str, write: bool = True) -> None:
    """A benchmark's result: printed, and with ``write`` put in RESULTS.md as ``section``."""
    print(markdown)
    if write:
        update_section(section, markdown)


def bench_parser(doc: str, section: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser (its docstring, with the example commands, as the description) with the two
    options every benchmark has: ``--section``, the RESULTS.md section written (``section`` by default), and
    ``--no-write``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", default=section, help="the eval/RESULTS.md section written")
    ap.add_argument("--no-write", action="store_true", help="print only, leave eval/RESULTS.md alone")
    return ap


def publish_run(markdown: str, args: argparse.Namespace, section: str | None = None) -> None:
    """:func:`publish` as a :func:`bench_parser` command line asked (``section``: when ``--section`` was not given)."""
    publish(markdown, args.section or section, write=not args.no_write)


def update_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or append) section ``name``; under a lock file, so benchmarks finishing together keep both."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    stamp = f"_written {time.strftime('%Y-%m-%d %H:%M')} on {machine()}_\n\n"
    block = f"{begin}\n{stamp}{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text(encoding="utf-8") if path.exists() else HEADER
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
        path.write_text(text, encoding="utf-8")
