"""First pass: n-best accuracy and speed, every backend, the n-best union, and the union that scores as it goes.

    python -m eval.bench_recognize transcribe [--set librispeech-dev] [--model whisper-tiny.en] [--limit N]
    python -m eval.bench_recognize backends [--backends ctranslate2,ctc,...] [--limit-slow 40] [--rounds 2]
    python -m eval.bench_recognize union [--union-utts 40] [--distinct-utts 30]
    python -m eval.bench_recognize union-scoring [--limit 20] [--chunk 5]

transcribe: WER per normalizer and the oracle of the n-best at k = 1..N from one batched pass over the set
(``rescore transcribe``'s stage), its real-time factor, and the batching speed-up on a subset, batched and one at a
time alternating (ABAB) in one process so that the shared machine's load hits both alike.

backends: each backend transcribes the set into a resumable n-best file in the cache; WER and oracle@8 (Whisper
normaliser). ``--limit-slow`` gives the slow backends only the first N utterances (CTranslate2's WER on the same
ones beside them). Then openai-whisper against CTranslate2 on the same model, beam and audio (the tiny set): the same
1-best, and the time ratio, alternating. The CTC head is the one ``rescore ctc train`` saved, never trained or picked
on the reported set.

union: whisper-tiny.en and whisper-base 8-best merged per id (``rescore merge``): each system's 1-best and oracle
against the union's; and ``--distinct`` (beam 16, 64 raw hypotheses, the first 8 distinct after normalisation)
against the plain 8-best.

union-scoring: A, whisper-base's first pass alone, against B, the union first pass that scores every union hypothesis
with both models from the encoder output their first passes computed (``transcribe.model = [...]``, ``ascore =
true``), alternating chunk by chunk (ABBA): the cost of scoring against a first pass (target: at most 0.5).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from eval.common import DATA, Clock, command, dataset, first_pass, load
from eval.results import add_publish_options, publish

MODELS = ("whisper-tiny.en", "whisper-base")


def timed(recognizer: Any, utts: list) -> tuple[list, Clock]:
    with Clock() as clock:
        records = list(recognizer.recognize(utts))
    return records, clock


# --- transcribe -------------------------------------------------------------------------------------------


def transcribe(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.evaluate.scoring import score_records

    load0 = load()
    ds = dataset(args.set)
    utts = ds.utterances[: args.limit] if args.limit else ds.utterances
    n = args.nbest
    batched = first_pass(args.model, nbest=n, beam_size=n, batch_size=args.batch_size)
    single = first_pass(args.model, nbest=n, beam_size=n, batch_size=1)
    records, t = timed(batched, utts)
    audio = sum(r.duration or 0 for r in records if r.ok)
    report = score_records(records)
    lines = [
        f"### First pass: {args.model} on {ds.name}",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Reported on **{ds.name}** ({report.scored} utterances, {audio / 60:.1f} min; failed: {len(report.failed)}); "
        f"nothing fitted. {args.model}, CTranslate2 int8 on CPU, beam {n}, {n} hypotheses.",
        "",
        "| normalizer | WER % | 95 % CI | S | D | I | words |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {e.normalizer} | {100 * e.rate:.2f} | {100 * e.ci_low:.2f}-{100 * e.ci_high:.2f} | {e.substitutions} "
            f"| {e.deletions} | {e.insertions} | {e.reference_length} |"
            for e in report.wer
        ),
        "",
        "Oracle WER % of the n-best at k (Whisper normalizer):",
        "",
        "| " + " | ".join(f"k={k}" for k in range(1, len(report.oracle) + 1)) + " |",
        "|" + "---|" * len(report.oracle),
        "| " + " | ".join(f"{100 * x:.2f}" for x in report.oracle) + " |",
        "",
        f"- Real-time factor (batched, whole set, features + decoding): **{t.wall / audio:.3f}** ({t.wall:.1f} s for "
        f"{audio:.0f} s of audio).",
    ]
    if args.speed_subset > 0:
        sub = utts[: args.speed_subset]
        fast, slow = Clock(), Clock()
        for _ in range(args.rounds):
            with fast:
                list(batched.recognize(sub))
            with slow:
                list(single.recognize(sub))
        sub_audio = sum(r.duration or 0 for r in records[: len(sub)] if r.ok)
        lines.append(
            f"- Batching speed-up, batch {args.batch_size} vs 1, first {len(sub)} utterances ({sub_audio:.0f} s "
            f"audio), {args.rounds} alternating rounds: batched {fast.wall:.1f} s, one at a time {slow.wall:.1f} s, "
            f"**{slow.wall / fast.wall:.2f}x** (target 1.3x); in CPU time of this process: {slow.cpu / fast.cpu:.2f}x."
        )
    lines.append(f"- Machine load (1-min load average, 2 cores) at start / end: {load0:.1f} / {load():.1f}.")
    return "\n".join(lines), f"transcribe-{ds.name}-{args.model}"


# --- backends ---------------------------------------------------------------------------------------------

# benchmark names that are a backend with other options
VARIANTS = {"ctc-nolm": ("ctc", {"word_lm": None}), "ctc-nolexicon": ("ctc", {"lexicon": None, "word_lm": None})}
CTC_TUNING_UTTERANCES = 30  # the ctc backend's word-LM weight and bonus were picked on these first utterances


def backend_records(backend: str, utts: list, out: Path, batch_size: int, threads: int) -> tuple[list, float, float]:
    """n-best records of ``utts`` (resuming ``out``) and the wall and audio seconds of the part made now."""
    from rescore.records import NBestWriter, read_nbest
    from rescore.registry import make_recognizer

    writer = NBestWriter(out, resume=True)
    todo = [u for u in utts if u.id not in writer.done]
    t0, audio = time.perf_counter(), 0.0
    with writer:
        if todo:
            name, extra = VARIANTS.get(backend, (backend, {}))
            model = "default" if name == "ctc" else "whisper-tiny.en"
            opts = {"device": "cpu", "nbest": 8, "beam_size": 8, "batch_size": batch_size, "cpu_threads": threads}
            for r in make_recognizer(name, model=model, **opts, **extra).recognize(todo):
                writer.write(r)
                audio += r.duration or 0.0
    by_id = {r.id: r for r in read_nbest(out)}
    return [by_id[u.id] for u in utts if u.id in by_id], time.perf_counter() - t0, audio


def accuracy(records: list) -> tuple[float, float, int]:
    """1-best WER, oracle WER of the first 8, and the utterances scored."""
    from rescore.evaluate.metrics import error_rate, oracle_curve

    ok = [r for r in records if r.ok and r.reference is not None]
    refs = [r.reference for r in ok]
    wer = error_rate(refs, [r.hypotheses[0].text if r.hypotheses else "" for r in ok]).rate
    oracle = oracle_curve(refs, [[h.text for h in r.hypotheses[:8]] or [""] for r in ok])
    return wer, oracle[-1] if oracle else float("nan"), len(ok)


def compare_whisper(compare_set: str, rounds: int, batch_size: int, threads: int) -> list[str]:
    """1-best agreement and alternating timing of CTranslate2 (int8) against openai-whisper (float32)."""
    from rescore.evaluate.metrics import normalize
    from rescore.registry import make_recognizer

    ds = dataset(compare_set)
    utts = ds.utterances
    opts = {"model": "whisper-tiny.en", "device": "cpu", "nbest": 8, "beam_size": 8, "batch_size": batch_size}
    systems = {name: make_recognizer(name, cpu_threads=threads, **opts) for name in ("ctranslate2", "openai-whisper")}
    clocks = {name: Clock() for name in systems}
    texts: dict[str, list[str]] = {}
    for rec in systems.values():
        list(rec.recognize(utts[:1]))  # warm-up: first-call allocations are not part of the comparison
    for _ in range(rounds):
        for name, rec in systems.items():
            with clocks[name]:
                texts[name] = [r.hypotheses[0].text.strip() if r.hypotheses else "" for r in rec.recognize(utts)]
    a, b = texts["ctranslate2"], texts["openai-whisper"]
    exact = sum(x == y for x, y in zip(a, b, strict=True))
    same = sum(normalize(x) == normalize(y) for x, y in zip(a, b, strict=True))
    ct2, ow = clocks["ctranslate2"], clocks["openai-whisper"]
    return [
        f"openai-whisper (float32 PyTorch, weights converted from the CTranslate2 model) against CTranslate2 (int8), "
        f"whisper-tiny.en, beam 8, batch {batch_size}, {threads} CPU thread(s) each, on {ds.name} ({len(utts)} "
        f"utterances), {rounds} alternating rounds:",
        "",
        f"- the same 1-best: {exact} of {len(utts)} exactly, {same} of {len(utts)} after the Whisper normaliser "
        "(target: at least 9 of 10)",
        f"- time: CTranslate2 {ct2.wall:.1f} s wall / {ct2.cpu:.1f} s CPU, openai-whisper {ow.wall:.1f} s / "
        f"{ow.cpu:.1f} s: openai-whisper takes **{ow.wall / ct2.wall:.2f}x** the wall time of CTranslate2",
        *(
            f"- differs on {u.id}: CTranslate2 `{x}` / openai-whisper `{y}`"
            for u, x, y in zip(utts, a, b, strict=True)
            if x != y
        ),
    ]


def backends(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.io.models import cache_dir

    load0 = load()
    ds = dataset(args.set)
    slow = args.slow.split(",")
    limits = dict(item.split("=", 1) for item in args.limit_slow.split(",") if "=" in item)
    results: dict[str, dict[str, Any]] = {}
    records: dict[str, list] = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        limit = int(limits.get(backend, 0) if limits else args.limit_slow) if backend in slow else 0
        utts = ds.utterances[:limit] if limit else ds.utterances
        print(f"{backend}: {len(utts)} utterances of {ds.name}", file=sys.stderr, flush=True)
        out = Path(args.out_dir or cache_dir() / "bench_recognizers") / f"{ds.name}.{backend}.jsonl"
        records[backend], wall, audio = backend_records(backend, utts, out, args.batch_size, args.threads)
        wer, oracle, n = accuracy(records[backend])
        results[backend] = {"wer": wer, "oracle": oracle, "n": n, "rtf": f"{wall / audio:.2f}" if audio else "(cached)"}
    if "ctranslate2" in records:  # the reference system on each backend's utterances
        ct2 = {r.id: r for r in records["ctranslate2"]}
        for backend, recs in records.items():
            results[backend]["ct2"] = f"{100 * accuracy([ct2[r.id] for r in recs if r.id in ct2])[0]:.2f} %"
    lines = [
        f"Command: `{args.cmd}`",
        "",
        f"Reported on {ds.name} ({len(ds.utterances)} utterances); the CTC head was trained on an4-train, "
        f"arctic-cathy and speechocean-train, its word-LM weight and bonus picked on the first "
        f"{CTC_TUNING_UTTERANCES} utterances of librispeech-dev. WER with the Whisper normaliser, 1-best as each "
        f"recognizer ranked it; oracle@8: best of the first 8 hypotheses. Load average at start {load0:.1f} on a "
        "shared 2-core CPU (real-time factors are indicative only).",
        "",
        "| backend | utterances | WER % | oracle@8 % | CTranslate2 WER, same utterances | real-time factor |",
        "|---|---|---|---|---|---|",
        *(
            f"| {b} | {r['n']} | {100 * r['wer']:.2f} | {100 * r['oracle']:.2f} | {r.get('ct2', '')} | {r['rtf']} |"
            for b, r in results.items()
        ),
    ]
    if "ctc" in records and ds.name == "librispeech-dev":  # where the word-LM settings were picked
        tuned = {u.id for u in ds.utterances[:CTC_TUNING_UTTERANCES]}
        rest = {b: [r for r in records[b] if r.id not in tuned] for b in records if b in ("ctc", "ctc-nolm")}
        lines += [
            "",
            f"On the other {len(rest['ctc'])} utterances (not used to pick the word-LM settings): "
            + ", ".join(f"{b} {100 * accuracy(recs)[0]:.2f} %" for b, recs in rest.items())
            + ". `ctc`: prefix beam search on words of pocketsphinx's CMU dictionary with its en-US word trigram "
            "at each word end (beam 32); `ctc-nolm` without the word LM; `ctc-nolexicon` free spelling.",
        ]
    if not args.skip_compare:
        lines += ["", *compare_whisper(args.compare_set, args.rounds, args.batch_size, args.threads)]
    return "### First-pass backends side by side\n\n" + "\n".join(lines), "recognizers"


# --- union ------------------------------------------------------------------------------------------------


def union(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.evaluate.metrics import normalize, oracle_curve
    from rescore.recognize.union import merge_records, union_oracle

    if args.distinct_utts > args.union_utts:
        raise SystemExit("--distinct-utts cannot exceed --union-utts (the plain 8-best is reused)")
    load0 = load()
    ds = dataset(args.set)
    utts = ds.utterances[: args.union_utts]
    head, tail = utts[: args.distinct_utts], utts[args.distinct_utts :]
    n = args.nbest
    lists, seconds, head_seconds = {}, {}, {}
    for model in MODELS:
        rec = first_pass(model, nbest=n, beam_size=n)
        a, t_a = timed(rec, head)  # in two parts, so that the time on the distinct subset is known
        b, t_b = timed(rec, tail)
        lists[model], seconds[model], head_seconds[model] = a + b, t_a.wall + t_b.wall, t_a.wall
    with Clock() as t_merge:
        merged = merge_records([lists[m] for m in MODELS], list(MODELS))
    o = union_oracle(merged)
    audio = sum(r.duration or 0 for r in lists[MODELS[0]] if r.ok)
    distinct_rec = first_pass(MODELS[0], nbest=n, beam_size=n, distinct=True)
    distinct, t_distinct = timed(distinct_rec, head)
    base_distinct, t_base_distinct = timed(first_pass(MODELS[1], nbest=n, beam_size=n, distinct=True), head)
    du = union_oracle(merge_records([distinct, base_distinct], list(MODELS)))
    pu = union_oracle(merge_records([lists[m][: len(head)] for m in MODELS], list(MODELS)))

    def curve(records: list) -> list[float]:
        use = [r for r in records if r.ok and r.reference is not None]
        return oracle_curve([r.reference for r in use], [[h.text for h in r.hypotheses] for r in use])

    def sizes(records: list) -> list[int]:
        return [len({normalize(h.text) for h in r.hypotheses}) for r in records]

    plain, dist = lists[MODELS[0]][: len(head)], distinct
    read = [k for r in distinct for k in r.extra.get("distinct", {}).get("read", [])]
    t_union = sum(seconds.values()) + t_merge.wall
    lines = [
        "### n-best union and `--distinct`",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Reported on {ds.name}, first {o.utterances} utterances ({audio / 60:.1f} min); nothing fitted. CTranslate2 "
        f"int8 on CPU, beam {n}, {n} hypotheses each; merged per id, hypotheses equal under the Whisper normalizer "
        "folded into one. Hypotheses: mean distinct ones per utterance.",
        "",
        "| system | hypotheses | 1-best WER % | oracle WER % | seconds (RTF) |",
        "|---|---|---|---|---|",
        *(
            f"| {m} | {o.size[m]:.1f} | {100 * o.one_best[m]:.2f} | {100 * o.oracle[m]:.2f} | {seconds[m]:.1f} "
            f"({seconds[m] / audio:.3f}) |"
            for m in MODELS
        ),
        f"| union | {o.union_size:.1f} | {100 * o.one_best[MODELS[0]]:.2f} (tiny.en's) "
        f"| **{100 * o.union_oracle:.2f}** | {t_union:.1f} ({t_union / audio:.3f}), merging {t_merge.wall:.2f} s |",
        "",
        f"`--distinct`, first {len(head)} utterances:",
        "",
        "| n-best | distinct (mean, min) | 1-best WER % | oracle WER % | seconds |",
        "|---|---|---|---|---|",
        f"| plain {n}-best | {sum(sizes(plain)) / len(plain):.1f}, {min(sizes(plain))} | {100 * curve(plain)[0]:.2f} "
        f"| {100 * curve(plain)[-1]:.2f} | {head_seconds[MODELS[0]]:.1f} |",
        f"| `--distinct` (beam {distinct_rec.beam_size}, patience {distinct_rec.patience:g}, "
        f"{distinct_rec.num_hypotheses} raw) | {sum(sizes(dist)) / len(dist):.1f}, {min(sizes(dist))} "
        f"| {100 * curve(dist)[0]:.2f} | {100 * curve(dist)[-1]:.2f} | {t_distinct.wall:.1f} |",
        f"| union of the two plain {n}-bests | {pu.union_size:.1f} | {100 * pu.one_best[MODELS[0]]:.2f} "
        f"| {100 * pu.union_oracle:.2f} | {sum(head_seconds.values()):.1f} |",
        f"| union of the two `--distinct` {n}-bests | {du.union_size:.1f} | {100 * du.one_best[MODELS[0]]:.2f} "
        f"| {100 * du.union_oracle:.2f} | {t_distinct.wall + t_base_distinct.wall:.1f} |",
        "",
        f"- {MODELS[1]} `--distinct` alone: oracle {100 * du.oracle[MODELS[1]]:.2f} % (plain "
        f"{100 * pu.oracle[MODELS[1]]:.2f} %); raw hypotheses read to find {n} distinct: mean "
        f"{sum(read) / max(1, len(read)):.1f}, max {max(read, default=0)}.",
        f"- Machine load (1-min load average, 2 shared cores) at start / end: {load0:.1f} / {load():.1f}.",
    ]
    return "\n".join(lines), "union"


# --- union-scoring ----------------------------------------------------------------------------------------


class TimedScorer:
    """A scorer whose ``score`` calls are timed (wall and CPU)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.clock = scorer, Clock()

    def score(self, records: list, memories: Any = None) -> list:
        with self.clock:
            return self.scorer.score(records, memories)


