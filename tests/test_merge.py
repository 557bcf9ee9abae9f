"""N-best union (rescore.recognize.union, `rescore merge`, `transcribe --model A --model B`) and `--distinct`."""

import json

import pytest
from typer.testing import CliRunner

from rescore.cli import app
from rescore.evaluate.metrics import normalize, oracle_curve
from rescore.recognize.union import (
    UNION_KEY,
    MergeError,
    UnionRecognizer,
    distinct_hypotheses,
    merge_records,
    system_list,
    union_oracle,
)
from rescore.records import Hypothesis, NBest, Window, read_nbest, write_nbest
from rescore.rerank.ranker import Ranker, default_weights
from rescore.stages import TranscribeOptions, TranscribeStage

runner = CliRunner()
REF = "he was not an ill disposed young man"


def hyp(text: str, am_norm: float, n: int = 8, **extra: float) -> Hypothesis:
    return Hypothesis(text, list(range(n)), {"am": am_norm * n, "am_tokens": float(n), "am_norm": am_norm, **extra})


def rec(rid: str, model: str, hyps: list[Hypothesis], reference: str | None = REF, **kw) -> NBest:
    return NBest(id=rid, audio=f"{rid}.flac", reference=reference, recognizer={"model": model}, hypotheses=hyps, **kw)


@pytest.fixture
def two_systems() -> tuple[list[NBest], list[NBest]]:
    a = [
        rec(
            "u1",
            "tiny",
            [
                hyp("He was not an ill-disposed young man.", -0.2, **{"lm:x": -10.0}),
                hyp("He was not an ill disposed young man.", -0.3),  # same after normalisation
                hyp("He was not an old disposed young man.", -0.5),
            ],
            timing={"transcribe": 0.5},
        ),
        rec("u2", "tiny", [hyp("Hello world.", -0.1)], reference="hello world"),
    ]
    b = [
        rec("u3", "base", [hyp("Only base.", -0.1)], reference="only base"),
        rec(
            "u1",
            "base",
            [
                hyp("he was not an ill disposed young man", -0.1, n=9),  # base's form scores best
                hyp("He was not a nil disposed young man.", -0.4, n=9),
            ],
            timing={"transcribe": 1.5},
        ),
    ]
    return a, b


def test_merge_keeps_every_hypothesis_and_every_score(two_systems):
    a, b = two_systems
    merged = merge_records([a, b])
    assert [r.id for r in merged] == ["u1", "u2", "u3"]  # first file's order, then the others'
    u1 = merged[0]
    assert u1.recognizer["backend"] == "union" and [s["name"] for s in u1.recognizer["systems"]] == ["tiny", "base"]
    assert u1.timing == {"transcribe": 2.0, "transcribe:tiny": 0.5, "transcribe:base": 1.5}
    # every normalised-distinct input hypothesis is there
    inputs = {normalize(h.text) for r in (a[0], b[1]) for h in r.hypotheses}
    assert {normalize(h.text) for h in u1.hypotheses} == inputs and len(u1.hypotheses) == len(inputs) == 3
    # every score of every input is somewhere: system-qualified on the hypothesis, or on a folded variant
    union = u1.extra[UNION_KEY]
    for system, r in (("tiny", a[0]), ("base", b[1])):
        for rank, h in enumerate(r.hypotheses):
            j = next(i for i, m in enumerate(u1.hypotheses) if normalize(m.text) == normalize(h.text))
            m, prov = u1.hypotheses[j], union["hypotheses"][j]
            assert system in prov["systems"]
            kept = prov["form"] == system and m.text == h.text and m.scores["am"] == h.scores["am"]
            folded = any(
                v["system"] == system and v["rank"] == rank and v["text"] == h.text and v["scores"] == h.scores
                for v in prov["variants"]
            )
            assert kept or folded, (system, h.text)
            assert m.scores[f"rank:{system}"] <= rank
    # system list recovered from the merged record, in the system's order
    assert [normalize(h.text) for h in system_list(u1, "tiny")] == [
        normalize(a[0].hypotheses[0].text),
        normalize(a[0].hypotheses[2].text),
    ]


