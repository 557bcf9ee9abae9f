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
from dataclasses import dataclass
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


def update_section(name: str, markdown: str, path: Path = RESULTS, first: bool = False) -> None:
    """Replace (or append; with ``first``, put before every other section) section ``name``; under a lock file, so
    benchmarks finishing together keep both."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    stamp = f"_written {time.strftime('%Y-%m-%d %H:%M')} on {machine()}_\n\n"
    block = f"{begin}\n{stamp}{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text(encoding="utf-8") if path.exists() else HEADER
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        elif first:
            head, sep, rest = text.partition("\n<!-- begin ")
            text = f"{head.rstrip()}\n\n{block}\n{sep}{rest}" if sep else f"{head.rstrip()}\n\n{block}\n"
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        path.write_text(text, encoding="utf-8")


INDEX = "index"
# Where each capability's current figures are, newest run first; the index fails on a name no section has, so a
# renamed or dropped section cannot leave it pointing nowhere. Sections not named here are older runs, kept for
# the record (their own text says what later runs changed).
HEADLINES: dict[str, list[str]] = {
    "first pass (recognizers, n-best oracle)": ["transcribe-librispeech-dev-whisper-tiny.en", "recognizers"],
    "acoustic scoring": ["ascore-librispeech-dev"],
    "rerank (shallow fusion), learned and shipped weights": [
        "bench_learned",
        "bench_shipped-librispeech-dev",
        "fit_defaults-bounded",
    ],
    "correction with acoustic verification": [
        "bench_verify librispeech-dev 41-110.h8d",
        "bench_verify librispeech-dev 1-110.h8d",
        "verify-notes",
    ],
    "HyPoradise": ["hyporadise", "hyporadise-qwen1.5b", "hyporadise-lora"],
    "`rescore run` end to end": ["pipeline-default-tiny", "pipeline-union-tiny"],
    "deep fusion (issue 15): latest notes and paired folds": [
        "bench_xattn_session20_notes",
        "bench_xattn_cw0_folds_41-75",
        "bench_xattn_cw1_folds_41-75",
        "bench_xattn_pred_folds_1-110",
        "bench_xattn_pred_folds_1-110_r2",
        "bench_xattn_rank_folds_1-110",
        "bench_xattn_tokens_base-pred",
        "bench_xattn_tokens_base-pred-rank",
        "bench_xattn_session19_notes",
        "bench_xattn_dec_folds_1-110",
        "bench_xattn_tokens_base-dec",
        "bench_xattn_session18_notes",
        "bench_xattn_own_whisper_noise0.5_qa_folds_1-110",
        "bench_xattn_tokens_base-audio-qa",
        "bench_xattn_tokens_base-audio",
        "bench_xattn_session17_notes",
        "bench_xattn_own_whisper_noise0.5_q_folds_1-110",
        "bench_query_init",
        "bench_xattn_session16_notes",
        "bench_xattn_own_whisper_noise0.5_folds_1-110",
        "bench_xattn_own_whisper_noise0.5_folds_1-75",
        "bench_xattn_session15_notes",
        "bench_xattn_own_whisper_noise0.5_folds_1-40",
        "bench_xattn_session13_notes",
        "bench_hyp_noise",
        "bench_xattn_session12_notes",
        "bench_xattn_own_whisper_folds_1-40",
    ],
    "deep fusion: mixers and cost": [
        "bench_xattn_mixers_full",
        "bench_xattn_reply_speed",
        "bench_xattn_decode",
        "bench_encoder_window",
    ],
    "speed": ["speed", "speed-correct"],
}


@dataclass(frozen=True)
class Section:
    """One benchmark's block of RESULTS.md: its name, when it was written, and its first heading (or line)."""

    name: str
    written: str
    title: str


def sections(text: str) -> list[Section]:
    """The sections of a RESULTS.md text, in file order (the index itself left out)."""
    found = []
    for m in re.finditer(r"<!-- begin (.*?) -->\n(.*?)<!-- end \1 -->", text, re.S):
        if m.group(1) == INDEX:
            continue
        body = m.group(2)
        stamp = re.search(r"_written (\S+ \S+)", body)
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("_written")]
        heading = next((ln for ln in lines if ln.startswith("#")), lines[0] if lines else "")
        title = heading.lstrip("#").strip().replace("|", "/")
        found.append(Section(m.group(1), stamp.group(1) if stamp else "", title))
    return found


def index_markdown(found: list[Section], headlines: dict[str, list[str]] = HEADLINES) -> str:
    """The index: each capability's current sections, then every section with its date (many deep-fusion runs
    share a title; their names and dates tell them apart)."""
    by_name = {s.name: s for s in found}
    missing = [n for names in headlines.values() for n in names if n not in by_name]
    if missing:
        raise ValueError(f"HEADLINES names sections RESULTS.md does not have: {', '.join(missing)}")
    rows = [
        f"| {topic} | {', '.join(f'`{n}` ({by_name[n].written[:10]})' for n in names)} |"
        for topic, names in headlines.items()
    ]
    every = [f"| `{s.name}` | {s.written} | {s.title} |" for s in found]
    return "\n".join(
        [
            "### Index: where the current figures are",
            "",
            "Written by `python -m eval.results --index` from the sections below (search for `begin NAME`).",
            "",
            "| capability | sections |",
            "|---|---|",
            *rows,
            "",
            f"Every section, in file order ({len(found)}):",
            "",
            "| section | written | title |",
            "|---|---|---|",
            *every,
        ]
    )


def update_index(path: Path = RESULTS, headlines: dict[str, list[str]] | None = None) -> None:
    """Rewrite the index section (``headlines``: :data:`HEADLINES` unless given), placed first after the header."""
    text = path.read_text(encoding="utf-8")
    markdown = index_markdown(sections(text), HEADLINES if headlines is None else headlines)
    update_section(INDEX, markdown, path, first=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="eval/RESULTS.md upkeep")
    ap.add_argument("--index", action="store_true", help="rewrite the index section from the sections there")
    if ap.parse_args().index:
        update_index()
