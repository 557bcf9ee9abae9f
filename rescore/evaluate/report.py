"""Run reports people read: per-stage WER with intervals, oracle, gap closed, better/worse, time, significance.

``summarize_stages`` turns each stage's records into numbers (a JSON-able :class:`RunSummary`);
``write_report`` writes ``summary.json``, ``report.md`` and a self-contained ``report.html`` whose plots
(matplotlib, embedded as base64 PNG) need nothing but a browser.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from rescore.evaluate.diffs import NORMALIZER, render_rows, stage_text, utterance_rows
from rescore.evaluate.metrics import (
    bootstrap_ci,
    edit_counts,
    normalize,
    oracle_curve,
    paired_bootstrap,
    paired_change,
    percent,
)
from rescore.records import NBest


@dataclass
class StageSummary:
    """One stage's figures against the same references (the utterances every stage scored)."""

    stage: str
    wer: float
    ci_low: float
    ci_high: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    words: int
    seconds: float  # processing time of the stage (sum over utterances, from the records' timing)
    better: int = 0  # utterances with fewer errors than the first pass
    worse: int = 0
    unchanged: int = 0
    gap_closed: float | None = None  # share of the first-pass 1-best -> oracle gap this stage closed
    p_vs_first: float | None = None  # paired bootstrap: share of resamples where this stage is not better
    failed: int = 0
    # against the previous stage (what this stage itself did), on the scored utterances: the harm figure
    better_vs_previous: int | None = None
    worse_vs_previous: int | None = None
    changed_scored: int | None = None  # scored utterances whose text this stage changed
    p_vs_previous: float | None = None
    # What the stage did to the text, on the utterances every stage processed: needs no reference.
    changed_vs_previous: int | None = None  # utterances whose text differs from the previous stage's
    changed_vs_first: int | None = None
    words_changed: int | None = None  # word edits (substitutions, deletions, insertions) from the previous text
    accepted: int | None = None  # corrector outputs kept (``record.correction["accepted"]``)
    abstained: int | None = None  # corrector outputs dropped: the previous text kept


_RATES = ("wer", "ci_low", "ci_high", "cer")  # NaN in memory when nothing was scored, null in JSON


@dataclass
class RunSummary:
    """A run's figures. ``scored == 0`` means no WER at all (see ``references``); the change counts remain."""

    name: str
    utterances: int
    scored: int
    audio_seconds: float  # audio of the utterances every stage processed (``compared``)
    oracle: list[float]
    stages: list[StageSummary]
    config: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    references: bool = True  # whether any utterance had a reference transcript
    compared: int = 0  # utterances every stage processed: the base of the change counts

    def to_dict(self) -> dict:
        """JSON-able, with null for NaN/inf (``json`` would write ``NaN``, which is not JSON)."""
        return _finite(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> RunSummary:
        known = {f.name for f in fields(StageSummary)}
        stages = []
        for s in d["stages"]:
            s = {k: v for k, v in s.items() if k in known}
            stages.append(StageSummary(**{**s, **{k: _nan(s.get(k)) for k in _RATES}}))
        top = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in top}
        d["stages"] = stages
        d["oracle"] = [_nan(x) for x in d.get("oracle") or []]
        return cls(**d)


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def summarize_stages(
    name: str, stages: Sequence[tuple[str, Sequence[NBest]]], *, config: dict | None = None, wall: float = 0.0
) -> RunSummary:
    """Score every stage on the utterances that all stages processed and that have a reference.

    What each stage changed (texts, words, corrector verdicts) is counted on all utterances every stage
    processed, with or without a reference: a run over unlabelled audio still says what the stages did.
    """
    by_stage = [(s, {r.id: r for r in recs}) for s, recs in stages]
    first = by_stage[0][1]
    common = [i for i, r in first.items() if r.ok and all(i in m and m[i].ok for _, m in by_stage)]
    ids = [i for i in common if first[i].reference is not None]
    refs = [normalize(first[i].reference or "", NORMALIZER) for i in ids]
    oracle = oracle_curve([first[i].reference or "" for i in ids], [[h.text for h in first[i].hypotheses] for i in ids])
    base_errors: np.ndarray | None = None
    prev_errors: np.ndarray | None = None
    prev_scored: list[str] | None = None
    out: list[StageSummary] = []
    first_texts: list[str] | None = None
    prev_texts: list[str] | None = None
    for stage, m in by_stage:
        seconds = sum(float(r.timing.get(stage, 0.0)) for r in m.values())
        s = StageSummary(stage, *(float("nan"),) * 4, 0, 0, 0, 0, round(seconds, 3))
        s.failed = sum(not r.ok for r in m.values())
        if ids:
            raw = [" ".join(stage_text(m[i], stage).split()) for i in ids]
            hyps = [normalize(t, NORMALIZER) for t in raw]
            errors = _score(s, refs, hyps, base_errors, out, oracle)
            if prev_errors is not None and prev_scored is not None:
                s.better_vs_previous = int((errors < prev_errors).sum())
                s.worse_vs_previous = int((errors > prev_errors).sum())
                s.changed_scored = sum(a != b for a, b in zip(prev_scored, raw, strict=True))
                s.p_vs_previous = paired_bootstrap(prev_errors, errors, np.asarray([len(r.split()) for r in refs]))
            base_errors = errors if base_errors is None else base_errors
            prev_errors, prev_scored = errors, raw
        texts = [" ".join(stage_text(m[i], stage).split()) for i in common]
        if prev_texts is not None and first_texts is not None:
            s.changed_vs_previous = sum(a != b for a, b in zip(prev_texts, texts, strict=True))
            s.changed_vs_first = sum(a != b for a, b in zip(first_texts, texts, strict=True))
            s.words_changed = word_edits(prev_texts, texts)
        s.accepted, s.abstained = corrector_verdicts([m[i] for i in common])
        first_texts = texts if first_texts is None else first_texts
        prev_texts = texts
        out.append(s)
    audio = sum(first[i].duration or 0.0 for i in common)
    references = any(r.reference is not None for r in first.values())
    return RunSummary(name, len(first), len(ids), audio, oracle, out, config or {}, wall, references, len(common))


