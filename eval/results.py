"""eval/RESULTS.md: the benchmarks' sections and the index at its top (rescore.evaluate.results_page does the work).

    python -m eval.results --index      # rewrite the index from the sections there

Each benchmark publishes its markdown, with the command that made it, as one named section; a rerun replaces it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rescore.evaluate import results_page

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

The project's current figures, one part per capability. Each section names the command that made it, the sets
its weights or thresholds were fitted on and the sets it reports on, and when it ran; a rerun of that command
replaces its section (the text between `<!-- begin NAME -->` and `<!-- end NAME -->`). Sections named `*-notes`
are written by hand. Sections dated before 2026-12-07 were made by the scripts' earlier forms; the commands shown
are the current scripts' equivalents. Earlier runs and the session diaries are in git: `git log -p eval/RESULTS.md`.
Timings come from a shared 2-core CPU machine: compare the ratios measured within one run, not absolute numbers
across sections. The data are the sets in ../shared/data.
"""
INDEX_COMMAND = "python -m eval.results --index"
# Which sections hold each capability's current figures; the index refuses a name no section has.
HEADLINES: dict[str, list[str]] = {
    "first pass (recognizers, n-best oracle, union)": [
        "transcribe-librispeech-dev-whisper-tiny.en",
        "recognizers",
        "union",
        "union-scoring",
    ],
    "acoustic scoring": ["ascore-librispeech-dev"],
    "rerank (the default's reranker, default weights, learned reranker)": [
        "rerank-loso",
        "rerank-defaults-bounded",
    ],
    "correction with acoustic verification": [
        "verify-librispeech-dev-41-110",
        "verify-librispeech-dev-1-110",
        "verify-notes",
        "correct-an4-test-spelling-distinct",
    ],
    "HyPoradise (text-only lists)": ["rerank-loso-text", "hyporadise", "hyporadise-qwen1.5b", "hyporadise-lora"],
    "`rescore run` end to end": ["pipeline-default-tiny"],
    "deep fusion": ["deep-fusion-notes"],
    "speed": ["speed-default-librispeech-dev", "speed", "speed-correct"],
}


def update_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or append) section ``name`` of eval/RESULTS.md."""
    results_page.update_section(path, name, markdown, header=HEADER)


def update_index(path: Path = RESULTS) -> None:
    results_page.update_index(path, HEADLINES, header=HEADER, command=INDEX_COMMAND)


def publish(markdown: str, section: str, write: bool = True) -> None:
    """A benchmark's result: printed, and with ``write`` put in RESULTS.md as ``section``."""
    print(markdown)
    if write:
        update_section(section, markdown)


def add_publish_options(ap: argparse.ArgumentParser, section: str | None = None) -> None:
    """Every benchmark's ``--section`` (the section written, ``section`` or the benchmark's own by default) and
    ``--no-write``."""
    ap.add_argument("--section", default=section, help="the eval/RESULTS.md section written")
    ap.add_argument("--no-write", action="store_true", help="print only, leave eval/RESULTS.md alone")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", action="store_true", help="rewrite the index section from the sections there")
    if ap.parse_args().index:
        update_index()
