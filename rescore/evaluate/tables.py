"""Rich tables of run summaries for the terminal, kept out of the CLI so any command (or a notebook) can print them.

A run without references has no WER: its table says so and shows what each stage changed instead of
columns of ``nan``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from rescore.evaluate.metrics import percent
from rescore.evaluate.report import RunSummary, nothing_scored


def stage_table(summary: RunSummary) -> Table:
    """Per-stage WER with intervals when the run was scored; per-stage changes when it was not."""
    if not summary.scored:
        return _change_table(summary)
    table = Table(title=f"run {summary.name}: {summary.scored} utterances, {summary.audio_seconds / 60:.1f} min audio")
    for col in ("stage", "WER %", "95 % CI", "better", "worse", "gap %", "p", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for s in summary.stages:
        table.add_row(
            s.stage,
            percent(s.wer),
            f"{percent(s.ci_low)}-{percent(s.ci_high)}" if s.ci_low == s.ci_low else "",
            str(s.better),
            str(s.worse),
            "" if s.gap_closed is None else f"{100 * s.gap_closed:.1f}",
            "" if s.p_vs_first is None or s.p_vs_first != s.p_vs_first else f"{s.p_vs_first:.3f}",
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


def _change_table(summary: RunSummary) -> Table:
    """Short headers so that it fits 80 columns; the corrector's columns only when a stage has verdicts."""
    table = Table(
        title=f"run {summary.name}: {summary.compared} utterances, {summary.audio_seconds / 60:.1f} min audio, "
        "not scored"
    )
    verdicts = any(s.accepted is not None for s in summary.stages)
    cols = ["stage", "changed", "vs first", "words"] + (["accepted", "abstained"] if verdicts else []) + ["seconds"]
    for col in cols:
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for s in summary.stages:
        cells = [s.stage, _num(s.changed_vs_previous), _num(s.changed_vs_first), _num(s.words_changed)]
        cells += [_num(s.accepted), _num(s.abstained)] if verdicts else []
        table.add_row(*cells, f"{s.seconds:.1f}")
    table.caption = (
        f"{nothing_scored(summary)} changed: utterances whose text differs from the previous stage's; vs first: "
        "from the first pass's; words: word edits from the previous stage's text"
        + ("; accepted / abstained: the corrector's verdicts" if verdicts else "")
    )
    return table


def _num(x: int | None) -> str:
    return "" if x is None else str(x)


def compare_table(summaries: Sequence[RunSummary]) -> Table:
    """Runs side by side: WER % per stage, blank where a run has no such stage or was not scored."""
    stages = list(dict.fromkeys(s.stage for sm in summaries for s in sm.stages))
    table = Table(title="runs compared: WER % (whisper normalizer)")
    table.add_column("run")
    for st in stages:
        table.add_column(st, justify="right")
    table.add_column("oracle", justify="right")
    for sm in summaries:
        by = {s.stage: s for s in sm.stages}
        cells = [percent(by[st].wer) if st in by and sm.scored else "" for st in stages]
        oracle = percent(sm.oracle[-1]) if sm.oracle and sm.scored else ""
        table.add_row(sm.name if sm.scored else f"{sm.name} (not scored)", *cells, oracle)
    return table
