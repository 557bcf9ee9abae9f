"""``rescore import`` and ``rescore export``: other toolkits' n-best files in, rescore's results back out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rescore.cli.console import EXIT_FAILED_ITEMS, console, fail
from rescore.cli.records_io import read_records


def import_(
    fmt: Annotated[
        str, typer.Argument(metavar="FORMAT", help="hyporadise, nemo, espnet, kaldi, tsv, jsonl, or auto (sniff).")
    ],
    source: Annotated[Path, typer.Argument(metavar="FILE_OR_DIR", help="The n-best file (ESPnet: decode folder).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write.")],
    manifest: Annotated[Path | None, typer.Option(help="nemo: the manifest the beams were decoded from.")] = None,
    beam_size: Annotated[
        int | None, typer.Option(help="nemo: beams per utterance (default: lines / manifest entries).")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="References: a JSONL manifest (id, text) or a Kaldi-style text file.")
    ] = None,
    score_key: Annotated[
        str | None, typer.Option(help="nemo, espnet, tsv, jsonl: score key for the file's score (default am).")
    ] = None,
    ac_cost: Annotated[
        Path | None, typer.Option(help="kaldi: acoustic costs (nbest-to-linear), imported as am.")
    ] = None,
    lm_cost: Annotated[Path | None, typer.Option(help="kaldi: graph/LM costs, imported as lm:kaldi.")] = None,
) -> None:
    """Read another toolkit's n-best lists into rescore records (rank kept as the score 'rank')."""
    from rescore.io.formats import FormatError, import_records
    from rescore.records import write_nbest

    options = {
        "manifest": manifest,
        "beam_size": beam_size,
        "score_key": score_key,
        "ac_cost": ac_cost,
        "lm_cost": lm_cost,
    }
    try:
        records = import_records(fmt, source, reference=reference, **options)
    except FormatError as e:
        raise fail(str(e), EXIT_FAILED_ITEMS) from None
    except ValueError as e:
        raise fail(str(e)) from None
    try:
        n = write_nbest(output, records)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    n_hyp = sum(len(r.hypotheses) for r in records)
    refs = sum(r.reference is not None for r in records)
    keys = sorted({k for r in records for h in r.hypotheses for k in h.scores})
    console.print(
        f"wrote {n} records ({n_hyp} hypotheses, {refs} with a reference; scores: {', '.join(keys)}) to {output}",
        highlight=False,
    )


def export(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="hyporadise (JSON), tsv (id<TAB>text) or text.")],
    file: Annotated[Path, typer.Argument(help="n-best JSONL (or a file rescore reads by sniffing).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")],
    stage: Annotated[str, typer.Option(help="Text of: auto (latest), first-pass, rerank or correct.")] = "auto",
) -> None:
    """Write records out as HyPoradise JSON or plain text, with the text of a stage."""
    from rescore.io.formats import export_records

    records = read_records(file)
    try:
        n = export_records(fmt, records, output, stage=stage)
    except ValueError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    failed = sum(not r.ok for r in records)
    note = f" ({failed} failed record(s) left out)" if failed else ""
    console.print(f"wrote {n} utterances ({stage}) to {output}{note}", highlight=False)
