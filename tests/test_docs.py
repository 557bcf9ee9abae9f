"""The README and docs stay true: their Python snippets run, their sizes stay readable, links resolve."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_readme_is_short_and_its_links_resolve():
    readme = ROOT / "README.md"
    assert readme.stat().st_size < 15_000
    for target in re.findall(r"\]\(([^)#]+)\)", readme.read_text(encoding="utf-8")):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


@pytest.mark.model
def test_library_snippets_run(tmp_path, monkeypatch, capsys):
    """README's snippet, then docs/library.md's (the second uses the first's ``records``), on data/tiny."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in python_blocks(ROOT / "README.md") + python_blocks(ROOT / "docs" / "library.md"):
        exec(compile(block, "snippet", "exec"), scope)  # noqa: S102 - the docs' own code
    out = capsys.readouterr().out
    assert re.search(r"WER \d+\.\d\d%", out), out
    assert (tmp_path / "reranked.jsonl").exists()
