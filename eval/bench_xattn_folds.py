"""Deep fusion (gated cross-attention) cross-fitted over the whole of librispeech-dev: audio against no-audio.

``bench_xattn --train-librispeech --report-range A-B`` trains on the training sets and on the librispeech-dev
utterances outside A-B, and reports on A-B. Three such runs (1-40, 41-75, 76-110) cover every utterance once,
each decoded by models that never saw it. This reads their decode caches (no training, no decoding), decides
each output as ``rescore run``'s deep stage does (guards, then whisper-base verification) and pools the
folds, so the audio ablation is tested on 110 utterances instead of 40.

    python -m eval.bench_xattn_folds \\
        --fold ~/.cache/rescore/deep/bench-xattn-full:1-40 \\
        --fold ~/.cache/rescore/deep/bench-xattn-fold-41-75:41-75 \\
        --fold ~/.cache/rescore/deep/bench-xattn-fold-76-110:76-110

``--variant-dir NAME=FOLDER`` reads a variant from another run's folders (``{range}`` in FOLDER is the fold's
START-END), so models of different runs are pooled and paired (``--pair A:B``) on the same utterances.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eval.bench_xattn import (
    BASE_NOTE,
    BASE_VARIANTS,
    CHOOSE_CACHE,
    CHOOSING_VARIANTS,
    DECODER_NOTE,
    DECODER_VARIANT,
    PAIRS,
    PREDICTION_NOTE,
    PREDICTION_VARIANT,
    compare,
    decided,
    first_pass_records,
    pair_line,
    parse_range,
    report_tag,
    result_row,
)
from rescore.deep import TEXT_NORMS

if TYPE_CHECKING:
    from rescore.deep.xattn import XAttnConfig

# decoding -> (row label, decode cache name part); the summed-log-prob ranking's rows where every fold has them
MODES = {"write": ("written", ""), "choose": ("chosen", f"-{CHOOSE_CACHE}")}
SUMMED = {"choose-summed": ("chosen by summed log-prob (the ranking before)", "-choose")}
STEP0_NOTE = "\nstep0: the untrained model (gates at zero: the text-only LM reading the n-best), one for all folds."


@dataclass(frozen=True)
class Fold:
    """One ``bench_xattn`` run: its ``--out`` folder and the librispeech-dev range it reported (1-based)."""

    models: Path
    lo: int
    hi: int
    elsewhere: tuple[tuple[str, str], ...] = ()  # (variant, its folder with "{range}" for START-END): --variant-dir

    @classmethod
    def parse(cls, text: str, elsewhere: tuple[tuple[str, str], ...] = ()) -> Fold:
        folder, _, span = text.rpartition(":")
        if not folder:
            raise SystemExit(f"--fold {text!r}: expected FOLDER:START-END")
        return cls(Path(folder).expanduser(), *parse_range(span, f"--fold {folder}:"), elsewhere)

    def folder(self, variant: str) -> Path:
        """The variant's model folder in this fold: the fold's own, or its --variant-dir pattern's."""
        pattern = dict(self.elsewhere).get(variant)
        return Path(pattern.format(range=f"{self.lo}-{self.hi}")).expanduser() if pattern else self.models / variant

    def cache(self, variant: str, suffix: str) -> Path:
        return self.folder(variant) / f"report-{report_tag(self.lo, self.hi)}{suffix}.json"

    def saved(self, variant: str, key: str | None = None) -> dict | None:
        """The variant's saved ``XAttnConfig``, or with ``key`` another part of its config ("train": the
        ``TrainConfig``; empty when saved before it); None: not trained."""
        from rescore.deep import CONFIG_FILE, XATTN_KEY

        path = self.folder(variant) / CONFIG_FILE
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        return saved[XATTN_KEY] if key is None else saved.get(key, {})

    def attend(self, variant: str) -> str:
        """Where the variant's blocks act (``XAttnConfig.attend``; models saved before it: all)."""
        from rescore.deep import saved_attend

        cfg = self.saved(variant)
        return saved_attend(cfg) if cfg is not None else "untrained"

    def text_norm(self, variant: str) -> str:
        """The style of the variant's targets and prompt (``XAttnConfig.text_norm``)."""
        cfg = self.saved(variant)
        return cfg.get("text_norm", TEXT_NORMS[0]) if cfg is not None else "untrained"

    def hyp_noise(self, variant: str) -> str:
        """The share of training examples given look-alike words (``TrainConfig.hyp_noise``; saved before it: 0)."""
        from rescore.deep.train import TrainConfig

        train = self.saved(variant, "train")
        if train is None:
            return "untrained"
        examples = train.get("hyp_noise", TrainConfig.hyp_noise)
        words = train.get("hyp_noise_words", TrainConfig.hyp_noise_words)
        return f"{examples:g} of the examples, {words:g} of their words"

    def writes(self, variant: str) -> bool:
        """Whether the variant writes transcripts (a model over decoder memory only chooses)."""
        return self.prompt(variant).writes

    def prompt(self, variant: str) -> XAttnConfig:
        """The variant's prompt settings (its saved config; untrained: the defaults), for the hypotheses it showed."""
        from rescore.deep.xattn import XAttnConfig

        cfg = self.saved(variant)
        return XAttnConfig.from_dict(cfg) if cfg is not None else XAttnConfig()

    def outputs(self, variant: str, suffix: str) -> list[str]:
        """The cached raw outputs of one variant and decoding (its cache name part), in report order."""
        path = self.cache(variant, suffix)
        if not path.exists():
            raise SystemExit(f"{path} missing: run bench_xattn with --report-range {self.lo}-{self.hi} --choose")
        return json.loads(path.read_text())["hyps"]


