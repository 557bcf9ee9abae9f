import json

import pytest

from rescore.records import Hypothesis, NBest, NBestWriter, RecordError, Window, read_nbest, write_nbest


def _rec(uid: str, **kw) -> NBest:
    hyps = [Hypothesis("a b", [1, 2], {"am": -1.0, "am_tokens": 2}), Hypothesis("a c", [1, 3], {"am": -2.0})]
    return NBest(id=uid, reference="a b", hypotheses=hyps, **kw)


def test_round_trip_keeps_unknown_fields(tmp_path):
    r = _rec("u1", windows=[Window(0.0, 30.0, [Hypothesis("x")])], timing={"transcribe": 0.5})
    d = r.to_dict()
    d["future_field"] = {"kept": True}
    back = NBest.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d
    assert back.hypotheses[1].scores["am"] == -2.0
    assert back.windows[0].hypotheses[0].text == "x"


def test_text_by_stage():
    r = _rec("u1")
    assert r.text() == "a b"
    r.chosen = 1
    assert r.text("first-pass") == "a b" and r.text("rerank") == "a c" and r.text() == "a c"
    r.corrected = "a d"
    assert r.text() == "a d" and r.text("rerank") == "a c"
    with pytest.raises(ValueError):
        r.text("bogus")


def test_bad_records_are_named(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(_rec("u1").to_json() + "\n" + '{"hypotheses": []}\n')
    with pytest.raises(RecordError, match=r"x.jsonl:2"):
        list(read_nbest(p))
    assert [r.id for r in read_nbest(p, strict=False)] == ["u1"]
    p.write_text(json.dumps({"id": "u", "hypotheses": [{"text": "a"}], "chosen": 3}) + "\n")
    with pytest.raises(RecordError, match="chosen"):
        list(read_nbest(p))


def test_writer_resumes_and_drops_failures_and_torn_tail(tmp_path):
    p = tmp_path / "out.jsonl"
    with NBestWriter(p) as w:
        w.write(_rec("u1"))
        w.write(NBest(id="u2", error="cannot decode"))
    with open(p, "a") as f:
        f.write(_rec("u3").to_json()[:40])  # an interrupted write
    w = NBestWriter(p)
    assert w.done == {"u1"}  # the failure and the torn line are retried
    w.write(_rec("u2"))
    w.close()
    assert [r.id for r in read_nbest(p)] == ["u1", "u2"]


def test_write_nbest_is_atomic(tmp_path):
    p = tmp_path / "o.jsonl"
    assert write_nbest(p, [_rec("a"), _rec("b")]) == 2
    assert not (tmp_path / "o.jsonl.tmp").exists()
    assert len(list(read_nbest(p))) == 2


def test_a_second_writer_on_one_file_is_refused_and_loses_nothing(tmp_path):
    from rescore.records import WriterBusyError

    p = tmp_path / "out.jsonl"
    with NBestWriter(p) as first:
        first.write(NBest(id="a", hypotheses=[Hypothesis("x")]))
        with pytest.raises(WriterBusyError, match="another writer"):
            NBestWriter(p)
        first.write(NBest(id="b", hypotheses=[Hypothesis("y")]))
    assert [r.id for r in read_nbest(p)] == ["a", "b"]
    with NBestWriter(p) as again:  # released at close
        assert again.done == {"a", "b"}