def test_normalised_duplicates_merged_with_best_written_form(two_systems):
    a, b = two_systems
    u1 = merge_records([a, b], ["tiny", "base"])[0]
    first = u1.hypotheses[0]
    assert first.text == "he was not an ill disposed young man"  # base's am_norm -0.1 beats tiny's -0.2
    assert first.tokens == list(range(9)) and first.scores["am_norm"] == -0.1  # unqualified: the kept form's
    assert first.scores["rank:tiny"] == 0 and first.scores["rank:base"] == 0
    assert first.scores["am_norm:tiny"] == -0.2  # tiny's best form of it, not its rank-1 duplicate
    assert first.scores["am_norm:base"] == -0.1 and first.scores["am_tokens:base"] == 9.0
    assert "lm:x" not in first.scores  # the LM score belonged to tiny's written form: kept on its variant
    prov = u1.extra[UNION_KEY]["hypotheses"][0]
    assert prov["systems"] == ["tiny", "base"] and prov["form"] == "base"
    assert {v["text"] for v in prov["variants"]} == {
        "He was not an ill-disposed young man.",
        "He was not an ill disposed young man.",
    }
    # ordered by best rank then system: tiny's 1-best (merged), base's rank 1, tiny's rank 2
    assert [h.text for h in u1.hypotheses[1:]] == [
        "He was not a nil disposed young man.",
        "He was not an old disposed young man.",
    ]
    assert "rank:tiny" not in u1.hypotheses[1].scores and u1.hypotheses[2].scores["rank:tiny"] == 2


def test_missing_ids_and_failures_are_kept_and_named(two_systems):
    a, b = two_systems
    b.append(NBest(id="u2", error="cannot decode"))
    merged = {r.id: r for r in merge_records([a, b], ["tiny", "base"])}
    assert merged["u3"].extra[UNION_KEY]["missing"] == ["tiny"] and merged["u3"].hypotheses[0].text == "Only base."
    assert merged["u2"].ok and merged["u2"].extra[UNION_KEY]["failed"] == {"base": "cannot decode"}
    assert merged["u1"].extra[UNION_KEY]["missing"] == []
    both_failed = merge_records([[NBest(id="x", error="e1")], [NBest(id="x", error="e2")]], ["p", "q"])[0]
    assert not both_failed.ok and both_failed.error == "p: e1; q: e2"


def test_reference_disagreement_is_an_error_naming_the_id(two_systems):
    a, b = two_systems
    b[1].reference = "something else entirely"
    with pytest.raises(MergeError, match="u1"):
        merge_records([a, b])
    b[1].reference = None  # no reference is no disagreement
    assert merge_records([a, b])[0].reference == REF
    with pytest.raises(MergeError, match="u2: twice"):
        merge_records([a + [a[1]], b])
    with pytest.raises(MergeError, match="distinct"):
        merge_records([a, b], ["same", "same"])


def test_rerank_default_weights_work_on_a_union(two_systems):
    a, b = two_systems
    for r in merge_records([a, b]):
        Ranker(default_weights([])).rank(r)  # every hypothesis has an unqualified am_norm
        assert r.chosen is not None


def test_windows_merged_when_they_coincide_else_dropped():
    def long(model, texts, bounds):
        ws = [
            Window(s, e, [hyp(t, -0.1 * (k + 1)) for k, t in enumerate(ts)])
            for (s, e), ts in zip(bounds, texts, strict=True)
        ]
        return rec("L", model, [hyp(" ".join(ts[0] for ts in texts), -0.2)], windows=ws)

    a = long("tiny", [["One.", "one"], ["Two."]], [(0.0, 29.0), (29.0, 40.0)])
    b = long("base", [["one", "Won."], ["two", "Too."]], [(0.0, 29.01), (29.01, 40.0)])
    m = merge_records([[a], [b]])[0]
    assert [len(w.hypotheses) for w in m.windows] == [2, 2]
    assert m.windows[0].hypotheses[0].scores["rank:base"] == 0 and "windows" in m.extra[UNION_KEY]
    c = long("base", [["one"], ["two"]], [(0.0, 25.0), (25.0, 40.0)])
    m = merge_records([[a], [c]])[0]
    assert m.windows == [] and "differ" in m.extra[UNION_KEY]["windows_dropped"]


def test_union_oracle_at_most_each_systems(two_systems):
    a, b = two_systems
    o = union_oracle(merge_records([a, b]))
    assert o.utterances == 1 and o.excluded == 2  # u2 and u3 are not in both systems
    assert o.union_oracle <= min(o.oracle.values())
    assert o.oracle["tiny"] == pytest.approx(oracle_curve([REF], [[h.text for h in a[0].hypotheses]])[-1])
    with pytest.raises(ValueError, match="no merged record"):
        union_oracle(a)


def test_distinct_hypotheses():
    hs = [hyp("A cat.", -0.1), hyp("a cat", -0.2), hyp("A cat!", -0.3), hyp("A hat.", -0.4), hyp("The cat.", -0.5)]
    kept, read = distinct_hypotheses(hs, 2)
    assert [h.text for h in kept] == ["A cat.", "A hat."] and read == 4
    kept, read = distinct_hypotheses(hs, 8)
    assert len(kept) == 3 and read == 5