@dataclass
class WordSources:
    """Where a model's written words come from, against the hypotheses its prompt showed: the words only the audio
    can give (in no hypothesis) and those only a lower hypothesis has tell whether it listens or copies. Distinct
    words per utterance, after the WER's normaliser."""

    below_first: int = 0  # reference words a lower hypothesis of the prompt had and the 1-best lacked
    below_first_written: int = 0
    unseen: int = 0  # reference words in none of the prompt's hypotheses
    unseen_written: int = 0
    first_right: int = 0  # reference words the 1-best had
    first_right_dropped: int = 0
    new_written: int = 0  # written words in none of the prompt's hypotheses
    new_right: int = 0

    def add(self, reference: str, hypotheses: list[str], written: str) -> None:
        """Count one utterance: its reference, the prompt's hypotheses (the 1-best first) and the model's output."""
        from rescore.evaluate.metrics import normalize

        ref, out = set(normalize(reference).split()), set(normalize(written).split())
        first = set(normalize(hypotheses[0]).split()) if hypotheses else set()
        shown = first.union(*(normalize(h).split() for h in hypotheses[1:]))
        below, unseen, new = (ref & shown) - first, ref - shown, out - shown
        self.below_first += len(below)
        self.below_first_written += len(below & out)
        self.unseen += len(unseen)
        self.unseen_written += len(unseen & out)
        self.first_right += len(ref & first)
        self.first_right_dropped += len((ref & first) - out)
        self.new_written += len(new)
        self.new_right += len(new & ref)

    def row(self, name: str) -> str:
        return (
            f"| {name} | {self.below_first_written}/{self.below_first} | {self.unseen_written}/{self.unseen} | "
            f"{self.first_right_dropped}/{self.first_right} | {self.new_right}/{self.new_written} |"
        )


WORD_SOURCES_COLUMNS = (
    "variant, decoding",
    "reference words only a lower hypothesis had: written",
    "reference words in no hypothesis: written",
    "right 1-best words dropped",
    "words in no hypothesis: right / written",
)
WORD_SOURCES_HEAD = (
    "Where the written words come from (raw outputs, before guards and verification; distinct words per\n"
    "utterance; hypotheses: the distinct ones the prompt showed, `max_hypotheses` of the model's config):\n\n"
    f"| {' | '.join(WORD_SOURCES_COLUMNS)} |\n|---|---:|---:|---:|---:|"
)


