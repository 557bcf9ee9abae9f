"""``rescore ascore``: teacher-forced Whisper scores of every hypothesis (``am:<model>``), from any recognizer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rescore.cli.console import check_writable, fail, load_stage, run_stage_command, warn
from rescore.cli.records_io import read_records


def ascore(
    nbest: Annotated[Path, typer.Argument(help="n-best JSONL from any recognizer (or any text with audio).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL with am:<model> scores added.")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Whisper model to score with (a name or a CTranslate2 folder); repeatable."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    compute_type: Annotated[str, typer.Option(help="CTranslate2 compute type (auto: int8 on CPU).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Windows encoded together, hypotheses decoded together.")] = 8,
    language: Annotated[str, typer.Option(help="Language token of multilingual models.")] = "en",
    method: Annotated[
        str, typer.Option(help="torch (fast: one decoder pass per window) or ct2 (CTranslate2 alone, slower).")
    ] = "torch",
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
) -> None:
    """Add each model's summed log-probability of every hypothesis (end token included) and its token count.

    Long recordings are scored window by window; records without usable audio pass through, named and marked."""
    from pydantic import ValidationError

    from rescore.score.acoustic import ISSUES_KEY, SKIP_KEY
    from rescore.stages import AScoreOptions, AScoreStage

    try:
        opts = AScoreOptions(
            models=model or ["whisper-base"],
            device=device,
            compute_type=compute_type,
            batch_size=batch_size,
            language=language,
            method=method,  # type: ignore[arg-type]
        )
    except ValidationError as e:
        raise fail("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None
    stage = AScoreStage(opts)
    records = read_records(nbest)
    check_writable(output, resume)
    load_stage(stage, ", ".join(opts.models), (FileNotFoundError, ValueError, LookupError, RuntimeError, OSError))

    def summary(run: Any, written: list[Any]) -> str:
        skipped = 0
        for r in written:
            mark = r.extra.get(SKIP_KEY)
            if isinstance(mark, dict) and "skipped" in mark:
                skipped += 1
                warn(f"{r.id}: not scored: {mark['skipped']}")
            for issue in r.extra.get(ISSUES_KEY) or []:
                warn(f"{r.id}: {issue}")
        note = f", {skipped} passed through unscored" if skipped else ""
        return f"wrote {run.written} records to {output} in {run.seconds:.1f} s{note}"

    run_stage_command(stage, records, output, resume=resume, label="ascore", summary=summary)
