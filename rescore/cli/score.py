"""``rescore score`` and ``rescore models``: WER of any n-best file, and the models this install resolves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rescore.cli.console import fail, out, pct, warn
from rescore.cli.records_io import load_records
from rescore.cli.tables import comparison_table


def _rerank_comparison(records: list, stage: str):
    """Before/after figures when a reranker chose among the hypotheses (see ``rescore rerank``)."""
    if stage not in {"auto", "rerank"} or not any(r.ok and r.chosen is not None for r in records):
        return None
    from rescore.evaluate.scoring import rerank_comparison

    try:
        return rerank_comparison(records)
    except ValueError:
        return None


def score(
    file: Annotated[Path, typer.Argument(help="n-best JSONL.")],
    reference: Annotated[Path | None, typer.Option(help="Manifest (or dataset folder) with the references.")] = None,
    stage: Annotated[str, typer.Option(help="auto (latest), first-pass, rerank or correct.")] = "auto",
    align: Annotated[bool, typer.Option(help="Print per-utterance alignments.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Corpus WER/CER with S/D/I under several normalizers, n-best oracle and 95 % bootstrap intervals."""
    from rescore.evaluate.scoring import alignment_text, describe_features, score_records

    records = load_records(file, reference)
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
            pct(w.rate),
            f"{pct(w.ci_low)}-{pct(w.ci_high)}",
            str(w.substitutions),
            str(w.deletions),
            str(w.insertions),
            str(w.reference_length),
            pct(c.rate),
        )
    out.print(table)
    out.print(describe_features(report.features), highlight=False)
    if report.oracle:
        ot = Table(title="n-best oracle WER % (whisper normalizer)")
        for k in range(1, len(report.oracle) + 1):
            ot.add_column(f"k={k}", justify="right")
        ot.add_row(*[pct(x) for x in report.oracle])
        out.print(ot)
    if rerank_cmp is not None:
        out.print(comparison_table("rerank vs the recognizer's first hypothesis (whisper normalizer)", rerank_cmp))


def models() -> None:
    """List known models, whether they are installed, where and how big."""
    from rescore.io.models import list_models

    table = Table(title="models")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("installed")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("path", overflow="fold")
    table.add_column("description")
    for m in list_models():
        size = f"{m.size / 1e6:.0f} MB" if m.size else ""
        about = f"{m.description}. {m.terms}" if m.terms else m.description
        table.add_row(m.name, m.kind, "yes" if m.installed else "[red]no[/]", size, m.path or "", about)
    out.print(table)
