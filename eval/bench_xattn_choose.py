"""The cost of choosing (``rescore run``'s deep stage with ``decode = "choose"``), side by side in one run: each
utterance's prompt through the LM and the blocks once, every candidate scored from its cache (the default since
session 10), against one pass over prompt and candidate per candidate (sessions 4-9).

Real inputs: the first N utterances of librispeech-dev, their tiny.en 8-best (the prompt shows up to 8 distinct
hypotheses, and each is a candidate), Whisper tiny.en encoder states; a fresh model with its gates set open
(the cost does not depend on the weights, and open gates make the blocks' work count). One torch thread, CPU
seconds per utterance on the warm second pass; the largest difference between the two ways' scores is reported
beside (they compute the same log-probs).

    python -m eval.bench_xattn_choose --utterances 24
"""

from __future__ import annotations

import argparse
import time


def choose_seconds(model, examples: list, batch_size: int, shared: bool) -> tuple[float, list[float]]:
    """(CPU seconds per utterance on the warm pass, every candidate's score) of choosing over ``examples``."""
    from rescore.fusion.train import make_batch

    order = [list(range(i, min(i + batch_size, len(examples)))) for i in range(0, len(examples), batch_size)]
    seconds, scores = 0.0, []
    for _ in range(2):
        t0, scores = time.process_time(), []
        for idx in order:
            ranked = model.choose(make_batch(examples, idx), nbest=64, shared_prompts=shared)
            scores += [h.score for hs in ranked for h in sorted(hs, key=lambda h: h.text)]
        seconds = (time.process_time() - t0) / len(examples)
    return seconds, scores


def run(args: argparse.Namespace) -> str:
    import torch

    from eval.bench_xattn import REPORT_ENCODER, nbest_file
    from rescore.fusion.train import load_nbest_examples
    from rescore.fusion.xattn import XAttnConfig, build_xattn

    torch.set_num_threads(1)
    path = nbest_file("librispeech-dev", REPORT_ENCODER)
    examples = load_nbest_examples([path], REPORT_ENCODER, limit=args.utterances, on_issue=print)
    torch.manual_seed(0)
    model = build_xattn(XAttnConfig(max_hypotheses=8)).eval()
    with torch.no_grad():
        for b in model.blocks:
            b.attn_gate.fill_(0.5)
            b.ffn_gate.fill_(0.5)
    per_candidate, scores_old = choose_seconds(model, examples, args.batch_size, shared=False)
    shared, scores_new = choose_seconds(model, examples, args.batch_size, shared=True)
    n_cands = len(scores_new)
    diff = max(abs(a - b) for a, b in zip(scores_old, scores_new, strict=True))
    rel = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(scores_old, scores_new, strict=True))
    print(per_candidate, shared, diff, flush=True)
    return f"""### Deep fusion: cost of choosing (issue 15, session 10)

The first {len(examples)} utterances of librispeech-dev, {n_cands} candidates ({n_cands / len(examples):.1f} per
utterance: the distinct hypotheses of tiny.en's 8-best), Whisper tiny.en states, the default model (blocks after
every 6th SmolLM2 layer, `attend all`) with its gates set open, batches of {args.batch_size} utterances, one torch
thread, CPU seconds per utterance on the second of two passes. Command:
`python -m eval.bench_xattn_choose --utterances {args.utterances}`

| prompt pass | CPU s / utterance | ratio to one pass per candidate |
|---|---:|---:|
| one per candidate (sessions 4-9) | {per_candidate:.2f} | 1.00 |
| one per utterance, cached (now) | {shared:.2f} | {shared / per_candidate:.2f} |

Largest difference between the two ways' scores (summed log-prob of a candidate): {diff:.2e} ({rel:.1e} of
the score); they rank the same way up to that rounding.
"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_xattn_choose")
    ap.add_argument("--utterances", type=int, default=24, help="first N utterances of librispeech-dev")
    ap.add_argument("--batch-size", type=int, default=4, help="utterances per call (the deep stage's default)")
    args = ap.parse_args()
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
