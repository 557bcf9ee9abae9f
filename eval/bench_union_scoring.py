"""A union first pass that scores as it goes: the cost of acoustic scoring with the encoder output reused.

    python -m eval.bench_union_scoring [--set ../shared/data/librispeech-dev] [--limit 20] [--chunk 5]

whisper-tiny.en + whisper-base (CTranslate2 int8 on CPU, beam 8, 8 hypotheses each), in one run,
alternating chunk by chunk (ABBA) so that the shared machine's load hits both alike:

A. whisper-base's first pass alone (nothing kept);
B. the union first pass that scores as it goes (``TranscribeOptions(model=[...], ascore=True)``, i.e.
   ``UnionRecognizer(..., scorers=...)``): each model decodes the chunk handing out its encoder output,
   the lists are merged, and every union hypothesis is scored with every model against that model's
   encoder output (``WhisperScorer.score(memories=...)``), no encoder run twice.

Reported: base's first pass alone vs base's first pass + scoring the union's hypotheses with base from the
kept encoder output, the ratio scoring / first pass (the issue's target: at most 0.5), and the whole
union + scoring first pass' real-time factor.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from eval.bench_ascore import Clock
from eval.results import update_section
from rescore.io.datasets import load_dataset
from rescore.recognize.union import UnionRecognizer
from rescore.registry import make_recognizer
from rescore.score.acoustic import WhisperScorer

REPO = Path(__file__).resolve().parents[1]
MODELS = ("whisper-tiny.en", "whisper-base")
SECTION = "union-scoring"


class TimedScorer:
    """A scorer whose ``score`` calls are timed (wall and CPU)."""

    def __init__(self, scorer: WhisperScorer) -> None:
        self.scorer, self.clock = scorer, Clock()

    def score(self, records, memories=None):
        with self.clock:
            return self.scorer.score(records, memories)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default=str(REPO.parent / "shared" / "data" / "librispeech-dev"))
    p.add_argument("--limit", type=int, default=20, help="first N utterances of the set")
    p.add_argument("--chunk", type=int, default=5, help="utterances per alternation of A and B")
    p.add_argument("--nbest", type=int, default=8)
    p.add_argument("--no-write", action="store_true", help="print only, do not update eval/RESULTS.md")
    args = p.parse_args(argv)

    load0 = os.getloadavg()[0]
    ds = load_dataset(args.set)
    utts = ds.utterances[: args.limit]
    opts = {"nbest": args.nbest, "beam_size": args.nbest, "device": "cpu"}
    recs = {m: make_recognizer("ctranslate2", model=m, **opts) for m in MODELS}
    scorers = {m: TimedScorer(WhisperScorer(m, device="cpu", ct2_model=recs[m].model)) for m in MODELS}
    union = UnionRecognizer([recs[m] for m in MODELS], list(MODELS), scorers=[scorers[m] for m in MODELS])

    alone, whole = Clock(), Clock()
    base_alone_decode = 0.0  # the records' own transcribe timing: decoding, without audio loading and features
    merged = []
    for k, i in enumerate(range(0, len(utts), args.chunk)):
        chunk = utts[i : i + args.chunk]
        for what in ("A", "B") if k % 2 == 0 else ("B", "A"):
            if what == "A":
                with alone:
                    base_alone_decode += sum(
                        r.timing.get("transcribe", 0.0) for r in recs["whisper-base"].recognize(chunk)
                    )
            else:
                with whole:
                    merged += list(union.recognize(chunk))
        print(f"  {i + len(chunk)}/{len(utts)}: base alone {alone.wall:.1f} s, union + scoring {whole.wall:.1f} s")
    ok = [r for r in merged if r.ok]
    audio = sum(r.duration or 0.0 for r in ok)
    n_hyps = sum(len(r.hypotheses) + sum(len(w.hypotheses) for w in r.windows) for r in ok)
    scored = sum(1 for r in ok for h in r.hypotheses if all(f"am:{m}" in h.scores for m in MODELS))
    issues = sum(1 for r in ok if r.extra.get("ascore_issues") or r.extra.get("ascore"))
    base_in_union = sum(float(r.timing.get("transcribe:whisper-base", 0.0)) for r in ok)
    tiny_in_union = sum(float(r.timing.get("transcribe:whisper-tiny.en", 0.0)) for r in ok)
    sb, st = scorers["whisper-base"].clock, scorers["whisper-tiny.en"].clock
    ratio_wall, ratio_cpu = sb.wall / alone.wall, sb.cpu / alone.cpu
    rtf = whole.wall / audio

    lines = [
        f"Command: `python -m eval.bench_union_scoring --set {os.path.relpath(args.set, REPO)} --limit {args.limit} "
        f"--chunk {args.chunk} --nbest {args.nbest}`",
        "",
        f"Set **{ds.name}**, first {len(utts)} utterances ({audio / 60:.1f} min), CPU, CTranslate2 int8 "
        f"({os.cpu_count()} threads), beam {args.nbest}, {args.nbest} hypotheses per model; scorer decoder "
        f"(PyTorch) on 1 thread. A and B alternate in chunks of {args.chunk} utterances (ABBA), in one run.",
        "",
        "| | wall s | CPU s | / base first pass (wall) | / base first pass (CPU) |",
        "|---|---|---|---|---|",
        f"| A: whisper-base first pass alone | {alone.wall:.1f} | {alone.cpu:.1f} | 1 | 1 |",
        f"| B: scoring the union's {n_hyps} hypotheses with whisper-base, its first pass' encoder output kept "
        f"| {sb.wall:.1f} | {sb.cpu:.1f} | **{ratio_wall:.2f}** | **{ratio_cpu:.2f}** |",
        f"| B: scoring them with whisper-tiny.en, the same way | {st.wall:.1f} | {st.cpu:.1f} "
        f"| {st.wall / alone.wall:.2f} | {st.cpu / alone.cpu:.2f} |",
        f"| B: the whole union first pass with scoring (tiny.en + base) | {whole.wall:.1f} | {whole.cpu:.1f} "
        f"| {whole.wall / alone.wall:.2f} | {whole.cpu / alone.cpu:.2f} |",
        "",
        f"- Scoring with whisper-base / whisper-base's own first pass: **{ratio_wall:.2f}** wall, "
        f"**{ratio_cpu:.2f}** CPU (target: at most 0.5). Against the decoding time alone the records report "
        f"(no audio loading or features): base alone {base_alone_decode:.1f} s, base inside the union "
        f"{base_in_union:.1f} s (it also hands out its encoder output), scoring / decoding "
        f"{sb.wall / base_alone_decode:.2f}.",
        f"- Whole union + scoring first pass: real-time factor **{rtf:.3f}** ({whole.wall:.1f} s for "
        f"{audio:.0f} s of audio; decoding tiny.en {tiny_in_union:.1f} s, base {base_in_union:.1f} s, "
        f"scoring tiny.en {st.wall:.1f} s, base {sb.wall:.1f} s).",
        f"- {scored} of {sum(len(r.hypotheses) for r in ok)} union hypotheses carry both models' `am:*`; "
        f"records with an ascore issue or skip: {issues}.",
        "",
        f"Machine load (1-min load average on 2 cores) at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section(SECTION, f"## Union first pass scoring as it goes on {ds.name}\n\n{text}")


if __name__ == "__main__":
    sys.exit(main())
