"""``rescore ctc ...``: train the CTC head and inspect it (the ``ctc`` backend of ``transcribe`` uses it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rescore.cli.console import check_writable, console, fail, load_stage, run_stage_command, warn
from rescore.cli.records_io import read_records
from rescore.cli.stage_flags import StageFlags, stage_flags
from rescore.stages import CTCScoreOptions

ctc_app = typer.Typer(no_args_is_help=True, help="The CTC head over Whisper encoder states: train it, show it.")


@ctc_app.command("train")
def train(
    sets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Training sets (folders or manifests). Default: an4-train, arctic-cathy, speechocean-train"
            " from $RESCORE_DATA or ./shared/data or ../shared/data."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Checkpoint to write (default: the cache's ctc/ folder).")
    ] = None,
    minutes: Annotated[float, typer.Option(help="Wall-clock training budget.")] = 40.0,
    max_epochs: Annotated[int, typer.Option(help="Stop after this many epochs even within the budget.")] = 200,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1.5e-3,
    dim: Annotated[int, typer.Option(help="Width of the head.")] = 192,
    layers: Annotated[int, typer.Option(help="Conv + self-attention blocks.")] = 2,
    stride: Annotated[int, typer.Option(help="Encoder frames stacked per output frame.")] = 2,
    encoder: Annotated[str, typer.Option(help="Whisper model whose encoder states are the input.")] = "whisper-tiny.en",
    threads: Annotated[int, typer.Option(help="Torch CPU threads (1 is fastest on a busy shared CPU).")] = 1,
    dropout: Annotated[float, typer.Option(help="Dropout inside the head.")] = 0.0,
    batch_frames: Annotated[int, typer.Option(help="Encoder frames (50 per second) per batch.")] = 2500,
    seed: Annotated[int, typer.Option()] = 0,
    init: Annotated[
        str, typer.Option(help="Continue from this checkpoint ('default': the cached one) instead of from scratch.")
    ] = "",
    cached_only: Annotated[
        bool, typer.Option(help="Train only on utterances whose encoder states are cached already.")
    ] = False,
) -> None:
    """Train the head on cached encoder states (computed once) and save the best held-out checkpoint."""
    from rescore.recognize.ctc_head import CTCHeadConfig
    from rescore.recognize.ctc_train import DEFAULT_SETS, TrainConfig, train_ctc_head

    if not sets:
        from rescore.io.datasets import shared_data_dir

        try:
            sets = [str(shared_data_dir() / s) for s in DEFAULT_SETS]
        except FileNotFoundError as e:
            raise fail(str(e)) from None
    for s in sets:
        if not Path(s).exists():
            raise fail(f"training set not found: {s}")
    cfg = TrainConfig(
        sets=list(sets),
        output=str(output or ""),
        minutes=minutes,
        max_epochs=max_epochs,
        lr=lr,
        threads=threads,
        seed=seed,
        cached_only=cached_only,
        init=init,
        batch_frames=batch_frames,
        head=CTCHeadConfig(dim=dim, layers=layers, stride=stride, dropout=dropout, encoder=encoder),
    )
    try:
        summary = train_ctc_head(cfg, log=lambda m: console.print(m, highlight=False))
    except (ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted: the best checkpoint so far is kept", 130) from None
    if summary["best"].get("epoch") is None:
        warn("no epoch finished within the budget: nothing saved")
        raise typer.Exit(1)


@ctc_app.command("info")
def info(
    model: Annotated[str, typer.Argument(help="Checkpoint path, or 'default'.")] = "default",
) -> None:
    """Print a checkpoint's configuration and training summary."""
    from rescore.recognize.ctc_head import load_ctc_head

    try:
        head = load_ctc_head(model)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    from dataclasses import asdict

    meta = {k: v for k, v in head.meta.items() if k != "history"}
    typer.echo(json.dumps({"config": asdict(head.config), **meta}, indent=2))


@ctc_app.command("score")
@stage_flags(CTCScoreOptions)
def score(
    nbest: Annotated[Path, typer.Argument(help="n-best JSONL from any recognizer.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL with a 'ctc' score per hypothesis.")],
    flags: StageFlags[CTCScoreOptions],
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
) -> None:
    """Add the CTC head's log-probability of every hypothesis (joint CTC/attention scores for the reranker)."""
    from rescore.stages import CTCScoreStage

    options = flags.build()
    stage = CTCScoreStage(options)
    records = read_records(nbest)
    check_writable(output, resume)
    load_stage(stage, f"CTC head {options.model}", (FileNotFoundError, ValueError, RuntimeError))
    run_stage_command(stage, records, output, resume=resume, label="ctc score")
