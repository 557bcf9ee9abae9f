"""``rescore run`` and ``rescore compare``: the whole pipeline from one config, and runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rescore.cli.console import console, fail, out, progress_bar, record_progress


def run(
    source: Annotated[str, typer.Argument(help="A config .toml, or an input (folder/manifest) with --preset.")],
    preset: Annotated[
        str | None, typer.Option(help="default, correct, fast, first-pass or spelling (union: the default's old name).")
    ] = None,
    output: Annotated[str | None, typer.Option(help="Folder that holds run folders (default: runs).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: the input's name).")] = None,
    engine: Annotated[str | None, typer.Option(help="local or ray.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N utterances.")] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            help="Final transcripts written into the run folder: some of txt,tsv,json,srt,vtt [default: txt,tsv]."
        ),
    ] = None,
    rerank_config: Annotated[
        str | None,
        typer.Option(help="Rerank weights from `rescore tune` (a JSON config; shipped: the default's own)."),
    ] = None,
    profile: Annotated[
        bool, typer.Option("--profile", help="Write each stage's wall time, CPU time and peak RSS into summary.json.")
    ] = False,
) -> None:
    """First pass, rerank, correct and scoring in one command; each stage's output is cached by hash."""
    from rescore.evaluate.tables import stage_table
    from rescore.pipeline import TRANSCRIPTS_DIR, ConfigError, load_config, run_pipeline, stage_plan

    overrides: dict[str, Any] = {
        k: v for k, v in {"output": output, "name": name, "engine": engine, "limit": limit}.items() if v is not None
    }
    if rerank_config is not None:
        overrides["rerank"] = {"weights": rerank_config}
    if output_format is not None:
        overrides["output_format"] = [f.strip() for f in output_format.split(",") if f.strip()]
    try:
        config = source if source.endswith(".toml") else None  # a config file says what differs from the preset
        cfg = load_config(config, input=None if config else source, preset=preset or "default", overrides=overrides)
        stage_plan(cfg)
    except ConfigError as e:
        raise fail(str(e)) from None
    console.print(f"run folder: {cfg.run_dir}")
    reported: set[str] = set()  # failures already named: a failed item is passed on by every later stage
    with progress_bar() as bar:

        def on_stage(stage: str, total: int):
            return record_progress(bar, bar.add_task(stage, total=total, audio_seconds=0.0), reported)

        try:
            results, summary = run_pipeline(cfg, on_stage=on_stage, profile=profile)
        except (FileNotFoundError, ValueError) as e:
            raise fail(str(e)) from None
        except KeyboardInterrupt:
            raise fail("interrupted: finished stages and partial records are kept; rerun to resume", 130) from None
    for r in results:
        note = "cached" if r.cached else f"{r.seconds:.1f} s"
        console.print(f"{r.name}: {r.path.name} ({note}, {len(r.failed)} failed)")
    out.print(stage_table(summary))
    console.print(f"report: {cfg.run_dir / 'report.md'}, {cfg.run_dir / 'report.html'}, {cfg.run_dir / 'summary.json'}")
    console.print(f"transcripts ({', '.join(cfg.output_format)}): {cfg.run_dir / TRANSCRIPTS_DIR}")
    if any(r.failed for r in results):
        raise fail("some utterances failed (see above); they are recorded with an 'error' field", 1)


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (each with summary.json).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write an HTML comparison here.")] = None,
) -> None:
    """Side-by-side table (and HTML plot) of several runs."""
    from rescore.evaluate.report import RunSummary, render_html
    from rescore.evaluate.tables import compare_table

    summaries = []
    for run_dir in runs:
        path = run_dir / "summary.json" if run_dir.is_dir() else run_dir
        try:
            summaries.append(RunSummary.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise fail(f"{path}: not a run summary ({e})") from None
    out.print(compare_table(summaries))
    if output is not None:
        output.write_text(render_html(summaries, "rescore: runs compared"), encoding="utf-8")
        console.print(f"wrote {output}")
