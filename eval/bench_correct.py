"""Correction: does an LLM's edit help once the guards and the audio have a say?

    python -m eval.bench_correct verify --set librispeech-dev --skip 40 --limit 110 \\
        --llm smollm2-135m qwen2.5-0.5b qwen2.5-1.5b --threads 1
    python -m eval.bench_correct correct --set an4-test --template spelling --domain an4 --examples an4-train \\
        --vocab an4-train --tune-guards an4-train --threads 1

verify: the set's tiny.en 8-best reranked by the default rerank stage, then for each corrector one correction run
(``rescore correct``'s stage, guards only; resumable, cached) decided three ways: by the text guards alone, and by
the guards plus verification (``rescore.correct.verify``) judged by the record's own rerank weights or by
whisper-base's summed score (the default). Rows: WER, utterances made better/worse than the reranked text, harm
(worse / changed), the paired bootstrap p against rerank, seconds per utterance.

correct: the corrector on a set's 1-best (no rerank), with a template, a domain, few-shot examples and a guard
vocabulary from a training set, and the guards tuned on that training set's corrections (``rescore correct
tune-guards``); with the ``spelling`` template also its deterministic spelled view, the ``spelling`` preset's
output. Few-shot examples, vocabulary and guard tuning come only from training sets, never from the reported set.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from eval.common import DATA, ROW_HEAD, command, corrected, errors, nbest_for, row
from eval.results import add_publish_options, publish
from rescore.correct.tuning import reguard
from rescore.io.models import cache_dir
from rescore.records import NBest, NBestWriter, read_nbest
from rescore.stages import CorrectOptions, CorrectStage

DOMAINS = {
    "an4": (
        "names spelled letter by letter, phone and zip numbers, dates, and the command words RUBOUT, ERASE, "
        "ENTER, GO, YES, NO, STOP, REPEAT, HELP, START."
    ),
}


# --- correct ----------------------------------------------------------------------------------------------


def training_vocabulary(train_set: str) -> str:
    """The words of a training set's references, one per line: the context list for the novel-word guard."""
    lines = (DATA / train_set / "manifest.jsonl").read_text().splitlines()
    words = sorted({w for line in lines for w in json.loads(line)["text"].split()})
    out = cache_dir() / "bench" / "correct" / f"{train_set}.vocab.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(words) + "\n")
    return str(out)


def usable(set_name: str) -> list[NBest]:
    return [r for r in read_nbest(nbest_for(set_name)) if r.ok and r.hypotheses and r.reference]


