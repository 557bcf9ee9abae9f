"""End to end: ``rescore run`` per set, a per-stage WER table each, and the end-to-end real-time factor.

    python -m eval.bench_pipeline --sets tiny --preset default
    python -m eval.bench_pipeline --sets tiny --preset union
    python -m eval.bench_pipeline --sets librispeech-dev an4-test speechocean-train --preset default --limit 30

Each set (a folder of ../shared/data, or a path) runs through the pipeline ``rescore run INPUT --preset NAME`` runs
(``rescore.pipeline``), with the shipped defaults: no weight or threshold was fitted on a reported set. Run folders
stay under ``--output``, so a rerun only redoes the stages whose options changed. The section is
``pipeline-PRESET`` (``pipeline-PRESET-SET`` for one set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.common import DATA, REPO, command, load
from eval.results import add_publish_options, publish
from rescore.evaluate.report import markdown_table
from rescore.pipeline import load_config, run_pipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["librispeech-dev", "an4-test", "speechocean-train"])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--limit", type=int, default=0, help="first N utterances of each set (0: all)")
    ap.add_argument("--output", default=str(REPO / "runs" / "bench"))
    add_publish_options(ap)
    args = ap.parse_args(argv)
    load0 = load()
    parts = []
    for name in args.sets:
        source = Path(name) if Path(name).exists() else DATA / name
        overrides = {"output": args.output, "name": f"{source.name}-{args.preset}", "limit": args.limit}
        results, summary = run_pipeline(load_config(input=str(source), preset=args.preset, overrides=overrides))
        total = sum(s.seconds for s in summary.stages)
        rtf = total / summary.audio_seconds if summary.audio_seconds else float("nan")
        cached = [r.name for r in results if r.cached]
        parts.append(
            f"**{source.name}** ({summary.scored} of {summary.utterances} utterances scored, "
            f"{summary.audio_seconds / 60:.1f} min)\n\n{markdown_table(summary)}\n\n"
            f"- n-best oracle WER at k={len(summary.oracle)}: {100 * summary.oracle[-1]:.2f} %\n"
            f"- End-to-end real-time factor on CPU (sum of stage processing times / audio): **{rtf:.3f}**"
            + (
                f" (stages {', '.join(cached)} reused from an earlier run's cache, with that run's times)"
                if cached
                else ""
            )
        )
    text = (
        f"### `rescore run`, preset {args.preset}\n\nCommand: `{command('bench_pipeline', argv)}`\n\n"
        f"Preset **{args.preset}** (`rescore/pipeline.py` PRESETS); nothing fitted on the reported sets "
        f"({', '.join(args.sets)}). WER with the Whisper English normalizer, 95 % bootstrap intervals; better/worse "
        "count utterances against the first pass (and the previous stage); p is the paired-bootstrap share of "
        f"resamples in which the stage is not better than the first pass. Load at start: {load0:.1f} (2 cores).\n\n"
        + "\n\n".join(parts)
    )
    one = f"-{Path(args.sets[0]).name}" if len(args.sets) == 1 else ""
    publish(text, args.section or f"pipeline-{args.preset}{one}", write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