def _score(
    s: StageSummary,
    refs: list[str],
    hyps: list[str],
    base_errors: np.ndarray | None,
    done: list[StageSummary],
    oracle: list[float],
) -> np.ndarray:
    """Fill a stage's WER figures and return its per-utterance errors; ``base_errors`` are the first pass's."""
    c = edit_counts(refs, hyps)
    cc = edit_counts(refs, hyps, chars=True)
    s.wer, s.cer = c.rate(), cc.rate()
    s.ci_low, s.ci_high = bootstrap_ci(c.errors, c.ref)
    s.substitutions, s.deletions, s.insertions, s.words = (int(x.sum()) for x in (c.sub, c.dele, c.ins, c.ref))
    if base_errors is None:
        s.unchanged = len(refs)
        return c.errors
    change = paired_change(base_errors, c.errors, c.ref)
    s.better, s.worse, s.unchanged, s.p_vs_first = change.better, change.worse, change.unchanged, change.p
    if oracle:
        gap = done[0].wer - oracle[-1]
        s.gap_closed = (done[0].wer - s.wer) / gap if gap > 0 else None
    return c.errors


def word_edits(before: Sequence[str], after: Sequence[str]) -> int:
    """Word-level edit distance summed over utterances (case and punctuation count: no normalizer)."""
    return int(edit_counts(list(before), list(after)).errors.sum())


def corrector_verdicts(records: Sequence[NBest]) -> tuple[int | None, int | None]:
    """(accepted, abstained) from the records' ``correction``; (None, None) when no record has one."""
    verdicts = [
        r.correction["accepted"] for r in records if isinstance(r.correction, dict) and "accepted" in r.correction
    ]
    if not verdicts:
        return None, None
    accepted = sum(bool(v) for v in verdicts)
    return accepted, len(verdicts) - accepted


def _num(x: int | None) -> str:
    return "" if x is None else str(x)


def _p(x: float | None) -> str:
    return "" if x is None or x != x else f"{x:.3f}"


def _harm(s: StageSummary) -> str:
    """Worse / changed vs the previous stage, with the share: how often an edit this stage made was a harm."""
    if s.worse_vs_previous is None or not s.changed_scored:
        return "" if s.worse_vs_previous is None else "0/0"
    return f"{s.worse_vs_previous}/{s.changed_scored} ({100 * s.worse_vs_previous / s.changed_scored:.0f} %)"


def _rtf(seconds: float, audio: float) -> str:
    return f"{seconds / audio:.3f}" if audio else ""


SCORE_COLUMNS = (
    "stage", "WER %", "95 % CI", "CER %", "S", "D", "I", "better", "worse", "unchanged", "gap closed %",
    "p (vs first)", "vs previous: better/worse", "harm (worse / changed)", "p (vs previous)", "seconds", "RTF",
)  # fmt: skip
CHANGE_COLUMNS = (
    "stage", "changed vs previous", "changed vs first pass", "words changed", "accepted", "abstained", "failed",
    "seconds", "RTF",
)  # fmt: skip


