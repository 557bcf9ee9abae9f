"""Train the shipped reranker on training sets only, and report it on sets it never saw.

    python -m eval.bench_learned [--train-per-set 150] [--heldout-per-set 60] [--ship]

Every utterance goes through the default first pass of the union: whisper-tiny.en and whisper-base
8-best (CTranslate2 int8), merged (:mod:`rescore.recognize.union`), every hypothesis scored by both models by
teacher forcing (:mod:`rescore.score.acoustic`) and by SmolLM2-135M (:mod:`rescore.rerank.ranker`), plus the derived
features (:mod:`rescore.rerank.features`). The reranker (:mod:`rescore.rerank.learned`, pairwise logistic regression) is
trained on seeded samples of an4-train, arctic-cathy and speechocean-train, with its regularisation picked
by 5-fold CV on those; it is reported on librispeech-dev, an4-test and held-out samples of arctic-cathy and
speechocean-train disjoint from the training sample. Feature sets compared: LM only (with the ranks),
acoustic only, all. ``--ship`` writes the all-feature model to ``rescore/data/reranker.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

from eval.nbest_cache import nbest_for
from eval.results import update_section
from rescore.evaluate.scoring import rerank_comparison
from rescore.io.datasets import load_dataset, shared_data_dir
from rescore.io.models import cache_dir
from rescore.recognize.union import merge_records
from rescore.records import NBest, read_nbest, write_nbest
from rescore.registry import make_scorer
from rescore.rerank.features import add_derived, feature_names
from rescore.rerank.learned import rerank_copy, train_reranker
from rescore.rerank.ranker import score_nbest

MODELS = ("whisper-tiny.en", "whisper-base")
TRAIN_SETS = ("an4-train", "arctic-cathy", "speechocean-train")
SHIPPED = Path(__file__).resolve().parents[1] / "rescore" / "data" / "reranker.json"
LM = "smollm2-135m"


def sample_ids(set_name: str, n: int, skip: int = 0, seed: int = 0) -> list[str]:
    """A seeded sample of a set's ids; ``skip`` leaves out the first ``skip`` of the shuffled order (so a
    held-out sample taken with ``skip`` = the training sample's size is disjoint from it)."""
    ids = [u.id for u in load_dataset(shared_data_dir() / set_name).utterances]
    random.Random(seed).shuffle(ids)
    return ids[skip : skip + n] if n else ids[skip:]


def nbest_of(set_name: str, model: str, ids: list[str]) -> list[NBest]:
    """The model's 8-best of those utterances (the shared benchmark cache, :mod:`eval.nbest_cache`)."""
    by_id = {r.id: r for r in read_nbest(nbest_for(set_name, model, ids=ids))}
    return [by_id[i] for i in ids if i in by_id]


def scored_union(set_name: str, ids: list[str], lm_scorer, ascorers: dict) -> list[NBest]:
    """Union of the models' lists, scored by every acoustic model and the LM, cached per set and sample."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:10]
    path = cache_dir() / "learned" / f"{set_name}.{len(ids)}.{digest}.jsonl"
    if path.exists():
        return list(read_nbest(path))
    t0 = time.perf_counter()
    union = merge_records([nbest_of(set_name, m, ids) for m in MODELS], list(MODELS))
    union = [r for r in union if r.ok and r.hypotheses]
    for m, scorer in ascorers.items():
        print(f"  {set_name}: teacher forcing {sum(len(r.hypotheses) for r in union)} hypotheses with {m}", flush=True)
        union = scorer.score(union)
    score_nbest(union, lm_scorer)
    add_derived(union)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nbest(path, union)
    print(f"  {set_name}: {len(union)} records ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return union


def feature_sets(names: list[str]) -> dict[str, list[str]]:
    lm = [f for f in names if f.startswith("lm:")]
    rank = [f for f in names if f.startswith("rank:")]
    acoustic = [f for f in names if f.split(":")[0] in {"am", "am_norm", "mbr"} and ":" in f]
    return {"union + LM only": lm + rank, "union + acoustic": acoustic + rank, "union + all": acoustic + lm + rank}


def system_first(records: list[NBest], model: str) -> list[NBest]:
    """The records with ``chosen`` at the model's own 1-best (its rank 0 in the union)."""
    out = []
    for r in records:
        c = NBest.from_dict(r.to_dict())
        c.chosen = next((j for j, h in enumerate(c.hypotheses) if h.scores.get(f"rank:{model}") == 0), 0)
        out.append(c)
    return out


