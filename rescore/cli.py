"""The ``rescore`` command line: options -> library calls, progress bars and exit codes. Nothing else."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make speech recognition more accurate with language models.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


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


@app.command()
def transcribe(
    input: Annotated[
        str, typer.Argument(help="Audio folder, JSONL manifest, LibriSpeech folder, Kaldi data dir or audio file.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    model: Annotated[
        str, typer.Option(help="whisper-tiny.en, whisper-base, or a CTranslate2 model folder.")
    ] = "whisper-tiny.en",
    backend: Annotated[
        str,
        typer.Option(
            help="First-pass recognizer: ctranslate2, openai-whisper (same Whisper model), ctc (the head trained"
            " with `rescore ctc train`; --model: its checkpoint, default the cached one) or pocketsphinx."
        ),
    ] = "ctranslate2",
    nbest: Annotated[int, typer.Option(help="Hypotheses kept per utterance.")] = 8,
    beam_size: Annotated[int, typer.Option(help="Beam width (at least --nbest).")] = 8,
    batch_size: Annotated[int, typer.Option(help="30 s windows decoded together.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    compute_type: Annotated[
        str, typer.Option(help="auto (int8 on CPU, float16 on CUDA) or a CTranslate2 type.")
    ] = "auto",
    language: Annotated[str, typer.Option(help="Language code for multilingual models, or auto.")] = "en",
    word_lm: Annotated[
        str,
        typer.Option(
            help="ctc backend: word n-gram LM fused into the search: pocketsphinx (its en-US trigram), an LM file"
            " pocketsphinx reads (ARPA or binary), or none."
        ),
    ] = "pocketsphinx",
    lm_weight: Annotated[
        float | None, typer.Option(help="ctc backend: weight of the word LM's log-probability [default: tuned].")
    ] = None,
    word_bonus: Annotated[
        float | None, typer.Option(help="ctc backend: score added per word, offsetting the LM's cost [default: tuned].")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
    limit: Annotated[int, typer.Option(help="Only the first N utterances (0: all).")] = 0,
) -> None:
    """Run the first pass and write one n-best record per utterance."""
    from rescore.recognizers import make_recognizer

    options = dict(
        model=model,
        device=device,
        compute_type=compute_type,
        beam_size=beam_size,
        nbest=nbest,
        batch_size=batch_size,
        language=language,
    )
    if backend == "ctc":
        options["word_lm"] = word_lm
        options.update({k: v for k, v in (("lm_weight", lm_weight), ("word_bonus", word_bonus)) if v is not None})
    recognize_to_file(
        input, lambda: make_recognizer(backend, **options), output, resume=resume, limit=limit, label="transcribe"
    )


def recognize_to_file(
    input: str, make_recognizer: Callable[[], Any], output: Path, *, resume: bool, limit: int, label: str
) -> None:
    """What every transcribe command does: load the input, resume the output, recognize with a progress bar,
    record failures, and exit 1 if any item failed (2 for unusable arguments, 130 when interrupted)."""
    from rescore.datasets import load_dataset
    from rescore.models import ModelNotFoundError
    from rescore.records import NBest, NBestWriter

    try:
        dataset = load_dataset(input)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise fail(str(e)) from None
    for issue in dataset.issues:
        warn(f"skipped {issue}")
    try:
        writer = NBestWriter(output, resume=resume)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    utts = dataset.utterances[:limit] if limit else dataset.utterances
    todo = [u for u in utts if u.id not in writer.done]
    if len(todo) < len(utts):
        console.print(f"resuming: {len(utts) - len(todo)} of {len(utts)} utterances already in {output}")
    skipped = [i for i in dataset.issues if not i.utterance_id]
    failures = [f"{i.item}: {i.message}" for i in dataset.issues if i.utterance_id]
    try:
        recognizer = make_recognizer()
    except (ModelNotFoundError, FileNotFoundError, ValueError, RuntimeError) as e:
        writer.close()
        raise fail(str(e)) from None
    for issue in dataset.issues:  # utterances that cannot even start are recorded, so scores list them
        if issue.utterance_id and issue.utterance_id not in writer.done:
            writer.write(NBest(id=issue.utterance_id, error=issue.message, recognizer=dict(recognizer.info)))
    interrupted = False
    t0 = time.perf_counter()
    n_done = 0
    audio_seconds = 0.0
    with writer, progress_bar() as bar:
        task = bar.add_task(label, total=len(todo), audio_seconds=0.0)
        try:
            for record in recognizer.recognize(todo):
                writer.write(record)
                n_done += 1
                if record.ok:
                    audio_seconds += record.duration or 0.0
                else:
                    failures.append(f"{record.id}: {record.error}")
                    console.print(f"[red]failed[/] {record.id}: {record.error}", highlight=False)
                bar.update(task, advance=1, audio_seconds=audio_seconds)
        except KeyboardInterrupt:
            interrupted = True
    elapsed = time.perf_counter() - t0
    rtf = f", real-time factor {elapsed / audio_seconds:.3f}" if audio_seconds else ""
    console.print(f"wrote {n_done} records to {output} in {elapsed:.1f} s ({audio_seconds:.0f} s of audio{rtf})")
    if interrupted:
        raise fail("interrupted: the records written so far are kept; rerun the same command to resume", 130)
    if failures or skipped:
        raise fail(
            f"{len(failures)} utterance(s) failed (recorded with an 'error' field), "
            f"{len(skipped)} input item(s) skipped; see the messages above",
            1,
        )


def _load_records(path: Path, reference: Path | None) -> list:
    from rescore.datasets import load_dataset
    from rescore.evaluate import attach_references
    from rescore.records import RecordError, read_nbest

    try:
        records = list(read_nbest(path))
    except (OSError, RecordError) as e:
        raise fail(str(e)) from None
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


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.2f}"


def _rerank_comparison(records: list, stage: str):
    """Before/after figures when a reranker chose among the hypotheses (see ``rescore rerank``)."""
    if stage not in {"auto", "rerank"} or not any(r.ok and r.chosen is not None for r in records):
        return None
    from rescore.evaluate import rerank_comparison

    try:
        return rerank_comparison(records)
    except ValueError:
        return None


@app.command()
def score(
    file: Annotated[Path, typer.Argument(help="n-best JSONL.")],
    reference: Annotated[Path | None, typer.Option(help="Manifest (or dataset folder) with the references.")] = None,
    stage: Annotated[str, typer.Option(help="auto (latest), first-pass, rerank or correct.")] = "auto",
    align: Annotated[bool, typer.Option(help="Print per-utterance alignments.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Corpus WER/CER with S/D/I under several normalizers, n-best oracle and 95 % bootstrap intervals."""
    from rescore.evaluate import alignment_text, score_records

    records = _load_records(file, reference)
    try:
        report = score_records(records, stage=stage)
        rerank_cmp = _rerank_comparison(records, stage)
    except ValueError as e:
        raise fail(str(e)) from None
    if report.failed:
        warn(f"{len(report.failed)} failed utterance(s) not scored: {', '.join(report.failed[:5])}")
    if report.missing_reference:
        warn(f"{len(report.missing_reference)} utterance(s) without a reference not scored (use --reference)")
    if as_json:
        d = report.to_dict()
        if align:
            d["alignments"] = {r.id: alignment_text(r, stage) for r in records if r.ok and r.reference is not None}
        if rerank_cmp is not None:
            d["rerank"] = rerank_cmp.to_dict()
        out.print_json(json.dumps(d))
        return
    if not report.scored:
        raise fail("no utterance could be scored")
    if align:
        for r in records:
            if r.ok and r.reference is not None:
                out.print(f"[bold]{r.id}[/]", highlight=False)
                out.print(alignment_text(r, stage), highlight=False, markup=False)
                out.print()
    table = Table(title=f"{file.name}: {report.scored} utterances scored (stage: {stage})")
    for col in ("normalizer", "WER %", "95 % CI", "S", "D", "I", "words", "CER %"):
        table.add_column(col, justify="right" if col != "normalizer" else "left")
    for w, c in zip(report.wer, report.cer, strict=True):
        table.add_row(
            w.normalizer,
            _pct(w.rate),
            f"{_pct(w.ci_low)}-{_pct(w.ci_high)}",
            str(w.substitutions),
            str(w.deletions),
            str(w.insertions),
            str(w.reference_length),
            _pct(c.rate),
        )
    out.print(table)
    if report.oracle:
        ot = Table(title="n-best oracle WER % (whisper normalizer)")
        for k in range(1, len(report.oracle) + 1):
            ot.add_column(f"k={k}", justify="right")
        ot.add_row(*[_pct(x) for x in report.oracle])
        out.print(ot)
    if rerank_cmp is not None:
        from rescore.cli_rerank import comparison_table

        out.print(comparison_table("rerank vs the recognizer's first hypothesis (whisper normalizer)", rerank_cmp))


@app.command()
def models() -> None:
    """List known models, whether they are installed, where and how big."""
    from rescore.models import list_models

    table = Table(title="models")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("installed")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("path", overflow="fold")
    table.add_column("description")
    for m in list_models():
        size = f"{m.size / 1e6:.0f} MB" if m.size else ""
        table.add_row(m.name, m.kind, "yes" if m.installed else "[red]no[/]", size, m.path or "", m.description)
    out.print(table)


# Commands of the later stages live in their own modules and register themselves on ``app``.
from rescore import cli_correct, cli_ctc, cli_deep, cli_rerank, cli_run  # noqa: E402,F401


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
