"""``rescore ascore``: teacher-forced Whisper scores of every hypothesis (``am:<model>``), from any recognizer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rescore.cli.console import check_writable, load_stage, run_stage_command, warn
from rescore.cli.records_io import read_records
from rescore.cli.stage_flags import StageFlags, stage_flags
from rescore.stages import AScoreOptions


@stage_flags(AScoreOptions, names={"models": ("--model", "-m")}, section="ascore")
def ascore(
    nbest: Annotated[Path, typer.Argument(help="n-best JSONL from any recognizer (or any text with audio).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL with am:<model> scores added.")],
    flags: StageFlags[AScoreOptions],
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
) -> None:
    """Add each model's summed log-probability of every hypothesis (end token included) and its token count.

    Long recordings are scored window by window; records without usable audio pass through, named and marked."""
    from rescore.score.acoustic import ISSUES_KEY, SKIP_KEY
    from rescore.stages import AScoreStage

    opts = flags.build()
    stage = AScoreStage(opts)
    records = read_records(nbest)
    check_writable(output, resume)
    load_stage(stage, ", ".join(opts.models), (FileNotFoundError, ValueError, LookupError, RuntimeError, OSError))

    def summary(run: Any, written: list[Any]) -> str:
        skipped = 0
        for r in written:
            mark = r.extra.get(SKIP_KEY)
            if isinstance(mark, dict) and "skipped" in mark:  # named as it passed (console.record_progress)
                skipped += 1
            for issue in r.extra.get(ISSUES_KEY) or []:
                warn(f"{r.id}: {issue}")
        note = f", {skipped} passed through unscored" if skipped else ""
        return f"wrote {run.written} records to {output} in {run.seconds:.1f} s{note}"

    run_stage_command(stage, records, output, resume=resume, label="ascore", summary=summary)