def test_transcribe_options_one_or_several_models():
    assert TranscribeOptions(model=["whisper-base"]).model == "whisper-base"  # same run (and cache) as a string
    one = TranscribeOptions(model=["whisper-base"])
    assert one.model_dump() == TranscribeOptions(model="whisper-base").model_dump()
    o = TranscribeOptions(model=["whisper-tiny.en", "whisper-base"], nbest=4)
    assert o.models == ["whisper-tiny.en", "whisper-base"]
    assert o.recognizer_options("whisper-base")["model"] == "whisper-base"
    assert o.recognizer_options()["model"] == "whisper-tiny.en" and o.recognizer_options()["nbest"] == 4
    assert TranscribeOptions().models == [None] and "model" not in TranscribeOptions().recognizer_options()
    with pytest.raises(ValueError, match="twice"):
        TranscribeOptions(model=["whisper-base", "whisper-base"])
    assert "distinct" not in TranscribeStage(TranscribeOptions()).options()  # old cached stage files still match
    assert TranscribeStage(TranscribeOptions(distinct=True)).options()["distinct"] is True
    with pytest.raises(ValueError):
        UnionRecognizer([object()])


def test_merge_command(two_systems, tmp_path):
    a, b = two_systems
    write_nbest(tmp_path / "a.jsonl", a)
    write_nbest(tmp_path / "b.jsonl", b)
    out = tmp_path / "u.jsonl"
    args = ["merge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "union" in res.output and "oracle" in res.output and "missing from some" in res.output
    merged = list(read_nbest(out))
    assert [r.id for r in merged] == ["u1", "u2", "u3"] and "am:base" in merged[0].hypotheses[0].scores
    res = runner.invoke(app, [*args, "--name", "t", "--name", "b"])
    assert res.exit_code == 0 and "rank:t" in json.loads(out.read_text().splitlines()[0])["hypotheses"][0]["scores"]
    assert runner.invoke(app, [*args, "--name", "t"]).exit_code == 2
    b[1].reference = "another text"
    write_nbest(tmp_path / "b.jsonl", b)
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "u1" in res.output and "disagree" in res.output


# ---------------------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def tiny_utts(tiny_manifest):
    from rescore.io.datasets import load_dataset

    return load_dataset(tiny_manifest).utterances[:3]


@pytest.mark.model
def test_union_stage_real_models(tiny_utts):
    from rescore.stages import utterance_record

    stage = TranscribeStage(TranscribeOptions(model=["whisper-tiny.en", "whisper-base"], device="cpu", nbest=4))
    merged = stage.process([utterance_record(u) for u in tiny_utts])
    assert [r.id for r in merged] == [u.id for u in tiny_utts] and all(r.ok for r in merged)
    assert stage.info["backend"] == "union"
    o = union_oracle(merged)
    assert o.utterances == 3 and o.union_oracle <= min(o.oracle.values())
    for r in merged:
        for h in r.hypotheses:
            assert any(f"rank:{s}" in h.scores for s in ("whisper-tiny.en", "whisper-base"))
            assert {"am", "am_norm", "am_tokens"} <= set(h.scores)
        assert len({normalize(h.text) for h in r.hypotheses}) == len(r.hypotheses)


@pytest.mark.model
def test_distinct_gives_n_normalised_distinct_hypotheses(tiny_utts):
    from rescore.registry import make_recognizer

    plain = make_recognizer("ctranslate2", model="whisper-tiny.en", device="cpu", nbest=8, beam_size=8)
    wide = make_recognizer("ctranslate2", model="whisper-tiny.en", device="cpu", nbest=8, beam_size=8, distinct=True)
    assert wide.beam_size == 16 and wide.num_hypotheses == 64 and wide.patience == 4.0 and wide.info["distinct"]
    before = list(plain.recognize(tiny_utts))
    after = list(wide.recognize(tiny_utts))
    for p, d in zip(before, after, strict=True):
        # a wider beam searched longer: the 1-best is as good or better under the model's own score
        assert d.hypotheses[0].scores["am_norm"] >= p.hypotheses[0].scores["am_norm"] - 1e-4, d.id
        norms = [normalize(h.text) for h in d.hypotheses]
        assert len(d.hypotheses) == 8 and len(set(norms)) == 8, d.id
        assert d.extra["distinct"]["found"] == [8] and 8 <= d.extra["distinct"]["read"][0] <= 64
        assert len({normalize(h.text) for h in p.hypotheses}) <= 8
        ranked = [h.scores["am_norm"] for h in d.hypotheses]
        assert ranked == sorted(ranked, reverse=True)