def correct(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.correct.prompts import spelled
    from rescore.correct.tuning import tune_guards

    if args.set in (args.tune_guards, args.examples, args.vocab):
        raise SystemExit("--tune-guards, --examples and --vocab must be training sets, not the reported set")
    records = usable(args.set)[: args.limit or None]
    options = CorrectOptions(
        llm=args.llm,
        backend=args.backend,
        prompt=args.template,
        domain=DOMAINS.get(args.domain, args.domain) if args.domain else None,
        entities=training_vocabulary(args.vocab) if args.vocab else None,
        examples=str(nbest_for(args.examples)) if args.examples else None,
        n_examples=args.n_examples,
        max_hypotheses=args.max_hypotheses,
        threads=args.threads,
        verify=False,
    )
    stage = CorrectStage(options)
    tag = f"{args.set}-{args.template}-distinct" + ("" if args.llm == "qwen2.5-0.5b" else f"-{args.llm}")
    t0 = time.perf_counter()
    recs = corrected(stage, records, cache_dir() / "bench" / "correct" / f"{tag}.jsonl")
    wall = time.perf_counter() - t0
    refs = [r.reference or "" for r in recs]
    first = [r.text("first-pass") for r in recs]
    lines = [
        f"### Correction: {args.set}, template `{args.template}`",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Reported on {args.set} ({len(recs)} utterances), tiny.en 8-best ({args.max_hypotheses} shown to the LLM, "
        f"distinct after normalisation), no rerank; corrector {args.llm} ({args.backend}), "
        f"{len(stage.config.examples)} few-shot examples from {args.examples or 'nowhere'}, domain "
        f"{args.domain or 'none'}, guard vocabulary from {args.vocab or 'nowhere'}; guards tuned on "
        f"{args.tune_guards or 'nothing'}. Better/worse and p against the 1-best.",
        "",
        ROW_HEAD,
        "|---|---|---|---|",
        row("1-best", refs, first),
    ]
    if args.template == "spelling":
        lines.append(row("spelled view of the 1-best, no LLM", refs, [spelled(t) for t in first], first))
    lines.append(row("corrected, default guards", refs, [r.corrected or r.text("rerank") for r in recs], first))
    notes = [""]
    if args.tune_guards:
        corrector = stage.load()
        train = usable(args.tune_guards)[: args.tune_limit]  # their reranked text is the 1-best
        train_out = cache_dir() / "bench" / "correct" / f"{tag}.tune-{args.tune_guards}.jsonl"
        tuning = tune_guards(corrected(stage, train, train_out), stage.config.guards, vocab=corrector.vocab)
        tuned = [reguard(r, tuning.guards, corrector.vocab) for r in recs]
        lines.append(
            row(
                f"corrected, guards tuned on {args.tune_guards}",
                refs,
                [r.corrected or r.text("rerank") for r in tuned],
                first,
            )
        )
        g = tuning.guards
        chosen = "the corrector off" if g is None else f"edit ratio {g.max_edit_ratio}, novel words {g.max_novel_words}"
        notes += [
            f"- Guards tuned on the first {tuning.utterances} utterances of {args.tune_guards}: of {len(tuning.tried)} "
            f"settings the lowest WER there, {100 * tuning.wer:.2f} %, came with {chosen} (off: "
            f"{100 * tuning.tried[0][2]:.2f} %).",
        ]
    cs = [r.correction or {} for r in recs]
    reasons = Counter(c.get("reason", "?").split(" (")[0].split(":")[0] for c in cs if not c.get("accepted"))
    accepted = sum(bool(c.get("accepted")) for c in cs)
    secs = [r.timing.get("correct", 0.0) for r in recs]
    lines += notes + [
        f"- Default guards: {accepted} accepted ({sum(bool(c.get('changed')) for c in cs)} changed the text), "
        f"{len(cs) - accepted} abstained"
        + (": " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) if reasons else "")
        + ".",
        f"- {np.mean(secs):.2f} s per utterance (median {np.median(secs):.2f}) on the shared 2-core CPU; {wall:.0f} s "
        "for this invocation (a rerun only rescores the kept corrections).",
    ]
    return "\n".join(lines), f"correct-{tag}"


# --- verify -----------------------------------------------------------------------------------------------

CACHE = cache_dir() / "bench" / "verify"


def weights_tag() -> str:
    """The default rerank weights shape the reranked text and so the prompts: a change of them is a new cache."""
    from rescore.rerank.ranker import DEFAULT_MIN_LENGTH_RATIO, DEFAULT_NORM_LENGTH_BONUS, DEFAULT_NORM_LM_WEIGHT

    return f"w{DEFAULT_NORM_LM_WEIGHT:g}-{DEFAULT_NORM_LENGTH_BONUS:g}-{DEFAULT_MIN_LENGTH_RATIO:g}"


def reranked(set_name: str, limit: int) -> list[NBest]:
    """The set's first ``limit`` tiny.en 8-best records reranked by the default rerank stage (cached)."""
    from rescore.stages import RerankOptions, RerankStage

    out = CACHE / f"{set_name}.rerank.{limit}.{weights_tag()}.jsonl"
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


def verify_row(name: str, recs: list[NBest], hyps: list[str], base: Any = None, seconds: str = "") -> str:
    """WER, better/worse against rerank, harm (worse / changed), p against rerank."""
    from rescore.evaluate.metrics import bootstrap_ci, paired_change

    e, n = errors([r.reference or "" for r in recs], hyps)
    lo, hi = bootstrap_ci(e, n)
    rate = f"{100 * e.sum() / n.sum():.2f} ({100 * lo:.2f}-{100 * hi:.2f})"
    if base is None:
        return f"| {name} | {rate} | | | | {seconds} |"
    c = paired_change(base, e, n)
    changed = sum(1 for r, h in zip(recs, hyps, strict=True) if h != r.text("rerank"))
    return f"| {name} | {rate} | {c.better}/{c.worse} | {c.worse}/{changed} | {c.p:.3f} | {seconds} |"


def verify(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.correct.guards import GuardConfig
    from rescore.correct.verify import reverify

    t0 = time.perf_counter()
    recs = reranked(args.set, args.limit)[args.skip :]
    span = f"{args.skip + 1}-{args.skip + len(recs)}"
    prompt = {"max_hypotheses": args.max_hypotheses, "distinct": not args.no_distinct}
    base, _ = errors([r.reference or "" for r in recs], [r.text("rerank") for r in recs])
    lines = [
        f"### Correction with acoustic verification: {args.set}, utterances {span}",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Reported on {args.set}, utterances {span} in file order, tiny.en 8-best. Rerank: the default stage "
        "(am_norm + smollm2-135m, weights fitted on an4-train, arctic-cathy and speechocean-train, truncation guard "
        "0.5: `rerank-defaults-bounded`). The guards are the current defaults (stored corrections decided again "
        f"under them); verification has one setting, the margin ({args.margin:g}), not tuned. The prompt shows up to "
        f"{args.max_hypotheses} hypotheses{'' if args.no_distinct else ', distinct after normalisation'}. "
        "Better/worse and p against the reranked text; harm: worse / changed.",
        "",
        "| stage | WER % (95 % CI) | better/worse | harm | p vs rerank | s/utt |",
        "|---|---|---|---|---|---|",
        verify_row("first pass (1-best)", recs, [r.text("first-pass") for r in recs], base),
        verify_row("rerank", recs, [r.text("rerank") for r in recs]),
    ]
    for llm in args.llm:
        stage = CorrectStage(CorrectOptions(llm=llm, verify=False, threads=args.threads, **prompt))
        out = CACHE / f"{args.set}.{weights_tag()}.{llm}{prompt_tag(**prompt)}.jsonl"  # by id: --skip/--limit resume it
        todo = recs[: args.n_llm] if args.n_llm else recs
        # decided again under the current default guards (a cache made before a new guard holds old decisions)
        done = [reguard(r, GuardConfig()) for r in corrected(stage, [copy.deepcopy(r) for r in todo], out)]
        secs = np.mean([r.timing.get("correct", 0.0) for r in done])
        ids = {r.id for r in done}
        sub = [r for r in recs if r.id in ids]
        base, _ = errors([r.reference or "" for r in sub], [r.text("rerank") for r in sub])
        if len(sub) < len(recs):  # the rerank row again on the corrected subset, for a like-for-like reading
            lines.append(verify_row(f"rerank, first {len(sub)}", sub, [r.text("rerank") for r in sub]))
        lines.append(verify_row(f"{llm}, guards", done, [r.text("correct") for r in done], base, f"{secs:.2f}"))
        for judge, label in (([], "the record's rerank weights"), (["whisper-base"], "whisper-base, summed")):
            verifier = CorrectStage(CorrectOptions(llm=llm, verify_margin=args.margin, verify_with=judge)).verifier()
            t = time.perf_counter()
            checked = [reverify(r, verifier) for r in done]
            n_checked = sum(1 for r in checked if ((r.correction or {}).get("verification") or {}).get("checked"))
            vsecs = (time.perf_counter() - t) / max(1, n_checked)
            lines.append(
                verify_row(
                    f"{llm}, guards + verification by {label} ({n_checked} word edits checked)",
                    checked,
                    [r.text("correct") for r in checked],
                    base,
                    f"{secs:.2f} + {vsecs:.2f} per checked",
                )
            )
        print("\n".join(lines[-3:]), flush=True)
    lines += ["", f"Wall time {time.perf_counter() - t0:.0f} s."]
    tag = "" if prompt == {"max_hypotheses": 8, "distinct": True} else prompt_tag(**prompt)
    return "\n".join(lines), f"verify-{args.set}-{span}{tag}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="correction with and without acoustic verification, per corrector")
    p.add_argument("--set", default="librispeech-dev")
    p.add_argument("--limit", type=int, default=40, help="the first N utterances of the set")
    p.add_argument("--skip", type=int, default=0, help="leave out the first N (e.g. utterances a choice was made on)")
    p.add_argument("--llm", nargs="+", default=["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b"])
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-llm", type=int, default=0, help="correct only the first N records (0: all of --limit)")
    p.add_argument("--max-hypotheses", type=int, default=8, help="hypotheses shown to the LLM")
    p.add_argument("--no-distinct", action="store_true", help="show hypotheses equal after normalisation again")
    p.set_defaults(run=verify)
    p = sub.add_parser("correct", help="the corrector on a set's 1-best, guards tuned on a training set")
    p.add_argument("--set", default="an4-test")
    p.add_argument("--llm", default="qwen2.5-0.5b")
    p.add_argument("--backend", default="llama-cpp")
    p.add_argument("--template", default="nbest")
    p.add_argument("--domain", default=None, help="a key of DOMAINS (an4) or a description")
    p.add_argument("--examples", default=None, help="training set whose n-best gives few-shot examples")
    p.add_argument("--n-examples", type=int, default=6)
    p.add_argument("--vocab", default=None, help="training set whose reference words are the guard's context list")
    p.add_argument("--tune-guards", default=None, help="training set whose corrections tune the guard thresholds")
    p.add_argument("--tune-limit", type=int, default=60, help="utterances of --tune-guards corrected for tuning")
    p.add_argument("--max-hypotheses", type=int, default=8, help="hypotheses shown to the LLM")
    p.add_argument("--limit", type=int, default=0, help="the first N utterances (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=correct)
    for p in sub.choices.values():
        add_publish_options(p)
    args = ap.parse_args(argv)
    args.cmd = command("bench_correct", argv)
    markdown, section = args.run(args)
    publish(markdown, args.section or section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
