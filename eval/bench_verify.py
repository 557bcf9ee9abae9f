"""Benchmark of acoustic verification: does correction still hurt once the audio has a say?

For each corrector, one correction run of the set's reranked tiny.en 8-best (guards only, resumable, cached)
is decided twice: by the text guards alone, and by the guards plus verification (the proposal teacher-forced
through the recognizer and scored by the LM, then judged by the weights the record was reranked with;
``rescore.correct.verify``). Rows show WER, the utterances made better/worse than the reranked text, the
share of changed utterances that got worse, the paired-bootstrap p against rerank, and seconds per
utterance (correction; verification separately).

    python -m eval.bench_verify --set librispeech-dev --limit 40 --llm smollm2-135m qwen2.5-0.5b qwen2.5-1.5b
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time

import numpy as np

from eval.bench_correct import corrected, errors
from eval.nbest_cache import nbest_for
from eval.results import update_section
from rescore.correct.guards import GuardConfig
from rescore.correct.tuning import reguard
from rescore.correct.verify import reverify
from rescore.evaluate.metrics import bootstrap_ci, paired_change
from rescore.io.models import cache_dir
from rescore.records import NBest, NBestWriter, read_nbest
from rescore.rerank.ranker import DEFAULT_MIN_LENGTH_RATIO, DEFAULT_NORM_LENGTH_BONUS, DEFAULT_NORM_LM_WEIGHT
from rescore.stages.correct import CorrectOptions, CorrectStage
from rescore.stages.rerank import RerankOptions, RerankStage

CACHE = cache_dir() / "bench" / "verify"
# the default rerank weights shape the reranked text and so the prompts: a change of them is a new cache
WEIGHTS_TAG = f"w{DEFAULT_NORM_LM_WEIGHT:g}-{DEFAULT_NORM_LENGTH_BONUS:g}-{DEFAULT_MIN_LENGTH_RATIO:g}"


def reranked(set_name: str, limit: int) -> list[NBest]:
    """The set's first ``limit`` tiny.en 8-best records reranked by the default rerank stage (cached)."""
    out = CACHE / f"{set_name}.rerank.{limit}.{WEIGHTS_TAG}.jsonl"
    if not out.exists():
        records = list(read_nbest(nbest_for(set_name)))[:limit]
        CACHE.mkdir(parents=True, exist_ok=True)
        with NBestWriter(out) as w:
            for r in RerankStage(RerankOptions()).process(records):
                w.write(r)
    return list(read_nbest(out))


def prompt_tag(max_hypotheses: int, distinct: bool) -> str:
    """The cache name's part for the prompt's hypotheses ("" for the 8 of every list, the first setting)."""
    return "" if (max_hypotheses, distinct) == (8, False) else f".h{max_hypotheses}{'d' if distinct else ''}"