def row(name: str, c) -> str:
    gap = "" if c.gap_closed != c.gap_closed else f"{100 * c.gap_closed:.0f} %"
    return (
        f"| {name} | {100 * c.after.rate:.2f} [{100 * c.after.ci_low:.2f}-{100 * c.after.ci_high:.2f}] | {gap} "
        f"| {c.better} | {c.worse} | {c.p_value:.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-per-set", type=int, default=60)
    ap.add_argument("--heldout-per-set", type=int, default=20)
    ap.add_argument("--report", nargs="*", default=["librispeech-dev", "an4-test"])
    ap.add_argument("--report-limit", type=int, default=0, help="first N utterances of each --report set (0: all)")
    ap.add_argument("--ship", action="store_true", help="write the all-feature model to rescore/data/reranker.json")
    args = ap.parse_args()

    from rescore.io.quiet import quiet_third_party
    from rescore.score.acoustic import WhisperScorer

    quiet_third_party()

    t0 = time.perf_counter()
    lm_scorer = make_scorer(LM, "hf", threads=2)
    ascorers = {m: WhisperScorer(m, device="cpu") for m in MODELS}
    train: list[NBest] = []
    for s in TRAIN_SETS:
        train += scored_union(s, sample_ids(s, args.train_per_set), lm_scorer, ascorers)
    names = feature_names(train)
    sets = feature_sets(names)
    models = {}
    for label, feats in sets.items():
        models[label] = train_reranker(train, feats, folds=5)
        print(f"{label}: C={models[label].c}, CV on training {models[label].cv.after.rate:.4f}", flush=True)

    reports: dict[str, list[NBest]] = {}
    for s in args.report:
        ids = [u.id for u in load_dataset(shared_data_dir() / s).utterances]
        reports[s] = scored_union(s, ids[: args.report_limit] if args.report_limit else ids, lm_scorer, ascorers)
    for s in ("arctic-cathy", "speechocean-train"):
        ids = sample_ids(s, args.heldout_per_set, skip=args.train_per_set)
        reports[f"{s} (held out)"] = scored_union(s, ids, lm_scorer, ascorers)

    lines = [
        "### Learned reranker over the tiny.en + base union (trained on training sets only)",
        "",
        f"Command: `python -m eval.bench_learned --train-per-set {args.train_per_set} --heldout-per-set "
        f"{args.heldout_per_set} --report-limit {args.report_limit}{' --ship' if args.ship else ''}`",
        "",
        f"Training: {len(train)} utterances, seeded samples of {args.train_per_set} from each of "
        f"{', '.join(TRAIN_SETS)}; first pass whisper-tiny.en and whisper-base 8-best (CTranslate2 int8), merged; "
        f"every hypothesis teacher-forced by both models and scored by {LM}. Pairwise logistic regression "
        "(scikit-learn), C chosen by 5-fold CV on the training utterances. Reported sets were never trained or "
        "tuned on (the held-out samples are disjoint from the training samples). WER with the Whisper English "
        "normalizer; better/worse against tiny.en's 1-best; p: paired bootstrap, share of resamples where the "
        "system is not better than tiny.en's 1-best; gap: share of tiny.en's 1-best-to-union-oracle gap closed.",
        "",
    ]
    for s, recs in reports.items():
        base = rerank_comparison(system_first(recs, MODELS[0]))
        lines += [
            f"**{s}** ({len(recs)} utterances; tiny.en 1-best {100 * base.before.rate:.2f} %, union oracle "
            f"{100 * base.oracle:.2f} %)",
            "",
            "| system | WER % [95 % CI] | gap closed | better | worse | p |",
            "|---|---|---|---|---|---|",
        ]
        lines.append(row("whisper-base 1-best", rerank_comparison(system_first(recs, MODELS[1]))))
        for label, m in models.items():
            lines.append(row(label, rerank_comparison(rerank_copy(recs, m.weights))))
        lines.append("")
    full = models["union + all"]
    lines += [
        f"Features of `union + all`: {', '.join(full.features)}, words. Weights: "
        + ", ".join(f"{k} {v:+.3g}" for k, v in full.weights.scores.items())
        + f", words {full.weights.length_bonus:+.3g}. Wall time {time.perf_counter() - t0:.0f} s.",
    ]
    update_section("bench_learned", "\n".join(lines))
    print("\n".join(lines))
    if args.ship:
        from rescore.rerank.ranker import LMSpec, RerankConfig

        tuning = {
            "trained_on": {s: args.train_per_set for s in TRAIN_SETS},
            "sample": "seeded shuffle (seed 0) of each set's ids, the first N",
            "first_pass": list(MODELS),
            "command": f"python -m eval.bench_learned --train-per-set {args.train_per_set} "
            f"--heldout-per-set {args.heldout_per_set} --report-limit {args.report_limit} --ship",
            "learned": full.to_dict(),
            "reported_in": "eval/RESULTS.md, section bench_learned",
        }
        cfg = RerankConfig(full.weights, [LMSpec(LM, "hf")], "", 0, tuning)
        cfg.save(SHIPPED)
        print(f"wrote {SHIPPED}")
        print(json.dumps(tuning["learned"]["features"]))


if __name__ == "__main__":
    main()
