"""The ``rescore`` command line: one module per command group, each command parses its options and calls
one library function; :mod:`rescore.cli.console` holds messages, progress bars and exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rescore.cli import ascore, correct, ctc, deep, io, merge, rerank, run, score, transcribe

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make speech recognition more accurate with language models.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show third-party progress bars, logs and warnings.")
    ] = False,
) -> None:
    """Make speech recognition more accurate with language models."""
    from rescore.io.quiet import quiet_third_party

    quiet_third_party(verbose=verbose)


app.command()(transcribe.transcribe)
app.command()(merge.merge)
app.command()(score.score)
app.command()(score.models)
app.command()(ascore.ascore)
app.command()(rerank.rerank)
app.command()(rerank.tune)
app.command()(run.run)
app.command()(run.compare)
app.command("import")(io.import_)
app.command("export")(io.export)
app.add_typer(correct.correct_app, name="correct")
app.add_typer(correct.prompts_app, name="prompts")
app.add_typer(ctc.ctc_app, name="ctc")
app.add_typer(deep.deep_app, name="deep")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
