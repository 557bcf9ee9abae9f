"""Deep fusion by gated cross-attention (issue 15): the trained model against the first pass and against the same
model trained without audio, at equal CPU budget; optionally the mixers inside the model.

Training: the first-pass n-best (tiny.en and base lists) of the training sets, an4-train, arctic-cathy and
speechocean-train, with their audio (Whisper tiny.en encoder states, cached); 10 % of the utterances held out
for early stopping (dev loss; the saved model is the best one). Reported: the first N utterances of
librispeech-dev (tiny.en n-best in the prompt), never trained or tuned on. Greedy decoding.

Variants: ``audio`` (the default model: blocks after every 6th SmolLM2 layer, K/V from Whisper tiny's decoder
cross-attention, no mixer), ``no-audio`` (the same, attention gates forced shut: its gated feed-forward layers
still train, so it is text-only correction with the same budget), ``step0`` (untrained: the text-only LM),
``summary`` / ``gaussian`` / ``attention`` (a mixer block over the encoder states before the blocks), ``base-audio``
(the same blocks attending over Whisper *base* encoder states, 8 heads of 64 with K/V from base's decoder
cross-attention: a second, stronger acoustic model over tiny.en's hypotheses, on the same examples and split),
``base-audio-q`` (base-audio with its queries first fitted to base's decoder queries, ``XAttnConfig.q_init``),
``base-audio-qa`` (base-audio-q trained with the auxiliary loss on what the blocks read, ``XAttnConfig.aux_weight``
0.1: each block's read of the audio alone predicts the next token), ``base-dec`` (the blocks, from the prompt's last
token on, attend over Whisper base's own *decoder* states teacher-forced on the transcript being scored, each LM
position the one aligned to the text it has consumed, ``XAttnConfig.memory="decoder"``; it decodes by choosing only),
``base-pred`` (the same alignment over those states' next-token *predictions* carried into SmolLM2's own token
embeddings, ``XAttnConfig.memory="prediction"``: 9 heads of 64, values and output started as a scaled identity).

    python -m eval.bench_xattn --variants step0,audio,no-audio --budget 12 --report-limit 40
    python -m eval.bench_xattn --variants summary,gaussian,attention --budget 4 --section bench_xattn_mixers

The n-best lists and encoder states are made on first use and cached; ``--prepare`` makes only them (the same
options as the run it prepares), the slow part on a bare machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rescore.deep import ATTEND, PRECISIONS, TEXT_NORMS
from rescore.whisper.encoder import WINDOWS

TRAIN_SETS = ["an4-train", "arctic-cathy", "speechocean-train"]
LISTS = ["whisper-tiny.en", "whisper-base"]
FULL_LIST = "tiny-en"  # whole training sets, tiny.en 8-best (the lists the LoRA and the rerank are fitted on)
MIXER_VARIANTS = ("summary", "gaussian", "attention")
# over Whisper base's states; -q: the queries fitted to base's decoder first (XAttnConfig.q_init)
BASE_VARIANTS = ("base-audio", "base-audio-q", "base-audio-qa")
DECODER_VARIANT = "base-dec"  # over whisper-base's decoder states on the transcript (XAttnConfig.memory="decoder")
PREDICTION_VARIANT = "base-pred"  # over those states' next-token predictions as LM embeddings (memory="prediction")
CHOOSING_VARIANTS = {DECODER_VARIANT: "decoder", PREDICTION_VARIANT: "prediction"}  # variant: its memory
AUX_WEIGHT = 0.1  # base-audio-qa's auxiliary loss weight (fixed before any run: aux starts near 10 nats, main near 1)
REPORT_ENCODER = "whisper-tiny.en"  # the encoder of the report's first pass (and of every variant but base-audio)


# the training sets' sample: their whisper-base lists (and without --full-sets their tiny.en lists too) hold the
# first utterances of each
FIRST = {"an4-train": 120, "arctic-cathy": 80, "speechocean-train": 80}


def nbest_file(set_name: str, model: str) -> str:
    """``cache/nbest/SET.MODEL.jsonl``, made (or finished) on first use with `rescore transcribe`'s settings
    (:func:`eval.nbest_cache.nbest_for`), so the bench runs from a clean machine: ``tiny-en`` every utterance of
    the set by tiny.en; ``whisper-tiny.en`` / ``whisper-base`` a training set's first utterances (``FIRST``),
    any other set whole."""
    from eval.nbest_cache import DATA, nbest_for
    from rescore.io.datasets import load_dataset

    recognizer = "whisper-tiny.en" if model == FULL_LIST else model
    ids = None
    if model != FULL_LIST and set_name in FIRST:
        ids = [u.id for u in load_dataset(DATA / set_name).utterances[: FIRST[set_name]]]
    return str(nbest_for(set_name, recognizer, ids=ids, tag=model))


def variant_config(name: str, attend: str = "all", window: str = "padded", text_norm: str = "lower") -> Any:
    """The variant's model; ``attend`` where its blocks act (``reply``: from the prompt's last token on), ``window``
    the encoder's (``own``: each utterance at its own length, rescore.whisper.encoder), ``text_norm`` the style of its
    targets and prompt hypotheses (rescore.deep.model.normalize_target)."""
    from rescore.deep.xattn import XAttnConfig

    common = {"attend": attend, "encoder_window": window, "text_norm": text_norm}
    if name in ("audio", "step0"):
        return XAttnConfig(**common)
    if name == "no-audio":
        return XAttnConfig(audio=False, **common)
    if name in BASE_VARIANTS:  # run() fits it to the states' width
        return XAttnConfig(
            encoder="whisper-base",
            kv_init="whisper-base",
            q_init=name != "base-audio",
            aux_weight=AUX_WEIGHT if name == "base-audio-qa" else 0.0,
            **common,
        )
    if name in MIXER_VARIANTS:
        return XAttnConfig(mixer=name, mixer_layers=1, **common)
    if name in CHOOSING_VARIANTS:  # from the prompt's last token on; base-dec: 8 heads of 64 over base's 512-wide
        common["attend"] = "reply"  # states (base-pred: the model fits them to the LM's width)
        memory = CHOOSING_VARIANTS[name]
        return XAttnConfig(encoder="whisper-base", kv_init=None, memory=memory, heads=8, **common)
    raise SystemExit(f"unknown variant {name!r}")


def evaluate(model: Any, examples: list, batch_size: int, decode: str = "write") -> tuple[list[str], float]:
    from rescore.deep.train import transcribe_examples

    t0 = time.process_time()
    decoded = transcribe_examples(model, examples, batch_size, "cpu", decode=decode)
    out = {e.id: (h[0].text if h else "") for e, h in decoded}
    return [out[e.id] for e in examples], (time.process_time() - t0) / max(len(examples), 1)


def compare(refs: list[str], base: list[str], hyps: list[str]) -> dict[str, Any]:
    """WER, CI, better/worse utterances against ``base`` and the paired bootstrap p that hyps is not better."""
    from rescore.evaluate.metrics import edit_counts, error_rate, normalize, paired_change

    er = error_rate(refs, hyps)
    r = [normalize(t) for t in refs]
    a = edit_counts(r, [normalize(t) for t in base])
    change = paired_change(a.errors, edit_counts(r, [normalize(t) for t in hyps]).errors, a.ref)
    return {
        "wer": er.rate,
        "ci": (er.ci_low, er.ci_high),
        "better": change.better,
        "worse": change.worse,
        "p": change.p,
    }


CHOOSE_NOTE = """
"choosing a hypothesis": `XAttnLM.choose`, not writing: the prompt's distinct hypotheses ranked by the
model's log-prob per token of each as the transcript (the audio enters through the blocks); "+ guards +
whisper-base verification": as `rescore run`'s deep stage decides (`correct.verify.checked_proposal`).
s/utt decode: CPU seconds per utterance on the report set (batch 4)."""
BASE_NOTE = """
base-audio: the same model attending over Whisper base encoder states instead (512 wide, 8 heads of 64, K/V from
base's decoder cross-attention): a second acoustic model over tiny.en's hypotheses, on the same examples and split.
base-audio-q: base-audio whose query projections are first fitted (ridge regression, before step 1 and on the
training budget) to base's decoder cross-attention queries on the training examples (rescore.deep.query_init),
so the blocks start attending where Whisper's decoder looks.
base-audio-qa: base-audio-q trained with the auxiliary loss on what the blocks read (`aux_weight` 0.1): each
block's attention output, through the LM's final norm and output layer, predicts the next transcript token."""
DECODER_NOTE = """
base-dec: the blocks (8 heads of 64, K/V fresh) attend, from the prompt's last token on, over Whisper base's own
decoder states (its last layer, after its norm) teacher-forced on the transcript being scored over the utterance's
base encoder states; each LM position reads the one state aligned to the text it has consumed (character offsets of
both tokenisations, `XAttnConfig.memory="decoder"`, rescore.deep.decoder_memory). It needs the transcript, so it
decodes by choosing among the hypotheses only: no written rows."""
PREDICTION_NOTE = """
base-pred: as base-dec, but each aligned state is carried into SmolLM2's vocabulary first: Whisper base's top 16
next tokens (softmax of the state times its token embeddings), each mapped to the SmolLM2 token its text starts with
(lower-cased; punctuation dropped; end of text to the reply's end), averaged by probability over SmolLM2's input
embeddings (`XAttnConfig.memory="prediction"`, rescore.deep.decoder_memory.WhisperPredictionMemory). The blocks are
as wide as the LM (9 heads of 64); values and output start as the identity, the output scaled to the LM's hidden
norm after the block's layer (`XAttnLM.init_reads`), so an opened gate adds Whisper's predicted token the way the LM
writes its own; gates at zero as ever. It chooses only."""
DECODED = ("hyps", "per_utt")  # what a decode's cache file holds (evaluate's result)
CHOSEN = ", choosing a hypothesis"  # the row suffix of --choose: XAttnLM.choose instead of writing
# the cache name part of choosing's decodes: ranked per token since session 7 ("choose": the summed log-prob's)
CHOOSE_CACHE = "choose-per-step"
VERIFIED = " + guards + verification"
ATTEND_NOTE = {
    "reply": "from the prompt's last token on: the prompt is read as text, only the reply consults the audio",
    "all": "at every position, the prompt's too",
}
WINDOW_NOTE = {
    "padded": "each utterance padded to Whisper's 30 s window",
    "own": "each utterance encoded at its own length, not padded to 30 s: trained and decoded so",
}
TEXT_NORM_NOTE = {
    "lower": "Targets and the prompt's hypotheses in lower case without punctuation.",
    "whisper": (
        "Targets and the prompt's hypotheses through Whisper's English normalizer (the WER's: numbers, spellings"
        " and contractions written alike), so the model is not taught conversions the score ignores."
    ),
    "none": "Targets and hypotheses as the corpora and the first pass write them.",
}


def hyp_noise_note(share: float) -> str:
    """The section's sentence on the training prompts' simulated errors (rescore.deep.noise)."""
    from rescore.deep.train import TrainConfig

    if share <= 0:
        return ""
    words = 100 * TrainConfig.hyp_noise_words
    return (
        f"\nHypothesis noise (modality dropout for the text side): in {100 * share:g} % of the training examples,"
        f" {words:g} % of the distinct words are replaced, alike in every hypothesis, by a look-alike word of the"
        " training targets (same first letters and about the same length), so only the audio or the LM's prior"
        " can put them right; the held-out loss and the report read the hypotheses unchanged."
    )


PRECISION_NOTE = {"auto": "float32", "fp32": "float32", "bf16": "bf16 autocast (AMX)"}


def choice_note(args: argparse.Namespace) -> str:
    """What --choice-weight and --init-from add to the run's description."""
    note = ""
    if args.choice_weight:
        note += (
            f"\nTraining adds {args.choice_weight:g} x the choosing loss (`XAttnConfig.choice_weight`,"
            " `XAttnLM.choice_loss`): per example whose shown hypotheses differ in word errors, a softmax over their"
            " scores as choosing ranks them, towards the fewest-error ones."
        )
    if args.init_from:
        note += f"\nEach variant starts from the weights the same variant has under `{args.init_from}` (fine-tuned)."
    return note


def cached_json(path: Path, keys: tuple[str, ...], compute: Callable[..., tuple], *args: Any, **kwargs: Any) -> tuple:
    """``compute(*args, **kwargs)`` (a tuple), stored at path the first time as a JSON object of ``keys``:
    decodes are the slow part of a rerun."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(zip(keys, compute(*args, **kwargs), strict=True))))
    saved = json.loads(path.read_text())
    return tuple(saved[k] for k in keys)


@functools.cache
def first_pass_records() -> dict[str, Any]:
    """The librispeech-dev tiny.en records the report's outputs are decided against, by utterance id."""
    from rescore.records import read_nbest

    return {r.id: r for r in read_nbest(nbest_file("librispeech-dev", "whisper-tiny.en"))}


@functools.cache
def whisper_base_verifier() -> Any:
    from rescore.stages.base import make_verifier

    return make_verifier(["whisper-base"])


def decided(outputs: list[str], utterances: list[str], verify: bool) -> tuple[list[str], int]:
    """Each output (of the librispeech-dev utterance ids ``utterances``) decided as the deep stage of `rescore run`
    decides it (``correct.verify.checked_proposal``): the corrector's guards at their defaults (not tuned here),
    then, with ``verify``, whisper-base's verdict on a word edit of the 1-best; the 1-best where refused. Returns
    the texts and how many outputs were taken."""
    texts, taken = [], 0
    for out, utterance in zip(outputs, utterances, strict=True):
        text, accepted = decision(utterance, out, verify)
        texts.append(text)
        taken += accepted
    return texts, taken


@functools.cache
def decision(utterance: str, proposal: str, verify: bool) -> tuple[str, bool]:
    """:func:`decided` for one output: (the text kept, whether the proposal was taken). Cached in the process and
    on disk (:func:`verdicts`), since decodings often propose the same text and whisper-base need score it once."""
    from rescore.correct.guards import GuardConfig
    from rescore.correct.verify import checked_proposal

    path, saved = verdicts()
    key = json.dumps([utterance, proposal, verify])
    if key not in saved:
        verifier = whisper_base_verifier() if verify else None
        text, verdict = checked_proposal(first_pass_records()[utterance], proposal, GuardConfig(), verifier)
        saved[key] = (text, bool(verdict["accepted"]))
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps([key, *saved[key]]) + "\n")
    return saved[key]


@functools.cache
def verdicts() -> tuple[Path, dict[str, tuple[str, bool]]]:
    """The file of earlier runs' decisions and what it holds. One file per version of the code that decides
    (guards, verifier, acoustic scoring: their sources hashed into the name), so a changed rule never reads old
    verdicts."""
    import hashlib

    import rescore.correct.guards
    import rescore.correct.verify
    import rescore.score.acoustic
    from rescore.io.models import cache_dir

    sources = b"".join(
        Path(m.__file__).read_bytes() for m in (rescore.score.acoustic, rescore.correct.guards, rescore.correct.verify)
    )
    path = cache_dir() / "deep" / f"verdicts-{hashlib.sha1(sources).hexdigest()[:12]}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    saved: dict[str, tuple[str, bool]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                key, text, accepted = json.loads(line)
            except ValueError:  # a line cut short by a killed run: decided again
                continue
            saved[key] = (text, accepted)
    return path, saved


def result_row(label: str, c: dict[str, Any], per_utt: float | None = None) -> str:
    """A table row of a decoded variant without training columns: WER (CI), better/worse, p (and decoding time)."""
    return (
        f"| {label} | | | | | {100 * c['wer']:.2f} ({100 * c['ci'][0]:.1f}-{100 * c['ci'][1]:.1f}) | "
        f"{c['better']}/{c['worse']} | {c['p']:.3f} | {'' if per_utt is None else f'{per_utt:.1f}'} |"
    )


# (variant, the one it is tested against): the audio ablation, for each encoder, and base's states against tiny's
PAIRS = (
    ("audio", "no-audio"),
    ("base-audio", "no-audio"),
    ("base-audio", "audio"),
    ("base-audio-q", "no-audio"),
    ("base-audio-q", "base-audio"),
    ("base-audio-qa", "no-audio"),
    ("base-audio-qa", "base-audio-q"),
    (DECODER_VARIANT, "no-audio"),
    (DECODER_VARIANT, "base-audio-qa"),
    (PREDICTION_VARIANT, "no-audio"),
    (PREDICTION_VARIANT, DECODER_VARIANT),
)


def pair_line(label: str, c: dict[str, Any], a: str = "audio", b: str = "no-audio") -> str:
    """A note line of ``compare(refs, b's output, a's output)``."""
    return (
        f"- {a} vs {b}{label}: {c['better']} utterance{'' if c['better'] == 1 else 's'} better, {c['worse']} worse; "
        f"paired bootstrap p {c['p']:.3f} that the {a} model is not better"
    )


def pair_names(outputs: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(a's row, b's row, label, a, b) for each pair of :data:`PAIRS` and each way both were decoded: raw,
    through the guard, at each one's length floor, and that verified."""
    return [p for a, b in PAIRS for p in _pair_names(outputs, a, b)]


def _pair_names(outputs: dict[str, Any], a_variant: str, b_variant: str) -> list[tuple[str, str, str, str, str]]:

    def floored_name(variant: str, verified: bool) -> str | None:
        return next(
            (n for n in outputs if n.startswith(f"{variant}, floor ") and n.endswith(" + verification") == verified),
            None,
        )

    out = []
    for suffix, label in (
        ("", ""),
        (" + guard", " + guard"),
        (VERIFIED, " (written, verified)"),
        (CHOSEN, " (choosing a hypothesis)"),
        (CHOSEN + " + guard", " (choosing, guarded)"),
        (CHOSEN + VERIFIED, " (choosing, verified)"),
    ):
        if a_variant + suffix in outputs and b_variant + suffix in outputs:
            out.append((a_variant + suffix, b_variant + suffix, label, a_variant, b_variant))
    for verified, label in ((False, " (each at its length floor)"), (True, " (each at its floor, verified)")):
        a, b = floored_name(a_variant, verified), floored_name(b_variant, verified)
        if a and b:
            out.append((a, b, label, a_variant, b_variant))
    return out


def parse_range(text: str, what: str) -> tuple[int, int]:
    """``START-END`` (1-based, inclusive) as numbers; a clear error naming ``what`` otherwise."""
    lo, _, hi = text.partition("-")
    if not (lo.isdigit() and hi.isdigit()) or not 1 <= int(lo) <= int(hi):
        raise SystemExit(f"{what} {text!r}: expected START-END, e.g. 41-75")
    return int(lo), int(hi)


def report_range(args: argparse.Namespace) -> tuple[int, int]:
    """The reported librispeech-dev utterances, 1-based and inclusive: ``--report-range`` or 1-``--report-limit``.
    With ``--train-librispeech`` the others are trained on, so three ranges cross-fit the whole set."""
    return parse_range(args.report_range, "--report-range") if args.report_range else (1, args.report_limit)


def report_tag(lo: int, hi: int) -> str:
    """The name part of a report range's decode caches: "40" for 1-40 (the files of the first runs)."""
    return str(hi) if lo == 1 else f"{lo}-{hi}"


@dataclass
class BenchData:
    """The examples of one run, with one encoder's states: training, held-out (early stopping) and report."""

    train: list
    dev: list
    report: list
    n_long: int  # librispeech-dev utterances trained on (--train-librispeech)
    hours: float  # of training audio

    def splits(self) -> tuple[set[str], set[str], list[str]]:
        """The utterances of each part (report in order): what two encoders' data must share."""
        return {e.group for e in self.train}, {e.group for e in self.dev}, [e.id for e in self.report]


def load_data(args: argparse.Namespace, encoder: str) -> BenchData:
    """The run's examples with ``encoder``'s states. The split is by utterance and seeded, so every encoder's
    data has the same training, held-out and report utterances (``run`` checks)."""
    from rescore.deep.train import held_out, load_nbest_examples

    # --full-sets: every utterance of the training sets (the tiny.en lists of `rescore transcribe`'s own name),
    # else the first 120/80/80 of each set; base lists of the same first utterances either way
    lists = [FULL_LIST, LISTS[1]] if args.full_sets else LISTS
    files = [nbest_file(s, m) for s in TRAIN_SETS for m in lists]
    window = args.window
    examples = load_nbest_examples(files, encoder, max_frames=1500, window=window, on_issue=print)
    lo, hi = report_range(args)
    report_file = nbest_file("librispeech-dev", REPORT_ENCODER)
    report = load_nbest_examples([report_file], encoder, limit=hi, window=window, on_issue=print)[lo - 1 :]
    if not report:
        raise SystemExit(f"librispeech-dev has no utterances {lo}-{hi}")
    n_long = 0
    if args.train_librispeech:  # LibriSpeech-length targets: the dev utterances outside the report range
        shown = {e.group for e in report}  # by audio: the base list's examples of these utterances too
        files_ls = [nbest_file("librispeech-dev", m) for m in LISTS]
        long_ex = load_nbest_examples(files_ls, encoder, max_frames=1500, window=window, on_issue=print)
        long_ex = [e for e in long_ex if e.group not in shown]
        n_long = len({e.group for e in long_ex})
        examples = examples + long_ex
    train_ex, dev_ex = held_out(examples, 0.1, args.seed)
    # a shuffled sample of every set (the floor is chosen on its first examples), not the first set's utterances
    dev_ex = random.Random(args.seed).sample(dev_ex, min(len(dev_ex), args.dev_limit or len(dev_ex)))
    frames = {e.group: e.states.shape[0] for e in examples}  # each audio once, however many lists hold it
    return BenchData(train_ex, dev_ex, report, n_long, sum(frames.values()) / 50 / 3600)


def prepare(args: argparse.Namespace) -> None:
    """Make (or finish) the n-best lists and encoder states the run's variants need, then stop: on a bare machine
    that is about 3 hours on 2 cores (whisper-base states of every training utterance half of it), so start it first."""
    encoders = dict.fromkeys([REPORT_ENCODER, *(variant_config(v).encoder for v in args.variants.split(","))])
    for encoder in encoders:
        d = load_data(args, encoder)
        print(f"{encoder}: {len(d.train)} training, {len(d.dev)} held-out, {len(d.report)} report examples", flush=True)


def run(args: argparse.Namespace) -> str:
    import torch

    from rescore.deep.train import TrainConfig, choose_length_floor, floored, train
    from rescore.deep.xattn import build_xattn
    from rescore.evaluate.metrics import error_rate

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    lo, hi = report_range(args)
    data = load_data(args, REPORT_ENCODER)
    by_encoder = {REPORT_ENCODER: data}
    train_ex, dev_ex, report, n_long, hours = data.train, data.dev, data.report, data.n_long, data.hours
    refs = [e.text for e in report]
    shown_ids = [e.id.split("/", 1)[1] for e in report]  # example ids are "<list file>/<utterance id>"
    first = [e.hypotheses[0] for e in report]
    assert not {e.group for e in train_ex + dev_ex} & {e.group for e in report}, "a reported utterance in training"
    rows, notes, outputs = [], [], {}
    tag = report_tag(lo, hi)
    fp = error_rate(refs, first)
    for name in args.variants.split(","):
        cached = out / name / f"report-{tag}.json"
        mcfg = variant_config(name, args.attend, args.window, args.text_norm)
        if mcfg.encoder not in by_encoder:  # the variant's encoder's states of the same utterances
            by_encoder[mcfg.encoder] = load_data(args, mcfg.encoder)
        own = by_encoder[mcfg.encoder]
        if own.splits() != data.splits():
            raise SystemExit(f"{name}: {mcfg.encoder} states are missing for some utterances (see above)")
        mcfg.fit_width(int(own.train[0].states.shape[1]))  # built before train() would fit it: tiny 384, base 512
        mcfg.choice_weight = args.choice_weight
        model = build_xattn(mcfg)
        if args.init_from and name != "step0":  # fine-tuning: the blocks as another run trained them
            from rescore.deep.xattn import WEIGHTS_FILE

            model.load_trainable_state_dict(torch.load(Path(args.init_from) / name / WEIGHTS_FILE, map_location="cpu"))
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        summary: dict[str, Any] = {"step": 0, "train_seconds": 0.0, "stopped": "untrained"}
        if name != "step0":
            cfg = TrainConfig(
                out=str(out / name),
                model=mcfg,
                batch_size=args.batch_size,
                lr=args.lr,
                warmup_steps=args.warmup,
                max_steps=100_000,
                budget_minutes=args.budget,
                budget_clock="cpu",
                eval_every=args.eval_every,
                save_every=25,
                threads=args.threads,
                precision=args.precision,
                seed=args.seed,
                keep_best=True,
                hyp_noise=args.hyp_noise,
            )
            summary = train(
                cfg, model=model, examples=(own.train, own.dev), on_step=lambda r: print(json.dumps(r), flush=True)
            )
            from rescore.deep.xattn import load_deep_model

            model = load_deep_model(out / name)  # the best dev-loss weights
        model.config.min_length_ratio = 0.0  # the raw output; the floor has its own rows
        gates = ", ".join(f"{a:+.2f}/{f:+.2f}" for a, f in model.gates())
        trained = (
            f"| {name} | {n_train / 1e6:.1f} M | {summary['step']} | {summary['train_seconds'] / 60:.1f} | "
            f"{summary.get('best_dev_loss', float('nan')):.3f} |"
        )
        notes.append(f"- {name}: stopped by {summary['stopped']}; gates tanh(attention)/tanh(ffn) per block: {gates}")
        if not model.writes:  # decoder memory: choosing only (the training columns go on a row of their own)
            rows.append(trained + " (chooses only) | | | |")
        else:
            hyps, per_utt = cached_json(cached, DECODED, evaluate, model, own.report, args.batch_size)
            outputs[name] = hyps
            c = compare(refs, first, hyps)
            print(f"{name}: WER {100 * c['wer']:.2f} % ({c['better']} better, {c['worse']} worse), gates {gates}")
            rows.append(
                f"{trained} {100 * c['wer']:.2f} ({100 * c['ci'][0]:.1f}-{100 * c['ci'][1]:.1f}) | "
                f"{c['better']}/{c['worse']} | {c['p']:.3f} | {per_utt:.1f} |"
            )
            g_hyps, kept = decided(hyps, shown_ids, verify=False)
            outputs[name + " + guard"] = g_hyps
            rows.append(result_row(f"{name} + guard ({kept}/{len(report)} kept)", compare(refs, first, g_hyps)))
            if args.verify:  # the raw written output decided as `rescore run`'s deep stage decides it
                v_hyps, taken = decided(hyps, shown_ids, verify=True)
                outputs[name + VERIFIED] = v_hyps
                label = f"{name} + guards + whisper-base verification ({taken}/{len(report)} taken)"
                rows.append(result_row(label, compare(refs, first, v_hyps)))
        if args.choose:  # decoding constrained to the prompt's hypotheses: the model's log-prob picks one
            choose_cache = out / name / f"report-{tag}-{CHOOSE_CACHE}.json"
            c_hyps, c_per_utt = cached_json(
                choose_cache, DECODED, evaluate, model, own.report, args.batch_size, decode="choose"
            )
            outputs[name + CHOSEN] = c_hyps
            rows.append(result_row(name + CHOSEN, compare(refs, first, c_hyps), c_per_utt))
            g_hyps, kept = decided(c_hyps, shown_ids, verify=False)  # the text guards alone: no acoustic model
            outputs[name + CHOSEN + " + guard"] = g_hyps
            rows.append(result_row(f"{name}{CHOSEN} + guard ({kept}/{len(report)} kept)", compare(refs, first, g_hyps)))
            v_hyps, taken = decided(c_hyps, shown_ids, verify=True)
            outputs[name + CHOSEN + VERIFIED] = v_hyps
            label = f"{name}{CHOSEN} + guards + whisper-base verification ({taken}/{len(report)} taken)"
            rows.append(result_row(label, compare(refs, first, v_hyps)))
        if args.floor and model.writes:  # a length floor chosen on held-out training examples, applied to the report
            floor_dev = [e for e in own.dev if e.group not in {r.group for r in report}][: args.floor_examples]
            choice = out / name / f"floor-choice-{len(floor_dev)}.json"  # the choice is decodes: cached
            ratio, floor_wers = cached_json(
                choice, ("ratio", "wers"), choose_length_floor, model, floor_dev, args.batch_size, "cpu"
            )
            floor_wers = {float(k): v for k, v in floor_wers.items()}  # JSON keys are strings
            floor_cache = out / name / f"report-{tag}-floor{ratio:g}.json"
            base = {e.id: h for e, h in zip(report, hyps, strict=True)}
            if floor_cache.exists():  # {utterance: text}, not a decode's result: its own file format
                fl = json.loads(floor_cache.read_text())
            else:
                fl = floored(model, own.report, base, ratio, args.batch_size, "cpu")
                floor_cache.write_text(json.dumps(fl))
            outputs[f"{name}, floor {ratio:g}"] = [fl[e.id] for e in report]
            f = compare(refs, first, outputs[f"{name}, floor {ratio:g}"])
            rows.append(
                result_row(f"{name}, length floor {ratio:g} (chosen on {len(floor_dev)} held-out training examples)", f)
            )
            if args.verify:
                v_hyps, taken = decided(outputs[f"{name}, floor {ratio:g}"], shown_ids, verify=True)
                outputs[f"{name}, floor {ratio:g} + verification"] = v_hyps
                label = f"{name}, floor {ratio:g} + guards + whisper-base verification ({taken}/{len(report)} taken)"
                rows.append(result_row(label, compare(refs, first, v_hyps)))
            by_floor = ", ".join(f"{r:g}: {100 * w:.1f} %" for r, w in floor_wers.items())
            notes.append(f"- {name}: held-out training WER by length floor: {by_floor}")
            if args.choose:  # the two decoding modes on the same held-out training examples (not the report)
                chosen_dev, _ = evaluate(model, floor_dev, args.batch_size, decode="choose")
                wer = error_rate([e.text for e in floor_dev], chosen_dev).rate
                notes.append(f"- {name}: held-out training WER choosing a hypothesis: {100 * wer:.1f} %")
    pairs = []
    for a_name, b_name, label, a, b in pair_names(outputs):
        pairs.append(pair_line(label, compare(refs, outputs[b_name], outputs[a_name]), a, b))
    examples_md = []
    show = next((n for n in ("audio", *outputs) if n in outputs), None)
    if show:
        for i in range(min(3, len(report))):
            examples_md.append(f"| {refs[i][:70]} | {first[i][:70]} | {outputs[show][i][:70]} |")
    command = "python -m eval.bench_xattn " + " ".join(sys.argv[1:])
    base_note = BASE_NOTE if set(BASE_VARIANTS) & set(outputs) else ""
    base_note += DECODER_NOTE if any(n.startswith(DECODER_VARIANT) for n in outputs) else ""
    base_note += PREDICTION_NOTE if any(n.startswith(PREDICTION_VARIANT) for n in outputs) else ""
    sets = ", ".join(TRAIN_SETS) + (" (every utterance)" if args.full_sets else " (the first 120/80/80)")
    if n_long:
        sets += (
            f", and the {n_long} librispeech-dev utterances outside {lo}-{hi} (dev utterances, one speaker each, none"
            " of them in the report range)"
        )
    return f"""### Deep fusion: gated cross-attention into Whisper encoder states (issue 15)

Model: SmolLM2-135M-Instruct (frozen) reading the first-pass n-best (up to 4 distinct hypotheses, prompts/deep.j2)
and writing the transcript; gated cross-attention + gated FFN blocks after every 6th of its 30 layers (5 blocks,
6 heads of 64; acting {ATTEND_NOTE[args.attend]}), attending over Whisper tiny.en encoder
states (CTranslate2 int8, cached; {WINDOW_NOTE[args.window]}), K/V projections started from Whisper tiny's
decoder cross-attention, gates at zero (step 0 is the text-only LM). {TEXT_NORM_NOTE[args.text_norm]}{base_note}
Training: {len(train_ex)} examples ({sets}; tiny.en and base lists of {hours:.1f} h of audio), early
stopping on {len(dev_ex)} held-out examples (dev loss, nats per target token; the best checkpoint is kept).
Budget: {args.budget:g} min of this process's CPU time per trained variant, {args.threads} torch thread, CPU
(no GPU lent), {PRECISION_NOTE[args.precision]}, batch {args.batch_size}, AdamW lr {args.lr} (gates x10),
{args.warmup} warm-up steps, cosine decay.{hyp_noise_note(args.hyp_noise)}{choice_note(args)}
Reported: librispeech-dev utterances {lo}-{hi} in file order ({len(report)}; never trained or tuned on),
greedy decoding, WER % (Whisper normalizer) with 95 % bootstrap interval; better/worse: utterances with fewer /
more errors than the first-pass 1-best; p: paired bootstrap share of resamples where the variant does not beat
the 1-best; "+ guard": the output through the corrector's output guard at its defaults (edit budget 0.3,
1 novel word, runaway length), the 1-best where it abstains.{CHOOSE_NOTE if args.choose else ""}
Command: `{command}`

| variant | trained params | steps | train CPU min | best dev loss | WER % (95 % CI) | better/worse | p | s/utt decode |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
| first-pass 1-best (tiny.en) | | | | | {100 * fp.rate:.2f} ({100 * fp.ci_low:.1f}-{100 * fp.ci_high:.1f}) | | | |
{chr(10).join(rows)}

{chr(10).join(notes + pairs)}

| reference | first pass | {show} |
|---|---|---|
{chr(10).join(examples_md)}
"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_xattn")
    ap.add_argument("--variants", default="step0,audio,no-audio")
    ap.add_argument("--budget", type=float, default=12.0, help="training CPU minutes per variant")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--dev-limit", type=int, default=0, help="held-out examples used (0: all)")
    ap.add_argument("--report-limit", type=int, default=40, help="report on librispeech-dev 1-N")
    ap.add_argument(
        "--report-range", default=None, help="report on librispeech-dev START-END instead (1-based, inclusive): a fold"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--attend", default=ATTEND[0], choices=ATTEND, help="where the blocks act (reply: from the prompt's end)"
    )
    ap.add_argument(
        "--window", default=WINDOWS[0], choices=WINDOWS, help="encoder window (own: each utterance at its length)"
    )
    ap.add_argument(
        "--text-norm", default=TEXT_NORMS[0], choices=TEXT_NORMS, help="targets' style (whisper: WER's normalizer)"
    )
    ap.add_argument("--precision", default=PRECISIONS[0], choices=PRECISIONS, help="training's autocast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--train-librispeech", action="store_true", help="also train on the librispeech-dev utterances after the report"
    )
    ap.add_argument("--choose", action="store_true", help="also decode by choosing among the prompt's hypotheses")
    ap.add_argument("--full-sets", action="store_true", help="train on every utterance of the training sets")
    ap.add_argument("--floor", action="store_true", help="choose a length floor on held-out training examples")
    ap.add_argument("--floor-examples", type=int, default=40)
    ap.add_argument(
        "--verify", action="store_true", help="rows of the written (and floored) output verified as `rescore run` does"
    )
    ap.add_argument(
        "--hyp-noise",
        type=float,
        default=0.0,
        help="share of training examples whose hypotheses get look-alike words (rescore.deep.noise; 0: none)",
    )
    ap.add_argument(
        "--choice-weight", type=float, default=0.0, help="weight of the choosing loss in training (XAttnLM.choice_loss)"
    )
    ap.add_argument(
        "--init-from",
        default=None,
        help="start each trained variant from the weights of the same variant under this --out folder (fine-tuning)",
    )
    ap.add_argument("--prepare", action="store_true", help="only make the n-best lists and encoder states, then stop")
    args = ap.parse_args()
    from rescore.deep.noise import HypothesisNoise

    try:  # refused before hours of loading, not when training starts; the bounds live in HypothesisNoise
        HypothesisNoise(examples=args.hyp_noise)
    except ValueError as e:
        ap.error(f"--hyp-noise {args.hyp_noise}: {e}")
    if args.prepare:
        prepare(args)
        return
    if args.out is None:
        from rescore.io.models import cache_dir

        suffix = "".join(
            f"-{v}" for v, default in ((args.window, WINDOWS[0]), (args.text_norm, TEXT_NORMS[0])) if v != default
        )
        suffix += f"-noise{args.hyp_noise:g}" if args.hyp_noise > 0 else ""
        args.out = str(cache_dir() / "deep" / f"bench-xattn{suffix}")
    np.random.seed(args.seed)
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
