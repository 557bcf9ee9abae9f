"""Benchmark of generative error correction: WER per stage with intervals, win/loss counts, guards, speed.

Reads the tiny.en 8-best lists of a set (made by ``rescore transcribe``), optionally the reranked records of
issue 3's ``rescore rerank``, corrects them with ``rescore.correct`` (resumable: the corrected records are
kept under the cache), and writes its section of eval/RESULTS.md with the exact command. Few-shot examples
and the domain vocabulary come only from training sets (an4-train), never from the reported set.

    python -m eval.bench_correct --set an4-test --template spelling --domain an4 --examples an4-train
    python -m eval.bench_correct --set librispeech-dev --template nbest --limit 30
    python -m eval.bench_correct --set an4-test --speed 6      # prefix KV reuse on vs off, same run
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from eval.nbest_cache import nbest_for
from eval.results import update_section
from rescore.correct import CorrectorConfig, GuardConfig, LLMCorrector, examples_from_records
from rescore.correct.prompts import spelled
from rescore.correct.tuning import GuardTuning, reguard, tune_guards
from rescore.evaluate.metrics import bootstrap_ci, edit_counts, normalize, paired_bootstrap, paired_change
from rescore.io.models import cache_dir
from rescore.records import NBest, NBestWriter, read_nbest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOMAINS = {
    "an4": (
        "names spelled letter by letter, phone and zip numbers, dates, and the command words RUBOUT, ERASE, "
        "ENTER, GO, YES, NO, STOP, REPEAT, HELP, START."
    ),
}


def nbest_path(name: str) -> Path:
    """The set's tiny.en 8-best file in the cache folder (made on first use; see eval/nbest_cache.py)."""
    return nbest_for(name)


def training_vocabulary(train_set: str) -> Path:
    """The words of a training set's references, one per line: the context list for the novel-word guard."""
    words = sorted(
        {
            w
            for line in (DATA / train_set / "manifest.jsonl").read_text().splitlines()
            for w in json.loads(line)["text"].split()
        }
    )
    out = cache_dir() / "bench" / "correct" / f"{train_set}.vocab.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(words) + "\n")
    return out


def errors(refs: list[str], hyps: list[str]) -> tuple[np.ndarray, np.ndarray]:
    c = edit_counts([normalize(r) for r in refs], [normalize(h) for h in hyps])
    return c.errors, c.ref


def wer_row(name: str, refs: list[str], hyps: list[str], base: np.ndarray | None, ref_len: np.ndarray) -> str:
    e, n = errors(refs, hyps)
    lo, hi = bootstrap_ci(e, n)
    rate = e.sum() / n.sum()
    if base is None:
        return f"| {name} | {100 * rate:.2f} | {100 * lo:.2f}-{100 * hi:.2f} | | |"
    c = paired_change(base, e, ref_len)
    change = f"{c.better}/{c.worse}/{c.unchanged}"
    return f"| {name} | {100 * rate:.2f} | {100 * lo:.2f}-{100 * hi:.2f} | {change} | {c.p:.3f} |"


def default_wer(tuning: GuardTuning) -> float:
    d = GuardConfig()
    return next(w for r, n, w in tuning.tried if r == d.max_edit_ratio and n == d.max_novel_words)


def lm_scored(set_name: str, lm_or_file: str) -> list[NBest]:
    """The set's n-best with ``lm:`` scores: read from a file, or scored by the named LM (cached)."""
    if Path(lm_or_file).is_file():
        return list(read_nbest(lm_or_file))
    from eval.bench_rerank import scored_records

    return scored_records(nbest_path(set_name), lm_or_file, "", f"{lm_or_file}.plain")


def lora_adapter(args: argparse.Namespace) -> Path:
    """The LoRA adapter trained on the n-best of ``--lora-train`` sets (training sets only), made once."""
    from rescore.correct.lora import LoraConfig, train_lora

    sets = args.lora_train.split(",")
    if args.set in sets:
        raise SystemExit(f"--lora-train must not include the reported set {args.set}")
    out = cache_dir() / "correct" / f"lora-{args.llm}-{args.template}-{'+'.join(sets)}"
    if (out / "rescore-lora.json").exists():
        return out
    records = [r for s in sets for r in read_nbest(nbest_path(s)) if r.ok and r.hypotheses and r.reference]
    cfg = LoraConfig(
        llm=args.llm,
        template=args.template,
        max_hypotheses=args.max_hypotheses,
        lr=args.lora_lr,
        batch_size=8,
        max_minutes=args.lora_minutes,
        threads=args.threads,
    )
    print(f"training a LoRA adapter on {len(records)} pairs of {', '.join(sets)} into {out}", flush=True)
    summary = train_lora(records, out, cfg, on_step=lambda s, t, loss: print(f"  step {s}/{t} loss {loss:.3f}"))
    info_path = out / "rescore-lora.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["command"] = f"python -m eval.bench_correct {' '.join(shlex.quote(a) for a in sys.argv[1:])}"
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    print(f"adapter: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}")
    return out


