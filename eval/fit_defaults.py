"""Fit the default rerank weights of ``rescore.rerank.default_weights`` (``am_norm`` form) on training sets only.

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
from rescore.lm.hf import HFScorer
from rescore.metrics import edit_counts, normalize, paired_bootstrap
from rescore.records import NBest
from rescore.rerank import Ranker, Weights, default_weights, score_nbest, tune

TRAIN = ("an4-train", "arctic-cathy", "speechocean-train")
REPORT = ("librispeech-dev", "an4-test")


def wer(records: list[NBest], weights: Weights | None) -> tuple[float, list[int], list[int]]:
    refs = [normalize(r.reference or "") for r in records]
    if weights is not None:
        for r in records:
            Ranker(weights).rank(r)
    hyps = [normalize(r.hypotheses[(r.chosen or 0) if weights is not None else 0].text) for r in records]
    c = edit_counts(refs, hyps)
    return c.rate(), list(c.errors), list(c.ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-set", type=int, default=80)
    ap.add_argument("--report-n", type=int, default=110)
    args = ap.parse_args()
    scorer = HFScorer("smollm2-135m", threads=2)
    train: list[NBest] = []
    for s in TRAIN:
        train += [r for r in nbest_of(s, "whisper-tiny.en", sample_ids(s, args.per_set)) if r.ok and r.hypotheses]
    score_nbest(train, scorer)
    fit = tune(train, keys=["lm:smollm2-135m"], fixed={"am_norm": 1.0}, folds=5)
    lm_w, bonus = fit.weights.scores["lm:smollm2-135m"], fit.weights.length_bonus
    cv = fit.cv.to_dict() if fit.cv else {}
    lines = [
        f"`{' '.join(['python -m eval.fit_defaults', *map(shlex.quote, sys.argv[1:])])}`",
        "",
        f"Fitted on {len(train)} training utterances (seeded samples of {args.per_set} from each of "
        f"{', '.join(TRAIN)}; tiny.en 8-best, smollm2-135m): `am_norm` fixed at 1, LM weight {lm_w:g}, length "
        f"bonus {bonus:g} per word. 5-fold CV there: {cv.get('before', {}).get('rate', float('nan')) * 100:.2f} -> "
        f"{cv.get('after', {}).get('rate', float('nan')) * 100:.2f} % ({cv.get('better')} better, "
        f"{cv.get('worse')} worse).",
        "",
        "| set (never fitted on) | utterances | 1-best WER % | default (old: fitted on librispeech-dev) | "
        "default (new: training sets) | better/worse vs 1-best | p |",
        "|---|---|---|---|---|---|---|",
    ]
    old = default_weights(["lm:smollm2-135m"])
    new = Weights({"am_norm": 1.0, "lm:smollm2-135m": lm_w}, bonus)
    for s in REPORT:
        recs = [r for r in nbest_of(s, "whisper-tiny.en", sample_ids(s, args.report_n)) if r.ok and r.hypotheses]
        score_nbest(recs, scorer)
        first, e0, n = wer(recs, None)
        o, _, _ = wer(recs, old)
        after, e1, _ = wer(recs, new)
        better = sum(b < a for a, b in zip(e0, e1, strict=True))
        worse = sum(b > a for a, b in zip(e0, e1, strict=True))
        p = paired_bootstrap(np.asarray(e0), np.asarray(e1), np.asarray(n))
        lines.append(
            f"| {s} | {len(recs)} | {100 * first:.2f} | {100 * o:.2f} | {100 * after:.2f} | {better}/{worse} "
            f"| {p:.3f} |"
        )
    update_section("fit_defaults", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
