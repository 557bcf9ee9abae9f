"""The results page (rescore.evaluate.results_page): named sections rewritten in place, the index first, and the
project's eval/RESULTS.md small, indexed and with every section dated and reproducible by a command."""

import re
from pathlib import Path

import pytest

from rescore.evaluate.results_page import index_markdown, put_section, sections, update_index, update_section

HEADER = "# Results\n\nThe header.\n"
PAGE = Path(__file__).resolve().parents[1] / "eval" / "RESULTS.md"


def _page(tmp_path: Path) -> Path:
    path = tmp_path / "RESULTS.md"
    update_section(path, "first", "### A run\n\n| x |\n", header=HEADER)
    update_section(path, "second", "plain first line\n\nmore", header=HEADER)
    update_section(path, "third", "### A run\n\nthe same title again", header=HEADER)
    return path


def test_sections_in_file_order_with_title_and_date(tmp_path: Path) -> None:
    text = _page(tmp_path).read_text()
    assert text.startswith(HEADER)
    found = sections(text)
    assert [s.name for s in found] == ["first", "second", "third"]
    assert [s.title for s in found] == ["A run", "plain first line", "A run"]
    assert all(len(s.written) == len("2026-12-03 10:00") for s in found)


def test_a_section_is_replaced_in_place_and_keeps_a_given_date() -> None:
    text = put_section(put_section("# R\n", "a", "one"), "b", "two")
    text = put_section(text, "a", "### new", written="2026-01-02 03:04")
    assert [s.name for s in sections(text)] == ["a", "b"]
    assert sections(text)[0].written == "2026-01-02 03:04" and "one" not in text


def test_index_goes_first_and_is_rewritten_in_place(tmp_path: Path) -> None:
    path = _page(tmp_path)
    update_index(path, {"runs": ["third", "first"]}, header=HEADER, command="make index")
    update_section(path, "fourth", "### Later", header=HEADER)
    update_index(path, {"runs": ["fourth"]}, header=HEADER, command="make index")
    text = path.read_text()
    assert text.startswith(HEADER.rstrip())
    assert text.count("<!-- begin index -->") == 1
    assert text.index("<!-- begin index -->") < text.index("<!-- begin first -->")
    index = text.split("<!-- begin index -->")[1].split("<!-- end index -->")[0]
    assert "| runs | `fourth` (" in index and "Every section, in file order (4)" in index
    assert "Written by `make index`" in index
    assert "Not in the table above: `first`, `second`, `third`." in index
    assert [s.name for s in sections(text)] == ["first", "second", "third", "fourth"]  # the index is not a section


def test_a_headline_naming_no_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gone"):
        index_markdown(sections(_page(tmp_path).read_text()), {"runs": ["first", "gone"]}, "make index")


def test_the_project_page_is_small_indexed_dated_and_says_how_each_figure_was_made() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert len(text.encode()) < 50_000
    index = text.split("<!-- begin index -->")[1].split("<!-- end index -->")[0]
    capability_rows = index.split("| capability | sections |")[1].split("\n\n")[0]
    named = set(re.findall(r"`([^`]+)` \(\d{4}-\d\d-\d\d\)", capability_rows))
    found = sections(text)
    assert named == {s.name for s in found}  # every section is some capability's, and the index names no stale one
    for s in found:
        body = text.split(f"<!-- begin {s.name} -->")[1].split(f"<!-- end {s.name} -->")[0]
        assert s.written, s.name
        assert s.name.endswith("-notes") or "Command: `" in body, s.name
