"""Rich tables the commands print (the numbers come from the library's result dataclasses)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from rescore.cli.console import pct


def comparison_table(title: str, c: Any) -> Table:
    """A rerank comparison (``RerankComparison``), one row per figure (narrow terminals)."""
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("utterances", str(c.utterances))
    t.add_row("1-best WER % [95 % CI]", f"{pct(c.before.rate)} [{pct(c.before.ci_low)}-{pct(c.before.ci_high)}]")
    t.add_row("reranked WER % [95 % CI]", f"{pct(c.after.rate)} [{pct(c.after.ci_low)}-{pct(c.after.ci_high)}]")
    t.add_row("n-best oracle WER %", pct(c.oracle))
    t.add_row("gap to the oracle closed", "n/a" if c.gap_closed != c.gap_closed else f"{100 * c.gap_closed:.1f} %")
    t.add_row("utterances better/worse/same", f"{c.better}/{c.worse}/{c.unchanged}")
    t.add_row("p (paired bootstrap, reranked not better)", f"{c.p_value:.3f}")
    return t
