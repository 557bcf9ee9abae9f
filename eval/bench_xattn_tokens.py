"""Where the audio helps the deep-fusion model: its loss on the reference's tokens, by what the n-best says of them.

WER after verification cannot tell whether the blocks read the audio: the whisper-base verifier already holds the
acoustic evidence the base-audio blocks read, and settles the few decisions that differ. This bench asks the model
itself. Each reference word of a reported utterance is classed by the hypotheses the prompt showed: ``agreed``
(every hypothesis has it, aligned), ``contested`` (some do), ``missing`` (none does), and the end of the
transcript; each reference token takes its word's class. Teacher-forced on the reference, the audio model and the
gates-shut model are compared per class: nats per token, the share of tokens each ranks first, and a paired
bootstrap over utterances of the summed nats of the class (one-sided p that the first model is not lower).
Contested words are where the design says the audio should decide; agreed words are where it has nothing to add.

Folds as bench_xattn_folds takes them: every utterance is scored by models that never trained on it.

    python -m eval.bench_xattn_tokens --variants base-audio,no-audio \\
        --fold ~/.cache/rescore/deep/bench-xattn-own-whisper-noise0.5-1-40:1-40 \\
        --fold ~/.cache/rescore/deep/bench-xattn-own-whisper-noise0.5-41-75:41-75 \\
        --fold ~/.cache/rescore/deep/bench-xattn-own-whisper-noise0.5-76-110:76-110
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLASSES = ("agreed", "contested", "missing", "end")


def word_classes(reference: Sequence[str], hypotheses: Sequence[Sequence[str]]) -> list[str]:
    """Per reference word, ``agreed`` / ``contested`` / ``missing``: whether every, some or none of the hypotheses
    (word lists) has it at an aligned place (difflib's matching blocks)."""
    hits = np.zeros(len(reference), dtype=int)
    for hyp in hypotheses:
        matcher = difflib.SequenceMatcher(None, list(reference), list(hyp), autojunk=False)
        for block in matcher.get_matching_blocks():
            hits[block.a : block.a + block.size] += 1
    n = len(hypotheses)
    return ["agreed" if h == n and n else "contested" if h else "missing" for h in hits]


def token_classes(offsets: Sequence[tuple[int, int]], text: str, classes: Sequence[str]) -> list[str]:
    """Per token (character ``offsets`` in ``text``), the class of the word covering its first non-space
    character; ``classes`` are per whitespace-separated word of ``text``."""
    from rescore.deep.query_init import first_char

    spans = [m.span() for m in re.finditer(r"\S+", text)]
    out = []
    for span in offsets:
        c = first_char(span, text)
        out.append(next((classes[w] for w, (s, e) in enumerate(spans) if s <= c < e), "agreed"))
    return out


@dataclass
class ClassLoss:
    """One model's teacher-forced loss per token class, summed per utterance."""

    nats: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CLASSES})
    tokens: dict[str, list[int]] = field(default_factory=lambda: {c: [] for c in CLASSES})
    top1: dict[str, list[int]] = field(default_factory=lambda: {c: [] for c in CLASSES})

    def add(self, nll: np.ndarray, first: np.ndarray, classes: Sequence[str]) -> None:
        cls = np.array(classes)
        for c in CLASSES:
            on = cls == c
            self.nats[c].append(float(nll[on].sum()))
            self.tokens[c].append(int(on.sum()))
            self.top1[c].append(int(first[on].sum()))

    def per_token(self, c: str) -> float:
        return sum(self.nats[c]) / max(sum(self.tokens[c]), 1)

    def top1_share(self, c: str) -> float:
        return sum(self.top1[c]) / max(sum(self.tokens[c]), 1)


def score(model: Any, examples: Sequence[Any], losses: ClassLoss, reads: list[ClassLoss] | None = None) -> None:
    """Add each example's per-class loss under ``model`` (teacher-forced on its reference, one at a time); with
    ``reads`` (one per block), also each block's read of the audio alone as a next-token prediction
    (``XAttnLM.read_nll``, what ``aux_weight`` trains)."""
    import torch
    import torch.nn.functional as F

    from rescore.deep.model import normalize_target
    from rescore.deep.train import make_batch

    cfg = model.config
    for i, ex in enumerate(examples):
        text = normalize_target(ex.text, cfg.text_norm)
        enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        n = min(len(enc["input_ids"]), cfg.max_target_tokens)
        words = word_classes(text.split(), [h.split() for h in cfg.shown_hypotheses(ex.hypotheses)])
        classes = token_classes(enc["offset_mapping"][:n], text, words) + ["end"]
        with torch.no_grad():
            batch = make_batch(examples, [i])
            if reads is None:
                logits, target, _ = model._target_logits(batch)
            else:
                logits, target, block_reads = model.target_logits_and_reads(batch)
                for block, read in zip(reads, model.read_logits(block_reads), strict=True):
                    nats = F.cross_entropy(read, target, reduction="none")
                    block.add(nats.numpy(), (read.argmax(-1) == target).numpy(), classes)
            nll = F.cross_entropy(logits, target, reduction="none").numpy()
            first = (logits.argmax(-1) == target).numpy()
        if len(nll) != len(classes):
            raise SystemExit(f"{ex.id}: {len(nll)} target tokens scored, {len(classes)} classed")
        losses.add(nll, first, classes)


