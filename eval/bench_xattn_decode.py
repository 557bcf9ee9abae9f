"""The cost of deep-fusion decoding (``rescore run``'s deep stage), side by side in one run: each utterance's
prompt through the LM and the blocks once and cached (the default since session 10), against the prompt run
again for every candidate (choosing) or every beam (writing), as sessions 4-9 did.

Real inputs: the first N utterances of librispeech-dev, their tiny.en 8-best (the prompt shows up to 8 distinct
hypotheses; each is a candidate when choosing), Whisper tiny.en encoder states; a fresh model (blocks after every
6th SmolLM2 layer, ``attend all``) with its gates set open (the cost does not depend on the weights, and open
gates make the blocks' work count). Writing is beam search at the deep stage's defaults (beam 4, 4 kept).
One torch thread, CPU seconds per utterance on the warm second pass; beside each, the largest difference
between the two ways' scores (they compute the same log-probs) and whether they give the same answers.

    python -m eval.bench_xattn_decode --utterances 24 --write-utterances 12
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def timed(decode: Callable[[object], list], examples: list, batch_size: int) -> tuple[float, list]:
    """(CPU seconds per utterance on the warm second pass, every utterance's ranked answers) of ``decode``."""
    from rescore.deep.train import make_batch

    order = [list(range(i, min(i + batch_size, len(examples)))) for i in range(0, len(examples), batch_size)]
    seconds, answers = 0.0, []
    for _ in range(2):
        t0, answers = time.process_time(), []
        for idx in order:
            answers += decode(make_batch(examples, idx))
        seconds = (time.process_time() - t0) / len(examples)
    return seconds, answers


def agreement(old: list, new: list) -> tuple[float, int]:
    """(largest score difference, utterances whose best answer differs) between two ways' ranked answers."""
    diff = max(
        (abs(a.score - b.score) for hs_a, hs_b in zip(old, new, strict=True) for a, b in zip(hs_a, hs_b, strict=False)),
        default=0.0,
    )
    return diff, sum(bool(a) and bool(b) and a[0].text != b[0].text for a, b in zip(old, new, strict=True))


def run(args: argparse.Namespace) -> str:
    import torch

    from eval.bench_xattn import REPORT_ENCODER, nbest_file
    from rescore.deep.train import load_nbest_examples
    from rescore.deep.xattn import XAttnConfig, build_xattn

    torch.set_num_threads(1)
    limit = max(args.utterances, args.write_utterances)
    examples = load_nbest_examples(
        [nbest_file("librispeech-dev", REPORT_ENCODER)], REPORT_ENCODER, limit=limit, on_issue=print
    )
    torch.manual_seed(0)
    model = build_xattn(XAttnConfig(max_hypotheses=8)).eval()
    with torch.no_grad():
        for b in model.blocks:
            b.attn_gate.fill_(0.5)
            b.ffn_gate.fill_(0.5)
    rows = []
    choose = examples[: args.utterances]
    n_cands = sum(len(model.candidates(e.hypotheses)) for e in choose)
    for what, data, decode in (
        (
            f"choosing ({len(choose)} utterances, {n_cands / len(choose):.1f} candidates each)",
            choose,
            lambda shared: lambda b: model.choose(b, nbest=64, shared_prompts=shared),
        ),
        (
            f"writing, beam {args.beam} ({args.write_utterances} utterances)",
            examples[: args.write_utterances],
            lambda cached: lambda b: model.generate(b, beam_size=args.beam, nbest=args.beam, cached_prompt=cached),
        ),
    ):
        with torch.no_grad():
            before, old = timed(decode(False), data, args.batch_size)
            now, new = timed(decode(True), data, args.batch_size)
        diff, changed = agreement(old, new)
        print(what, before, now, diff, changed, flush=True)
        rows.append(f"| {what} | {before:.2f} | {now:.2f} | {now / before:.2f} | {diff:.1e} | {changed}/{len(data)} |")
    return f"""### Deep fusion: cost of decoding with the prompt cached (issue 15, session 10)

The first utterances of librispeech-dev (tiny.en 8-best in the prompt, Whisper tiny.en states), the default
model (blocks after every 6th SmolLM2 layer, `attend all`) with its gates set open, batches of {args.batch_size}
utterances, one torch thread, CPU seconds per utterance on the second of two passes. "before": every candidate
(choosing) or beam (writing) runs its own copy of the prompt; "now": each utterance's prompt runs once and
the candidates or beams continue from its cache. Score difference: the largest between the two ways' (summed
log-prob); best answer changed: utterances whose top answer differs. Command:
`python -m eval.bench_xattn_decode --utterances {args.utterances} --write-utterances {args.write_utterances}`

| decoding | CPU s / utt before | now | ratio | score difference | best answer changed |
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_xattn_decode")
    ap.add_argument("--utterances", type=int, default=24, help="first N utterances of librispeech-dev, choosing")
    ap.add_argument("--write-utterances", type=int, default=12, help="first N utterances, writing")
    ap.add_argument("--beam", type=int, default=4, help="writing's beam (the deep stage's default)")
    ap.add_argument("--batch-size", type=int, default=4, help="utterances per call (the deep stage's default)")
    args = ap.parse_args()
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
