"""HyPoradise: rescore's rerank and correct on somebody else's published n-best lists (text only).

    python -m eval.bench_hyporadise --lm smollm2-135m --correct-n 20 --correct-train-n 24
    python -m eval.bench_hyporadise --llm qwen2.5-1.5b --correct-n 40 --correct-train-n 24 --correct-sets wsj atis \\
        --section hyporadise-qwen1.5b
    python -m eval.bench_hyporadise --llm smollm2-135m --backend transformers --lora-minutes 12 --correct-n 60 \\
        --correct-train-n 24 --correct-sets wsj atis --section hyporadise-lora

The HyPoradise files (../shared/data/hyporadise: WSJ, ATIS and CHiME-4 test, ATIS train; Whisper 5-best lists with
references) are imported as ``rescore import hyporadise`` does and scored beside the paper's table:

- the 1-best and the 5-best oracle the files give, under no normalisation and the ``hyporadise`` normalizer (lower
  case, punctuation deleted: the paper's convention), beside the paper's baseline and o_nb;
- rerank with ``--lm``, weights tuned (``rescore tune``'s grid) on ATIS train only: the text-only form (the list's
  ``rank`` as a prior, -1 per position, + LM + length bonus; the only form for CHiME-4, whose file has no scores) and,
  where the file has them, the per-token acoustic scores ``am_norm`` + LM + length bonus;
- correct with ``--llm`` (``rescore correct``'s stage; text only, so the guards alone decide) on a seeded random
  subset of ``--correct-n`` utterances per test set, on top of the text-only rerank, with the guards at their
  defaults and tuned on the corrections of ``--correct-train-n`` ATIS train utterances; with ``--lora-minutes`` the
  LLM first gets a LoRA adapter trained on the other ATIS train pairs.

Tables show utterances made better and worse than the 1-best and the paired bootstrap p. LM scores and corrections
are cached under the rescore cache folder, so a rerun only redoes what changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from eval.common import DATA, command, corrected, errors, row
from eval.results import add_publish_options, publish
from rescore.io.formats import import_records
from rescore.io.models import cache_dir
from rescore.records import NBest, read_nbest, write_nbest
from rescore.rerank.ranker import Ranker, lm_key

FILES = {
    "wsj": "test_wsj.json",
    "atis": "test_atis.json",
    "chime4": "test_chime4.json",
    "atis-train": "train_atis.json",
}
TESTS = ("wsj", "atis", "chime4")
NAMES = {"wsj": "WSJ", "atis": "ATIS", "chime4": "CHiME-4"}
TRAIN = "atis-train"
NORM = "hyporadise"
# the paper's table (WER %), as the data README restates it from the Hypo2Trans repository
PAPER = {
    "wsj": {"baseline": 4.5, "LM_rank": 4.3, "T5-ft": 4.0, "T5-LoRA": 2.7, "LLaMA-7B-LoRA": 2.2, "o_nb": 4.1},
    "atis": {"baseline": 8.3, "LM_rank": 6.9, "T5-ft": 2.7, "T5-LoRA": 1.7, "LLaMA-7B-LoRA": 1.9, "o_nb": 5.2},
    "chime4": {"baseline": 11.1, "LM_rank": 11.0, "T5-ft": 7.9, "T5-LoRA": 7.0, "LLaMA-7B-LoRA": 6.6, "o_nb": 9.1},
}
CACHE = cache_dir() / "bench-hyporadise"
HEAD = ["| set, system | WER % (95 % CI) | better/worse vs 1-best | p | paper |", "|---|---|---|---|---|"]


def records(name: str) -> list[NBest]:
    return import_records("hyporadise", DATA / "hyporadise" / FILES[name])


def scored(name: str, lm: str) -> list[NBest]:
    """The set's records with ``lm:<lm>`` scores (no context), cached under the rescore cache folder."""
    from rescore.registry import make_scorer
    from rescore.rerank.ranker import score_nbest

    cache = CACHE / f"{name}.{lm}.jsonl"
    if cache.exists():
        return list(read_nbest(cache))
    recs = records(name)
    t0 = time.perf_counter()
    score_nbest(recs, make_scorer(lm, "hf", threads=2))
    print(f"scored {name} with {lm} in {time.perf_counter() - t0:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    write_nbest(cache, recs)
    return recs


def oracle(recs: list[NBest], norm: str) -> float:
    refs = [r.reference or "" for r in recs]
    per = np.stack([errors(refs, [r.hypotheses[j].text for r in recs], norm)[0] for j in range(5)])
    return float(per.min(0).sum() / errors(refs, refs, norm)[1].sum())


def wer(recs: list[NBest], norm: str = NORM, stage: str = "first-pass") -> float:
    e, n = errors([r.reference or "" for r in recs], [r.text(stage) for r in recs], norm)
    return float(e.sum() / n.sum())


def baselines() -> list[str]:
    lines = [
        "| set | utterances | 1-best WER %, none | 1-best, hyporadise | paper baseline | 5-best oracle, none "
        "| oracle, hyporadise | paper o_nb |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in TESTS:
        recs = records(s)
        lines.append(
            f"| {NAMES[s]} | {len(recs)} | {100 * wer(recs, 'none'):.2f} | {100 * wer(recs):.2f} "
            f"| {PAPER[s]['baseline']} | {100 * oracle(recs, 'none'):.2f} | {100 * oracle(recs, NORM):.2f} "
            f"| {PAPER[s]['o_nb']} |"
        )
    return lines


def tuned_weights(lm: str) -> dict:
    """Weights tuned on ATIS train: the text-only (rank) form and the am_norm form, with their train WER."""
    from rescore.rerank.grid import tune

    train = scored(TRAIN, lm)
    return {
        form: tune(train, keys=[lm_key(lm)], fixed=fixed, normalizer=NORM)
        for form, fixed in (("rank", {"rank": -1.0}), ("am_norm", {"am_norm": 1.0}))
    }


def rerank_part(lm: str) -> tuple[list[str], dict[str, list[NBest]]]:
    from rescore.rerank.ranker import default_weights

    w = tuned_weights(lm)
    lines, defaults, text_only = list(HEAD), [], {}
    for s in TESTS:
        recs = scored(s, lm)
        refs, first = [r.reference or "" for r in recs], [r.text("first-pass") for r in recs]
        lines.append(
            row(f"{NAMES[s]}: 1-best", refs, first, normalizer=NORM, extra=[f"baseline {PAPER[s]['baseline']}"])
        )
        forms = ["rank"] + (["am_norm"] if all("am_norm" in h.scores for r in recs for h in r.hypotheses) else [])
        for form in forms:
            ranker = Ranker(w[form].weights)
            for r in recs:
                ranker.rank(r)
            label = "rank prior" if form == "rank" else "am_norm"
            hyps = [r.text("rerank") for r in recs]
            lines.append(
                row(
                    f"{NAMES[s]}: rerank, {label} + LM + length",
                    refs,
                    hyps,
                    first,
                    normalizer=NORM,
                    extra=[f"LM_rank {PAPER[s]['LM_rank']}"],
                )
            )
            if form == "rank":
                text_only[s] = [NBest.from_dict(r.to_dict()) for r in recs]
        ranker = Ranker(default_weights([lm_key(lm)], am="rank"))  # `rescore rerank` without a config
        defaults.append(f"{NAMES[s]} {100 * wer([ranker.rank(r) for r in recs], stage='rerank'):.2f} %")
    train = records(TRAIN)
    lines += [
        "",
        f"- Tuned on ATIS train ({len(train)} utterances, 1-best {100 * wer(train):.2f} %): text-only "
        f"`{w['rank'].weights.describe()}` (in-sample {100 * w['rank'].wer:.2f} %); with acoustic scores "
        f"`{w['am_norm'].weights.describe()}` (in-sample {100 * w['am_norm'].wer:.2f} %).",
        f"- `rescore rerank`'s rounded text-only defaults (`{default_weights([lm_key(lm)], am='rank').describe()}`) "
        f"give {', '.join(defaults)}.",
    ]
    return lines, text_only


def sample(recs: list[NBest], n: int, seed: int) -> list[NBest]:
    if n <= 0 or n >= len(recs):
        return recs
    # the first n of one seeded permutation: a larger n keeps the smaller subset (and its cached corrections)
    idx = np.sort(np.random.default_rng(seed).permutation(len(recs))[:n])
    return [recs[i] for i in idx]


def atis_adapter(args: argparse.Namespace, pairs: list[NBest]) -> tuple[str, str]:
    """A LoRA adapter of ``--llm`` trained on ATIS train pairs (cached by model and time box) and a note on it."""
    from rescore.correct.lora import LoraConfig, train_lora

    out = cache_dir() / "correct" / f"lora-{args.llm}-nbest-atis-train-{args.lora_minutes:g}min"
    if not (out / "rescore-lora.json").exists():
        cfg = LoraConfig(llm=args.llm, template="nbest", max_minutes=args.lora_minutes, threads=args.llm_threads)
        print(f"training a LoRA adapter on {len(pairs)} ATIS train pairs into {out}", flush=True)
        train_lora(pairs, out, cfg, on_step=lambda s, t, loss: print(f"  step {s}/{t} loss {loss:.3f}", flush=True))
    info = json.loads((out / "rescore-lora.json").read_text(encoding="utf-8"))
    note = (
        f"LoRA-tuned on {info['train_pairs']} ATIS train pairs ({info['held_out_pairs']} more held out for early"
        f" stopping; the best held-out step {info['best_step']} of {info['steps']} kept; {info['seconds'] / 60:.0f}"
        f" min on {info['device']}; the guard-tuning utterances left out)"
    )
    return str(out), note


def correct_part(args: argparse.Namespace, text_only: dict[str, list[NBest]]) -> list[str]:
    from rescore.correct.tuning import reguard, tune_guards
    from rescore.stages import CorrectOptions, CorrectStage

    atis_train = scored(TRAIN, args.lm)
    ranker = Ranker(tuned_weights(args.lm)["rank"].weights)  # reranked as the test sets are
    for r in atis_train:
        ranker.rank(r)
    train = sample(atis_train, args.correct_train_n, args.seed)
    adapter, lora_note = None, ""
    if args.lora_minutes:  # the LoRA pairs: ATIS train less the utterances the guards are tuned on
        tuned_on = {r.id for r in train}
        adapter, lora_note = atis_adapter(args, [r for r in atis_train if r.id not in tuned_on])
    options = CorrectOptions(
        llm=args.llm, backend=args.backend, adapter=adapter, prompt="nbest", threads=args.llm_threads, verify=False
    )
    stage = CorrectStage(options)
    cfg = stage.config
    tag = f"{cfg.llm}-{cfg.backend}-nbest{'-distinct' if cfg.distinct else ''}-{args.lm}"  # the prompt shapes the cache
    tag += f"-lora{args.lora_minutes:g}" if adapter else ""
    tuning = tune_guards(corrected(stage, train, CACHE / f"correct.{tag}.{TRAIN}.seed{args.seed}.jsonl"), cfg.guards)
    g = tuning.guards
    chosen = "the corrector off" if g is None else f"edit ratio {g.max_edit_ratio}, novel words {g.max_novel_words}"
    lines, secs = list(HEAD), []
    for s in args.correct_sets:
        recs = corrected(
            stage, sample(text_only[s], args.correct_n, args.seed), CACHE / f"correct.{tag}.{s}.seed{args.seed}.jsonl"
        )
        secs += [r.timing.get("correct", 0.0) for r in recs]
        refs, first = [r.reference or "" for r in recs], [r.text("first-pass") for r in recs]
        tuned = [reguard(r, g) for r in recs]
        p = PAPER[s]
        lines += [
            row(f"{NAMES[s]} ({len(recs)}): 1-best", refs, first, normalizer=NORM, extra=[f"baseline {p['baseline']}"]),
            row(
                f"{NAMES[s]}: rerank (rank prior + {args.lm})",
                refs,
                [r.text("rerank") for r in recs],
                first,
                normalizer=NORM,
                extra=[f"LM_rank {p['LM_rank']}"],
            ),
            row(
                f"{NAMES[s]}: corrected, default guards",
                refs,
                [r.corrected or r.text("rerank") for r in recs],
                first,
                normalizer=NORM,
                extra=[f"T5-LoRA {p['T5-LoRA']}, LLaMA-7B-LoRA {p['LLaMA-7B-LoRA']}"],
            ),
            row(
                f"{NAMES[s]}: corrected, guards tuned on ATIS train",
                refs,
                [r.corrected or r.text("rerank") for r in tuned],
                first,
                normalizer=NORM,
                extra=[f"T5-ft {p['T5-ft']}"],
            ),
        ]
    return [
        f"Corrector {cfg.llm} ({cfg.backend}, {args.llm_threads} thread(s)), template `nbest` (the reranked hypothesis "
        f"plus the others, each shown once after normalisation), {lora_note or 'zero-shot'}; reported on a seeded "
        f"random subset of {args.correct_n} utterances of each of {', '.join(NAMES[s] for s in args.correct_sets)} "
        f"(numpy seed {args.seed}; {np.mean(secs):.1f} s per utterance), on top of the text-only rerank. Guards tuned "
        f"on the corrections of {tuning.utterances} random ATIS train utterances: of {len(tuning.tried)} settings the "
        f"lowest WER there ({100 * tuning.wer:.2f} %) came with {chosen} (off: {100 * tuning.tried[0][2]:.2f} %). "
        "The paper's columns are whole-set figures of fine-tuned models (T5, LLaMA-7B), for scale.",
        "",
        *lines,
    ]


def run(args: argparse.Namespace) -> str:
    parts = [
        "### HyPoradise: rerank and correct on published n-best lists",
        "",
        f"Command: `{args.cmd}`",
        "",
        "HyPoradise (Chen et al., NeurIPS 2023) Whisper 5-best lists, imported with `rescore import hyporadise` (the "
        "per-token scores of WSJ and ATIS as `am_norm`, the list position as `rank`); fitted on ATIS train only, "
        "reported on the WSJ, ATIS and CHiME-4 test lists. WER with the `hyporadise` normalizer; better/worse and p "
        "against the file's 1-best.",
        "",
        *baselines(),
        "",
        f"**Rerank** (weights tuned on ATIS train with {args.lm}, applied unchanged to each test set):",
        "",
    ]
    lines, text_only = rerank_part(args.lm)
    parts += lines
    if not args.skip_correct:
        parts += ["", "**Correct** (subset):", "", *correct_part(args, text_only)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm", default="smollm2-135m", help="the LM of the rerank")
    ap.add_argument("--llm", default="qwen2.5-0.5b")
    ap.add_argument("--backend", default="llama-cpp")
    ap.add_argument("--correct-n", type=int, default=100, help="utterances of each test set corrected (0: all)")
    ap.add_argument("--correct-train-n", type=int, default=60, help="ATIS train utterances corrected to tune guards")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-correct", action="store_true")
    ap.add_argument("--llm-threads", type=int, default=1, help="LLM threads (1: no spin-waiting on a busy CPU)")
    ap.add_argument("--correct-sets", nargs="+", default=list(TESTS), choices=TESTS, help="test sets to correct")
    ap.add_argument("--lora-minutes", type=float, default=0, help="train a LoRA adapter of --llm on ATIS train first")
    add_publish_options(ap, "hyporadise")
    args = ap.parse_args(argv)
    args.cmd = command("bench_hyporadise", argv)
    import torch

    torch.set_num_threads(2)
    publish(run(args), args.section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
