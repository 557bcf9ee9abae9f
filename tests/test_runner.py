"""The record-stream runner and the registry: resume, failures as records, order, interruption, options.

The stages here are small fakes, to test the runner's logic alone; the real stages run through the same
runner in test_cli.py, test_rerank.py, test_correct.py and test_pipeline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescore.records import Hypothesis, NBest, read_nbest
from rescore.registry import Registry, RegistryError, make_recognizer, stages
from rescore.runner import LocalEngine, record_errors, run_stage


class Upper:
    """Upper-cases the first hypothesis; 'bad' texts fail as a record would; optional reversed output."""

    name = "upper"

    def __init__(self, batch_size: int | None = 2, reverse: bool = False, interrupt_after: int | None = None):
        self.batch_size = batch_size
        self.reverse = reverse
        self.interrupt_after = interrupt_after
        self.seen: list[list[str]] = []

    def options(self) -> dict:
        return {"reverse": self.reverse}

    def _one(self, r: NBest) -> None:
        if r.hypotheses[0].text == "bad":
            raise ValueError("cannot upper-case 'bad'")
        r.hypotheses[0].text = r.hypotheses[0].text.upper()

    def process(self, records: list[NBest]) -> list[NBest]:
        self.seen.append([r.id for r in records])
        if self.interrupt_after is not None and len(self.seen) > self.interrupt_after:
            raise KeyboardInterrupt
        out = record_errors(records, self._one, "upper", (ValueError,))
        return out[::-1] if self.reverse else out


def recs(*texts: str) -> list[NBest]:
    return [NBest(id=f"u{i}", hypotheses=[Hypothesis(t)]) for i, t in enumerate(texts)]


def test_order_failures_and_upstream_failures(tmp_path: Path) -> None:
    inputs = recs("a", "bad", "c", "d")
    inputs.append(NBest(id="gone", error="cannot decode"))
    stage = Upper(reverse=True)
    run = run_stage(stage, inputs, tmp_path / "o.jsonl")
    got = list(read_nbest(tmp_path / "o.jsonl"))
    assert [r.id for r in got] == ["gone", "u0", "u1", "u2", "u3"]  # upstream failure first, then input order
    assert [r.hypotheses[0].text for r in got[1:] if r.ok] == ["A", "C", "D"]
    assert run.failed == [("u1", "upper: cannot upper-case 'bad'")] and run.passed_on == [("gone", "cannot decode")]
    assert ["gone"] not in stage.seen and stage.seen == [["u0", "u1"], ["u2", "u3"]]
    assert all(r.timing["upper"] >= 0 for r in got[1:])
    assert run.complete and run.written == 5


def test_resume_keeps_successes_and_retries_failures(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    run_stage(Upper(), recs("a", "bad", "c"), out)
    stage = Upper()
    run = run_stage(stage, recs("a", "b", "c"), out)  # 'b' now succeeds
    assert run.resumed == 2 and stage.seen == [["u1"]]
    assert {r.id: r.hypotheses[0].text for r in read_nbest(out)} == {"u0": "A", "u2": "C", "u1": "B"}
    assert all(r.ok for r in read_nbest(out))


def test_interrupt_leaves_a_valid_file_and_a_rerun_finishes(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    run = run_stage(Upper(interrupt_after=1), recs("a", "b", "c", "d"), out)
    assert run.interrupted and not run.complete and run.written == 2
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["u0", "u1"]
    run = run_stage(Upper(), recs("a", "b", "c", "d"), out)
    assert run.complete and run.resumed == 2 and len(list(read_nbest(out))) == 4


def test_whole_input_stage_and_a_stage_that_loses_records(tmp_path: Path) -> None:
    stage = Upper(batch_size=None)
    run_stage(stage, recs("a", "b", "c"), tmp_path / "o.jsonl")
    assert stage.seen == [["u0", "u1", "u2"]]

    class Lossy(Upper):
        def process(self, records):
            return records[:-1]

    with pytest.raises(RuntimeError, match="missing"):
        list(LocalEngine().map(Lossy(), recs("a", "b")))


def test_record_errors_lets_bugs_through() -> None:
    def bug(r: NBest) -> None:
        raise TypeError("a bug, not the record's fault")

    with pytest.raises(TypeError):
        record_errors(recs("a"), bug, "x", (ValueError,))


def test_registry_names_aliases_and_options() -> None:
    reg = Registry("thing")

    def make_thing(size: int = 1, *, colour: str = "red") -> tuple[int, str]:
        return size, colour

    reg.register("thing", make_thing, aliases=("t",))
    assert reg.create("t", size=3) == (3, "red") and reg.names() == ["thing"]
    with pytest.raises(RegistryError, match="unknown thing 'nope': expected one of thing"):
        reg.create("nope")
    with pytest.raises(RegistryError, match=r"does not take shape \(it takes: colour, size\)"):
        reg.create("thing", shape="round")
    reg.register("lazy", "rescore.records:Hypothesis")
    assert reg.create("lazy", text="x").text == "x"


def test_real_backend_rejects_an_option_before_loading() -> None:
    with pytest.raises(RegistryError, match="recognizer backend 'ctranslate2' does not take bogus"):
        make_recognizer("ctranslate2", model="no-such-model", bogus=1)  # the model is never looked up
    assert {"transcribe", "rerank", "correct", "deep", "ctc-score"} <= set(stages.names()) or _load_stages()


def _load_stages() -> bool:
    import rescore.stages  # noqa: F401  (registers the stage classes)

    return {"transcribe", "rerank", "correct", "deep", "ctc-score"} <= set(stages.names())
