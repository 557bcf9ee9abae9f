"""First-pass benchmark: Whisper n-best accuracy (1-best, oracle at 1..N), real-time factor, batching speed-up.

    python -m eval.bench_transcribe [--set ../shared/data/librispeech-dev] [--model whisper-tiny.en]

Accuracy comes from one batched pass over the whole set. The batching speed-up is measured on a subset,
alternating batched and one-at-a-time passes (ABAB) in the same process so that the shared machine's
load affects both alike; the ratio of their summed times is reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from eval.results import update_section
from rescore.evaluate.scoring import score_records
from rescore.io.datasets import load_dataset
from rescore.registry import make_recognizer

REPO = Path(__file__).resolve().parents[1]


def timed_pass(recognizer, utts) -> tuple[float, list, float]:
    """Wall seconds, records, and CPU seconds of this process (all threads): less sensitive to other jobs."""
    t0, c0 = time.perf_counter(), time.process_time()
    records = list(recognizer.recognize(utts))
    return time.perf_counter() - t0, records, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default=str(REPO.parent / "shared" / "data" / "librispeech-dev"))
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--nbest", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--speed-subset", type=int, default=24, help="utterances in the batched vs unbatched timing")
    p.add_argument("--rounds", type=int, default=2, help="ABAB rounds of the speed comparison")
    p.add_argument("--no-write", action="store_true", help="print only, do not update eval/RESULTS.md")
    args = p.parse_args(argv)

    load0 = os.getloadavg()[0]
    ds = load_dataset(args.set)
    utts = ds.utterances
    batched = make_recognizer(
        "ctranslate2",
        model=args.model,
        nbest=args.nbest,
        beam_size=args.nbest,
        batch_size=args.batch_size,
        device="cpu",
    )
    single = make_recognizer(
        "ctranslate2", model=args.model, nbest=args.nbest, beam_size=args.nbest, batch_size=1, device="cpu"
    )

    elapsed, records, _ = timed_pass(batched, utts)
    audio = sum(r.duration or 0 for r in records if r.ok)
    report = score_records(records)
    wer = {e.normalizer: e for e in report.wer}
    print(f"{ds.name}: {report.scored} utterances, {audio / 60:.1f} min, {elapsed:.1f} s, RTF {elapsed / audio:.3f}")

    speed_line = "- Batching speed-up: not measured in this run (--speed-subset 0)."
    if args.speed_subset > 0:
        sub = utts[: args.speed_subset]
        t_batched = t_single = c_batched = c_single = 0.0
        for _ in range(args.rounds):
            wall, _, cpu = timed_pass(batched, sub)
            t_batched, c_batched = t_batched + wall, c_batched + cpu
            wall, _, cpu = timed_pass(single, sub)
            t_single, c_single = t_single + wall, c_single + cpu
        sub_audio = sum(r.duration or 0 for r in records[: len(sub)] if r.ok)
        speedup = t_single / t_batched
        print(f"batched {t_batched:.1f} s vs one at a time {t_single:.1f} s over {args.rounds} rounds: {speedup:.2f}x")
        speed_line = (
            f"- Batching speed-up, batch {args.batch_size} vs 1, first {len(sub)} utterances "
            f"({sub_audio:.0f} s audio), "
            f"{args.rounds} alternating rounds: batched {t_batched:.1f} s, one at a time {t_single:.1f} s, "
            f"**{speedup:.2f}x** (target 1.3x); in CPU time of this process: batched {c_batched:.1f} s, "
            f"one at a time {c_single:.1f} s, {c_single / c_batched:.2f}x."
        )

    w = wer["whisper"]
    lines = [
        f"Command: `python -m eval.bench_transcribe --set {os.path.relpath(args.set, REPO)} --model {args.model} "
        f"--nbest {args.nbest} --batch-size {args.batch_size} --speed-subset {args.speed_subset} "
        f"--rounds {args.rounds}`",
        "",
        f"Set **{ds.name}** ({report.scored} utterances, {audio / 60:.1f} min; failed: {len(report.failed)}), "
        f"model {args.model}, CTranslate2 int8 on CPU, beam {args.nbest}, {args.nbest} hypotheses.",
        "",
        "| normalizer | WER % | 95 % CI | S | D | I | words |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in report.wer:
        lines.append(
            f"| {e.normalizer} | {100 * e.rate:.2f} | {100 * e.ci_low:.2f}-{100 * e.ci_high:.2f} | {e.substitutions} "
            f"| {e.deletions} | {e.insertions} | {e.reference_length} |"
        )
    lines += [
        "",
        "Oracle WER % of the n-best at k (Whisper normalizer):",
        "",
        "| " + " | ".join(f"k={k}" for k in range(1, len(report.oracle) + 1)) + " |",
        "|" + "---|" * len(report.oracle),
        "| " + " | ".join(f"{100 * x:.2f}" for x in report.oracle) + " |",
        "",
        f"- 1-best WER {100 * w.rate:.2f} %, oracle at {len(report.oracle)} {100 * report.oracle[-1]:.2f} %.",
        f"- Real-time factor (batched, whole set, features + decoding): **{elapsed / audio:.3f}** "
        f"({elapsed:.1f} s for {audio:.0f} s of audio).",
        speed_line,
        f"- Machine load (1-min load average on 2 cores) at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f}; "
        "with other jobs on the machine both real-time factor and speed-up are pessimistic.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section(f"transcribe-{ds.name}-{args.model}", f"## First pass: {args.model} on {ds.name}\n\n{text}")


if __name__ == "__main__":
    sys.exit(main())