def union_scoring(args: argparse.Namespace) -> tuple[str, str]:
    load0 = load()
    ds = dataset(args.set)
    utts = ds.utterances[: args.limit]
    whole_union = first_pass(list(MODELS), nbest=args.nbest, beam_size=args.nbest, ascore=True)
    whole_union.scorers = [TimedScorer(s) for s in whole_union.scorers]
    base = whole_union.recognizers[MODELS.index("whisper-base")]
    alone, whole = Clock(), Clock()
    base_alone_decode = 0.0  # the records' own transcribe timing: decoding, without audio loading and features
    merged = []
    for k, i in enumerate(range(0, len(utts), args.chunk)):
        chunk = utts[i : i + args.chunk]
        for what in ("A", "B") if k % 2 == 0 else ("B", "A"):
            if what == "A":
                with alone:
                    base_alone_decode += sum(r.timing.get("transcribe", 0.0) for r in base.recognize(chunk))
            else:
                with whole:
                    merged += list(whole_union.recognize(chunk))
        print(f"  {i + len(chunk)}/{len(utts)}: base alone {alone.wall:.1f} s, union + scoring {whole.wall:.1f} s")
    ok = [r for r in merged if r.ok]
    audio = sum(r.duration or 0.0 for r in ok)
    n_hyps = sum(len(r.hypotheses) for r in ok)
    scored = sum(1 for r in ok for h in r.hypotheses if all(f"am:{m}" in h.scores for m in MODELS))
    decode = {m: sum(float(r.timing.get(f"transcribe:{m}", 0.0)) for r in ok) for m in MODELS}
    st, sb = (s.clock for s in whole_union.scorers)
    lines = [
        "### Union first pass scoring as it goes",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Reported on {ds.name}, first {len(utts)} utterances ({audio / 60:.1f} min); nothing fitted. CPU, CTranslate2 "
        f"int8, beam {args.nbest}, {args.nbest} hypotheses per model; A and B alternate in chunks of {args.chunk} "
        "utterances (ABBA), in one run.",
        "",
        "| | wall s | CPU s | / base first pass (wall) | / base first pass (CPU) |",
        "|---|---|---|---|---|",
        f"| A: whisper-base first pass alone | {alone.wall:.1f} | {alone.cpu:.1f} | 1 | 1 |",
        f"| B: scoring the union's {n_hyps} hypotheses with whisper-base, its first pass' encoder output kept "
        f"| {sb.wall:.1f} | {sb.cpu:.1f} | **{sb.wall / alone.wall:.2f}** | **{sb.cpu / alone.cpu:.2f}** |",
        f"| B: scoring them with whisper-tiny.en, the same way | {st.wall:.1f} | {st.cpu:.1f} "
        f"| {st.wall / alone.wall:.2f} | {st.cpu / alone.cpu:.2f} |",
        f"| B: the whole union first pass with scoring | {whole.wall:.1f} | {whole.cpu:.1f} "
        f"| {whole.wall / alone.wall:.2f} | {whole.cpu / alone.cpu:.2f} |",
        "",
        f"- Scoring with whisper-base / its own first pass: **{sb.wall / alone.wall:.2f}** wall (target: at most 0.5); "
        f"against the decoding time the records report, base alone {base_alone_decode:.1f} s, inside the union "
        f"{decode['whisper-base']:.1f} s.",
        f"- Whole union + scoring first pass: real-time factor **{whole.wall / audio:.3f}** ({whole.wall:.1f} s for "
        f"{audio:.0f} s of audio; decoding tiny.en {decode['whisper-tiny.en']:.1f} s, base "
        f"{decode['whisper-base']:.1f} s).",
        f"- {scored} of {n_hyps} union hypotheses carry both models' `am:*`. Load at start / end: {load0:.1f} / "
        f"{load():.1f}.",
    ]
    return "\n".join(lines), "union-scoring"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("transcribe", help="n-best accuracy, real-time factor, batching speed-up")
    p.add_argument("--set", default="librispeech-dev", help="a set of ../shared/data, or a path")
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--nbest", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    p.add_argument("--speed-subset", type=int, default=24, help="utterances in the batched vs unbatched timing")
    p.add_argument("--rounds", type=int, default=2, help="ABAB rounds of the speed comparison")
    p.set_defaults(run=transcribe)
    p = sub.add_parser("backends", help="every backend's WER and oracle; openai-whisper against CTranslate2")
    p.add_argument("--set", default="librispeech-dev")
    p.add_argument("--backends", default="ctranslate2,ctc,ctc-nolm,ctc-nolexicon,pocketsphinx,openai-whisper")
    p.add_argument("--limit-slow", default="0", help="first N utterances for the --slow backends: N or NAME=N,...")
    p.add_argument("--slow", default="openai-whisper,pocketsphinx", help="backends --limit-slow applies to")
    p.add_argument("--compare-set", default=str(DATA / "tiny"))
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of openai-whisper vs CTranslate2")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per recognizer (1: fastest on a busy machine)")
    p.add_argument("--skip-compare", action="store_true")
    p.add_argument("--out-dir", default=None, help="the backends' n-best files (default: the cache)")
    p.set_defaults(run=backends)
    p = sub.add_parser("union", help="tiny.en + base n-best union, and --distinct")
    p.add_argument("--set", default="librispeech-dev")
    p.add_argument("--union-utts", type=int, default=40)
    p.add_argument("--distinct-utts", type=int, default=30)
    p.add_argument("--nbest", type=int, default=8)
    p.set_defaults(run=union)
    p = sub.add_parser("union-scoring", help="the cost of scoring the union as it goes")
    p.add_argument("--set", default="librispeech-dev")
    p.add_argument("--limit", type=int, default=20, help="first N utterances")
    p.add_argument("--chunk", type=int, default=5, help="utterances per alternation of A and B")
    p.add_argument("--nbest", type=int, default=8)
    p.set_defaults(run=union_scoring)
    for p in sub.choices.values():
        add_publish_options(p)
    args = ap.parse_args(argv)
    args.cmd = command("bench_recognize", argv)
    markdown, section = args.run(args)
    publish(markdown, args.section or section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
