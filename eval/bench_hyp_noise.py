"""What the deep model's prompt leaves to the audio, and what hypothesis noise does to the training prompts.

Two counts over cached n-best lists (no model is run):
- librispeech-dev: the 1-best WER against the oracle of the prompt's hypotheses (the first ``max_hypotheses``
  distinct ones, as ``XAttnLM.prompt_ids`` shows them). The errors left by the oracle are in every hypothesis the
  model reads, so only the audio can fix them.
- the recipe's training lists: how many records' 1-best :class:`rescore.deep.noise.HypothesisNoise` changes at
  a share, and the prompts' 1-best WER before and after.

    python -m eval.bench_hyp_noise --share 0.5
"""

from __future__ import annotations

import random
import sys

from eval.bench_xattn import FULL_LIST, LISTS, TRAIN_SETS, first_pass_records, nbest_file
from eval.results import bench_parser, publish_run


def run(share: float, text_norm: str, seed: int) -> str:
    from rescore.deep.noise import HypothesisNoise
    from rescore.deep.train import TrainConfig
    from rescore.deep.xattn import XAttnConfig
    from rescore.evaluate.metrics import error_rate, oracle_curve
    from rescore.records import read_nbest

    prompt = XAttnConfig(text_norm=text_norm)  # the prompt's hypotheses as the model shows them
    dev = [r for r in first_pass_records().values() if r.reference and r.hypotheses]
    refs = [r.reference for r in dev]
    prompts = [prompt.shown_hypotheses([h.text for h in r.hypotheses]) for r in dev]
    first = error_rate(refs, [r.hypotheses[0].text for r in dev]).rate
    oracle = oracle_curve(refs, prompts)[-1]

    files = [nbest_file(s, FULL_LIST) for s in TRAIN_SETS] + [nbest_file("librispeech-dev", LISTS[1])]
    recs = [r for f in files for r in read_nbest(f) if r.reference and r.hypotheses]
    noise = HypothesisNoise(share, TrainConfig.hyp_noise_words, text_norm).fit(r.reference for r in recs)
    rng = random.Random(seed)
    t_refs = [noise.normalized(r.reference) for r in recs]
    clean = [noise.normalized(r.hypotheses[0].text) for r in recs]
    noisy = [noise([h.text for h in r.hypotheses], rng)[0] for r in recs]
    changed = sum(a != b for a, b in zip(clean, noisy, strict=True))
    command = "python -m eval.bench_hyp_noise " + " ".join(sys.argv[1:])
    return f"""### Deep fusion: what the prompt leaves to the audio, and hypothesis noise on the training prompts

Counts over cached n-best lists; no model is run. Text style `{text_norm}` (`XAttnConfig.text_norm`).
Command: `{command}`

| | records | 1-best WER % | WER % after |
|---|---:|---:|---:|
| librispeech-dev (tiny.en 8-best): 1-best, then the oracle of the prompt's {prompt.max_hypotheses} \
distinct hypotheses | {len(dev)} \
| {100 * first:.2f} | {100 * oracle:.2f} |
| training lists ({", ".join(TRAIN_SETS)} tiny.en, librispeech-dev base): the prompts' 1-best, then with \
noise at share {share:g} ({changed} records' 1-best changed) | {len(recs)} \
| {100 * error_rate(t_refs, clean, "none").rate:.2f} | {100 * error_rate(t_refs, noisy, "none").rate:.2f} |

The librispeech-dev rows are scored under the Whisper normalizer. The oracle's errors are in every hypothesis
the model reads: {100 * (1 - (first - oracle) / first):.0f} % of the 1-best's. The training rows are scored on
the targets' style, as the model reads them. The training lists hold librispeech-dev utterances, and the bench's
folds leave their own range out of them.
"""


def main() -> None:
    from rescore.deep import TEXT_NORMS

    ap = bench_parser(__doc__, "bench_hyp_noise")
    ap.add_argument("--share", type=float, default=0.5, help="share of training examples corrupted")
    ap.add_argument("--text-norm", default="whisper", choices=TEXT_NORMS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    publish_run(run(args.share, args.text_norm, args.seed), args)


if __name__ == "__main__":
    main()
