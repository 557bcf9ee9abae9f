"""Run summaries with and without references: no ``nan`` anywhere a person reads, strict JSON, what changed."""

import json
import re

import pytest
from rich.console import Console

from rescore.evaluate.report import RunSummary, StageSummary, render_html, summarize_stages, write_report
from rescore.evaluate.tables import compare_table, stage_table
from rescore.records import Hypothesis, NBest

TEXTS = {  # id: (n-best, reranked choice, corrected, accepted)
    "a": (["the cat sat on the mat", "the cat sat on a mat"], 1, "The cat sat on a mat.", True),
    "b": (["hello world", "hello word"], 0, "hello world", False),
    "c": (["one two three", "one to three"], 0, "one two three", None),  # no correction (e.g. skipped)
}
REFS = {"a": "the cat sat on a mat", "b": "hello world", "c": "one two three"}


def _stages(references: bool, fail: str | None = None) -> list[tuple[str, list[NBest]]]:
    def rec(i: str, chosen=None, corrected=None, correction=None, error=None) -> NBest:
        hyps = [Hypothesis(t) for t in TEXTS[i][0]]
        return NBest(
            id=i,
            duration=2.0,
            reference=REFS[i] if references else None,
            hypotheses=[] if error else hyps,
            chosen=chosen,
            corrected=corrected,
            correction=correction,
            timing={"rerank": 0.5, "correct": 1.0},
            error=error,
        )

    first = [rec(i) for i in TEXTS]
    rerank = [rec(i, c) for i, (_, c, _, _) in TEXTS.items()]
    correct = [
        rec(i, c, corr if ok is not None else None, None if ok is None else {"accepted": ok})
        if i != fail
        else rec(i, error="correct: boom")
        for i, (_, c, corr, ok) in TEXTS.items()
    ]
    return [("transcribe", first), ("rerank", rerank), ("correct", correct)]


def _no_nan(text: str) -> None:
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)  # base64 can spell "nan" by chance
    assert not re.search(r"\bnan\b", text, re.I), text


