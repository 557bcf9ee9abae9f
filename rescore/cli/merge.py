"""``rescore merge``: the n-best union of several recognizers' files (system combination)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rescore.cli.console import console, fail, out, pct, warn
from rescore.cli.records_io import load_records


def print_union_oracle(records: list[Any], title: str) -> None:
    """The union's oracle WER next to each system's own 1-best and oracle (nothing without references)."""
    from rescore.recognize.union import union_oracle

    try:
        o = union_oracle(records)
    except ValueError:
        return
    if not o.utterances:
        warn("no merged utterance with a reference that every system has: no oracle to report")
        return
    table = Table(title=f"{title}: n-best union, {o.utterances} utterances ({o.normalizer} normalizer)")
    for col in ("system", "distinct hypotheses", "1-best WER %", "oracle WER %"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for s in o.systems:
        table.add_row(s, f"{o.size[s]:.1f}", pct(o.one_best[s]), pct(o.oracle[s]))
    table.add_row("union", f"{o.union_size:.1f}", pct(o.one_best[o.systems[0]]), pct(o.union_oracle))
    out.print(table)
    if o.excluded:
        warn(f"{o.excluded} record(s) left out of the oracle: failed, without a reference, or missing from a system")


def merge(
    files: Annotated[list[Path], typer.Argument(help="n-best JSONL files of the same utterances (two or more).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Merged n-best JSONL to write.")],
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            help="System name of each file, in order; it qualifies the file's score keys (am:NAME, rank:NAME)."
            " Default: each file's model, else its file name.",
        ),
    ] = None,
    reference: Annotated[Path | None, typer.Option(help="Manifest (or dataset folder) with the references.")] = None,
    normalizer: Annotated[str, typer.Option(help="Hypotheses equal under it are merged: whisper, basic or none.")] = (
        "whisper"
    ),
) -> None:
    """Merge n-best files per id into their union: normalised duplicates become one hypothesis that keeps
    every system's rank and scores (rank:NAME, am:NAME, am_norm:NAME); print the union's oracle WER."""
    from rescore.evaluate.metrics import NORMALIZERS
    from rescore.recognize.union import MergeError, merge_records, system_name
    from rescore.records import write_nbest

    if len(files) < 2:
        raise fail("give at least two n-best files to merge")
    if normalizer not in NORMALIZERS:
        raise fail(f"--normalizer: expected one of {', '.join(NORMALIZERS)}")
    lists = [load_records(f, reference) for f in files]
    if name:
        if len(name) != len(files):
            raise fail(f"{len(name)} --name for {len(files)} files: give one per file, in order")
        names = list(name)
    else:
        names = [system_name(rs, f.stem) for rs, f in zip(lists, files, strict=True)]
        if len(set(names)) != len(names):  # the same model twice (different settings): the file names
            names = [f.stem for f in files]
        if len(set(names)) != len(names):
            raise fail(f"cannot tell the files' systems apart ({', '.join(names)}): name them with --name")
    try:
        merged = merge_records(lists, names, normalizer=normalizer)
    except MergeError as e:
        raise fail(str(e)) from None
    try:
        write_nbest(output, merged)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    n_hyp = sum(len(r.hypotheses) for r in merged)
    per_sys = ", ".join(f"{s} {sum(len(r.hypotheses) for r in rs)}" for s, rs in zip(names, lists, strict=True))
    console.print(
        f"wrote {len(merged)} records ({n_hyp} hypotheses; {per_sys} before merging) to {output}", highlight=False
    )
    missing = sum(1 for r in merged if r.extra.get("union", {}).get("missing"))
    if missing:
        warn(f"{missing} id(s) missing from some of the files (kept; extra.union.missing names the systems)")
    failed = [r.id for r in merged if not r.ok]
    if failed:
        warn(f"{len(failed)} id(s) failed in every file: {', '.join(failed[:5])}")
    print_union_oracle(merged, output.name)