def score_rows(summary: RunSummary) -> list[list[str]]:
    """The cells of the WER table (:data:`SCORE_COLUMNS`), one row per stage; empty when nothing was scored."""
    if not summary.scored:
        return []
    return [
        [
            s.stage,
            percent(s.wer),
            f"{percent(s.ci_low)}-{percent(s.ci_high)}" if s.ci_low == s.ci_low else "",
            percent(s.cer),
            str(s.substitutions),
            str(s.deletions),
            str(s.insertions),
            str(s.better),
            str(s.worse),
            str(s.unchanged),
            percent(s.gap_closed),
            _p(s.p_vs_first),
            "" if s.better_vs_previous is None else f"{s.better_vs_previous}/{s.worse_vs_previous}",
            _harm(s),
            _p(s.p_vs_previous),
            f"{s.seconds:.1f}",
            _rtf(s.seconds, summary.audio_seconds),
        ]
        for s in summary.stages
    ]


def change_rows(summary: RunSummary) -> list[list[str]]:
    """The cells of the what-changed table (:data:`CHANGE_COLUMNS`): needs no reference."""
    return [
        [
            s.stage,
            _num(s.changed_vs_previous),
            _num(s.changed_vs_first),
            _num(s.words_changed),
            _num(s.accepted),
            _num(s.abstained),
            str(s.failed),
            f"{s.seconds:.1f}",
            _rtf(s.seconds, summary.audio_seconds),
        ]
        for s in summary.stages
    ]


def nothing_scored(summary: RunSummary) -> str:
    """Why there is no WER (empty when there is one)."""
    if summary.scored:
        return ""
    if not summary.references:
        return "No reference transcripts: nothing to score (WER needs references)."
    return "No utterance with a reference went through every stage: nothing to score."