def _strict_json(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _rendered(table, width: int = 250) -> str:
    console = Console(record=True, width=width)
    console.print(table)
    return console.export_text()


def test_without_references_nothing_is_scored_and_changes_are_counted():
    sm = summarize_stages("unlabelled", _stages(references=False))
    assert (sm.scored, sm.references, sm.compared, sm.utterances) == (0, False, 3, 3)
    assert sm.oracle == [] and sm.audio_seconds == 6.0
    first, rerank, correct = sm.stages
    assert first.changed_vs_previous is None and first.accepted is None
    assert (rerank.changed_vs_previous, rerank.changed_vs_first, rerank.words_changed) == (1, 1, 1)  # "the" -> "a"
    # a: "the cat sat on a mat" -> "The cat sat on a mat." is two word edits (case and punctuation count)
    assert (correct.changed_vs_previous, correct.changed_vs_first, correct.words_changed) == (1, 1, 2)
    assert (correct.accepted, correct.abstained) == (1, 1)
    assert rerank.p_vs_first is None and rerank.gap_closed is None
    assert (rerank.seconds, correct.seconds) == (1.5, 3.0)


def test_report_files_without_references_have_no_nan(tmp_path):
    sm = summarize_stages("unlabelled", _stages(references=False))
    paths = write_report(tmp_path, sm)
    md = paths["markdown"].read_text()
    _no_nan(md)
    _no_nan(paths["html"].read_text())
    assert "nothing to score" in md and "| correct | 1 | 1 | 2 | 1 | 1 | 0 | 3.0 | 0.500 |" in md
    assert "WER %" not in md and "WER per stage" not in paths["html"].read_text()
    d = _strict_json(paths["summary"].read_text())
    assert d["scored"] == 0 and d["references"] is False and d["stages"][0]["wer"] is None
    assert d["stages"][2]["accepted"] == 1
    back = RunSummary.from_dict(d)
    assert back.stages[0].wer != back.stages[0].wer  # NaN again in memory
    assert back.stages[2].words_changed == 2 and back.compared == 3


def test_with_references_scores_and_still_shows_changes(tmp_path):
    sm = summarize_stages("labelled", _stages(references=True))
    assert sm.scored == 3 and sm.references
    first, rerank, correct = sm.stages
    assert first.wer == pytest.approx(1 / 9) and rerank.wer == 0.0 and rerank.better == 1  # "one two three" -> "123"
    assert rerank.changed_vs_first == 1 and correct.accepted == 1
    paths = write_report(tmp_path, sm)
    md = paths["markdown"].read_text()
    _no_nan(md)
    _no_nan(paths["html"].read_text())
    assert "| transcribe | 11.11 |" in md and "## What each stage changed" in md
    assert _strict_json(paths["summary"].read_text())["stages"][1]["wer"] == 0.0


def test_failed_utterance_is_left_out_of_the_comparison():
    sm = summarize_stages("f", _stages(references=False, fail="a"))
    correct = sm.stages[2]
    assert sm.compared == 2 and correct.failed == 1
    assert (correct.changed_vs_previous, correct.accepted, correct.abstained) == (0, 0, 1)


def test_references_that_all_failed_say_so(tmp_path):
    stages = [("transcribe", [NBest(id="x", reference="hi", error="cannot decode")])]
    sm = summarize_stages("f", stages)
    assert sm.scored == 0 and sm.references and sm.compared == 0
    md = write_report(tmp_path, sm)["markdown"].read_text()
    _no_nan(md)
    assert "No utterance with a reference went through every stage" in md


def test_stage_table_both_cases():
    unscored = _rendered(stage_table(summarize_stages("u", _stages(references=False))))
    _no_nan(unscored)
    assert "not scored" in unscored and "No reference transcripts" in unscored
    assert "vs first" in unscored and "abstained" in unscored and "WER" not in unscored.split("No reference")[0]
    narrow = _rendered(stage_table(summarize_stages("u", _stages(references=False))), width=80)
    assert "…" not in narrow  # no header cut to fit an 80-column terminal
    scored = _rendered(stage_table(summarize_stages("s", _stages(references=True))))
    _no_nan(scored)
    assert "WER %" in scored and "11.11" in scored and "n-best oracle WER at k=2" in scored


def test_compare_table_and_html_with_an_unscored_run():
    a = summarize_stages("labelled", _stages(references=True))
    b = summarize_stages("unlabelled", _stages(references=False))
    text = _rendered(compare_table([a, b]))
    _no_nan(text)
    assert "unlabelled (not scored)" in text and "11.11" in text
    _no_nan(render_html([a, b], "compared"))


def test_old_summary_json_still_reads():
    old = {
        "name": "old",
        "utterances": 1,
        "scored": 1,
        "audio_seconds": 1.0,
        "oracle": [0.1],
        "stages": [StageSummary("transcribe", 0.1, 0.0, 0.2, 0.05, 1, 0, 0, 10, 0.5).__dict__],
        "config": {},
        "wall_seconds": 1.0,
    }
    for k in ("changed_vs_previous", "changed_vs_first", "words_changed", "accepted", "abstained"):
        del old["stages"][0][k]
    sm = RunSummary.from_dict(old)
    assert sm.references and sm.stages[0].wer == 0.1 and sm.stages[0].words_changed is None


@pytest.mark.model
def test_real_run_over_audio_without_references(tiny_dir, tmp_path):
    """Whisper tiny.en and the smollm2 rerank on two real recordings that come without transcripts."""
    import shutil

    from rescore.pipeline import load_config, run_pipeline

    folder = tmp_path / "audio"
    folder.mkdir()
    for f in sorted((tiny_dir / "audio").glob("*.flac"))[:2]:
        shutil.copy(f, folder / f.name)
    cfg = load_config(input=str(folder), preset="fast", overrides={"output": str(tmp_path / "runs"), "name": "n"})
    _, sm = run_pipeline(cfg)
    assert (sm.scored, sm.references, sm.compared) == (0, False, 2)
    assert [s.stage for s in sm.stages] == ["transcribe", "rerank"] and sm.stages[1].changed_vs_first is not None
    run = tmp_path / "runs" / "n"
    _no_nan((run / "report.md").read_text())
    _no_nan((run / "report.html").read_text())
    assert _strict_json((run / "summary.json").read_text())["stages"][0]["wer"] is None
    _no_nan(_rendered(stage_table(sm)))
    # the final transcripts, the way Whisper's CLI writes them: one .txt per audio file and a TSV
    ids = sorted(f.stem for f in folder.glob("*.flac"))
    out = run / "transcripts"
    assert sorted(p.stem for p in out.glob("*.txt")) == ids
    rows = (out / "transcripts.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["id", "text"] and sorted(r.split("\t")[0] for r in rows[1:]) == ids
    assert all(len(r.split("\t")[1]) > 3 for r in rows[1:])


def test_per_utterance_table_names_what_each_stage_made_worse(tmp_path):
    from rescore.evaluate.diffs import render_rows, utterance_rows, word_diff
    from rescore.evaluate.report import summarize_stages, write_report
    from rescore.records import Hypothesis, NBest

    def record(uid: str, ref: str, hyps: list[str], chosen: int, corrected: str | None, why: str) -> NBest:
        r = NBest(id=uid, reference=ref, hypotheses=[Hypothesis(h) for h in hyps], chosen=chosen, duration=1.0)
        if corrected is not None:
            r.corrected = corrected
            r.correction = {"cleaned": corrected, "accepted": True, "reason": why}
        return r

    first = [record("a", "drained of men", ["drained of man", "drained of men"], 0, None, ""),
             record("b", "the tales", ["the tales"], 0, None, "")]  # fmt: skip
    rerank = [record("a", "drained of men", ["drained of man", "drained of men"], 1, None, ""),
              record("b", "the tales", ["the tales"], 0, None, "")]  # fmt: skip
    correct = [record("a", "drained of men", ["drained of man", "drained of men"], 1, "drained of men", "ok"),
               record("b", "the tales", ["the tales"], 0, "the tails", "ok")]  # fmt: skip
    stages = [("transcribe", first), ("rerank", rerank), ("correct", correct)]
    rows = utterance_rows(stages)
    assert [s.worse for s in rows[1].stages] == [False, False, True] and rows[0].stages[1].better
    assert rows[1].proposal == "the tails" and rows[1].verdict.startswith("taken")
    assert word_diff("the tales", "the tails") == "the <del>tales</del> <ins>tails</ins>"
    page = render_rows(rows)
    assert "made worse by correct (1)" in page and "made worse by rerank (0)" in page
    assert "data-worse='correct'" in page
    summary = summarize_stages("t", stages)
    corr = summary.stages[2]
    assert (corr.better_vs_previous, corr.worse_vs_previous, corr.changed_scored) == (0, 1, 1)
    assert summary.stages[1].better_vs_previous == 1 and summary.stages[1].worse_vs_previous == 0
    paths = write_report(tmp_path, summary, stages)
    html_text = paths["html"].read_text()
    assert "id='utts'" in html_text and "<del>tales</del>" in html_text
    assert "1/1 (100 %)" in paths["markdown"].read_text()  # the harm column: worse / changed
