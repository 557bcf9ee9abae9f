"""Where the cross-attention blocks look before training: the present start (K/V from Whisper's decoder, queries
random) against queries fitted to Whisper's decoder queries (``XAttnConfig.q_init``, rescore.deep.query_init).

The blocks of the base-audio model (SmolLM2-135M, a block after every 6th layer, Whisper base encoder states on the
utterance's own window) are fitted on training examples (the tiny.en lists of an4-train, arctic-cathy and
speechocean-train, up to ``--per-set`` each) and measured on held-out utterances of the same sets (``held_out``,
never fitted on): per block, the ridge's held-out R^2, and how far the block's attention agrees with Whisper base's
own decoder attention over the same keys at the aligned positions (shared probability mass; share of positions and
heads whose most attended frame is within 2 frames of Whisper's). No WER here: that is bench_xattn's.

    python -m eval.bench_query_init --per-set 150 --fit 300 --measure 40 \\
        --trained ~/.cache/rescore/deep/bench-xattn-own-whisper-noise0.5-41-75/base-audio

``--trained`` adds the agreement of trained models' blocks (over Whisper base states) on the same utterances.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def run(args: argparse.Namespace) -> str:
    import torch

    from eval.bench_xattn import FULL_LIST, TRAIN_SETS, nbest_file
    from rescore.deep.query_init import attention_agreement, fit_queries, whisper_scorer
    from rescore.deep.train import held_out, load_nbest_examples
    from rescore.deep.xattn import XAttnConfig, build_xattn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    files = [nbest_file(s, FULL_LIST) for s in TRAIN_SETS]
    examples = load_nbest_examples(files, "whisper-base", limit=args.per_set, window="own", on_issue=print)
    fit_ex, test_ex = held_out(examples, 0.15, args.seed)
    test_ex = test_ex[: args.measure]
    cfg = XAttnConfig(encoder="whisper-base", kv_init="whisper-base", encoder_window="own", text_norm="whisper")
    model = build_xattn(cfg.fit_width(int(examples[0].states.shape[1]))).eval()
    scorer = whisper_scorer("whisper-base")  # one decoder for every fit and measurement below
    before = attention_agreement(model, test_ex, scorer)
    t0 = time.process_time()
    fits = fit_queries(model, fit_ex, limit=args.fit, seed=args.seed, scorer=scorer)
    fit_seconds = time.process_time() - t0
    after = attention_agreement(model, test_ex, scorer)
    rows = [
        f"| {j + 1} (after layer {model.where[j] + 1}) | {f.r2:.3f} | {f.alpha:g} | {b.overlap:.3f} | {a.overlap:.3f} "
        f"| {100 * b.peak:.0f} % | {100 * a.peak:.0f} % |"
        for j, (f, b, a) in enumerate(zip(fits, before, after, strict=True))
    ]
    trained = []
    for folder in args.trained:
        from rescore.deep.xattn import load_deep_model

        got = attention_agreement(load_deep_model(Path(folder).expanduser()), test_ex, scorer)
        overlaps = ", ".join(f"{a.overlap:.3f}" for a in got)
        peaks = ", ".join(f"{100 * a.peak:.0f} %" for a in got)
        trained.append(f"| `{Path(folder).parent.name}/{Path(folder).name}` | {overlaps} | {peaks} |")
    trained_md = (
        "\nTrained models (their blocks as training left them, on the same utterances, which they may have trained on:"
        " a diagnostic of where they look, not an accuracy figure):\n\n"
        "| model | overlap per block | peak per block |\n|---|---|---|\n" + "\n".join(trained) + "\n"
        if trained
        else ""
    )
    command = "python -m eval.bench_query_init " + " ".join(sys.argv[1:])
    return f"""### Deep fusion: where the blocks look before training, random queries or fitted to Whisper's

Model: the base-audio blocks (SmolLM2-135M, a block after every 6th of its 30 layers, 8 heads of 64, K/V from
Whisper base's decoder cross-attention, Whisper base encoder states on each utterance's own window, targets in
Whisper's normalizer). Fitted on {min(args.fit, len(fit_ex))} training utterances (the tiny.en lists of
{", ".join(TRAIN_SETS)}, up to {args.per_set} each), in {fit_seconds:.0f} CPU s on {args.threads} thread;
measured on {len(test_ex)} held-out utterances of the same sets, never fitted on. R^2: the ridge's, on a fifth of
the fitting utterances held out (alpha chosen there, times the features' mean variance). Agreement with Whisper
base's own decoder attention over the same keys, at each LM position that predicts a transcript token (aligned to
the Whisper position predicting the token covering its first letter): overlap, the probability mass both put on
the same frames (1: identical), and peak, the share of positions and heads whose most attended frame is within
2 frames (40 ms) of Whisper's. "random": the start every model had before (`q_init` off).
Command: `{command}`

| block | R^2 | alpha | overlap, random | overlap, fitted | peak, random | peak, fitted |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
{trained_md}"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_query_init")
    ap.add_argument("--per-set", type=int, default=150, help="utterances read from each training set's list")
    ap.add_argument("--fit", type=int, default=300, help="utterances the queries are fitted on")
    ap.add_argument("--measure", type=int, default=40, help="held-out utterances the agreement is measured on")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trained", action="append", default=[], help="a trained base-audio model folder; repeat")
    args = ap.parse_args()
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
