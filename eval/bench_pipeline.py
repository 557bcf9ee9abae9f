"""End-to-end benchmark: ``rescore run`` per set, a per-stage WER table each, and the end-to-end real-time factor.

    python -m eval.bench_pipeline [--sets librispeech-dev an4-test speechocean-train] [--preset default]
                                  [--limit N] [--output runs/bench]

Each set runs through the same pipeline as ``rescore run INPUT --preset NAME`` (the shipped defaults: no
weight was tuned on the reported sets). Run folders stay under --output, so a rerun only redoes stages
whose options changed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from eval.results import update_section
from rescore.evaluate.report import markdown_table
from rescore.pipeline import load_config, run_pipeline

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["librispeech-dev", "an4-test", "speechocean-train"])
    p.add_argument("--preset", default="default")
    p.add_argument("--limit", type=int, default=0, help="first N utterances of each set (0: all)")
    p.add_argument("--output", default=str(REPO / "runs" / "bench"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)

    load0 = os.getloadavg()[0]
    parts = []
    for name in args.sets:
        cfg = load_config(
            input=str(DATA / name),
            preset=args.preset,
            overrides={"output": args.output, "name": f"{name}-{args.preset}", "limit": args.limit},
        )
        results, summary = run_pipeline(cfg)
        total = sum(s.seconds for s in summary.stages)
        rtf = total / summary.audio_seconds if summary.audio_seconds else float("nan")
        cached = [r.name for r in results if r.cached]
        print(f"{name}: {summary.scored} utterances, end-to-end RTF {rtf:.3f}", flush=True)
        parts.append(
            f"### {name} ({summary.scored} of {summary.utterances} utterances scored, "
            f"{summary.audio_seconds / 60:.1f} min)\n\n{markdown_table(summary)}\n\n"
            f"- n-best oracle WER at k={len(summary.oracle)}: {100 * summary.oracle[-1]:.2f} %\n"
            f"- End-to-end real-time factor on CPU (sum of stage processing times / audio): **{rtf:.3f}**"
            + (
                f" (stages {', '.join(cached)} reused from an earlier run's cache; their times are from that run)"
                if cached
                else ""
            )
        )
    limit = f" --limit {args.limit}" if args.limit else ""
    text = (
        f"Command: `python -m eval.bench_pipeline --sets {' '.join(args.sets)} --preset {args.preset}{limit}`\n\n"
        f"Preset **{args.preset}** (see `rescore/pipeline.py` PRESETS). WER with the Whisper English normalizer, "
        "95 % bootstrap intervals; better/worse count utterances against the first pass; gap closed is the share "
        "of the first-pass-to-oracle gap; p is the paired-bootstrap share of resamples in which the stage is not "
        f"better than the first pass. Machine load at start: {load0:.1f} (2 cores).\n\n" + "\n\n".join(parts)
    )
    print(text)
    if not args.no_write:
        update_section(f"pipeline-{args.preset}", f"## `rescore run` per stage (preset {args.preset})\n\n{text}")


if __name__ == "__main__":
    sys.exit(main())
