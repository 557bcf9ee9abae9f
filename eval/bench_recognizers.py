"""First-pass backends side by side: WER and oracle-at-8 per backend, openai-whisper vs CTranslate2.

    python -m eval.bench_recognizers [--set ../shared/data/librispeech-dev] [--backends ctranslate2,ctc,...]
                                     [--limit-slow 40] [--compare-set ../shared/data/tiny]

1. Accuracy: each backend transcribes the set into an n-best file in the cache (resumable, so an
   interrupted run goes on where it stopped); WER (Whisper normaliser) and oracle WER of the 8-best are
   computed per backend (``--limit-slow N`` gives the slow backends, openai-whisper and PocketSphinx by
   default, only the first N utterances: CTranslate2's WER on the same subset is shown beside each).
2. openai-whisper vs CTranslate2 on the same model, beam and audio (the tiny set): how many 1-best
   transcripts are the same, and the speed ratio, timed alternately (ABAB) in this one process.
The CTC head is the one ``rescore ctc train`` saved (its training summary is printed with it); the
evaluation set is never used to train or pick it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from eval.results import update_section
from rescore.evaluate.metrics import error_rate, normalize, oracle_curve
from rescore.evaluate.scoring import score_records
from rescore.io.datasets import load_dataset
from rescore.io.models import cache_dir
from rescore.recognize.ctc_decode import LM_WEIGHT, WORD_BONUS
from rescore.records import NBestWriter, read_nbest
from rescore.registry import make_recognizer

REPO = Path(__file__).resolve().parents[1]


# benchmark names that are a backend with other options
VARIANTS = {
    "ctc-nolm": ("ctc", {"word_lm": None}),
    "ctc-nolexicon": ("ctc", {"lexicon": None, "word_lm": None}),
}
# the ctc backend's word-LM weight and bonus were picked on these first utterances of librispeech-dev
CTC_TUNING_UTTERANCES = 30


def transcribe(backend: str, utts, out: Path, batch_size: int, threads: int) -> tuple[list, float, float]:
    """n-best records of ``utts`` (resuming ``out``) and the wall/audio seconds of the new part."""
    writer = NBestWriter(out, resume=True)
    todo = [u for u in utts if u.id not in writer.done]
    t0 = time.perf_counter()
    audio = 0.0
    if todo:
        name, extra = VARIANTS.get(backend, (backend, {}))
        opts = {"device": "cpu", "nbest": 8, "beam_size": 8, "batch_size": batch_size, "cpu_threads": threads}
        rec = make_recognizer(name, model=_model(name), **opts, **extra)
        with writer:
            for i, r in enumerate(rec.recognize(todo), 1):
                writer.write(r)
                audio += r.duration or 0.0
                if i % 10 == 0:
                    print(f"  {backend}: {i}/{len(todo)}", file=sys.stderr, flush=True)
    else:
        writer.close()
    by_id = {r.id: r for r in read_nbest(out)}
    return [by_id[u.id] for u in utts if u.id in by_id], time.perf_counter() - t0, audio


def _limit(spec: str, backend: str) -> int:
    """``--limit-slow`` for one backend: "20" for all, or "openai-whisper=20,pocketsphinx=70"."""
    if "=" not in spec:
        return int(spec)
    pairs = dict(item.split("=", 1) for item in spec.split(",") if item)
    return int(pairs.get(backend, 0))


def _model(backend: str) -> str:
    return "default" if backend == "ctc" else "whisper-tiny.en"


def accuracy(records) -> tuple[float, float, int, int]:
    ok = [r for r in records if r.ok and r.reference is not None]
    refs = [r.reference for r in ok]
    wer = error_rate(refs, [r.hypotheses[0].text if r.hypotheses else "" for r in ok]).rate
    oracle = oracle_curve(refs, [[h.text for h in r.hypotheses[:8]] or [""] for r in ok])
    return wer, oracle[-1] if oracle else float("nan"), len(ok), len(records) - len(ok)


def compare_whisper(compare_set: str, rounds: int, batch_size: int, threads: int) -> dict:
    """1-best agreement and ABAB timing of CTranslate2 (int8) vs openai-whisper (float32) on one set."""
    utts = load_dataset(compare_set).utterances
    opts = {"model": "whisper-tiny.en", "device": "cpu", "nbest": 8, "beam_size": 8, "batch_size": batch_size}
    ct2 = make_recognizer("ctranslate2", cpu_threads=threads, **opts)
    ow = make_recognizer("openai-whisper", cpu_threads=threads, **opts)
    list(ct2.recognize(utts[:1]))  # warm-up: first-call allocations are not part of the comparison
    list(ow.recognize(utts[:1]))
    times = {"ctranslate2": [0.0, 0.0], "openai-whisper": [0.0, 0.0]}
    outputs = {}
    for _ in range(rounds):
        for name, rec in (("ctranslate2", ct2), ("openai-whisper", ow)):
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name] = list(rec.recognize(utts))
            times[name][0] += time.perf_counter() - t0
            times[name][1] += time.process_time() - c0
    a = [r.hypotheses[0].text if r.hypotheses else "" for r in outputs["ctranslate2"]]
    b = [r.hypotheses[0].text if r.hypotheses else "" for r in outputs["openai-whisper"]]
    exact = sum(x.strip() == y.strip() for x, y in zip(a, b, strict=True))
    normalized = sum(normalize(x) == normalize(y) for x, y in zip(a, b, strict=True))
    diffs = [(u.id, x, y) for u, x, y in zip(utts, a, b, strict=True) if x.strip() != y.strip()]
    return {
        "n": len(utts),
        "exact": exact,
        "normalized": normalized,
        "diffs": diffs,
        "wall": times,
        "wall_ratio": times["openai-whisper"][0] / times["ctranslate2"][0],
        "cpu_ratio": times["openai-whisper"][1] / times["ctranslate2"][1],
    }


def joint_ctc_attention(records, folds: int = 5) -> dict:
    """Whisper n-best rescored with (1 - w) * am + w * ctc, w picked by k-fold cross-validation.

    For each fold the weight is chosen on the other folds and applied to this one, so the reported WER
    never used its own utterances for tuning.
    """
    from rescore.score.ctc import CTCScorer

    scored = [r for r in CTCScorer("default").score(records) if r.ok and r.hypotheses and r.reference]
    grid = [i / 20 for i in range(21)]

    def pick(recs, w: float) -> list[str]:
        return [
            max(r.hypotheses, key=lambda h: (1 - w) * h.scores["am"] + w * h.scores.get("ctc", -1e9)).text for r in recs
        ]

    def wer(recs, w: float) -> float:
        return error_rate([r.reference for r in recs], pick(recs, w)).rate

    chosen_texts: dict[str, str] = {}
    weights = []
    for k in range(folds):
        test = [r for i, r in enumerate(scored) if i % folds == k]
        tune = [r for i, r in enumerate(scored) if i % folds != k]
        w = min(grid, key=lambda g: (wer(tune, g), g))
        weights.append(w)
        chosen_texts |= dict(zip((r.id for r in test), pick(test, w), strict=True))
    refs = [r.reference for r in scored]
    return {
        "n": len(scored),
        "baseline": error_rate(refs, [r.hypotheses[0].text for r in scored]).rate,
        "am_only": wer(scored, 0.0),
        "cv": error_rate(refs, [chosen_texts[r.id] for r in scored]).rate,
        "weights": weights,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default=str(REPO.parent / "shared" / "data" / "librispeech-dev"))
    p.add_argument("--backends", default="ctranslate2,ctc,ctc-nolm,ctc-nolexicon,pocketsphinx,openai-whisper")
    p.add_argument(
        "--limit-slow",
        default="0",
        help="only the first N utterances for the --slow backends: N, or per backend NAME=N,NAME=N (0: all)",
    )
    p.add_argument("--slow", default="openai-whisper,pocketsphinx", help="backends that --limit-slow applies to")
    p.add_argument("--compare-set", default=str(REPO.parent / "shared" / "data" / "tiny"))
    p.add_argument("--rounds", type=int, default=2, help="ABAB rounds of the openai-whisper vs CTranslate2 timing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per recognizer (1: fastest on a busy machine)")
    p.add_argument("--skip-compare", action="store_true")
    p.add_argument("--joint", action="store_true", help="also rescore the CTranslate2 n-best with the CTC head")
    p.add_argument("--out-dir", default=str(cache_dir() / "bench_recognizers"))
    p.add_argument("--no-write", action="store_true", help="print only, do not update eval/RESULTS.md")
    args = p.parse_args(argv)
    cmd = "python -m eval.bench_recognizers " + shlex.join(argv if argv is not None else sys.argv[1:])
    load0 = os.getloadavg()[0]

    ds = load_dataset(args.set)
    set_name = Path(args.set).name
    out_dir = Path(args.out_dir)
    results: dict[str, dict] = {}
    all_records: dict[str, list] = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        limit = _limit(args.limit_slow, backend) if backend in args.slow.split(",") else 0
        utts = ds.utterances[:limit] if limit else ds.utterances
        print(f"{backend}: {len(utts)} utterances of {set_name}", file=sys.stderr, flush=True)
        records, wall, audio = transcribe(
            backend, utts, out_dir / f"{set_name}.{backend}.jsonl", args.batch_size, args.threads
        )
        all_records[backend] = records
        wer, oracle, n, failed = accuracy(records)
        results[backend] = {"wer": wer, "oracle8": oracle, "n": n, "failed": failed}
        if audio:
            results[backend]["rtf"] = wall / audio
        report = score_records(records)
        results[backend]["oracle_curve"] = report.oracle
        print(f"  WER {100 * wer:.2f} %, oracle@8 {100 * oracle:.2f} % on {n} utterances", file=sys.stderr)
    if "ctranslate2" in all_records:  # the reference system on each backend's subset
        ct2 = {r.id: r for r in all_records["ctranslate2"]}
        for backend, recs in all_records.items():
            results[backend]["ct2_same_subset"] = accuracy([ct2[r.id] for r in recs if r.id in ct2])[0]

    ctc_meta = {}
    if any(b.startswith("ctc") for b in results):
        from rescore.recognize.ctc_head import load_ctc_head

        head = load_ctc_head("default")
        ctc_meta = {k: v for k, v in head.meta.items() if k != "history"}

    joint = joint_ctc_attention(all_records["ctranslate2"]) if args.joint and "ctranslate2" in all_records else None
    compare = None
    if not args.skip_compare:
        compare = compare_whisper(args.compare_set, args.rounds, args.batch_size, args.threads)

    lines = [
        f"Command: `{cmd}`",
        "",
        f"Set: {set_name} ({len(ds.utterances)} utterances). WER with the Whisper normaliser, 1-best as each "
        "recognizer ranked it; oracle@8: best of the first 8 hypotheses. Load average at start "
        f"{load0:.1f} on a shared 2-core CPU (real-time factors are indicative only).",
        "",
        "| backend | utterances | WER | oracle@8 | CTranslate2 WER, same utterances | real-time factor |",
        "|---|---|---|---|---|---|",
    ]
    for backend, r in results.items():
        rtf = f"{r['rtf']:.2f}" if "rtf" in r else "(cached)"
        same = f"{100 * r['ct2_same_subset']:.2f} %" if "ct2_same_subset" in r else ""
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(
            f"| {backend} | {r['n']}{failed} | {100 * r['wer']:.2f} % | {100 * r['oracle8']:.2f} % | {same} | {rtf} |"
        )
    if ctc_meta:
        best = ctc_meta.get("best", {})
        tr = ctc_meta.get("train", {})
        lines += [
            "",
            f"CTC head: {ctc_meta.get('params', 0) / 1e6:.2f} M parameters over frozen whisper-tiny.en encoder states "
            f"(int8, cached), characters, trained {ctc_meta.get('total_minutes', tr.get('minutes'))} min wall-clock "
            "in all "
            f"(single-threaded, CPU shared with other jobs; last run {tr.get('minutes')} min) on "
            f"{ctc_meta.get('train_utterances')} utterances ({ctc_meta.get('train_hours')} h of "
            f"{', '.join(Path(s).name for s in tr.get('sets', []))}); checkpoint of epoch {best.get('epoch')} picked "
            f"on {ctc_meta.get('heldout_utterances')} held-out training utterances (greedy CER "
            f"{100 * best.get('cer', float('nan')):.1f} %). Prefix beam search over characters: `ctc` keeps the beam "
            "on words of the CMU dictionary shipped with pocketsphinx (134k words) and fuses pocketsphinx's en-US "
            f"word trigram at each word end (weight {LM_WEIGHT}, bonus {WORD_BONUS} per word, beam 32); `ctc-nolm` "
            "the same without the word LM (beam 8); `ctc-nolexicon` free spelling, no LM.",
        ]
        if "ctc" in results:
            w = results["ctc"]["wer"]
            tuned = {u.id for u in ds.utterances[:CTC_TUNING_UTTERANCES]}
            ctcs = [b for b in all_records if b in ("ctc", "ctc-nolm")]
            rest = {b: [r for r in all_records[b] if r.id not in tuned] for b in ctcs}
            held = {b: accuracy(recs) for b, recs in rest.items()}
            lines.append(
                f"The word-LM weight and bonus were picked on the first {CTC_TUNING_UTTERANCES} utterances of "
                f"librispeech-dev (the best of 5 settings tried); on the other {len(rest.get('ctc', []))}: "
                + ", ".join(f"{b} {100 * h[0]:.2f} %" for b, h in held.items())
                + "."
            )
            lines.append(
                f"Target of the issue, under 30 % WER on {set_name}: {'reached' if w < 0.3 else 'not reached'} "
                f"({100 * w:.1f} %). The head spells most characters right but few whole words: about two hours "
                "of narrow training speech (AN4 letters and digits, one ARCTIC speaker, non-native speechocean "
                "readers) and a few hundred updates on the shared CPU; the word LM fixes some spellings but cannot "
                "recover words the head did not hear."
            )
    if joint:
        lines += [
            "",
            f"Joint CTC/attention rescoring of the CTranslate2 8-best ({joint['n']} utterances): each hypothesis "
            "scored (1 - w) * Whisper log-prob + w * CTC log-prob (the head's forward algorithm over the same "
            f"audio), w chosen by 5-fold cross-validation (weights {joint['weights']}): WER "
            f"{100 * joint['baseline']:.2f} % (Whisper's 1-best) -> {100 * joint['cv']:.2f} % "
            f"(summed Whisper log-prob alone: {100 * joint['am_only']:.2f} %).",
        ]
    if compare:
        ct2_w, ow_w = compare["wall"]["ctranslate2"], compare["wall"]["openai-whisper"]
        lines += [
            "",
            f"openai-whisper (float32 PyTorch, weights converted from the CTranslate2 model) vs CTranslate2 (int8), "
            f"whisper-tiny.en, beam 8, batch {args.batch_size}, {args.threads} CPU thread(s) each, on "
            f"{Path(args.compare_set).name} ({compare['n']} "
            f"utterances), {args.rounds} alternating rounds:",
            "",
            f"- same 1-best: {compare['exact']} of {compare['n']} exactly, {compare['normalized']} of {compare['n']} "
            "after the Whisper normaliser",
            f"- time: CTranslate2 {ct2_w[0]:.1f} s wall / {ct2_w[1]:.1f} s CPU, openai-whisper {ow_w[0]:.1f} s wall "
            f"/ {ow_w[1]:.1f} s CPU: openai-whisper takes {compare['wall_ratio']:.2f}x the wall time "
            f"({compare['cpu_ratio']:.2f}x the CPU time) of CTranslate2",
        ]
        lines.append(
            f"- target of the issue, the same 1-best on at least 9 of 10: {compare['normalized']} of {compare['n']} "
            f"after normalisation, {compare['exact']} exactly (differences listed below); the faster-whisper "
            "project reports about 4x for CTranslate2 int8 over openai-whisper on CPU"
        )
        for uid, x, y in compare["diffs"]:
            lines.append(f"- differs on {uid}: CTranslate2 `{x}` / openai-whisper `{y}`")
    md = "\n".join(lines)
    print(md)
    print(json.dumps({"results": results, "compare": compare, "joint": joint}, default=str)[:2000], file=sys.stderr)
    if not args.no_write:
        update_section("recognizers", md)


if __name__ == "__main__":
    main()