def _md(columns: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def markdown_table(summary: RunSummary) -> str:
    """The WER table, or the what-changed table when nothing was scored."""
    if summary.scored:
        return _md(SCORE_COLUMNS, score_rows(summary))
    return _md(CHANGE_COLUMNS, change_rows(summary))


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(summaries: Sequence[RunSummary]) -> dict[str, str]:
    """Base64 PNGs: WER per stage with intervals and the oracle, better/worse (or changed), time, accuracy vs cost.

    The WER and accuracy-vs-cost plots are left out when no run was scored; a run without references
    shows its utterances changed vs the first pass instead of better/worse.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    scored = [sm for sm in summaries if sm.scored]
    if scored:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        width = 0.8 / len(scored)
        for j, sm in enumerate(scored):
            x = np.arange(len(sm.stages)) + j * width
            w = [100 * s.wer for s in sm.stages]
            err = [[100 * (s.wer - s.ci_low) for s in sm.stages], [100 * (s.ci_high - s.wer) for s in sm.stages]]
            ax.bar(x, w, width, yerr=err, capsize=4, label=sm.name)
            if sm.oracle:
                ax.axhline(100 * sm.oracle[-1], ls="--", color=f"C{j}", lw=1, label=f"{sm.name}: n-best oracle")
        ax.set_xticks(np.arange(len(scored[0].stages)) + width * (len(scored) - 1) / 2)
        ax.set_xticklabels([s.stage for s in scored[0].stages])
        ax.set_ylabel("WER % (95 % CI)")
        ax.set_title("WER per stage")
        ax.legend(fontsize=8)
        out["wer"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels, better, worse, changed = [], [], [], []
    for sm in summaries:
        for s in sm.stages[1:]:
            labels.append(s.stage if len(summaries) == 1 else f"{sm.name}\n{s.stage}")
            better.append(s.better if sm.scored else 0)
            worse.append(-s.worse if sm.scored else 0)
            changed.append(0 if sm.scored else s.changed_vs_first or 0)
    if labels:
        if scored:
            ax.bar(labels, better, color="tab:green", label="better than first pass")
            ax.bar(labels, worse, color="tab:red", label="worse than first pass")
        if len(scored) < len(summaries):
            ax.bar(labels, changed, color="tab:gray", label="changed vs first pass (no references)")
        ax.axhline(0, color="black", lw=0.8)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "first pass only", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("utterances")
    ax.set_title("Utterances changed per stage")
    out["changes"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(summaries)
    for j, sm in enumerate(summaries):
        x = np.arange(len(sm.stages)) + j * width
        ax.bar(x, [s.seconds for s in sm.stages], width, label=sm.name)
    ax.set_xticks(np.arange(len(summaries[0].stages)) + width * (len(summaries) - 1) / 2)
    ax.set_xticklabels([s.stage for s in summaries[0].stages])
    ax.set_ylabel("seconds")
    ax.set_title("Processing time per stage")
    ax.legend(fontsize=8)
    out["time"] = _figure_png(fig)

    if scored:
        fig, ax = plt.subplots(figsize=(6, 4))
        for j, sm in enumerate(scored):
            cum = np.cumsum([s.seconds for s in sm.stages])
            rtf = cum / sm.audio_seconds if sm.audio_seconds else cum
            ax.plot(rtf, [100 * s.wer for s in sm.stages], "o-", color=f"C{j}", label=sm.name)
            for s, x, y in zip(sm.stages, rtf, [100 * s.wer for s in sm.stages], strict=True):
                ax.annotate(s.stage, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("cumulative real-time factor (processing s / audio s)")
        ax.set_ylabel("WER %")
        ax.set_title("Accuracy vs cost")
        ax.legend(fontsize=8)
        out["cost"] = _figure_png(fig)
    return out


def _html(columns: Sequence[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_table(summary: RunSummary) -> str:
    if summary.scored:
        return _html(SCORE_COLUMNS, score_rows(summary))
    return _html(CHANGE_COLUMNS, change_rows(summary))


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}
th{background:#eef}td:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}.note{color:#555}"""

_CHANGES_NOTE = (
    "Changed: utterances whose text differs (case and punctuation count) from the previous stage's or the first "
    "pass's; words changed: word edits from the previous stage's text; accepted / abstained: the corrector's verdicts."
)


def render_html(summaries: Sequence[RunSummary], title: str, utterances: str = "") -> str:
    """The report page; ``utterances``: the per-utterance section (:func:`rescore.evaluate.diffs.render_rows`)."""
    figs = plots(summaries)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for sm in summaries:
        if sm.scored:
            oracle = f"{percent(sm.oracle[-1])} % at k={len(sm.oracle)}" if sm.oracle else "n/a"
            parts.append(
                f"<h2>{html.escape(sm.name)}</h2><p class='note'>{sm.scored} of {sm.utterances} utterances scored, "
                f"{sm.audio_seconds / 60:.1f} min of audio; n-best oracle WER {oracle}; Whisper English normalizer; "
                f"p is the paired-bootstrap share of resamples in which the stage is not better than the first pass."
                f"</p>{_html_table(sm)}<h3>What each stage changed</h3>{_html(CHANGE_COLUMNS, change_rows(sm))}"
            )
        else:
            parts.append(
                f"<h2>{html.escape(sm.name)}</h2><p class='note'>{html.escape(nothing_scored(sm))} "
                f"{sm.compared} of {sm.utterances} utterances went through every stage, "
                f"{sm.audio_seconds / 60:.1f} min of audio.</p>{_html_table(sm)}"
            )
        parts.append(f"<p class='note'>{_CHANGES_NOTE}</p>")
    for key, caption in (
        ("wer", "WER per stage"),
        ("changes", "Better / worse" if all(sm.scored for sm in summaries) else "Utterances changed"),
        ("time", "Time per stage"),
        ("cost", "Accuracy vs cost"),
    ):
        if key in figs:
            parts.append(f"<h3>{caption}</h3><img alt='{caption}' src='data:image/png;base64,{figs[key]}'>")
    parts.append(utterances)
    parts.append("</body></html>")
    return "".join(parts)


def render_markdown(summary: RunSummary) -> str:
    changes = f"## What each stage changed\n\n{_md(CHANGE_COLUMNS, change_rows(summary))}\n\n{_CHANGES_NOTE}\n"
    if not summary.scored:
        return (
            f"# Run {summary.name}\n\n{nothing_scored(summary)}\n{summary.compared} of {summary.utterances} "
            f"utterances went through every stage, {summary.audio_seconds / 60:.1f} min of audio, "
            f"wall time {summary.wall_seconds:.1f} s.\n\n{changes}"
        )
    oracle = " ".join(f"k={k}: {percent(x)}" for k, x in enumerate(summary.oracle, 1))
    return (
        f"# Run {summary.name}\n\n{summary.scored} of {summary.utterances} utterances scored, "
        f"{summary.audio_seconds / 60:.1f} min of audio, wall time {summary.wall_seconds:.1f} s.\n"
        f"WER with the Whisper English normalizer; 95 % bootstrap intervals; p = paired-bootstrap share of resamples "
        f"in which the stage is not better than the first pass.\n\n{markdown_table(summary)}\n\n"
        f"n-best oracle WER %: {oracle}\n\n{changes}"
    )


def write_report(
    run_dir: Path, summary: RunSummary, stages: Sequence[tuple[str, Sequence[NBest]]] = ()
) -> dict[str, Path]:
    """Write summary.json (strict JSON: null where a figure does not exist), report.md and report.html (with the
    per-utterance table of ``stages``' records, when given)."""

    paths = {"summary": run_dir / "summary.json", "markdown": run_dir / "report.md", "html": run_dir / "report.html"}
    paths["summary"].write_text(json.dumps(summary.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(summary), encoding="utf-8")
    utterances = render_rows(utterance_rows(stages)) if stages else ""
    paths["html"].write_text(render_html([summary], f"rescore run {summary.name}", utterances), encoding="utf-8")
    return paths
