"""The CLI's console: messages, progress bars, exit codes, and the one way a command runs a stage.

Exit codes: 0 done, 1 some items failed (recorded in the output with an ``error`` field), 2 unusable
arguments or input, 130 interrupted (what was written is kept; the same command resumes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)
out = Console()

EXIT_FAILED_ITEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line error and return the Exit to raise (``raise fail(...)``)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def given(ctx: typer.Context, names: list[str]) -> dict[str, Any]:
    """The options among ``names`` that the user set on the command line (not left at their defaults; an
    empty repeated option counts as not set)."""
    return {
        n: ctx.params[n]
        for n in names
        if _source(ctx, n) not in {"DEFAULT", "DEFAULT_MAP"} and ctx.params[n] not in ([], ())
    }


def _source(ctx: typer.Context, name: str) -> str:
    # by name: typer may run its own vendored copy of click, whose ParameterSource is another enum class
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else "DEFAULT"


def pct(x: float | None) -> str:
    from rescore.evaluate.metrics import percent  # lazily: the CLI starts without numpy

    return percent(x, "n/a")


class RateColumn(ProgressColumn):
    """Utterances per second and real-time factor (processing seconds per audio second)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        audio = task.fields.get("audio_seconds", 0.0)
        if not elapsed or not task.completed:
            return Text("")
        rtf = f" RTF {elapsed / audio:.3f}" if audio else ""
        return Text(f"{task.completed / elapsed:.2f} utt/s{rtf}", style="cyan")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def passed_through(record: Any) -> list[tuple[str, str]]:
    """(stage, reason) for each stage that let the record through as it came (``extra[stage] = {"skipped": why}``:
    input a stage cannot judge, such as a text-only list under an acoustic reranker)."""
    return [(k, v["skipped"]) for k, v in record.extra.items() if isinstance(v, dict) and v.get("skipped")]


def record_progress(bar: Progress, task: Any, known_failures: set[str] | None = None) -> Callable[[Any], None]:
    """A runner ``on_record`` callback: advances ``task`` (with the audio seconds done, for the real-time
    factor) and names each failed record once: ``known_failures`` holds the ids already named, and the callbacks
    of a pipeline's stages share it, so an item that failed in the first stage is not named again by the next."""
    audio = [0.0]
    reported = known_failures if known_failures is not None else set()

    def advance(record: Any) -> None:
        if record.ok:
            audio[0] += record.duration or 0.0
            for stage, why in passed_through(record):
                if f"{record.id}\0{stage}" not in reported:
                    reported.add(f"{record.id}\0{stage}")
                    warn(f"{record.id}: not scored by {stage}, passed through unchanged: {why}")
        elif record.id not in reported:
            reported.add(record.id)
            console.print(f"[red]failed[/] {record.id}: {record.error}", highlight=False)
        bar.update(task, advance=1, audio_seconds=audio[0])

    return advance


def load_stage(
    stage: Any, what: str, errors: tuple[type[BaseException], ...] = (ValueError, LookupError, OSError, RuntimeError)
) -> None:
    """Load a stage's model up front, so that one that cannot load is a one-line error (exit 2)."""
    try:
        with console.status(f"loading {what}"):
            stage.load()
    except errors as e:
        raise fail(str(e)) from None


def check_writable(output: Path, resume: bool) -> None:
    """Fail (exit 2) before any model loads when ``output`` cannot be written."""
    from rescore.records import NBestWriter

    try:
        NBestWriter(output, resume=resume).close()
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None


def run_stage_command(
    stage: Any,
    records: Sequence[Any],
    output: Path,
    *,
    resume: bool,
    label: str,
    unit: str = "records",
    summary: Callable[[Any, list[Any]], str] | None = None,
    failures: Sequence[str] = (),
    skipped: int = 0,
) -> Any:
    """What every stage command does after parsing: stream the records through the stage into ``output``
    with a progress bar, print what happened, and exit 1 if any item failed, 130 when interrupted.

    ``summary(run, written_records)`` words the closing line; ``failures`` are input items that failed
    before the stage (already recorded) and ``skipped`` input lines that had no id: both make the exit 1.
    """
    from rescore.runner import run_stage

    written: list[Any] = []
    with progress_bar() as bar:
        task = bar.add_task(label, total=None, audio_seconds=0.0)
        advance = record_progress(bar, task, known_failures=set(failures))

        def on_start(run: Any) -> None:
            bar.update(task, total=run.total - run.resumed)
            if run.resumed:
                console.print(f"resuming: {run.resumed} of {run.total} {unit} already in {output}")

        def on_record(r: Any) -> None:
            written.append(r)
            advance(r)

        try:
            run = run_stage(stage, records, output, resume=resume, on_record=on_record, on_start=on_start)
        except OSError as e:
            raise fail(f"cannot write {output}: {e.strerror or e}") from None
    for rid, err in run.passed_on:
        if rid not in failures:
            warn(f"{rid}: failed upstream, passed on unchanged: {err}")
    if summary is not None:
        console.print(summary(run, written), highlight=False)
    else:
        rtf = f", real-time factor {run.real_time_factor:.3f}" if run.real_time_factor else ""
        console.print(
            f"wrote {run.written} records to {output} in {run.seconds:.1f} s ({run.audio_seconds:.0f} s of audio{rtf})"
        )
    if run.interrupted:
        raise fail("interrupted: the records written so far are kept; rerun the same command to resume", 130)
    n_failed = len(run.failed) + len(run.passed_on)
    if n_failed or skipped:
        skip = f", {skipped} input item(s) skipped" if skipped else ""
        raise fail(f"{n_failed} {unit[:-1]}(s) failed (kept in {output} with an 'error' field){skip}; see above", 1)
    return run
