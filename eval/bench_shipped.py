"""The shipped reranker (``rerank --config shipped``, truncation guard included) on utterances nobody looked at.

    python -m eval.bench_shipped [--set librispeech-dev] [--skip 40] [--limit 0]

Same first pass and scores as :mod:`eval.bench_learned` (tiny.en + base union, both models teacher-forcing
every hypothesis, SmolLM2-135M); the utterances after the first ``--skip`` are the ones the guard's value was
not chosen on. Reports tiny.en's and base's 1-best and the shipped reranker, with harm and a paired p.
"""

from __future__ import annotations

import argparse

from eval.bench_learned import MODELS, row, scored_union, system_first
from eval.results import update_section
from rescore.evaluate.scoring import rerank_comparison
from rescore.io.datasets import load_dataset, shared_data_dir
from rescore.registry import make_scorer
from rescore.rerank.learned import rerank_copy
from rescore.stages.rerank import RerankOptions, plan_rerank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="librispeech-dev")
    ap.add_argument("--skip", type=int, default=40)
    ap.add_argument("--limit", type=int, default=0, help="utterances after --skip (0: the rest)")
    args = ap.parse_args()

    from rescore.io.quiet import quiet_third_party
    from rescore.score.acoustic import WhisperScorer

    quiet_third_party()
    ids = [u.id for u in load_dataset(shared_data_dir() / args.set).utterances][args.skip :]
    ids = ids[: args.limit] if args.limit else ids
    recs = scored_union(
        args.set, ids, make_scorer("smollm2-135m", "hf", threads=2), {m: WhisperScorer(m, device="cpu") for m in MODELS}
    )
    plan = plan_rerank(RerankOptions(weights="shipped"))
    guarded = rerank_copy(recs, plan.weights, min_length_ratio=plan.min_length_ratio)
    base = rerank_comparison(system_first(recs, MODELS[0]))
    lines = [
        f"### The shipped reranker on {args.set}, utterances {args.skip + 1}-{args.skip + len(recs)}",
        "",
        f"Command: `python -m eval.bench_shipped --set {args.set} --skip {args.skip}"
        f"{f' --limit {args.limit}' if args.limit else ''}`. These utterances were not used to train the "
        "reranker nor to choose its truncation guard. Whisper English normalizer; better/worse and p against "
        "tiny.en's 1-best.",
        "",
        f"{len(recs)} utterances; tiny.en 1-best {100 * base.before.rate:.2f} %, "
        f"union oracle {100 * base.oracle:.2f} %",
        "",
        "| system | WER % [95 % CI] | gap closed | better | worse | p |",
        "|---|---|---|---|---|---|",
        row("whisper-base 1-best", rerank_comparison(system_first(recs, MODELS[1]))),
        row("shipped reranker, no guard", rerank_comparison(rerank_copy(recs, plan.weights))),
        row(f"shipped reranker, guard {plan.min_length_ratio:g}", rerank_comparison(guarded)),
    ]
    update_section(f"bench_shipped-{args.set}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
