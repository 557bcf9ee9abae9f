"""eval/results.py's index of RESULTS.md: every section listed with its date, placed first, rewritten in place."""

from pathlib import Path

import pytest

from eval.results import HEADER, RESULTS, index_markdown, sections, update_index, update_section


def _results(tmp_path: Path) -> Path:
    path = tmp_path / "RESULTS.md"
    update_section("first", "### A run\n\n| x |\n", path)
    update_section("second", "plain first line\n\nmore", path)
    update_section("third", "### A run\n\nthe same title again", path)
    return path


def test_sections_in_file_order_with_title_and_date(tmp_path: Path) -> None:
    found = sections(_results(tmp_path).read_text())
    assert [s.name for s in found] == ["first", "second", "third"]
    assert [s.title for s in found] == ["A run", "plain first line", "A run"]
    assert all(len(s.written) == len("2026-12-03 10:00") for s in found)


def test_index_goes_first_and_is_rewritten_in_place(tmp_path: Path) -> None:
    path = _results(tmp_path)
    update_index(path, {"runs": ["third", "first"]})
    update_section("fourth", "### Later", path)
    update_index(path, {"runs": ["fourth"]})
    text = path.read_text()
    assert text.startswith(HEADER.rstrip())
    assert text.count("<!-- begin index -->") == 1
    assert text.index("<!-- begin index -->") < text.index("<!-- begin first -->")
    index = text.split("<!-- begin index -->")[1].split("<!-- end index -->")[0]
    assert "| runs | `fourth` (" in index and "Every section, in file order (4)" in index
    assert [s.name for s in sections(text)] == ["first", "second", "third", "fourth"]  # the index is not a section


def test_a_headline_naming_no_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gone"):
        index_markdown(sections(_results(tmp_path).read_text()), {"runs": ["first", "gone"]})


def test_the_project_index_names_only_sections_that_exist() -> None:
    index_markdown(sections(RESULTS.read_text()))  # raises on a renamed or dropped section
