"""The real LM scorers (smollm2-135m from its installed GGUF): ranking, batching, backends, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rescore.cli import app
from rescore.records import read_nbest
from rescore.registry import make_scorer
from rescore.score import LMLoadError, LMScorer

pytestmark = pytest.mark.model

PAIRS = [  # (correct, an ASR corruption of it)
    ("He was not an ill disposed young man.", "He was knot and ill disposed young man."),
    ("The quick brown fox jumps over the lazy dog.", "The quick round fox jump over the lazy dog."),
    ("I would like a cup of tea, please.", "I would like a cup of tee, police."),
    ("She sells sea shells by the sea shore.", "She sells see shells buy the sea sure."),
]


@pytest.fixture(scope="module")
def hf() -> LMScorer:
    return make_scorer("smollm2-135m", "hf", threads=2)


@pytest.fixture(scope="module")
def llama() -> LMScorer:
    return make_scorer("smollm2-135m", "llamacpp", threads=2)


def test_ranks_correct_sentence_above_its_asr_corruption(hf) -> None:
    scores = hf.score([t for p in PAIRS for t in p])
    for i, (good, bad) in enumerate(PAIRS):
        assert scores[2 * i] > scores[2 * i + 1] + 2.0, (good, bad, scores[2 * i : 2 * i + 2])


def test_batched_scores_equal_one_at_a_time(hf) -> None:
    texts = [t for p in PAIRS for t in p] + [
        "Yes.",
        "A much longer sentence, with commas, that pads the batch quite a bit more.",
    ]
    texts += ["He was not an ill", "He was not"]  # shared beginnings: nodes of the prefix tree
    for ctx in ("", "A transcript of an English audiobook."):
        naive = hf.score_unbatched([hf.encode(ctx, t) for t in texts])
        for tree in (True, False):
            hf.tree = tree
            assert hf.score(texts, context=ctx) == pytest.approx(naive, abs=2e-3)
    hf.tree = True


def test_context_conditions_the_score(hf) -> None:
    text = "G M E F three nine"
    plain = hf.score([text])[0]
    prompted = hf.score([text], context="Spelled letters and digits: A B C one two three.")[0]
    assert prompted > plain


def test_backends_agree_within_quantization_noise(hf, llama) -> None:
    texts = [t for p in PAIRS for t in p] + ["Café au lait, s'il vous plaît: 東京"]
    for t in texts:
        assert hf._tokenize(t) == llama._tokenize(t)
    assert (hf.start_id, hf.end_id) == (llama.start_id, llama.end_id)
    for ctx in ("", "Read aloud:"):
        a, b = hf.score(texts, context=ctx), llama.score(texts, context=ctx)
        for x, y in zip(a, b, strict=True):
            assert abs(x - y) <= 0.5 + 0.03 * abs(x), (a, b)
    # the ranking of a correct sentence over its corruption is the same
    assert all((a[2 * i] > a[2 * i + 1]) == (b[2 * i] > b[2 * i + 1]) for i in range(len(PAIRS)))


def test_bad_input_empty_long_nonascii(hf, llama) -> None:
    warnings: list[str] = []
    for s in (hf, llama):
        s.warn = warnings.append
        long = " ".join(["word"] * 400)
        scores = s.score_pairs([("", ""), ("", long), ("", "naïve café — 東京 🎉"), ("", "  ")])
        assert scores[0].tokens == 1 and scores[0].logprob < 0  # the end token alone: not free
        assert scores[3].logprob == scores[0].logprob
        assert scores[1].truncated and scores[1].tokens == s.max_tokens
        assert scores[2].logprob < 0 and scores[2].tokens > 5
    assert len(warnings) == 2 and all("truncated to 256" in w for w in warnings)


def test_unknown_model_and_backend_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(LMLoadError, match="no-such-model"):
        make_scorer("no-such-model", "hf")
    with pytest.raises(LMLoadError, match="no .gguf"):
        make_scorer(str(tmp_path), "llamacpp")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(LMLoadError, match="broken.gguf"):
        make_scorer(str(bad), "llamacpp")
    with pytest.raises(ValueError, match="unknown LM backend"):
        make_scorer("smollm2-135m", "onnx")


def test_cli_transcribe_rerank_score_on_tiny(tmp_path: Path, tiny_manifest: Path) -> None:
    runner = CliRunner()
    nb = tmp_path / "tiny.jsonl"
    res = runner.invoke(
        app, ["transcribe", str(tiny_manifest), "-o", str(nb), "--limit", "4", "--nbest", "4", "--beam-size", "4"]
    )
    assert res.exit_code == 0, res.output
    with nb.open("a") as f:  # a record whose hypotheses lack scores: named once, passed through, the rest goes on
        f.write(json.dumps({"id": "no-scores", "reference": "x", "hypotheses": [{"text": "hello"}]}) + "\n")
    out = tmp_path / "rr.jsonl"
    res = runner.invoke(app, ["rerank", str(nb), "-o", str(out), "--lm-weight", "0.2", "--length-bonus", "1.0"])
    assert res.exit_code == 0 and res.output.count("no-scores: hypothesis 0 has no am_norm score") == 1, res.output
    recs = {r.id: r for r in read_nbest(out)}
    assert len(recs) == 5 and recs["no-scores"].ok and recs["no-scores"].text("rerank") == "hello"
    assert "has no am_norm" in recs["no-scores"].extra["rerank"]["skipped"]
    good = [r for r in recs.values() if "skipped" not in r.extra["rerank"]]
    assert len(good) == 4
    for r in good:
        assert r.chosen is not None
        assert all("lm:smollm2-135m" in h.scores and "total" in h.scores for h in r.hypotheses)
        assert r.hypotheses[r.chosen].scores["total"] == max(h.scores["total"] for h in r.hypotheses)
    res = runner.invoke(app, ["score", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["rerank"]["utterances"] == 5  # the passed-through one too
