"""``rescore transcribe``: the first pass, one n-best record per utterance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rescore.cli.console import check_writable, fail, given, load_stage, run_stage_command, warn


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


def transcribe(
    ctx: typer.Context,
    input: Annotated[
        str, typer.Argument(help="Audio folder, JSONL manifest, LibriSpeech folder, Kaldi data dir or audio file.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="whisper-tiny.en (default of the Whisper backends), whisper-base, or a model folder/file. Repeat"
            " for the n-best union of several models (system combination, see `rescore merge`)."
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="First-pass recognizer: ctranslate2, openai-whisper (same Whisper model), ctc (a CTC head over"
            " Whisper encoder states; the package ships one, --model: another checkpoint) or pocketsphinx."
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
    distinct: Annotated[
        bool,
        typer.Option(
            "--distinct",
            help="ctranslate2: keep the --nbest best hypotheses that differ after normalisation (not only in"
            " punctuation or case), from a beam twice as wide searched for 8 times more finished hypotheses"
            " (at most 128).",
        ),
    ] = False,
    ascore: Annotated[
        bool,
        typer.Option(
            "--ascore",
            help="With several --model: score every hypothesis of the union with every model (am:<model>, by"
            " teacher forcing), reusing each model's encoder output from its own decoding.",
        ),
    ] = False,
    word_lm: Annotated[
        str | None,
        typer.Option(
            help="ctc backend: word n-gram LM fused into the search: pocketsphinx (its en-US trigram, the default),"
            " an LM file pocketsphinx reads (ARPA or binary), or none."
        ),
    ] = None,
    lm_weight: Annotated[
        float | None, typer.Option(help="ctc backend: weight of the word LM's log-probability [default: tuned].")
    ] = None,
    word_bonus: Annotated[
        float | None, typer.Option(help="ctc backend: score added per word, offsetting the LM's cost [default: tuned].")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
    limit: Annotated[int, typer.Option(help="Only the first N utterances (0: all).")] = 0,
) -> None:
    """Run the first pass and write one n-best record per utterance (with several --model, their union)."""
    from pydantic import ValidationError

    from rescore.registry import RegistryError
    from rescore.stages import TranscribeOptions, TranscribeStage

    names = ["model", "nbest", "beam_size", "batch_size", "device", "compute_type", "language"]
    names += ["word_lm", "lm_weight", "word_bonus", "distinct", "ascore"]
    try:
        options = TranscribeOptions(backend=backend, **given(ctx, names))
        stage = TranscribeStage(options)
        options.recognizer_options()  # an unknown backend: one line now, not after loading the input
    except (ValidationError, RegistryError) as e:
        raise fail(str(e).splitlines()[0] if isinstance(e, RegistryError) else _first_error(e)) from None
    label = "transcribe" if len(options.models) == 1 else f"transcribe ({' + '.join(map(str, options.models))})"
    transcribe_dataset(stage, input, output, resume=resume, limit=limit, label=label)
    if len(options.models) > 1:
        from rescore.cli.merge import print_union_oracle
        from rescore.records import read_nbest

        print_union_oracle(list(read_nbest(output, strict=False)), output.name)


def _first_error(e: Any) -> str:
    err = e.errors()[0]
    return f"--{'-'.join(str(p) for p in err['loc']).replace('_', '-')}: {err['msg']}"
