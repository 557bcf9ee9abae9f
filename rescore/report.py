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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rescore.metrics import bootstrap_ci, edit_counts, normalize, oracle_curve, paired_bootstrap
from rescore.records import NBest

NORMALIZER = "whisper"


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


@dataclass
class RunSummary:
    name: str
    utterances: int
    scored: int
    audio_seconds: float
    oracle: list[float]
    stages: list[StageSummary]
    config: dict = field(default_factory=dict)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunSummary:
        d = dict(d)
        d["stages"] = [StageSummary(**s) for s in d["stages"]]
        return cls(**d)


def _stage_text(record: NBest, stage: str) -> str:
    return record.text({"transcribe": "first-pass", "rerank": "rerank", "correct": "correct"}.get(stage, "auto"))


def summarize_stages(
    name: str, stages: Sequence[tuple[str, Sequence[NBest]]], *, config: dict | None = None, wall: float = 0.0
) -> RunSummary:
    """Score every stage on the utterances that all stages processed and that have a reference."""
    by_stage = [(s, {r.id: r for r in recs}) for s, recs in stages]
    first = by_stage[0][1]
    ids = [
        i for i, r in first.items() if r.ok and r.reference is not None and all(i in m and m[i].ok for _, m in by_stage)
    ]
    refs = [normalize(first[i].reference or "", NORMALIZER) for i in ids]
    oracle = oracle_curve([first[i].reference or "" for i in ids], [[h.text for h in first[i].hypotheses] for i in ids])
    base_errors: np.ndarray | None = None
    out: list[StageSummary] = []
    for stage, m in by_stage:
        hyps = [normalize(_stage_text(m[i], stage), NORMALIZER) for i in ids]
        c = edit_counts(refs, hyps)
        cc = edit_counts(refs, hyps, chars=True)
        lo, hi = bootstrap_ci(c.errors, c.ref)
        seconds = sum(float(r.timing.get(stage, 0.0)) for r in m.values())
        s = StageSummary(
            stage,
            c.rate(),
            lo,
            hi,
            cc.rate(),
            int(c.sub.sum()),
            int(c.dele.sum()),
            int(c.ins.sum()),
            int(c.ref.sum()),
            round(seconds, 3),
            failed=sum(not r.ok for r in m.values()),
        )
        if base_errors is None:
            base_errors = c.errors
            s.unchanged = len(ids)
        else:
            s.better = int((c.errors < base_errors).sum())
            s.worse = int((c.errors > base_errors).sum())
            s.unchanged = int((c.errors == base_errors).sum())
            s.p_vs_first = paired_bootstrap(base_errors, c.errors, c.ref)
            if oracle:
                gap = out[0].wer - oracle[-1]
                s.gap_closed = (out[0].wer - s.wer) / gap if gap > 0 else None
        out.append(s)
    audio = sum(first[i].duration or 0.0 for i in ids)
    return RunSummary(name, len(first), len(ids), audio, oracle, out, config or {}, wall)


def _pct(x: float | None) -> str:
    return "" if x is None or x != x else f"{100 * x:.2f}"


