"""``rescore run`` and ``rescore compare``: the whole pipeline from one config, and runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rescore.cli import app, console, fail, out, progress_bar


def _stage_table(summary) -> Table:
    table = Table(title=f"run {summary.name}: {summary.scored} utterances, {summary.audio_seconds / 60:.1f} min audio")
    for col in ("stage", "WER %", "95 % CI", "better", "worse", "gap %", "p", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for s in summary.stages:
        table.add_row(
            s.stage,
            f"{100 * s.wer:.2f}",
            f"{100 * s.ci_low:.2f}-{100 * s.ci_high:.2f}",
            str(s.better),
            str(s.worse),
            "" if s.gap_closed is None else f"{100 * s.gap_closed:.1f}",
            "" if s.p_vs_first is None else f"{s.p_vs_first:.3f}",
            f"{s.seconds:.1f}",
        )
    oracle = (
        f"n-best oracle WER at k={len(summary.oracle)}: {100 * summary.oracle[-1]:.2f} %; " if summary.oracle else ""
    )
    table.caption = (
        f"{oracle}gap %: share of the first-pass-to-oracle gap closed; "
        "p: paired bootstrap, share of resamples where the stage is not better than the first pass"
    )
    return table


@app.command()
def run(
    source: Annotated[str, typer.Argument(help="A config .toml, or an input (folder/manifest) with --preset.")],
    preset: Annotated[str | None, typer.Option(help="default, fast, first-pass or spelling.")] = None,
    output: Annotated[str | None, typer.Option(help="Folder that holds run folders (default: runs).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: the input's name).")] = None,
    engine: Annotated[str | None, typer.Option(help="local or ray.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N utterances.")] = None,
) -> None:
    """First pass, rerank, correct and scoring in one command; each stage's output is cached by hash."""
    from rescore.pipeline import ConfigError, load_config, run_pipeline, stage_plan

    overrides = {
        k: v for k, v in {"output": output, "name": name, "engine": engine, "limit": limit}.items() if v is not None
    }
    try:
        if source.endswith(".toml"):
            cfg = load_config(source, preset=preset, overrides=overrides)
        else:
            cfg = load_config(input=source, preset=preset or "default", overrides=overrides)
        stage_plan(cfg)
    except ConfigError as e:
        raise fail(str(e)) from None
    console.print(f"run folder: {cfg.run_dir}")
    with progress_bar() as bar:

        def on_stage(stage: str, total: int):
            task = bar.add_task(stage, total=total, audio_seconds=0.0)
            state = {"audio": 0.0}

            def advance(record) -> None:
                state["audio"] += record.duration or 0.0
                bar.update(task, advance=1, audio_seconds=state["audio"])
                if not record.ok:
                    console.print(f"[red]failed[/] {record.id}: {record.error}", highlight=False)

            return advance

        try:
            results, summary = run_pipeline(cfg, on_stage=on_stage)
        except (FileNotFoundError, ValueError) as e:
            raise fail(str(e)) from None
        except KeyboardInterrupt:
            raise fail("interrupted: finished stages and partial records are kept; rerun to resume", 130) from None
    for r in results:
        note = "cached" if r.cached else f"{r.seconds:.1f} s"
        console.print(f"{r.name}: {r.path.name} ({note}, {len(r.failed)} failed)")
    out.print(_stage_table(summary))
    console.print(f"report: {cfg.run_dir / 'report.md'}, {cfg.run_dir / 'report.html'}, {cfg.run_dir / 'summary.json'}")
    if any(r.failed for r in results):
        raise fail("some utterances failed (see above); they are recorded with an 'error' field", 1)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (each with summary.json).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write an HTML comparison here.")] = None,
) -> None:
    """Side-by-side table (and HTML plot) of several runs."""
    from rescore.report import RunSummary, render_html

    summaries = []
    for run_dir in runs:
        path = run_dir / "summary.json" if run_dir.is_dir() else run_dir
        try:
            summaries.append(RunSummary.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise fail(f"{path}: not a run summary ({e})") from None
    stages = list(dict.fromkeys(s.stage for sm in summaries for s in sm.stages))
    table = Table(title="runs compared: WER % (whisper normalizer)")
    table.add_column("run")
    for st in stages:
        table.add_column(st, justify="right")
    table.add_column("oracle", justify="right")
    for sm in summaries:
        by = {s.stage: s for s in sm.stages}
        cells = [f"{100 * by[st].wer:.2f}" if st in by else "" for st in stages]
        table.add_row(sm.name, *cells, f"{100 * sm.oracle[-1]:.2f}" if sm.oracle else "")
    out.print(table)
    if output is not None:
        output.write_text(render_html(summaries, "rescore: runs compared"), encoding="utf-8")
        console.print(f"wrote {output}")