def run(args: argparse.Namespace) -> None:
    records = [r for r in read_nbest(nbest_path(args.set)) if r.ok and r.hypotheses and r.reference]
    reranked = "no (issue 3's rerank output not given: the reranked text is the 1-best)"
    if args.rerank:
        chosen = {r.id: r.chosen for r in read_nbest(args.rerank)}
        for r in records:
            r.chosen = chosen.get(r.id)
        reranked = f"yes, from {args.rerank}"
    elif args.rerank_cv:
        # issue 3's LM scores; each utterance ranked by weights tuned on the other folds (never on itself)
        from rescore.rerank.grid import cross_validate

        scored = [r for r in lm_scored(args.set, args.rerank_cv) if r.ok and r.hypotheses and r.reference]
        keys = sorted({k for r in scored for k in r.hypotheses[0].scores if k.startswith("lm:")})
        cv = cross_validate(scored, keys, folds=5, seed=0)
        for r in records:
            r.chosen = cv.chosen.get(r.id)
        reranked = f"yes: {', '.join(keys)} scores from {args.rerank_cv}, weights by 5-fold CV (held-out choices)"
    if args.limit:
        records = records[: args.limit]
    if args.lora_train:
        args.adapter = str(lora_adapter(args))
    examples = []
    if args.examples:
        examples = examples_from_records(read_nbest(nbest_path(args.examples), strict=False), args.n_examples)
    cfg = CorrectorConfig(
        llm=args.llm,
        backend=args.backend,
        template=args.template,
        adapter=args.adapter,
        domain=DOMAINS.get(args.domain, args.domain) if args.domain else None,
        entities=str(training_vocabulary(args.vocab)) if args.vocab else None,
        n_threads=args.threads,
        max_hypotheses=args.max_hypotheses,
        guards=GuardConfig(),
        examples=examples,
    )
    corrector = LLMCorrector(cfg)
    if args.speed:
        return speed(corrector, records[: args.speed], args)
    tag = args.name or f"{args.set}-{args.template}{'-lora' if args.adapter else ''}"
    t0 = time.perf_counter()
    recs = corrected(corrector, records, cache_dir() / "bench" / "correct" / f"{tag}.jsonl")
    wall = time.perf_counter() - t0
    tuned = None
    if args.tune_guards:
        if args.tune_guards == args.set:
            raise SystemExit("--tune-guards must be a training set, not the reported set")
        tune_recs = [r for r in read_nbest(nbest_path(args.tune_guards)) if r.ok and r.hypotheses and r.reference]
        tune_recs = tune_recs[: args.tune_limit]  # their reranked text is the 1-best
        tune_out = cache_dir() / "bench" / "correct" / f"{tag}.tune-{args.tune_guards}.jsonl"
        tuning = tune_guards(corrected(corrector, tune_recs, tune_out), cfg.guards, vocab=corrector.vocab)
        tuned = (tuning, [reguard(r, tuning.guards, corrector.vocab) for r in recs])
    report(recs, args, cfg, tag, reranked, wall, tuned)


