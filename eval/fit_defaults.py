"""Fit the default rerank weights of ``rescore.rerank.ranker.default_weights`` (``am_norm`` form) on training sets only.

The per-token default (``am_norm`` + LM weight + length bonus) is what ``rescore rerank`` and the ``default``
preset use without a tuned config. It is fitted here on seeded samples of an4-train, arctic-cathy and
speechocean-train (tiny.en 8-best, smollm2-135m, Whisper normalizer), with 5-fold cross-validation there,
then checked on librispeech-dev and an4-test, which it never saw.

    python -m eval.fit_defaults --per-set 80
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np

from eval.bench_learned import nbest_of, sample_ids
from eval.results import update_section
from rescore.evaluate.metrics import edit_counts, normalize, paired_bootstrap
from rescore.records import NBest
from rescore.rerank.grid import tune
from rescore.rerank.ranker import LENGTH_GRID, Ranker, Weights, default_weights, score_nbest
from rescore.score.hf import HFScorer

TRAIN = ("an4-train", "arctic-cathy", "speechocean-train")
REPORT = ("librispeech-dev", "an4-test")
LM = "lm:smollm2-135m"


def wer(records: list[NBest], weights: Weights | None, ratio: float = 0.0) -> tuple[float, list[int], list[int]]:
    refs = [normalize(r.reference or "") for r in records]
    if weights is not None:
        for r in records:
            Ranker(weights, min_length_ratio=ratio).rank(r)
    hyps = [normalize(r.hypotheses[(r.chosen or 0) if weights is not None else 0].text) for r in records]
    c = edit_counts(refs, hyps)
    return c.rate(), list(c.errors), list(c.ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-set", type=int, default=80)
    ap.add_argument("--report-n", type=int, default=110)
    ap.add_argument(
        "--min-length-bonus",
        type=float,
        default=None,
        help="search the length bonus only from here up (0: no negative bonus, which short training utterances"
        " teach and which truncates long ones)",
    )
    args = ap.parse_args()
    scorer = HFScorer("smollm2-135m", threads=1)
    train: list[NBest] = []
    for s in TRAIN:
        train += [r for r in nbest_of(s, "whisper-tiny.en", sample_ids(s, args.per_set)) if r.ok and r.hypotheses]
    score_nbest(train, scorer)
    grid = LENGTH_GRID if args.min_length_bonus is None else [x for x in LENGTH_GRID if x >= args.min_length_bonus]
    fits: dict[str, Weights] = {"old am_norm default (fitted on librispeech-dev)": default_weights([LM])}
    lines = [
        f"`{' '.join(['python -m eval.fit_defaults', *map(shlex.quote, sys.argv[1:])])}`",
        "",
        f"Fitted on {len(train)} training utterances (seeded samples of {args.per_set} from each of "
        f"{', '.join(TRAIN)}; tiny.en 8-best, smollm2-135m; length bonus searched from {min(grid):g} up), each "
        "acoustic form with its weight fixed at 1:",
        "",
    ]
    for form in ("am_norm", "am"):
        fit = tune(train, keys=[LM], fixed={form: 1.0}, folds=5, length_grid=grid)
        cv = fit.cv.to_dict() if fit.cv else {}
        fits[f"{form} fitted on training sets"] = fit.weights
        lines.append(
            f"- `{form}`: LM weight {fit.weights.scores[LM]:g}, length bonus {fit.weights.length_bonus:g} per word; "
            f"5-fold CV there {cv.get('before', {}).get('rate', float('nan')) * 100:.2f} -> "
            f"{cv.get('after', {}).get('rate', float('nan')) * 100:.2f} % ({cv.get('better')} better, "
            f"{cv.get('worse')} worse)"
        )
    lines += [
        "",
        "Report sets (never fitted on); truncation guard 0.5 = a hypothesis with fewer than half the words of the"
        " recognizer's first is never chosen:",
        "",
        "| set | utterances | 1-best WER % | weights | guard | WER % | better/worse vs 1-best | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in REPORT:
        recs = [r for r in nbest_of(s, "whisper-tiny.en", sample_ids(s, args.report_n)) if r.ok and r.hypotheses]
        score_nbest(recs, scorer)
        first, e0, n = wer(recs, None)
        for name, w in fits.items():
            for ratio in (0.0, 0.5):
                after, e1, _ = wer(recs, w, ratio)
                better = sum(b < a for a, b in zip(e0, e1, strict=True))
                worse = sum(b > a for a, b in zip(e0, e1, strict=True))
                p = paired_bootstrap(np.asarray(e0), np.asarray(e1), np.asarray(n))
                lines.append(
                    f"| {s} | {len(recs)} | {100 * first:.2f} | {name}: {w.describe()} | {ratio:g} | {100 * after:.2f} "
                    f"| {better}/{worse} | {p:.3f} |"
                )
    update_section(f"fit_defaults{'' if args.min_length_bonus is None else '-bounded'}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