def run(args: argparse.Namespace) -> str:
    import torch

    from eval.bench_xattn import REPORT_ENCODER, nbest_file
    from eval.bench_xattn_folds import Fold
    from rescore.deep.train import load_nbest_examples
    from rescore.deep.xattn import load_deep_model

    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    if len(variants) != 2:
        raise SystemExit("--variants: two, the audio model first and the one it is compared against")
    elsewhere = tuple(tuple(d.split("=", 1)) for d in args.variant_dir)
    folds = sorted((Fold.parse(f, elsewhere) for f in args.fold), key=lambda f: f.lo)
    losses = {v: ClassLoss() for v in variants}
    reads: list[ClassLoss] | None = None  # the audio model's blocks' reads, when trained to predict (aux_weight)
    report_file = nbest_file("librispeech-dev", REPORT_ENCODER)
    for fold in folds:
        for v in variants:
            model = load_deep_model(fold.folder(v)).eval()
            cfg = model.config
            examples = load_nbest_examples(
                [report_file], cfg.encoder, limit=fold.hi, window=cfg.encoder_window, on_issue=print
            )[fold.lo - 1 :]
            if v == variants[0] and cfg.aux_weight > 0:
                reads = reads or [ClassLoss() for _ in model.blocks]
            score(model, examples, losses[v], reads if v == variants[0] else None)
            print(f"{fold.lo}-{fold.hi} {v}: {len(examples)} utterances scored", flush=True)
    from rescore.evaluate.metrics import paired_bootstrap  # B = the audio model: p that its summed nats are not lower

    a, b = variants
    la, lb = losses[a], losses[b]
    n_utts = len(la.nats["end"])
    rows = []
    for c in CLASSES:
        n_tokens = sum(la.tokens[c])
        utts = sum(1 for t in la.tokens[c] if t)
        better = sum(x < y for x, y, t in zip(la.nats[c], lb.nats[c], la.tokens[c], strict=True) if t)
        worse = sum(x > y for x, y, t in zip(la.nats[c], lb.nats[c], la.tokens[c], strict=True) if t)
        rows.append(
            f"| {c} | {n_tokens} ({utts}) | {la.per_token(c):.3f} | {lb.per_token(c):.3f} | "
            f"{100 * la.top1_share(c):.1f} % | {100 * lb.top1_share(c):.1f} % | {better}/{worse} | "
            f"{paired_bootstrap(np.array(lb.nats[c]), np.array(la.nats[c]), np.ones(n_utts), n_resamples=2000):.3f} |"
        )
    reads_md = ""
    if reads:
        total = [sum(sum(r.nats[c]) for c in CLASSES) / max(sum(sum(r.tokens[c]) for c in CLASSES), 1) for r in reads]
        best = int(np.argmin(total))
        lines = [
            f"| {c} | {reads[best].per_token(c):.3f} | {100 * reads[best].top1_share(c):.1f} % | "
            + " | ".join(f"{r.per_token(c):.2f}" for r in reads)
            + " |"
            for c in CLASSES
        ]
        head = " | ".join(f"block {j + 1}" for j in range(len(reads)))
        reads_md = f"""
What {a}'s blocks read of the audio alone, as a next-token prediction (`XAttnLM.read_nll`: a block's attention
output through the LM's final norm and output layer, the auxiliary loss it trained with): nats per token and share
ranked first for the block lowest over all tokens here (block {best + 1}), and every block's nats per token.

| tokens | block {best + 1}: nats/token | block {best + 1}: first | {head} |
|---|---:|---:|{"---:|" * len(reads)}
{chr(10).join(lines)}
"""
    command = "python -m eval.bench_xattn_tokens " + " ".join(sys.argv[1:])
    ranges = ", ".join(f"{f.lo}-{f.hi} ({f.models.name})" for f in folds)
    return f"""### Deep fusion: where the audio lowers the loss, by what the n-best says of each reference word

Folds: {ranges}; {n_utts} librispeech-dev utterances, each scored by models that never trained on it, teacher-forced
on its reference with the tiny.en n-best the prompt shows (the hypotheses the model was decoded with). A reference
word is agreed (every shown hypothesis has it, aligned), contested (some do) or missing (none does); "end" is the
end of the transcript. Nats per token and the share of tokens ranked first, {a} against {b}; better/worse:
utterances whose summed nats of the class are lower/higher under {a}; p: paired bootstrap over utterances (2,000
resamples) that {a}'s summed nats of the class are not lower.
Command: `{command}`

| tokens | count (utterances) | {a}: nats/token | {b}: nats/token | {a}: first | {b}: first | better/worse | p |
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
{reads_md}"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_xattn_tokens")
    ap.add_argument("--fold", action="append", required=True, help="bench_xattn's --out folder:START-END (repeat)")
    ap.add_argument("--variants", default="base-audio,no-audio", help="the audio model, then the one compared")
    ap.add_argument("--variant-dir", action="append", default=[], help="NAME=FOLDER ({range}: the fold's START-END)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
