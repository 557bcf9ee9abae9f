"""Deep fusion (gated cross-attention) models of ``bench_xattn`` on a second report set: audio against no-audio.

``bench_xattn`` reports on librispeech-dev 1-40, where the variants differ by a few utterances. This reads the
models it trained (``--models``: its ``--out`` folder) and decodes another set none of them was trained or
tuned on (default an4-test, the test split of a training set's domain), written and chosen, so the audio
ablation is checked on more utterances.

    python -m eval.bench_xattn_transfer --models ~/.cache/rescore/deep/bench-xattn-full --set an4-test
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from eval.bench_xattn import DECODED, PAIRS, cached_json, compare, evaluate, nbest_file, pair_line, result_row

MODES = ("write", "choose")


def run(args: argparse.Namespace) -> str:
    import torch

    from rescore.deep.train import load_nbest_examples
    from rescore.deep.xattn import XAttnConfig, build_xattn, load_deep_model
    from rescore.evaluate.metrics import error_rate

    torch.set_num_threads(args.threads)
    files = [nbest_file(args.set, args.list)]
    by_encoder = {"whisper-tiny.en": load_nbest_examples(files, "whisper-tiny.en", limit=args.limit, on_issue=print)}
    report = by_encoder["whisper-tiny.en"]
    refs, first = [e.text for e in report], [e.hypotheses[0] for e in report]
    fp = error_rate(refs, first)
    rows, outputs = [], {}
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"--modes: unknown {', '.join(sorted(unknown))} (expected {', '.join(MODES)})")
    for name in args.variants.split(","):
        model = build_xattn(XAttnConfig()).eval() if name == "step0" else load_deep_model(Path(args.models) / name)
        encoder = model.config.encoder  # base-audio reads whisper-base states of the same utterances
        if encoder not in by_encoder:
            by_encoder[encoder] = load_nbest_examples(files, encoder, limit=args.limit, on_issue=print)
        own = by_encoder[encoder]
        if [e.id for e in own] != [e.id for e in report]:
            raise SystemExit(f"{name}: {encoder} states are missing for some utterances (see above)")
        # untrained writing runs on: bench_xattn has it
        for mode in modes if name != "step0" else [m for m in modes if m == "choose"]:
            # cached beside the model (step0 in the folder's step0/): a rerun adds a variant without decoding the rest
            cache = Path(args.models) / name / f"transfer-{args.set}-{args.list}-{args.limit or 'all'}-{mode}.json"
            hyps, per_utt = cached_json(cache, DECODED, evaluate, model, own, args.batch_size, decode=mode)
            outputs[(name, mode)] = hyps
            rows.append(
                result_row(f"{name}, {'written' if mode == 'write' else 'chosen'}", compare(refs, first, hyps), per_utt)
            )
            print(rows[-1], flush=True)
    pairs = []
    for (a, b), mode in itertools.product(PAIRS, modes):
        if (a, mode) in outputs and (b, mode) in outputs:
            pairs.append(pair_line(f" ({mode})", compare(refs, outputs[(b, mode)], outputs[(a, mode)]), a, b))
    command = "python -m eval.bench_xattn_transfer " + " ".join(sys.argv[1:])
    return f"""### Deep fusion (gated cross-attention) on {args.set}: audio against no-audio

The models of `bench_xattn` in `{Path(args.models).name}` (trained on the training sets and librispeech-dev
41-110; {args.set} never trained or tuned on), reading the {len(report)} utterances' tiny.en n-best; written (greedy)
and chosen (`XAttnLM.choose`, ranked by log-prob per token), raw: no guards or
verification. WER % (Whisper normalizer) with 95 % bootstrap
interval; better/worse and p against the first-pass 1-best; s/utt: CPU seconds per utterance.
Command: `{command}`

| variant | | | | | WER % (95 % CI) | better/worse | p | s/utt decode |
|---|---|---|---|---|---:|---:|---:|---:|
| first-pass 1-best (tiny.en) | | | | | {100 * fp.rate:.2f} ({100 * fp.ci_low:.1f}-{100 * fp.ci_high:.1f}) | | | |
{chr(10).join(rows)}

{chr(10).join(pairs)}
"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, None)
    ap.add_argument("--models", required=True, help="bench_xattn's --out folder (one trained model per variant)")
    ap.add_argument("--variants", default="audio,no-audio,step0")
    ap.add_argument("--set", default="an4-test")
    ap.add_argument("--list", default="tiny-en", help="which n-best list of the set (its file's model part)")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--modes", default=",".join(MODES), help="decodings: write, choose or both")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    modes = "" if set(args.modes.split(",")) == set(MODES) else "_" + "_".join(args.modes.split(","))
    publish_run(run(args), args, f"bench_xattn_transfer_{args.set}{modes}")


if __name__ == "__main__":
    main()