def markdown_table(summary: RunSummary) -> str:
    rows = [
        "| stage | WER % | 95 % CI | CER % | S | D | I | better | worse | unchanged | gap closed | p (vs first) "
        "| seconds | RTF |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary.stages:
        rtf = s.seconds / summary.audio_seconds if summary.audio_seconds else float("nan")
        rows.append(
            f"| {s.stage} | {_pct(s.wer)} | {_pct(s.ci_low)}-{_pct(s.ci_high)} | {_pct(s.cer)} | {s.substitutions} "
            f"| {s.deletions} | {s.insertions} | {s.better} | {s.worse} | {s.unchanged} | {_pct(s.gap_closed)} "
            f"| {'' if s.p_vs_first is None else f'{s.p_vs_first:.3f}'} | {s.seconds:.1f} | {rtf:.3f} |"
        )
    return "\n".join(rows)


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(summaries: Sequence[RunSummary]) -> dict[str, str]:
    """Base64 PNGs: WER per stage with intervals and the oracle, better/worse, time, accuracy vs cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(summaries)
    for j, sm in enumerate(summaries):
        x = np.arange(len(sm.stages)) + j * width
        w = [100 * s.wer for s in sm.stages]
        err = [[100 * (s.wer - s.ci_low) for s in sm.stages], [100 * (s.ci_high - s.wer) for s in sm.stages]]
        ax.bar(x, w, width, yerr=err, capsize=4, label=sm.name)
        if sm.oracle:
            ax.axhline(100 * sm.oracle[-1], ls="--", color=f"C{j}", lw=1, label=f"{sm.name}: n-best oracle")
    ax.set_xticks(np.arange(len(summaries[0].stages)) + width * (len(summaries) - 1) / 2)
    ax.set_xticklabels([s.stage for s in summaries[0].stages])
    ax.set_ylabel("WER % (95 % CI)")
    ax.set_title("WER per stage")
    ax.legend(fontsize=8)
    out["wer"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels, better, worse = [], [], []
    for sm in summaries:
        for s in sm.stages[1:]:
            labels.append(s.stage if len(summaries) == 1 else f"{sm.name}\n{s.stage}")
            better.append(s.better)
            worse.append(-s.worse)
    if labels:
        ax.bar(labels, better, color="tab:green", label="better than first pass")
        ax.bar(labels, worse, color="tab:red", label="worse than first pass")
        ax.axhline(0, color="black", lw=0.8)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "first pass only", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("utterances")
    ax.set_title("Utterances changed per stage")
    out["changes"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for j, sm in enumerate(summaries):
        x = np.arange(len(sm.stages)) + j * width
        ax.bar(x, [s.seconds for s in sm.stages], width, label=sm.name)
    ax.set_xticks(np.arange(len(summaries[0].stages)) + width * (len(summaries) - 1) / 2)
    ax.set_xticklabels([s.stage for s in summaries[0].stages])
    ax.set_ylabel("seconds")
    ax.set_title("Processing time per stage")
    ax.legend(fontsize=8)
    out["time"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for j, sm in enumerate(summaries):
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


def _html_table(summary: RunSummary) -> str:
    head = [
        "stage",
        "WER %",
        "95 % CI",
        "CER %",
        "S",
        "D",
        "I",
        "better",
        "worse",
        "unchanged",
        "gap closed %",
        "p vs first",
        "seconds",
    ]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                s.stage,
                _pct(s.wer),
                f"{_pct(s.ci_low)}-{_pct(s.ci_high)}",
                _pct(s.cer),
                s.substitutions,
                s.deletions,
                s.insertions,
                s.better,
                s.worse,
                s.unchanged,
                _pct(s.gap_closed),
                "" if s.p_vs_first is None else f"{s.p_vs_first:.3f}",
                f"{s.seconds:.1f}",
            )
        )
        + "</tr>"
        for s in summary.stages
    )
    return f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody>{rows}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}
th{background:#eef}td:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}.note{color:#555}"""


def render_html(summaries: Sequence[RunSummary], title: str) -> str:
    figs = plots(summaries)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for sm in summaries:
        oracle = f"{_pct(sm.oracle[-1])} % at k={len(sm.oracle)}" if sm.oracle else "n/a"
        parts.append(
            f"<h2>{html.escape(sm.name)}</h2><p class='note'>{sm.scored} of {sm.utterances} utterances scored, "
            f"{sm.audio_seconds / 60:.1f} min of audio; n-best oracle WER {oracle}; Whisper English normalizer; "
            f"p is the paired-bootstrap share of resamples in which the stage is not better than the first pass."
            f"</p>{_html_table(sm)}"
        )
    for key, caption in (
        ("wer", "WER per stage"),
        ("changes", "Better / worse"),
        ("time", "Time per stage"),
        ("cost", "Accuracy vs cost"),
    ):
        parts.append(f"<h3>{caption}</h3><img alt='{caption}' src='data:image/png;base64,{figs[key]}'>")
    parts.append("</body></html>")
    return "".join(parts)


def render_markdown(summary: RunSummary) -> str:
    oracle = " ".join(f"k={k}: {_pct(x)}" for k, x in enumerate(summary.oracle, 1))
    return (
        f"# Run {summary.name}\n\n{summary.scored} of {summary.utterances} utterances scored, "
        f"{summary.audio_seconds / 60:.1f} min of audio, wall time {summary.wall_seconds:.1f} s.\n"
        f"WER with the Whisper English normalizer; 95 % bootstrap intervals; p = paired-bootstrap share of resamples "
        f"in which the stage is not better than the first pass.\n\n{markdown_table(summary)}\n\n"
        f"n-best oracle WER %: {oracle}\n"
    )


def write_report(run_dir: Path, summary: RunSummary) -> dict[str, Path]:
    """Write summary.json, report.md and report.html into ``run_dir``."""
    paths = {"summary": run_dir / "summary.json", "markdown": run_dir / "report.md", "html": run_dir / "report.html"}
    paths["summary"].write_text(json.dumps(summary.to_dict(), indent=2), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(summary), encoding="utf-8")
    paths["html"].write_text(render_html([summary], f"rescore run {summary.name}"), encoding="utf-8")
    return paths