def row(name: str, recs: list[NBest], hyps: list[str], base: np.ndarray | None, seconds: str = "") -> str:
    refs = [r.reference or "" for r in recs]
    e, n = errors(refs, hyps)
    lo, hi = bootstrap_ci(e, n)
    rate = f"{100 * e.sum() / n.sum():.2f} ({100 * lo:.2f}-{100 * hi:.2f})"
    if base is None:
        return f"| {name} | {rate} | | | | {seconds} |"
    c = paired_change(base, e, n)
    changed = sum(1 for r, h in zip(recs, hyps, strict=True) if h != r.text("rerank"))
    harm = f"{c.worse}/{changed}" if changed else "0/0"
    return f"| {name} | {rate} | {c.better}/{c.worse} | {harm} | {c.p:.3f} | {seconds} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="librispeech-dev")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N (e.g. utterances a choice was made on)")
    ap.add_argument("--llm", nargs="+", default=["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b"])
    ap.add_argument("--margin", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-llm", type=int, default=0, help="correct only the first N records (0: all of --limit)")
    ap.add_argument("--max-hypotheses", type=int, default=8, help="hypotheses shown to the LLM")
    ap.add_argument("--no-distinct", action="store_true", help="show hypotheses equal after normalisation again")
    args = ap.parse_args()
    t0 = time.perf_counter()
    recs = reranked(args.set, args.limit)[args.skip :]
    refs = [r.reference or "" for r in recs]
    base, _ = errors(refs, [r.text("rerank") for r in recs])
    lines = [
        f"`{' '.join(['python -m eval.bench_verify', *map(shlex.quote, sys.argv[1:])])}`",
        "",
        f"{args.set}, utterances {args.skip + 1}-{args.skip + len(recs)} in file order, tiny.en 8-best; rerank:"
        " the default stage (am_norm + smollm2-135m, weights fitted on training sets, truncation guard 0.5:"
        " see fit_defaults-bounded);"
        f" the guards are the current defaults (stored corrections decided again under them);"
        f" verification has one setting, the margin ({args.margin:g}), not tuned. The prompt shows up to"
        f" {args.max_hypotheses} hypotheses{'' if args.no_distinct else ', distinct after normalisation'}, and the"
        " LLM drafts from the prompt (prompt-lookup decoding). Better/worse and p are against"
        " the reranked text; harm is worse / changed.",
        "",
        "| stage | WER % (95 % CI) | better/worse | harm | p vs rerank | s/utt |",
        "|---|---|---|---|---|---|",
        row("first pass (1-best)", recs, [r.text("first-pass") for r in recs], base),
        row("rerank", recs, [r.text("rerank") for r in recs], None),
    ]
    for llm in args.llm:
        prompt = {"max_hypotheses": args.max_hypotheses, "distinct": not args.no_distinct}
        stage = CorrectStage(CorrectOptions(llm=llm, verify=False, threads=args.threads, **prompt))
        corrector = stage.load()
        out = CACHE / f"{args.set}.{WEIGHTS_TAG}.{llm}{prompt_tag(**prompt)}.jsonl"  # by id: --skip/--limit resume it
        todo = recs[: args.n_llm] if args.n_llm else recs
        # decided again under the current default guards (a cache made before a new guard holds old decisions)
        done = [reguard(r, GuardConfig()) for r in corrected(corrector, [copy.deepcopy(r) for r in todo], out)]
        secs = np.mean([r.timing.get("correct", 0.0) for r in done])
        ids = {r.id for r in done}
        sub = [r for r in recs if r.id in ids]
        base, _ = errors([r.reference or "" for r in sub], [r.text("rerank") for r in sub])
        if len(sub) < len(recs):  # the stage rows again on the corrected subset, for a like-for-like reading
            lines.append(row(f"rerank, first {len(sub)}", sub, [r.text("rerank") for r in sub], None))
        lines.append(row(f"{llm}, guards", done, [r.text("correct") for r in done], base, f"{secs:.2f}"))
        for judge, label in (([], "the record's rerank weights"), (["whisper-base"], "whisper-base, summed")):
            options = CorrectOptions(llm=llm, verify_margin=args.margin, verify_with=judge)
            verifier = CorrectStage(options).verifier()
            t = time.perf_counter()
            checked = [reverify(r, verifier) for r in done]
            n_checked = sum(1 for r in checked if ((r.correction or {}).get("verification") or {}).get("checked"))
            vsecs = (time.perf_counter() - t) / max(1, n_checked)
            lines.append(
                row(
                    f"{llm}, guards + verification by {label} ({n_checked} word edits checked)",
                    checked,
                    [r.text("correct") for r in checked],
                    base,
                    f"{secs:.2f} + {vsecs:.2f} per checked",
                )
            )
        del corrector, stage
        print("\n".join(lines[-2:]), flush=True)
    lines += ["", f"Wall time {time.perf_counter() - t0:.0f} s."]
    tag = prompt_tag(args.max_hypotheses, not args.no_distinct)
    update_section(f"bench_verify {args.set} {args.skip + 1}-{args.skip + len(recs)}{tag}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