def corrected(corrector: LLMCorrector, records: list[NBest], out: Path) -> list[NBest]:
    """``records`` corrected, resuming (and then reading back) the cache file ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with NBestWriter(out, resume=True) as w:
        todo = [r for r in records if r.id not in w.done]
        print(f"{len(records) - len(todo)} already corrected in {out}; {len(todo)} to go", flush=True)
        for i, r in enumerate(todo, 1):
            corrector.correct(r)
            w.write(r)
            c = r.correction or {}
            print(f"[{i}/{len(todo)}] {r.timing.get('correct', 0):.1f}s {c.get('reason')}: {r.corrected!r}", flush=True)
    done = {r.id: r for r in read_nbest(out)}
    return [done[r.id] for r in records if r.id in done]


def report(
    recs: list[NBest],
    args: argparse.Namespace,
    cfg: CorrectorConfig,
    tag: str,
    reranked: str,
    wall: float,
    tuned: tuple[GuardTuning, list[NBest]] | None = None,
) -> None:
    refs = [r.reference or "" for r in recs]
    first = [r.text("first-pass") for r in recs]
    rer = [r.text("rerank") for r in recs]
    corr = [r.corrected or r.text("rerank") for r in recs]
    base, ref_len = errors(refs, first)
    rer_e, _ = errors(refs, rer)
    lora = f", LoRA {cfg.adapter}" if cfg.adapter else ""
    lines = [
        f"Set: {args.set} ({len(recs)} utterances{', the first ' + str(args.limit) if args.limit else ''}), "
        f"tiny.en 8-best ({cfg.max_hypotheses} shown to the LLM); corrector {cfg.llm} ({cfg.backend}{lora}), "
        f"template `{cfg.template}`, {len(cfg.examples)} few-shot examples"
        f"{' from ' + args.examples if args.examples else ''}, domain: {cfg.domain or 'none'}; "
        f"context vocabulary for the guard: {args.vocab or 'none'}; reranked: {reranked}.",
        "",
        "WER % (Whisper normalizer), 95 % bootstrap interval; better/worse/unchanged utterances and paired",
        "bootstrap p (share of resamples where the system does not beat 1-best) against the 1-best:",
        "",
        "| system | WER % | 95 % CI | better/worse/same vs 1-best | p |",
        "|---|---|---|---|---|",
        wer_row("1-best", refs, first, None, ref_len),
    ]
    if args.rerank or args.rerank_cv:
        lines.append(wer_row("reranked", refs, rer, base, ref_len))
    if cfg.template == "spelling":
        lines.append(
            wer_row("spelled view of the reranked text, no LLM", refs, [spelled(t) for t in rer], base, ref_len)
        )
    lines.append(wer_row(f"corrected ({cfg.template})", refs, corr, base, ref_len))
    if tuned:
        t_corr = [r.corrected or r.text("rerank") for r in tuned[1]]
        lines.append(wer_row(f"corrected, guards tuned on {args.tune_guards}", refs, t_corr, base, ref_len))
    ce, _ = errors(refs, corr)
    b, w = int((ce < rer_e).sum()), int((ce > rer_e).sum())
    lines += [
        "",
        f"Corrected vs reranked: {b} better, {w} worse, {len(ce) - b - w} unchanged; "
        f"WER {100 * rer_e.sum() / ref_len.sum():.2f} -> {100 * ce.sum() / ref_len.sum():.2f} % "
        f"(paired bootstrap p {paired_bootstrap(rer_e, ce, ref_len):.3f} that correction is not better).",
    ]
    if tuned:
        tuning, t_recs = tuned
        te, _ = errors(refs, [r.corrected or r.text("rerank") for r in t_recs])
        tb, tw = int((te < rer_e).sum()), int((te > rer_e).sum())
        g = tuning.guards
        chosen = (
            "the corrector off (the reranked text kept everywhere)"
            if g is None
            else f"max_edit_ratio {g.max_edit_ratio}, max_novel_words {g.max_novel_words}"
        )
        lines.append(
            f"Guards tuned on the first {tuning.utterances} utterances of {args.tune_guards} (a training set; "
            f"their reranked text is the 1-best), corrected by the same model: of {len(tuning.tried)} settings "
            f"(corrector off, or edit budget x novel-word limit) the lowest WER there, {100 * tuning.wer:.2f} %, "
            f"came with {chosen} (off: {100 * tuning.tried[0][2]:.2f} %; defaults 0.3 and 1: "
            f"{100 * default_wer(tuning):.2f} %). Applied to the stored outputs here: {tb} better, {tw} worse than "
            f"reranked, WER {100 * rer_e.sum() / ref_len.sum():.2f} -> {100 * te.sum() / ref_len.sum():.2f} % "
            f"(paired bootstrap p {paired_bootstrap(rer_e, te, ref_len):.3f})."
        )
    cs = [r.correction or {} for r in recs]
    reasons = Counter(c.get("reason", "?").split(" (")[0].split(":")[0] for c in cs if not c.get("accepted"))
    acc = sum(bool(c.get("accepted")) for c in cs)
    changed = sum(bool(c.get("changed")) for c in cs)
    lines += [
        f"Guards: {acc} accepted ({changed} changed the text), {len(cs) - acc} abstained"
        + (": " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) if reasons else "")
        + f"; {sum(bool(c.get('guards', {}).get('cleaning')) for c in cs)} outputs cleaned.",
    ]
    secs = np.array([r.timing.get("correct", 0.0) for r in recs])
    gen_s = sum(c.get("generate_seconds", 0.0) for c in cs)
    new_t = sum(c.get("new_tokens", 0) for c in cs)
    prompt_t = sum(c.get("prompt_tokens", 0) for c in cs)
    reused = sum(c.get("reused_tokens", 0) for c in cs)
    lines += [
        f"Speed (shared 2-core CPU, other jobs running): {secs.mean():.2f} s per utterance "
        f"(median {np.median(secs):.2f}), "
        f"{(prompt_t - reused + new_t) / max(gen_s, 1e-9):.1f} tokens/s computed (prompt tokens not in the cache "
        f"plus new ones), {new_t / max(gen_s, 1e-9):.1f} new tokens/s over the whole generate call; "
        f"{prompt_t / len(cs):.0f} prompt tokens per utterance, {100 * reused / max(prompt_t, 1):.0f} % of them "
        f"reused from the KV cache of the fixed prefix; {wall:.0f} s wall for this invocation "
        f"(a rerun of the same command only rescores the kept records).",
    ]
    if cfg.adapter:
        info = json.loads((Path(cfg.adapter) / "rescore-lora.json").read_text())
        state = "time-boxed" if info["time_boxed"] else "complete"
        lines += [
            "",
            f"LoRA adapter: {info['llm']}, template `{info['template']}`, {info['pairs']} training pairs, "
            f"{info['steps']} of {info['planned_steps']} planned steps ({state}), {info['seconds'] / 60:.1f} min on "
            f"{info['device']}, loss {info['first_loss']:.3f} -> {info['last_loss']:.3f}; "
            f"made by `{info.get('command', '?')}`.",
        ]
    lines += [
        "",
        f"Command: `python -m eval.bench_correct {' '.join(shlex.quote(a) for a in sys.argv[1:])}`",
    ]
    md = "\n".join(lines)
    print(md)
    update_section(f"correct-{tag}", f"### Correction: {tag}\n\n{md}")


def speed(corrector: LLMCorrector, records: list[NBest], args: argparse.Namespace) -> None:
    """Seconds per utterance with and without KV reuse of the fixed prefix, interleaved in one run."""
    llm = corrector.llm
    times: dict[bool, list[float]] = {True: [], False: []}
    toks: dict[bool, list[float]] = {True: [], False: []}
    for reuse in (False, True):  # all without reuse, then all with: each prompt follows another utterance's
        for r in records:
            llm.reuse_prefix = reuse  # type: ignore[attr-defined]
            x = NBest.from_dict(json.loads(r.to_json()))
            corrector.correct(x)
            times[reuse].append(x.timing["correct"])
            toks[reuse].append(x.correction["new_tokens"] / max(x.correction["generate_seconds"], 1e-9))
    on, off = np.mean(times[True]), np.mean(times[False])
    md = (
        f"Set: {args.set}, first {len(records)} utterances, {corrector.config.llm} ({corrector.config.backend}), "
        f"template `{corrector.config.template}`, {len(corrector.config.examples)} few-shot examples. Each utterance "
        f"is corrected without reuse of the KV cache (reset before each), then all again with reuse; each prompt "
        f"follows another utterance's, so only the shared fixed prefix is reused.\n\n"
        f"| prefix KV reuse | s per utterance | new tokens/s |\n|---|---|---|\n"
        f"| off | {off:.2f} | {np.mean(toks[False]):.1f} |\n| on | {on:.2f} | {np.mean(toks[True]):.1f} |\n\n"
        f"Speed-up from prefix reuse (ratio within this run): {off / on:.2f}x.\n\n"
        f"Command: `python -m eval.bench_correct {' '.join(shlex.quote(a) for a in sys.argv[1:])}`"
    )
    print(md)
    update_section(f"correct-speed-{args.set}", f"### Correction speed: prefix KV reuse\n\n{md}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="an4-test")
    ap.add_argument("--llm", default="qwen2.5-0.5b")
    ap.add_argument("--backend", default="llama-cpp")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--template", default="nbest")
    ap.add_argument("--domain", default=None, help="a key of DOMAINS (an4) or a description")
    ap.add_argument("--examples", default=None, help="training set whose n-best gives few-shot examples")
    ap.add_argument("--n-examples", type=int, default=6)
    ap.add_argument("--vocab", default=None, help="training set whose reference words are the guard's context list")
    ap.add_argument("--rerank", default=None, help="reranked n-best file of the same set (rescore rerank)")
    ap.add_argument(
        "--rerank-cv", default=None, help="LM name (scored here, cached) or n-best file with lm: scores; 5-fold CV"
    )
    ap.add_argument("--tune-guards", default=None, help="training set whose corrections tune the guard thresholds")
    ap.add_argument("--tune-limit", type=int, default=60, help="utterances of --tune-guards corrected for tuning")
    ap.add_argument("--lora-train", default=None, help="training sets (comma) to train a LoRA adapter on first")
    ap.add_argument("--lora-minutes", type=float, default=20.0, help="time box of the LoRA training")
    ap.add_argument("--lora-lr", type=float, default=3e-4)
    ap.add_argument("--max-hypotheses", type=int, default=8, help="hypotheses shown to the LLM")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed", type=int, default=0, help="only compare prefix reuse on/off on this many utterances")
    ap.add_argument("--name", default=None, help="section/output tag")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
