"""``rescore transcribe``: the first pass, one n-best record per utterance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rescore.cli.console import check_writable, fail, load_stage, run_stage_command, warn
from rescore.cli.stage_flags import StageFlags, stage_flags
from rescore.stages import TranscribeOptions


def load_input(input: str) -> Any:
    """The dataset behind an input argument, its skipped items warned about; exit 2 if it is unusable."""
    from rescore.io.datasets import load_dataset

    try:
        dataset = load_dataset(input)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise fail(str(e)) from None
    for issue in dataset.issues:
        warn(f"skipped {issue}")
    return dataset


def transcribe_dataset(stage: Any, input: str, output: Path, *, resume: bool, limit: int, label: str) -> None:
    """What every transcribe command does: placeholders for the utterances (and failed records for the
    items that cannot even start), the stage loaded up front, then the shared stage run."""
    from rescore.records import NBest
    from rescore.stages import utterance_record

    dataset = load_input(input)
    check_writable(output, resume)
    utts = dataset.utterances[:limit] if limit else dataset.utterances
    records = [utterance_record(u) for u in utts]
    known = {r.id for r in records}
    failed = [i for i in dataset.issues if i.utterance_id and i.utterance_id not in known]
    records += [NBest(id=i.utterance_id, error=i.message) for i in failed]  # type: ignore[arg-type]
    skipped = sum(1 for i in dataset.issues if not i.utterance_id)
    load_stage(stage, label)
    run_stage_command(
        stage,
        records,
        output,
        resume=resume,
        label=label,
        unit="utterances",
        failures=[i.utterance_id for i in failed],  # type: ignore[misc]
        skipped=skipped,
    )


@stage_flags(TranscribeOptions, section="transcribe")
def transcribe(
    input: Annotated[
        str, typer.Argument(help="Audio folder, JSONL manifest, LibriSpeech folder, Kaldi data dir or audio file.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    flags: StageFlags[TranscribeOptions],
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
    limit: Annotated[int, typer.Option(help="Only the first N utterances (0: all).")] = 0,
) -> None:
    """Run the first pass and write one n-best record per utterance (with several --model, their union)."""
    from rescore.registry import RegistryError
    from rescore.stages import TranscribeStage

    options = flags.build()
    try:
        stage = TranscribeStage(options)
        options.recognizer_options()  # an unknown backend: one line now, not after loading the input
    except RegistryError as e:
        raise fail(str(e).splitlines()[0]) from None
    label = "transcribe" if len(options.models) == 1 else f"transcribe ({' + '.join(map(str, options.models))})"
    transcribe_dataset(stage, input, output, resume=resume, limit=limit, label=label)
    if len(options.models) > 1:
        from rescore.cli.merge import print_union_oracle
        from rescore.records import read_nbest

        print_union_oracle(list(read_nbest(output, strict=False)), output.name)
