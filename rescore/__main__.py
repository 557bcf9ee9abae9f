"""``python -m rescore``: the same command line as ``rescore``."""

from rescore.cli import app

app(prog_name="rescore")