# how an output is decided: (decided()'s verify, None: taken raw; the row's suffix)
DECISIONS = {
    "raw": (None, ""),
    "guarded": (False, " + guards"),
    "verified": (True, " + guards + whisper-base verification"),
}


def run(args: argparse.Namespace) -> str:
    from rescore.evaluate.metrics import error_rate

    variants = args.variants.split(",")
    if "no-audio" not in variants or not {"audio", *CHOOSING_VARIANTS, *BASE_VARIANTS} & set(variants):
        raise SystemExit("--variants: the ablation needs no-audio and audio or base-audio")
    elsewhere = tuple(tuple(d.split("=", 1)) for d in args.variant_dir)
    if any(len(d) != 2 for d in elsewhere):
        raise SystemExit("--variant-dir: expected NAME=FOLDER (FOLDER may hold {range} for the fold's START-END)")
    extra_pairs = tuple(tuple(p.split(":", 1)) for p in args.pair)
    if any(len(p) != 2 or not set(p) <= set(variants) for p in extra_pairs):
        raise SystemExit("--pair: expected A:B, two of --variants")
    folds = sorted((Fold.parse(f, elsewhere) for f in args.fold), key=lambda f: f.lo)
    spans = [(f.lo, f.hi) for f in folds]
    for (_, a_hi), (b_lo, _) in itertools.pairwise(spans):
        if b_lo <= a_hi:
            raise SystemExit(f"folds overlap: {spans}")
    records = list(first_pass_records().values())
    modes = {**MODES, **SUMMED}
    # what each variant was decoded by in every fold: all of MODES; the old summed ranking where it was kept
    decoded = [
        (v, m)
        for v in variants
        for m, (_, suffix) in modes.items()
        if (m in MODES and (m != "write" or all(f.writes(v) for f in folds)))
        or (m not in MODES and all(f.cache(v, suffix).exists() for f in folds))
    ]
    outputs: dict[tuple[str, str, str], list[str]] = {}
    sources: dict[tuple[str, str], WordSources] = {}
    refs, first, per_fold = [], [], []
    for fold in folds:
        recs = records[fold.lo - 1 : fold.hi]
        ids = [r.id for r in recs]
        f_refs = [r.reference for r in recs]
        f_first = [r.hypotheses[0].text for r in recs]
        shown = {v: [fold.prompt(v).shown_hypotheses([h.text for h in r.hypotheses]) for r in recs] for v in variants}
        refs += f_refs
        first += f_first
        for variant, mode in decoded:
            raw = fold.outputs(variant, modes[mode][1])
            if len(raw) != len(recs):
                raise SystemExit(f"{fold.models}/{variant}: {len(raw)} outputs for {len(recs)} utterances")
            counts = sources.setdefault((variant, mode), WordSources())
            for ref, hyps, written in zip(f_refs, shown[variant], raw, strict=True):
                counts.add(ref, hyps, written)
            for decision, (verify, label) in DECISIONS.items():
                kept = raw if verify is None else decided(raw, ids, verify=verify)[0]
                outputs.setdefault((variant, mode, decision), []).extend(kept)
                if verify is not None:
                    c = compare(f_refs, f_first, kept)
                    per_fold.append(
                        f"| {fold.lo}-{fold.hi} | {variant}, {modes[mode][0]}{label} | {100 * c['wer']:.2f} | "
                        f"{c['better']}/{c['worse']} | {c['p']:.3f} |"
                    )
    fp = error_rate(refs, first)
    rows = []
    for variant, mode in decoded:
        for decision, (_, label) in DECISIONS.items():
            rows.append(
                result_row(
                    f"{variant}, {modes[mode][0]}{label}", compare(refs, first, outputs[(variant, mode, decision)])
                )
            )
    pairs = []
    for (a, b), (mode, (label, _)) in itertools.product(PAIRS + extra_pairs, modes.items()):
        if (a, mode) not in decoded or (b, mode) not in decoded:
            continue
        for decision in DECISIONS:
            tag = f" ({label}{'' if decision == 'raw' else ', ' + decision})"
            c = compare(refs, outputs[(b, mode, decision)], outputs[(a, mode, decision)])
            pairs.append(pair_line(tag, c, a, b))
    step0 = STEP0_NOTE if "step0" in variants else ""
    base = BASE_NOTE if set(BASE_VARIANTS) & set(variants) else ""
    base += DECODER_NOTE if DECODER_VARIANT in variants else ""
    base += PREDICTION_NOTE if PREDICTION_VARIANT in variants else ""
    command = "python -m eval.bench_xattn_folds " + " ".join(sys.argv[1:])
    ranges = ", ".join(f"{f.lo}-{f.hi} ({f.models.name})" for f in folds)
    if elsewhere:
        ranges += "; from other runs' folders: " + ", ".join(f"{n} ({pat})" for n, pat in elsewhere)
    attends = {f"{v}: {a}" for f in folds for v in variants if (a := f.attend(v)) != "untrained"}
    norms = {f"{v}: {a}" for f in folds for v in variants if (a := f.text_norm(v)) != "untrained"}
    noises = {f"{v}: {a}" for f in folds for v in variants if (a := f.hyp_noise(v)) != "untrained"}
    return f"""### Deep fusion (gated cross-attention) cross-fitted over librispeech-dev: audio against no-audio

Folds: {ranges}. Each fold's models (`bench_xattn --full-sets --train-librispeech --report-range`) were
trained on the training sets and on the librispeech-dev utterances outside the fold, and decode only the
fold: every one of the {len(refs)} utterances is reported by models that never trained or were tuned on it
(different models per fold; the same recipe and budget). Outputs are the folds' cached decodes; "+ guards +
whisper-base verification" as `rescore run`'s deep stage decides (`correct.verify.checked_proposal`); "+ guards"
its text guards alone (edit budget, novel words, runaway length; no acoustic model), the clean audio ablation, as
the verifier is itself an acoustic model that the no-audio model's outputs pass through too.{step0}{base}
Where the blocks act (`attend`; reply: from the prompt's last token on; all: everywhere): {", ".join(sorted(attends))}.
Targets' and prompt's style (`text_norm`; lower: lower case, no punctuation; whisper: the WER's normalizer):
{", ".join(sorted(norms))}.
Hypothesis noise in training (`hyp_noise`, rescore.deep.noise): {"; ".join(sorted(noises))}.
WER % (Whisper normalizer) with 95 % bootstrap interval; better/worse and p against the first-pass 1-best.
Command: `{command}`

| variant | | | | | WER % (95 % CI) | better/worse | p | |
|---|---|---|---|---|---:|---:|---:|---|
| first-pass 1-best (tiny.en) | | | | | {100 * fp.rate:.2f} ({100 * fp.ci_low:.1f}-{100 * fp.ci_high:.1f}) | | | |
{chr(10).join(rows)}

{chr(10).join(pairs)}

{WORD_SOURCES_HEAD}
{chr(10).join(c.row(f"{v}, {modes[m][0]}") for (v, m), c in sources.items())}

By fold (guarded and verified rows):

| fold | variant | WER % | better/worse | p |
|---|---|---:|---:|---:|
{chr(10).join(per_fold)}
"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_xattn_folds")
    ap.add_argument("--fold", action="append", required=True, help="bench_xattn's --out folder:START-END (repeat)")
    ap.add_argument("--variants", default="audio,no-audio", help="bench_xattn variants decoded in every fold")
    ap.add_argument(
        "--variant-dir",
        action="append",
        default=[],
        help="NAME=FOLDER: variant NAME's models in another run's folders ({range}: the fold's START-END); repeat",
    )
    ap.add_argument("--pair", action="append", default=[], help="A:B: also test variant A against B; repeat")
    args = ap.parse_args()
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
