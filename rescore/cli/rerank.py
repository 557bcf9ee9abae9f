"""``rescore rerank`` and ``rescore tune``: LM scores on n-best lists, weighted choice, weights from a dev set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rescore.cli.console import check_writable, console, fail, load_stage, out, pct, run_stage_command, warn
from rescore.cli.records_io import load_records, read_records, read_text_option
from rescore.cli.stage_flags import StageFlags, stage_flags
from rescore.cli.tables import comparison_table
from rescore.stages import RerankOptions

ContextFileOpt = Annotated[Path | None, typer.Option(help="Read the domain prompt (`context`) from a file.")]
LM_FLAGS = ("lm", "backend", "context", "threads", "batch_tokens")  # what `tune` takes of RerankOptions


@stage_flags(RerankOptions, names={"weights": ("--config", "--weights")}, section="rerank")
def rerank(
    file: Annotated[Path, typer.Argument(help="n-best JSONL (from transcribe).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    flags: StageFlags[RerankOptions],
    context_file: ContextFileOpt = None,
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
) -> None:
    """Add lm:<name> scores to every hypothesis and choose by am + sum(w_i * lm_i) + b * words."""
    from rescore.rerank.ranker import is_text_only
    from rescore.stages import RerankStage

    options = flags.build(context=read_text_option(flags.values.get("context"), context_file, "context"))
    try:
        stage = RerankStage(options, warn=warn)
    except (ValueError, OSError) as e:
        raise fail(str(e).splitlines()[0]) from None
    records = read_records(file)
    check_writable(output, resume)
    console.print(f"total = {stage.plan.weights.describe()}", highlight=False)
    if stage.plan.text_only is not None and any(r.ok and is_text_only(r, stage.plan.acoustic) for r in records):
        console.print(f"text-only records (no acoustic score): total = {stage.plan.text_only.describe()}")
    load_stage(stage, f"{', '.join(stage.plan.lms)} ({stage.plan.backend})")

    def summary(run, written) -> str:
        n_hyp = sum(len(r.hypotheses) for r in written if r.ok)
        rate = f", {n_hyp / run.seconds:.1f} hypotheses/s" if run.seconds > 0 and n_hyp else ""
        return f"wrote {run.written} records to {output} in {run.seconds:.1f} s{rate}"

    run_stage_command(stage, records, output, resume=resume, label="rerank", summary=summary)


@stage_flags(RerankOptions, only=LM_FLAGS, section="rerank")
def tune(
    file: Annotated[Path, typer.Argument(help="Dev n-best JSONL with references.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Config file (JSON) for `rerank --config`.")],
    flags: StageFlags[RerankOptions],
    context_file: ContextFileOpt = None,
    reference: Annotated[Path | None, typer.Option(help="Manifest with the references, if not in the records.")] = None,
    folds: Annotated[int, typer.Option(help="k of the k-fold cross-validation that reports the result (0: none).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
    report: Annotated[
        Path | None, typer.Option(help="Also report on this n-best file (must not share ids with the dev file).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Report on --report even where it shares ids with the dev file.")] = False,
    scored: Annotated[Path | None, typer.Option(help="Write the dev records with their LM scores here.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help="grid: LM weights and length bonus on top of the acoustic score; learned: pairwise logistic"
            " regression over every named feature (acoustic scores of each model, LMs, ranks, consensus)."
        ),
    ] = "grid",
    feature: Annotated[
        list[str] | None, typer.Option(help="--method learned: only these score keys (repeat; default: all shared).")
    ] = None,
) -> None:
    """Fit rerank weights minimising dev WER (a grid search, or a learned reranker); report by k-fold CV."""
    from rescore.records import write_nbest
    from rescore.rerank.tuning import OverlapError, check_disjoint, tune_rerank, usable_for_tuning
    from rescore.stages import RerankStage

    ctx_text = read_text_option(flags.values.get("context"), context_file, "context", "")
    dev, skipped = usable_for_tuning(load_records(file, reference), "dev")
    for m in skipped:
        warn(m)
    if len(dev) < 2:
        raise fail(f"{file}: fewer than 2 usable records to tune on")
    test = None
    if report is not None:
        test, skipped = usable_for_tuning(load_records(report, reference), "report")
        for m in skipped:
            warn(m)
        try:
            note = check_disjoint(dev, test, force=force)
        except OverlapError as e:
            raise fail(f"--report: {e} (--force)") from None
        if note:
            warn(f"--force: {note}")
    try:
        stage = RerankStage(flags.build(context=ctx_text or None), warn=warn)
    except ValueError as e:
        raise fail(str(e).splitlines()[0]) from None
    load_stage(stage, f"{', '.join(stage.plan.lms)} ({stage.plan.backend})")
    from rescore.rerank.tuning import METHODS

    if method not in METHODS:
        raise fail(f"--method {method}: expected one of {', '.join(METHODS)}")
    with console.status("tuning") as status:
        outcome = tune_rerank(
            dev,
            stage.load(),
            backend=stage.plan.backend,
            method=method,
            features=feature or None,
            context=ctx_text,
            folds=folds,
            seed=seed,
            report=test,
            dev_name=str(file),
            report_name=str(report),
            on_phase=status.update,
        )
    if scored is not None:
        write_nbest(scored, dev)
    w = outcome.weights
    console.print(
        f"tuned on {len(dev)} utterances ({outcome.method}, {outcome.settings} settings): total = {w.describe()}",
        highlight=False,
    )
    if outcome.cv is not None:
        title = f"{file.name}: {outcome.folds}-fold cross-validated rerank (held-out folds)"
        out.print(comparison_table(title, outcome.cv))
    for note in outcome.notes:
        warn(note)
    if outcome.report is not None and report is not None:
        out.print(comparison_table(f"{report.name}: reranked with the tuned weights", outcome.report))
    try:
        outcome.config.save(output)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    in_sample = f" (in-sample dev WER {pct(outcome.in_sample_wer)} %)" if outcome.in_sample_wer is not None else ""
    console.print(f"wrote {output}{in_sample}")
