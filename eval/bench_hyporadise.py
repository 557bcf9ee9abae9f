"""HyPoradise benchmark: rescore's rerank and correct on somebody else's published n-best lists.

The HyPoradise files (../shared/data/hyporadise: WSJ, ATIS and CHiME-4 test, ATIS train; Whisper 5-best lists
with references, text only) are imported with ``rescore.io.formats`` and scored beside the paper's table:

- the 1-best and the 5-best oracle WER the files give, under no normalisation and the ``hyporadise``
  normalizer (lower case, punctuation deleted: the paper's convention), beside the paper's baseline and o_nb;
- rerank with each LM (``--lms``), weights tuned on ATIS train only (never on a reported set): the text-only
  form (the list's ``rank`` as a prior, -1 per position, + LM + length bonus; the only form for CHiME-4,
  whose file has no scores) and, where the file has them, the per-token acoustic scores ``am_norm`` + LM +
  length bonus; beside the paper's LM-rescoring column;
- correct with ``--llm`` (llama.cpp) on a fixed seeded random subset of ``--correct-n`` utterances per test
  set (the LLM takes seconds per utterance on this CPU), on top of the text-only rerank, with the guards at
  their defaults and tuned on the corrections of ``--correct-train-n`` ATIS train utterances; beside the
  paper's T5-LoRA and LLaMA-7B-LoRA columns.

Every table shows utterances made better and worse than the 1-best and the paired bootstrap p (share of
resamples where the system is not better). LM scores and corrections are cached under the rescore cache
folder, so a rerun only redoes what changed.

    python -m eval.bench_hyporadise --lms smollm2-135m --correct-n 100
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from eval.bench_correct import corrected
from rescore.evaluate.metrics import bootstrap_ci, edit_counts, normalize, paired_change
from rescore.io.formats import import_records
from rescore.io.models import cache_dir
from rescore.records import NBest, read_nbest, write_nbest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hyporadise"
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


def records(name: str) -> list[NBest]:
    return import_records("hyporadise", DATA / FILES[name])


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
    n = sum(len(r.hypotheses) for r in recs)
    print(f"scored {name} ({n} hypotheses) with {lm} in {time.perf_counter() - t0:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    write_nbest(cache, recs)
    return recs


def with_lms(name: str, lms: list[str]) -> list[NBest]:
    """The set's records carrying every LM's score (merged from the per-LM caches)."""
    base = scored(name, lms[0])
    for lm in lms[1:]:
        other = {r.id: r for r in scored(name, lm)}
        for r in base:
            for h, o in zip(r.hypotheses, other[r.id].hypotheses, strict=True):
                h.scores[f"lm:{lm}"] = o.scores[f"lm:{lm}"]
    return base


def errors(refs: list[str], hyps: list[str]) -> tuple[np.ndarray, np.ndarray]:
    c = edit_counts([normalize(r, NORM) for r in refs], [normalize(h, NORM) for h in hyps])
    return c.errors, c.ref


def oracle(recs: list[NBest], norm: str) -> float:
    refs = [normalize(r.reference or "", norm) for r in recs]
    per = np.stack([edit_counts(refs, [normalize(r.hypotheses[j].text, norm) for r in recs]).errors for j in range(5)])
    ref_len = edit_counts(refs, refs).ref
    return float(per.min(0).sum() / ref_len.sum())


def wer_none(recs: list[NBest]) -> float:
    c = edit_counts(
        [normalize(r.reference or "", "none") for r in recs], [normalize(r.text("first-pass"), "none") for r in recs]
    )
    return c.rate()


def row(
    name: str, refs: list[str], hyps: list[str], base: np.ndarray | None, ref_len: np.ndarray, paper: str = ""
) -> str:
    e, n = errors(refs, hyps)
    lo, hi = bootstrap_ci(e, n)
    rate = 100 * e.sum() / n.sum()
    if base is None:
        return f"| {name} | {rate:.2f} | {100 * lo:.2f}-{100 * hi:.2f} | | | {paper} |"
    c = paired_change(base, e, ref_len)
    return (
        f"| {name} | {rate:.2f} | {100 * lo:.2f}-{100 * hi:.2f} | {c.better}/{c.worse}/{c.unchanged} | {c.p:.3f} | "
        f"{paper} |"
    )


def baselines() -> str:
    lines = [
        "| set | utterances | 1-best WER %, none | 1-best, hyporadise | paper baseline | 5-best oracle, none "
        "| oracle, hyporadise | paper o_nb |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in TESTS:
        recs = records(s)
        e, n = errors([r.reference or "" for r in recs], [r.text("first-pass") for r in recs])
        lines.append(
            f"| {NAMES[s]} | {len(recs)} | {100 * wer_none(recs):.2f} | {100 * e.sum() / n.sum():.2f} "
            f"| {PAPER[s]['baseline']} | {100 * oracle(recs, 'none'):.2f} | {100 * oracle(recs, NORM):.2f} "
            f"| {PAPER[s]['o_nb']} |"
        )
    return "\n".join(lines)


def tuned_weights(lms: list[str]):
    """Weights tuned on ATIS train: the text-only (rank) form and the am_norm form, with their train WER."""
    from rescore.rerank.grid import tune

    train = with_lms(TRAIN, lms)
    keys = [f"lm:{lm}" for lm in lms]
    out = {}
    for form, fixed in (("rank", {"rank": -1.0}), ("am_norm", {"am_norm": 1.0})):
        t0 = time.perf_counter()
        res = tune(train, keys=keys, fixed=fixed, normalizer=NORM)
        out[form] = res
        print(
            f"tuned {form} on {TRAIN} in {time.perf_counter() - t0:.0f} s: {res.weights.describe()} "
            f"(in-sample {100 * res.wer:.2f} %)",
            flush=True,
        )
    return out


def rerank_part(lm_sets: list[list[str]]) -> tuple[str, dict[str, list[NBest]]]:
    from rescore.rerank.ranker import Ranker, default_weights

    lines = [
        "| set, system | WER % | 95 % CI | better/worse/same vs 1-best | p | paper |",
        "|---|---:|---:|---:|---:|---|",
    ]
    notes = []
    defaults: list[str] = []
    text_only: dict[str, list[NBest]] = {}
    for lms in lm_sets:
        tag = " + ".join(lms)
        w = tuned_weights(lms)
        train_base = records(TRAIN)
        e0, _ = errors([r.reference or "" for r in train_base], [r.text("first-pass") for r in train_base])
        notes.append(
            f"- {tag}, tuned on ATIS train ({len(train_base)} utterances, 1-best {100 * e0.sum() / _.sum():.2f} %): "
            f"text-only `{w['rank'].weights.describe()}` (in-sample {100 * w['rank'].wer:.2f} %); "
            f"with acoustic scores `{w['am_norm'].weights.describe()}` (in-sample {100 * w['am_norm'].wer:.2f} %)."
        )
        for s in TESTS:
            recs = with_lms(s, lms)
            refs = [r.reference or "" for r in recs]
            base, ref_len = errors(refs, [r.text("first-pass") for r in recs])
            if lms == lm_sets[0]:
                lines.append(
                    row(
                        f"{NAMES[s]}: 1-best",
                        refs,
                        [r.text("first-pass") for r in recs],
                        None,
                        ref_len,
                        f"baseline {PAPER[s]['baseline']}",
                    )
                )
            forms = ["rank"] + (["am_norm"] if all("am_norm" in h.scores for r in recs for h in r.hypotheses) else [])
            for form in forms:
                ranker = Ranker(w[form].weights)
                for r in recs:
                    ranker.rank(r)
                label = "rank prior" if form == "rank" else "am_norm"
                lines.append(
                    row(
                        f"{NAMES[s]}: rerank, {tag}, {label} + LM + length",
                        refs,
                        [r.text("rerank") for r in recs],
                        base,
                        ref_len,
                        f"LM_rank {PAPER[s]['LM_rank']}",
                    )
                )
                print(lines[-1], flush=True)
                if form == "rank" and lms == lm_sets[0]:
                    text_only[s] = [NBest.from_dict(r.to_dict()) for r in recs]
            if lms == ["smollm2-135m"]:  # what `rescore rerank` does without a config: the rounded defaults
                ranker = Ranker(default_weights(["lm:smollm2-135m"], am="rank"))
                for r in recs:
                    ranker.rank(r)
                e, n = errors(refs, [r.text("rerank") for r in recs])
                defaults.append(f"{NAMES[s]} {100 * e.sum() / n.sum():.2f} %")
    if defaults:
        dw = default_weights(["lm:smollm2-135m"], am="rank").describe()
        notes.append(f"- The rounded text-only defaults of `rescore rerank` (`{dw}`) give {', '.join(defaults)}.")
    md = [
        f"Weights tuned on ATIS train only (grid + refinement, minimum corpus WER, `{NORM}` normalizer); "
        "applied unchanged to each test set. WER with the `hyporadise` normalizer; better/worse/same and p "
        "against the file's 1-best (p: paired bootstrap share of resamples where the system is not better).",
        "",
        *lines,
        "",
        *notes,
    ]
    return "\n".join(md), text_only


def sample(recs: list[NBest], n: int, seed: int) -> list[NBest]:
    if n <= 0 or n >= len(recs):
        return recs
    # the first n of one seeded permutation: a larger n keeps the smaller subset (and its cached corrections)
    idx = np.sort(np.random.default_rng(seed).permutation(len(recs))[:n])
    return [recs[i] for i in idx]


def atis_adapter(args: argparse.Namespace, pairs: list[NBest]) -> tuple[Path, str]:
    """A LoRA adapter of ``--llm`` trained on ATIS train pairs (cached by model and time box) and a note on it."""
    import json

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
    return out, note


def correct_part(args: argparse.Namespace, text_only: dict[str, list[NBest]]) -> str:
    from rescore.correct import CorrectorConfig, GuardConfig, LLMCorrector
    from rescore.correct.tuning import reguard, tune_guards
    from rescore.rerank.ranker import Ranker

    lm = args.lms[0]
    # guards: tuned on corrections of ATIS train utterances (reranked by the same text-only weights)
    w = tuned_weights([lm])["rank"].weights
    atis_train = with_lms(TRAIN, [lm])
    for r in atis_train:
        Ranker(w).rank(r)
    train = sample(atis_train, args.correct_train_n, args.seed)
    adapter, lora_note = None, ""
    if args.lora_minutes:  # the LoRA pairs: ATIS train less the utterances the guards are tuned on
        tuned_on = {r.id for r in train}
        adapter, lora_note = atis_adapter(args, [r for r in atis_train if r.id not in tuned_on])
    cfg = CorrectorConfig(
        llm=args.llm,
        backend="transformers" if adapter else args.backend,
        adapter=str(adapter) if adapter else None,
        template="nbest",
        n_threads=args.llm_threads,
        guards=GuardConfig(),
    )
    corrector = LLMCorrector(cfg)
    tag = f"{args.llm}-{cfg.backend}-nbest{'-distinct' if cfg.distinct else ''}-{lm}"  # the prompt shapes the cache
    if adapter:
        tag += f"-lora{args.lora_minutes:g}"
    train_c = corrected(corrector, train, CACHE / f"correct.{tag}.{TRAIN}.seed{args.seed}.jsonl")
    tuning = tune_guards(train_c, cfg.guards, vocab=corrector.vocab)
    g = tuning.guards
    chosen = (
        "the corrector off" if g is None else f"max_edit_ratio {g.max_edit_ratio}, max_novel_words {g.max_novel_words}"
    )
    lines = [
        "| set, system | WER % | 95 % CI | better/worse/same vs 1-best | p | paper (whole set) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    secs = []
    for s in args.correct_sets:
        recs = corrected(
            corrector,
            sample(text_only[s], args.correct_n, args.seed),
            CACHE / f"correct.{tag}.{s}.seed{args.seed}.jsonl",
        )
        secs += [r.timing.get("correct", 0.0) for r in recs]
        refs = [r.reference or "" for r in recs]
        first = [r.text("first-pass") for r in recs]
        base, ref_len = errors(refs, first)
        p = PAPER[s]
        lines += [
            row(f"{NAMES[s]} ({len(recs)}): 1-best", refs, first, None, ref_len, f"baseline {p['baseline']}"),
            row(
                f"{NAMES[s]}: rerank (rank prior + {lm})",
                refs,
                [r.text("rerank") for r in recs],
                base,
                ref_len,
                f"LM_rank {p['LM_rank']}",
            ),
            row(
                f"{NAMES[s]}: corrected, default guards",
                refs,
                [r.corrected or r.text("rerank") for r in recs],
                base,
                ref_len,
                f"T5-LoRA {p['T5-LoRA']}, LLaMA-7B-LoRA {p['LLaMA-7B-LoRA']}",
            ),
        ]
        tuned = [reguard(r, g, corrector.vocab) for r in recs]
        lines.append(
            row(
                f"{NAMES[s]}: corrected, guards tuned on ATIS train",
                refs,
                [r.corrected or r.text("rerank") for r in tuned],
                base,
                ref_len,
                f"T5-ft {p['T5-ft']}",
            )
        )
        acc = sum(bool((r.correction or {}).get("changed")) for r in recs)
        print("\n".join(lines[-4:]), f"({acc} changed by the corrector, default guards)", flush=True)
    md = [
        f"Corrector {args.llm} ({cfg.backend}, {args.llm_threads} thread(s)), template `nbest` (the "
        "HyPoradise-style prompt: the reranked hypothesis plus the others, each shown once after normalisation), "
        f"{lora_note or 'zero-shot'}, on a fixed random subset "
        f"of {args.correct_n} utterances "
        f"of each test set corrected ({', '.join(NAMES[s] for s in args.correct_sets)}; numpy seed {args.seed}; "
        f"the LLM took {np.mean(secs):.1f} s per utterance on average on the loaded shared CPU; with other jobs "
        "running one llama.cpp thread was about 6x faster than two, and the cached corrections mix both), "
        f"on top of the text-only rerank with {lm}. Guards tuned on the corrections of {tuning.utterances} "
        f"random ATIS train utterances (seed {args.seed}): of {len(tuning.tried)} settings the lowest WER there "
        f"({100 * tuning.wer:.2f} %, Whisper normalizer as `correct.tuning` counts) came with {chosen} "
        f"(off: {100 * tuning.tried[0][2]:.2f} %). WER with the `hyporadise` normalizer, against the subset's "
        "1-best; the paper's columns are whole-set figures of fine-tuned models (T5, LLaMA-7B), for scale.",
        "",
        *lines,
    ]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lms", nargs="+", default=["smollm2-135m"], help="LMs; with two, each and the pair")
    ap.add_argument("--llm", default="qwen2.5-0.5b")
    ap.add_argument("--backend", default="llama-cpp")
    ap.add_argument("--correct-n", type=int, default=100, help="utterances of each test set corrected (0: all)")
    ap.add_argument("--correct-train-n", type=int, default=60, help="ATIS train utterances corrected to tune guards")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-correct", action="store_true")
    ap.add_argument("--llm-threads", type=int, default=1, help="llama.cpp threads (1: no spin-waiting on a busy CPU)")
    ap.add_argument("--correct-sets", nargs="+", default=list(TESTS), choices=TESTS, help="test sets to correct")
    ap.add_argument("--section", default="hyporadise", help="the eval/RESULTS.md section written")
    ap.add_argument(
        "--lora-minutes", type=float, default=0, help="train a LoRA adapter of --llm on ATIS train first (time box)"
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from eval.results import update_section

    cmd = "python -m eval.bench_hyporadise " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    lm_sets = [[lm] for lm in args.lms] + ([list(args.lms)] if len(args.lms) > 1 else [])
    parts = [
        f"Command: `{cmd.strip()}`",
        "",
        "HyPoradise (Chen et al., NeurIPS 2023) Whisper 5-best lists, imported with `rescore import hyporadise` "
        "(the per-token scores of WSJ and ATIS as `am_norm`, the list position as `rank`). The paper's figures "
        "are as the data README restates them. The WSJ file's 1-best differs from the paper's baseline (6.03 % "
        "raw against 4.5 %); ATIS and CHiME-4 agree within 0.1 and 0.5 points once normalised.",
        "",
        "### The files: 1-best and 5-best oracle",
        "",
        baselines(),
        "",
        "### Rerank (weights tuned on ATIS train)",
        "",
    ]
    md, text_only = rerank_part(lm_sets)
    parts.append(md)
    if not args.skip_correct:
        parts += ["", "### Correct (subset)", "", correct_part(args, text_only)]
    text = "## HyPoradise: rerank and correct on published n-best lists\n\n" + "\n".join(parts)
    print(text)
    update_section(args.section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
