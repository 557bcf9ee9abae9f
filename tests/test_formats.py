"""Importers (one fixture per format, tests/fixtures/formats/README.md says where each layout comes from),
exporters, sniffing, bad input, and the text-only rerank path. Fast except the one real-LM test (slow)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rescore.cli import app
from rescore.evaluate.metrics import normalize
from rescore.evaluate.scoring import describe_features, features_present, score_records
from rescore.io.formats import FormatError, export_records, import_records, read_any_nbest, sniff
from rescore.records import NBest, read_nbest, write_nbest
from rescore.rerank.grid import tune
from rescore.rerank.ranker import RANK_KEY, Ranker, Weights, default_weights, rerank_iter
from rescore.score import TextScore

FIX = Path(__file__).parent / "fixtures" / "formats"
HYPORADISE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hyporadise"
runner = CliRunner()


def texts(r: NBest) -> list[str]:
    return [h.text for h in r.hypotheses]


def ranks(r: NBest) -> list[float]:
    return [h.scores["rank"] for h in r.hypotheses]


# ------------------------------------------------------------------------------------------- importers


def test_hyporadise_fixture_imports_ids_scores_as_am_norm_and_references() -> None:
    recs = import_records("hyporadise", FIX / "hyporadise.json")
    assert [r.id for r in recs] == ["i09067ss", "q0a0011s", "q0a0012s"]
    r = recs[1]
    assert texts(r)[0] == "show me flights from denver to boston" and ranks(r) == [0.0, 1.0, 2.0]
    assert [h.scores["am_norm"] for h in r.hypotheses] == [-0.1502, -0.2101, -0.2467]
    assert r.reference == "show me flights from denver to boston"
    assert r.recognizer == {"backend": "import", "format": "hyporadise", "source": str(FIX / "hyporadise.json")}


def test_hyporadise_without_ids_gets_stem_and_index_and_reads_score() -> None:
    recs = import_records("hyporadise", FIX / "hyporadise_noid.json")
    assert [r.id for r in recs] == ["hyporadise_noid-00000", "hyporadise_noid-00001"]
    assert recs[0].hypotheses[1].scores == {"rank": 1.0, "am_norm": -0.1960}


def test_nemo_beams_with_manifest() -> None:
    recs = import_records("nemo", FIX / "nemo/beams.tsv", manifest=FIX / "nemo/manifest.json")
    assert [r.id for r in recs] == ["q0a0011s", "q0a0012s"]
    assert texts(recs[1]) == [
        "what is the fare from atlanta to dallas",
        "what is the fair from atlanta to dallas",
        "what the fare from atlanta to dallas",
    ]
    assert [h.scores["am"] for h in recs[0].hypotheses] == [-4.125, -4.872, -5.310]
    assert recs[0].reference == "show me flights from denver to boston" and recs[0].duration == 2.31
    assert recs[0].recognizer["beam_size"] == 3
    same = import_records("nemo", FIX / "nemo/beams.tsv", manifest=FIX / "nemo/manifest.json", beam_size=3)
    assert [texts(r) for r in same] == [texts(r) for r in recs]


def test_espnet_decode_folder_reads_tensor_scores_and_short_lists() -> None:
    recs = import_records("espnet", FIX / "espnet/decode")
    assert [r.id for r in recs] == ["utt_a", "utt_b", "utt_c"]
    assert [h.scores["am"] for h in recs[1].hypotheses] == [-3.92, -4.101, -4.66]  # tensor(..., device=...)
    assert texts(recs[2]) == ["", "uh"] and ranks(recs[2]) == [0.0, 1.0]  # empty 1-best; only 2 in the beam


def test_espnet_job_folders_are_joined() -> None:
    recs = import_records("espnet", FIX / "espnet/jobs")
    assert [(r.id, len(r.hypotheses)) for r in recs] == [("utt_a", 2), ("utt_b", 2)]


def test_kaldi_nbest_ranked_by_suffix_with_negated_costs() -> None:
    recs = import_records(
        "kaldi", FIX / "kaldi/nbest.txt", ac_cost=FIX / "kaldi/ac_cost", lm_cost=FIX / "kaldi/lm_cost"
    )
    assert [r.id for r in recs] == ["q0a0011s", "fsh-0012-a"]  # dashes inside the utterance id survive
    assert texts(recs[1]) == ["what is the fare from atlanta to dallas", "what is the fair from atlanta to dallas"]
    assert recs[1].hypotheses[0].scores == {"rank": 0.0, "am": -1980.75, "lm:kaldi": -38.1}
    plain = import_records("kaldi", FIX / "kaldi/nbest.txt")
    assert set(plain[0].hypotheses[0].scores) == {"rank"}


def test_plain_tsv_and_jsonl() -> None:
    tsv = import_records("tsv", FIX / "plain.tsv")
    assert [(r.id, len(r.hypotheses)) for r in tsv] == [("q0a0011s", 2), ("q0a0012s", 1)]
    assert tsv[0].hypotheses[1].scores == {"rank": 1.0, "am": -4.872}
    assert import_records("tsv", FIX / "plain.tsv", score_key="am_norm")[0].hypotheses[0].scores["am_norm"] == -4.125
    js = import_records("jsonl", FIX / "plain.jsonl")
    assert [texts(r) for r in js] == [texts(r) for r in tsv]
    assert js[0].reference == "show me flights from denver to boston" and js[1].reference is None


def test_references_from_a_kaldi_text_file_replace_the_files_own(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("utt_a show me flights from denver to boston\n")
    recs = import_records("espnet", FIX / "espnet/decode", reference=tmp_path / "text")
    assert recs[0].reference == "show me flights from denver to boston" and recs[1].reference is None


# ------------------------------------------------------------------------------------ export, round trip


def test_hyporadise_round_trip_import_export_import(tmp_path: Path) -> None:
    first = import_records("hyporadise", FIX / "hyporadise_noid.json")
    out = tmp_path / "out.json"
    assert export_records("hyporadise", first, out, stage="first-pass") == 2
    items = json.loads(out.read_text())
    assert set(items[0]) == {"id", "input", "output", "am_score", "prediction"}
    again = import_records("hyporadise", out)
    assert [r.id for r in again] == [r.id for r in first]
    for a, b in zip(first, again, strict=True):
        assert [(h.text, h.scores) for h in a.hypotheses] == [(h.text, h.scores) for h in b.hypotheses]
        assert a.reference == b.reference
    assert again[0].extra["prediction"] == first[0].hypotheses[0].text


def test_export_uses_the_stage_text_and_cli_round_trip(tmp_path: Path) -> None:
    nb = tmp_path / "nb.jsonl"
    res = runner.invoke(app, ["import", "hyporadise", str(FIX / "hyporadise.json"), "-o", str(nb)])
    assert res.exit_code == 0, res.output
    recs = list(read_nbest(nb))
    recs[1].chosen = 2
    recs[2].corrected = "what is the fare from atlanta to dallas please"
    write_nbest(nb, recs)
    for stage, want in (
        ("first-pass", "show me flights from denver to boston"),
        ("auto", "show me flights from denver to austin"),
    ):
        out = tmp_path / f"{stage}.tsv"
        res = runner.invoke(app, ["export", "tsv", str(nb), "-o", str(out), "--stage", stage])
        assert res.exit_code == 0, res.output
        assert out.read_text().splitlines()[1] == f"q0a0011s\t{want}"
    res = runner.invoke(app, ["export", "text", str(nb), "-o", str(tmp_path / "t.txt")])
    assert (tmp_path / "t.txt").read_text().splitlines()[2] == "what is the fare from atlanta to dallas please"
    back = tmp_path / "back.json"
    assert runner.invoke(app, ["export", "hyporadise", str(nb), "-o", str(back)]).exit_code == 0
    res = runner.invoke(app, ["import", "auto", str(back), "-o", str(tmp_path / "again.jsonl")])
    assert res.exit_code == 0, res.output
    assert [texts(r) for r in read_nbest(tmp_path / "again.jsonl")] == [texts(r) for r in recs]
    assert runner.invoke(app, ["export", "kaldi", str(nb), "-o", str(tmp_path / "x")]).exit_code == 2


# ---------------------------------------------------------------------------------------------- sniffing


def test_sniffing_is_content_based_and_only_where_unambiguous(tmp_path: Path) -> None:
    assert sniff(FIX / "hyporadise.json") == "hyporadise"
    assert sniff(FIX / "espnet/decode") == "espnet" and sniff(FIX / "espnet/jobs") == "espnet"
    for ambiguous in ("nemo/beams.tsv", "kaldi/nbest.txt", "plain.tsv", "plain.jsonl"):
        assert sniff(FIX / ambiguous) is None, ambiguous
    ours = tmp_path / "ours.txt"  # the name does not matter, the content does
    write_nbest(ours, import_records("tsv", FIX / "plain.tsv"))
    assert sniff(ours) == "rescore"
    assert [r.id for r in read_any_nbest(ours)] == ["q0a0011s", "q0a0012s"]
    assert len(read_any_nbest(FIX / "hyporadise.json")) == 3
    assert len(read_any_nbest(FIX / "espnet/decode")) == 3


def test_score_reads_hyporadise_directly_with_its_normalizer_and_features() -> None:
    res = runner.invoke(app, ["score", str(FIX / "hyporadise.json")])
    assert res.exit_code == 0, res.output
    assert "hyporadise" in res.output and "features: am_norm, rank" in res.output


# --------------------------------------------------------------------------------------------- bad input


def bad(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


@pytest.mark.parametrize(
    ("fmt", "name", "body", "options", "message"),
    [
        (
            "hyporadise",
            "a.json",
            '[\n {"input": ["a"], "output": "a"},\n {"input": ["b"] "output": "b"}\n]',
            {},
            r"a\.json:3: not valid JSON",
        ),
        (
            "hyporadise",
            "a.json",
            '[{"id": "u1", "input": [], "output": "a"}]',
            {},
            r"a\.json: item 0 \(id u1\): empty hypothesis list",
        ),
        (
            "hyporadise",
            "a.json",
            '[{"id": "u1", "input": ["a"], "output": "a"}, {"id": "u1", "input": ["b"], "output": "b"}]',
            {},
            r"a\.json: duplicate id 'u1'",
        ),
        (
            "hyporadise",
            "a.json",
            '[{"id": "u1", "input": ["a", "b"], "output": "a", "score": [-1]}]',
            {},
            r"id u1\): 'score' must be a list of 2",
        ),
        ("tsv", "a.tsv", "u1\tone\nu1\ttwo\tthree\tfour\n", {}, r"a\.tsv:2: expected 'id<TAB>text'"),
        ("tsv", "a.tsv", "u1\tone\nu2\ttwo\nu1\tthree\n", {}, r"a\.tsv: duplicate id 'u1' \(line 3"),
        ("tsv", "a.tsv", "u1\tone\tnot-a-number\n", {}, r"a\.tsv:1: score 'not-a-number' is not a number"),
        ("jsonl", "a.jsonl", '{"id": "u1", "text": "a"}\n{"id": "u2", "text": \n', {}, r"a\.jsonl:2: not JSON"),
        (
            "nemo",
            "b.tsv",
            "a\t-1\nb\t-2\nc\t-3\n",
            {"beam_size": 2},
            r"b\.tsv: 3 lines is not a multiple of the beam size 2",
        ),
        ("nemo", "b.tsv", "a\t-1\nb\t-2\n", {}, r"b\.tsv: a NeMo beams file needs the manifest"),
        ("nemo", "b.tsv", "a\t-1\nb\t-2\n", {"manifest": "missing.json"}, r"missing\.json: no such file"),
        ("kaldi", "n.txt", "u1-1 a\nu1-2 b\nu1-1 c\n", {}, r"n\.txt:3: duplicate id 'u1-1'"),
        ("kaldi", "n.txt", "u1 a\n", {}, r"n\.txt:1: key 'u1' is not UTT-N"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_line_or_id(tmp_path, fmt, name, body, options, message) -> None:
    path = bad(tmp_path, name, body)
    opts = {k: (str(tmp_path / v) if k == "manifest" else v) for k, v in options.items()}
    with pytest.raises(FormatError, match=message) as e:
        import_records(fmt, path, **opts)
    assert "\n" not in str(e.value)


def test_nemo_duplicate_manifest_ids_and_espnet_duplicate_keys(tmp_path: Path) -> None:
    man = bad(
        tmp_path, "m.json", '{"audio_filepath": "a/x.wav", "text": "a"}\n{"audio_filepath": "b/x.wav", "text": "b"}\n'
    )
    beams = bad(tmp_path, "b.tsv", "a\t-1\nb\t-2\n")
    with pytest.raises(FormatError, match=r"m\.json: duplicate id 'x' \(manifest line 2"):
        import_records("nemo", beams, manifest=man)
    d = tmp_path / "decode"
    shutil.copytree(FIX / "espnet/decode", d)
    (d / "1best_recog/text").write_text("utt_a one\nutt_a two\n")
    with pytest.raises(FormatError, match=r"1best_recog/text:2: duplicate id 'utt_a'"):
        import_records("espnet", d)


def test_cli_bad_input_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    src = bad(tmp_path, "a.json", '[{"id": "u1", "input": [], "output": "a"}]')
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["import", "hyporadise", str(src), "-o", str(out)])
    assert res.exit_code == 1 and "empty hypothesis list" in res.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    out.write_text("kept\n")
    res = runner.invoke(
        app,
        [
            "import",
            "nemo",
            str(FIX / "nemo/beams.tsv"),
            "-o",
            str(out),
            "--beam-size",
            "4",
            "--manifest",
            str(FIX / "nemo/manifest.json"),
        ],
    )
    assert res.exit_code == 1 and "not a multiple of the beam size 4" in res.output
    assert out.read_text() == "kept\n"  # an existing output is left as it was
    res = runner.invoke(app, ["import", "kaldi", str(FIX / "kaldi/nbest.txt"), "-o", str(out), "--beam-size", "3"])
    assert res.exit_code == 2 and "takes no --beam-size" in res.output  # unusable arguments
    res = runner.invoke(app, ["import", "nosuch", str(src), "-o", str(out)])
    assert res.exit_code == 2


# ------------------------------------------------------------------------------------ normalizer, features


def test_hyporadise_normalizer_lowercases_and_deletes_punctuation() -> None:
    assert normalize("Re-Structuring, the $5 U.S. don't!", "hyporadise") == "restructuring the 5 us don't"
    report = score_records(import_records("hyporadise", FIX / "hyporadise.json"))
    assert "hyporadise" in [w.normalizer for w in report.wer]


def test_features_present_and_described() -> None:
    recs = import_records("tsv", FIX / "plain.tsv")
    assert describe_features(features_present(recs)) == "features: am, rank"
    for h in recs[0].hypotheses:
        del h.scores["am"]
        h.scores["lm:fake"] = -1.0
    line = describe_features(features_present(recs))
    assert line == "features: am (33 % of hypotheses), lm:fake (67 % of hypotheses), rank"
    text_only = import_records("kaldi", FIX / "kaldi/nbest.txt")
    assert describe_features(features_present(text_only)) == "features: rank (text-only: no acoustic score)"


# -------------------------------------------------------------------------------------- text-only rerank


class LengthScorer:
    """A fake LM: log P = minus the number of characters."""

    name = "fake"
    info: dict = {}

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[TextScore]:
        return [TextScore(-float(len(t)), len(t)) for _, t in pairs]


def test_rank_prior_keeps_the_first_hypothesis_without_other_evidence() -> None:
    recs = import_records("kaldi", FIX / "kaldi/nbest.txt")
    w = default_weights([], am="rank")
    assert w.scores == {"rank": -1.0}
    for r in recs:
        assert Ranker(w).rank(r).chosen == 0
    # an LM can overrule the prior: the fake prefers the shorter text, by one character (worth 2 rank steps)
    out = list(rerank_iter(recs, [LengthScorer()], Weights({"rank": -1.0, "lm:fake": 2.0}, 0.0)))
    assert out[0].chosen == 1 and out[1].chosen == 0  # "show me flight from ..."; a tie keeps the first


def test_tune_falls_back_to_the_rank_prior_for_text_only_lists() -> None:
    recs = import_records("hyporadise", FIX / "hyporadise.json")
    for r in recs:
        for h in r.hypotheses:
            del h.scores["am_norm"]
    res = tune(recs, [LengthScorer()], folds=0)
    assert res.weights.scores["rank"] == -1.0 and "lm:fake" in res.weights.scores
    fixed = tune(recs, keys=["lm:fake"], fixed={RANK_KEY: -1.0})
    assert fixed.weights.scores["rank"] == -1.0


def test_rerank_stage_uses_rank_weights_for_records_without_acoustic_scores() -> None:
    from rescore.stages import RerankOptions, RerankStage

    stage = RerankStage(RerankOptions(lm=["fake"]))
    stage._model = [LengthScorer()]
    text_only = import_records("kaldi", FIX / "kaldi/nbest.txt")
    acoustic = import_records("hyporadise", FIX / "hyporadise.json")
    mixed = [acoustic[0], text_only[0], acoustic[1], text_only[1]]
    out = stage.process(mixed)
    assert [r.id for r in out] == [r.id for r in mixed]
    assert all(r.ok for r in out), [r.error for r in out]
    assert "rank" in out[1].extra["rerank"]["weights"] and "am_norm" in out[0].extra["rerank"]["weights"]
    explicit = RerankStage(RerankOptions(lm=["fake"], am="am_norm"))  # asked for am_norm: no fallback
    explicit._model = [LengthScorer()]
    (passed, *_) = explicit.process(import_records("kaldi", FIX / "kaldi/nbest.txt"))
    assert passed.ok and passed.chosen is None and "no am_norm" in passed.extra["rerank"]["skipped"]


@pytest.mark.model
def test_text_only_rerank_on_a_hyporadise_slice_with_the_real_lm() -> None:
    """8 CHiME-4 test lists (no acoustic scores) through the rerank stage with smollm2-135m: the rank prior
    and the LM choose; a few seconds on the CPU."""
    from rescore.stages import RerankOptions, RerankStage

    path = HYPORADISE / "test_chime4.json"
    if not path.exists():
        pytest.skip("no ../shared/data/hyporadise")
    recs = import_records("hyporadise", path)[:8]
    out = RerankStage(RerankOptions(lm=["smollm2-135m"], threads=2)).process(recs)
    assert all(r.ok and r.chosen is not None for r in out), [r.error for r in out]
    assert all("lm:smollm2-135m" in h.scores and "total" in h.scores for r in out for h in r.hypotheses)
    assert out[0].extra["rerank"]["weights"].startswith("-1*rank")
    assert describe_features(features_present(out)) == "features: lm:smollm2-135m, rank (text-only: no acoustic score)"


def test_text_only_records_are_usable_for_tuning() -> None:
    from rescore.rerank.tuning import usable_for_tuning

    recs = import_records("hyporadise", FIX / "hyporadise.json")
    for h in recs[0].hypotheses:
        del h.scores["am_norm"]  # rank only: still usable (the rank prior)
    for h in recs[1].hypotheses:
        h.scores.clear()  # nothing to rank by
    keep, skipped = usable_for_tuning(recs, "dev")
    assert [r.id for r in keep] == ["i09067ss", "q0a0012s"]
    assert skipped == ["dev: q0a0011s skipped: a hypothesis has no 'am', 'am_norm' or 'rank' score"]
