"""Acoustic scoring: the cost of teacher-forced scoring against the scoring model's own first pass, and agreement.

    python -m eval.bench_ascore [--set librispeech-dev] [--limit 40] [--chunk 8] [--ct2-subset 8]

1. Speed: whisper-tiny.en's 8-best of the first ``--limit`` utterances scored with whisper-base (``rescore ascore``'s
   ``WhisperScorer``) against whisper-base's own first pass (beam 8, 8 hypotheses) over the same audio, alternating
   chunk by chunk (ABBA) in one process so that the shared machine's load hits both alike; the ratio of their summed
   times in wall and CPU time, with the scorer's encoder share (the ratio when the first pass' encoder output is
   reused).
2. Agreement: tiny.en scoring its own hypotheses against the ``am`` its beam search reported (mean absolute
   difference per token, end token included), for the default (torch) method and, on a subset, CTranslate2's forced
   decoding (``method="ct2"``).
3. For orientation, the WER of tiny.en's 8-best picked by whisper-base's per-token score.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from eval.common import Clock, command, dataset, first_pass, load
from eval.results import add_publish_options, publish
from rescore.evaluate.scoring import score_records
from rescore.records import NBest
from rescore.score.acoustic import WhisperScorer, score_keys


def copy(records: list[NBest]) -> list[NBest]:
    return [NBest.from_dict(r.to_dict()) for r in records]


def agreement(records: list[NBest], model: str) -> np.ndarray:
    """Per hypothesis: (teacher-forced score - the recognizer's ``am``) / tokens."""
    am, n = score_keys(model)
    return np.array(
        [(h.scores[am] - h.scores["am"]) / h.scores[n] for r in records for h in r.hypotheses if am in h.scores]
    )


def stats(x: np.ndarray) -> str:
    a = np.abs(x)
    return (
        f"mean |diff| {a.mean():.4f}, median {np.median(a):.4f}, 95th percentile {np.percentile(a, 95):.4f}, "
        f"max {a.max():.4f}, mean signed {x.mean():+.4f} ({len(x)} hypotheses)"
    )


def wer(records: list[NBest], stage: str = "auto") -> float:
    return score_records(records, stage=stage).rate()


def run(args: argparse.Namespace) -> str:
    load0 = load()
    ds = dataset(args.set)
    utts = ds.utterances[: args.limit]
    tiny_records = list(first_pass("whisper-tiny.en").recognize(utts))
    base = first_pass("whisper-base")
    audio = sum(r.duration or 0 for r in tiny_records if r.ok)
    scorer = WhisperScorer("whisper-base", device="cpu")
    enc = Clock()  # the scorer's encoder time: what reusing the first pass' encoder output would save
    encode = scorer.encode

    def timed_encode(mels):  # noqa: ANN001, ANN202
        with enc:
            return encode(mels)

    scorer.encode = timed_encode  # type: ignore[method-assign]
    first, scoring = Clock(), Clock()
    scored: list[NBest] = []
    base_records: list[NBest] = []
    for k, i in enumerate(range(0, len(utts), args.chunk)):
        chunk, recs = utts[i : i + args.chunk], copy(tiny_records[i : i + args.chunk])
        for what in ("first", "score") if k % 2 == 0 else ("score", "first"):
            if what == "first":
                with first:
                    base_records += list(base.recognize(chunk))
            else:
                with scoring:
                    scored += scorer.score(recs)
        print(f"  {i + len(chunk)}/{len(utts)}: first pass {first.wall:.1f} s, scoring {scoring.wall:.1f} s")

    own_scorer = WhisperScorer("whisper-tiny.en", device="cpu")
    with Clock() as t_own:
        own = own_scorer.score(copy(tiny_records))
    d = agreement(own, "whisper-tiny.en")
    am, n = score_keys("whisper-tiny.en")
    worst = sorted(
        (
            (abs(h.scores[am] - h.scores["am"]) / h.scores[n], r.id, h)
            for r in own
            for h in r.hypotheses
            if am in h.scores
        ),
        key=lambda x: -x[0],
    )[:3]
    ct2 = WhisperScorer("whisper-tiny.en", device="cpu", method="ct2")
    with Clock() as t_ct2:
        d_ct2 = agreement(ct2.score(copy(tiny_records[: args.ct2_subset])), "whisper-tiny.en")
    d_torch_sub = agreement(own[: args.ct2_subset], "whisper-tiny.en")
    am, n = score_keys("whisper-base")
    for r in scored:
        if r.hypotheses and all(am in h.scores for h in r.hypotheses):
            r.chosen = max(
                range(len(r.hypotheses)), key=lambda j: r.hypotheses[j].scores[am] / r.hypotheses[j].scores[n]
            )
    reuse = Clock()
    reuse.wall, reuse.cpu = scoring.wall - enc.wall, scoring.cpu - enc.cpu
    rows = [
        ("whisper-base first pass", first),
        (f"scoring {sum(len(r.hypotheses) for r in scored)} hypotheses with whisper-base", scoring),
        ("of which the encoder", enc),
        ("scoring, the first pass' encoder output reused", reuse),
    ]
    lines = [
        f"### Acoustic scoring (teacher forcing) on {ds.name}",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Reported on {ds.name}, first {len(utts)} utterances ({audio / 60:.1f} min); nothing fitted. CPU, CTranslate2 "
        "int8, the scorer's PyTorch decoder on 1 thread.",
        "",
        "**Speed**: whisper-tiny.en's 8-best scored with whisper-base, against whisper-base's own first pass (beam 8, "
        f"8 hypotheses) over the same audio, alternating chunks of {args.chunk} utterances (ABBA); target: at most "
        "0.5.",
        "",
        "| | wall s | CPU s | ratio wall | ratio CPU |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {c.wall:.1f} | {c.cpu:.1f} | {c.wall / first.wall:.2f} | {c.cpu / first.cpu:.2f} |"
            for name, c in rows
        ),
        "",
        "**Agreement** of teacher-forced scores with the `am` tiny.en's beam search reported, tiny.en scoring its own "
        "8-best, per token (end token included):",
        "",
        f"- method torch (default; float32 decoder on the int8 encoder output): {stats(d)}; {t_own.wall:.1f} s.",
        f"- method ct2 (CTranslate2 int8 forced decoding), first {args.ct2_subset} utterances: {stats(d_ct2)}; "
        f"{t_ct2.wall:.1f} s. The torch method on the same utterances: mean |diff| {np.abs(d_torch_sub).mean():.4f}.",
        "- Largest differences (per token): "
        + "; ".join(f"{x:.3f} ({rid}, {h.scores['am_tokens']:.0f} tokens: {h.text[:60]!r})" for x, rid, h in worst),
        "",
        f"**For orientation** (Whisper normalizer, these {len(utts)} utterances): tiny.en 1-best WER "
        f"{100 * wer(tiny_records):.2f} %, tiny.en's 8-best picked by whisper-base's per-token score "
        f"{100 * wer(scored, 'rerank'):.2f} %, whisper-base 1-best {100 * wer(base_records):.2f} %. Load at start / "
        f"end: {load0:.1f} / {load():.1f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="librispeech-dev", help="a set of ../shared/data, or a path")
    ap.add_argument("--limit", type=int, default=40, help="first N utterances of the set")
    ap.add_argument("--chunk", type=int, default=8, help="utterances per alternation of first pass and scoring")
    ap.add_argument("--ct2-subset", type=int, default=8, help="utterances for the agreement of method=ct2")
    add_publish_options(ap)
    args = ap.parse_args(argv)
    args.cmd = command("bench_ascore", argv)
    publish(run(args), args.section or f"ascore-{dataset(args.set).name}", write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
