"""Rerank: the default's reranker (loso), ``rescore rerank``'s default weights, the learned reranker, the shipped one.

    python -m eval.bench_rerank loso --lists NAME=LIST ... --report NAME=LIST ... [--ship rescore/data/reranker.json]
    python -m eval.bench_rerank fit-defaults --per-set 80 --min-length-bonus 0
    python -m eval.bench_rerank learned --train-per-set 60 --heldout-per-set 20 --report-limit 40
    python -m eval.bench_rerank shipped --set an4-test

loso: the reranker the default preset ships (``rescore/data/reranker.json``), fitted on union lists of every set with
references but an4-test, each set weighing the same, every weight held to its sign; each set reported left out of the
fit, and by speaker-grouped cross-validation with it in; ``--ship`` writes the fit on all of them with its record.

fit-defaults: the per-token default of ``rescore rerank`` (``am_norm`` + LM weight + length bonus; and the summed
``am`` form), fitted by ``rescore tune``'s grid on seeded samples of an4-train, arctic-cathy and speechocean-train
(tiny.en 8-best, smollm2-135m), 5-fold cross-validated there, then reported on librispeech-dev and an4-test, with and
without the truncation guard (a hypothesis with fewer than half the words of the recognizer's first never chosen).

learned: a learned reranker trained on the training sets only (the earlier shipped one). Every utterance goes through
the union first pass (tiny.en and base 8-best, merged), every hypothesis teacher-forced by both models and scored by
SmolLM2-135M, plus the derived features; pairwise logistic regression (``rescore tune --method learned``) trained on
seeded samples of the training sets, its regularisation by 5-fold CV there; reported on librispeech-dev, an4-test and
held-out samples of the training sets. Feature sets: LM only (with the ranks), acoustic only, all; all with the guard.

shipped: the shipped reranker (``rerank --config shipped``, guard included) on a set's utterances after ``--skip``;
only a set it was not fitted on (an4-test) gives an honest figure.

WER with the Whisper English normalizer; better/worse (the harm) and p (paired bootstrap share of resamples where the
system is not better) against tiny.en's 1-best. Scores are cached under the rescore cache folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from eval.common import DATA, command, nbest_for
from eval.results import add_publish_options, publish
from rescore.evaluate.scoring import RerankComparison, rerank_comparison
from rescore.io.datasets import load_dataset
from rescore.io.models import cache_dir
from rescore.records import NBest, read_nbest, write_nbest
from rescore.registry import make_scorer
from rescore.rerank.learned import rerank_copy
from rescore.rerank.ranker import score_nbest

MODELS = ("whisper-tiny.en", "whisper-base")
TRAIN_SETS = ("an4-train", "arctic-cathy", "speechocean-train")
LM = "smollm2-135m"
GUARD = 0.5
SHIPPED = Path(__file__).resolve().parents[1] / "rescore" / "data" / "reranker.json"
TABLE_HEAD = ["| system | WER % (95 % CI) | better/worse | p | gap closed |", "|---|---|---|---|---|"]


def sample_ids(set_name: str, n: int, skip: int = 0, seed: int = 0) -> list[str]:
    """A seeded sample of a set's ids; ``skip`` leaves out the first ``skip`` of the shuffled order (so a held-out
    sample taken with ``skip`` = the training sample's size is disjoint from it)."""
    ids = [u.id for u in load_dataset(DATA / set_name).utterances]
    random.Random(seed).shuffle(ids)
    return ids[skip : skip + n] if n else ids[skip:]


def nbest_of(set_name: str, model: str, ids: list[str]) -> list[NBest]:
    """The model's 8-best of those utterances (the benchmarks' shared cache)."""
    by_id = {r.id: r for r in read_nbest(nbest_for(set_name, model, ids=ids))}
    return [by_id[i] for i in ids if i in by_id]


def row(name: str, c: RerankComparison) -> str:
    gap = "" if c.gap_closed != c.gap_closed else f"{100 * c.gap_closed:.0f} %"
    wer = f"{100 * c.after.rate:.2f} ({100 * c.after.ci_low:.2f}-{100 * c.after.ci_high:.2f})"
    return f"| {name} | {wer} | {c.better}/{c.worse} | {c.p_value:.3f} | {gap} |"


# --- fit-defaults -----------------------------------------------------------------------------------------


def fit_defaults(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.rerank.grid import tune
    from rescore.rerank.ranker import LENGTH_GRID, Weights, lm_key

    key = lm_key(LM)
    scorer = make_scorer(LM, "hf", threads=1)
    train = [
        r for s in TRAIN_SETS for r in nbest_of(s, MODELS[0], sample_ids(s, args.per_set)) if r.ok and r.hypotheses
    ]
    score_nbest(train, scorer)
    grid = [x for x in LENGTH_GRID if args.min_length_bonus is None or x >= args.min_length_bonus]
    # for scale: the default before this fit, fitted on librispeech-dev itself (in-sample there)
    fits = {"0.004 / 0.03, fitted on librispeech-dev": Weights({"am_norm": 1.0, key: 0.004}, 0.03)}
    lines = [
        "### Rerank: the default weights, fitted on training sets",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Fitted on {len(train)} training utterances (seeded samples of {args.per_set} from each of "
        f"{', '.join(TRAIN_SETS)}; tiny.en 8-best, {LM}; length bonus searched from {min(grid):g} up), each acoustic "
        f"form with its weight fixed at 1; reported on seeded samples of {args.report_n} utterances of librispeech-dev "
        "and an4-test, never fitted on:",
        "",
    ]
    for form in ("am_norm", "am"):
        fit = tune(train, keys=[key], fixed={form: 1.0}, folds=5, length_grid=grid)
        fits[f"{form} fitted here"] = fit.weights
        cv = fit.cv.comparison if fit.cv else None
        lines.append(
            f"- `{form}`: {fit.weights.describe()}"
            + (
                f"; 5-fold CV there {100 * cv.before.rate:.2f} -> {100 * cv.after.rate:.2f} % ({cv.better}/{cv.worse})"
                if cv
                else ""
            )
        )
    for s in ("librispeech-dev", "an4-test"):
        recs = [r for r in nbest_of(s, MODELS[0], sample_ids(s, args.report_n)) if r.ok and r.hypotheses]
        score_nbest(recs, scorer)
        first = rerank_comparison(recs)
        lines += ["", f"**{s}** ({len(recs)} utterances; 1-best {100 * first.before.rate:.2f} %)", "", *TABLE_HEAD]
        for name, w in fits.items():
            for guard in (0.0, GUARD):
                label = f"{name}: {w.describe()}{f', guard {guard:g}' if guard else ''}"
                lines.append(row(label, rerank_comparison(rerank_copy(recs, w, min_length_ratio=guard))))
    bounded = "" if args.min_length_bonus is None else "-bounded"
    return "\n".join(lines), f"rerank-defaults{bounded}"


# --- learned and shipped ----------------------------------------------------------------------------------


def scored_union(set_name: str, ids: list[str], lm_scorer: Any, ascorers: dict[str, Any]) -> list[NBest]:
    """The union of the models' lists, scored by every acoustic model and the LM, cached per set and sample."""
    from rescore.recognize.union import merge_records
    from rescore.rerank.features import add_derived

    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:10]
    path = cache_dir() / "learned" / f"{set_name}.{len(ids)}.{digest}.jsonl"
    if path.exists():
        return list(read_nbest(path))
    t0 = time.perf_counter()
    union = [
        r for r in merge_records([nbest_of(set_name, m, ids) for m in MODELS], list(MODELS)) if r.ok and r.hypotheses
    ]
    for m, scorer in ascorers.items():
        print(f"  {set_name}: teacher forcing {sum(len(r.hypotheses) for r in union)} hypotheses with {m}", flush=True)
        union = scorer.score(union)
    score_nbest(union, lm_scorer)
    add_derived(union)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nbest(path, union)
    print(f"  {set_name}: {len(union)} records ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return union


def scorers() -> tuple[Any, dict[str, Any]]:
    """The LM and the acoustic scorers of the union (``rescore rerank``'s and ``rescore ascore``'s)."""
    from rescore.io.quiet import quiet_third_party
    from rescore.registry import acoustic_scorers

    quiet_third_party()
    return make_scorer(LM, "hf", threads=2), {m: acoustic_scorers.create("whisper", m, device="cpu") for m in MODELS}


def system_first(records: list[NBest], model: str) -> list[NBest]:
    """Copies of the records with ``chosen`` at the model's own 1-best (its rank 0 in the union)."""
    out = []
    for r in records:
        c = NBest.from_dict(r.to_dict())
        c.chosen = next((j for j, h in enumerate(c.hypotheses) if h.scores.get(f"rank:{model}") == 0), 0)
        out.append(c)
    return out


def report(name: str, recs: list[NBest], systems: dict[str, Any]) -> list[str]:
    """A set's table: whisper-base's 1-best and each system (weights, guard) against tiny.en's 1-best."""
    base = rerank_comparison(system_first(recs, MODELS[0]))
    return [
        f"**{name}** ({len(recs)} utterances; tiny.en 1-best {100 * base.before.rate:.2f} %, union oracle "
        f"{100 * base.oracle:.2f} %)",
        "",
        *TABLE_HEAD,
        row("whisper-base 1-best", rerank_comparison(system_first(recs, MODELS[1]))),
        *(row(label, rerank_comparison(rerank_copy(recs, w, min_length_ratio=g))) for label, (w, g) in systems.items()),
        "",
    ]


def learned(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.rerank.features import feature_names
    from rescore.rerank.learned import train_reranker

    t0 = time.perf_counter()
    lm_scorer, ascorers = scorers()
    train = [r for s in TRAIN_SETS for r in scored_union(s, sample_ids(s, args.train_per_set), lm_scorer, ascorers)]
    names = feature_names(train)
    lm = [f for f in names if f.startswith("lm:")]
    rank = [f for f in names if f.startswith("rank:")]
    acoustic = [f for f in names if f.split(":")[0] in {"am", "am_norm", "mbr"} and ":" in f]
    feature_sets = {
        "union + LM only": lm + rank,
        "union + acoustic": acoustic + rank,
        "union + all": acoustic + lm + rank,
    }
    models = {label: train_reranker(train, feats, folds=5) for label, feats in feature_sets.items()}
    systems = {label: (m.weights, 0.0) for label, m in models.items()}
    full = models["union + all"]
    systems[f"union + all, guard {GUARD:g}"] = (full.weights, GUARD)
    reports = {}
    for s in args.report:
        ids = [u.id for u in load_dataset(DATA / s).utterances]
        reports[s] = scored_union(s, ids[: args.report_limit] if args.report_limit else ids, lm_scorer, ascorers)
    for s in ("arctic-cathy", "speechocean-train"):
        ids = sample_ids(s, args.heldout_per_set, skip=args.train_per_set)
        reports[f"{s} (held out)"] = scored_union(s, ids, lm_scorer, ascorers)
    lines = [
        "### Rerank: the learned reranker over the tiny.en + base union",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Trained on {len(train)} utterances, seeded samples of {args.train_per_set} from each of "
        f"{', '.join(TRAIN_SETS)}; reported on "
        + ", ".join(f"{s} ({len(r)})" for s, r in reports.items())
        + ", never trained or tuned on (the held-out samples are disjoint from the training samples). Gap closed: "
        "share of tiny.en's 1-best-to-union-oracle gap.",
        "",
    ]
    for s, recs in reports.items():
        lines += report(s, recs, systems)
    lines.append(
        "Weights of `union + all`: "
        + ", ".join(f"{k} {v:+.3g}" for k, v in full.weights.scores.items())
        + f", words {full.weights.length_bonus:+.3g}. Wall time {time.perf_counter() - t0:.0f} s."
    )
    return "\n".join(lines), "rerank-learned"


def shipped(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.stages.rerank import RerankOptions, plan_rerank

    ids = [u.id for u in load_dataset(DATA / args.set).utterances][args.skip :]
    ids = ids[: args.limit] if args.limit else ids
    recs = scored_union(args.set, ids, *scorers())
    plan = plan_rerank(RerankOptions(weights="shipped"))
    systems = {
        "shipped reranker, no guard": (plan.weights, 0.0),
        f"shipped reranker, guard {plan.min_length_ratio:g}": (plan.weights, plan.min_length_ratio),
    }
    lines = [
        f"### Rerank: the shipped reranker on {args.set}, utterances {args.skip + 1}-{args.skip + len(recs)}",
        "",
        f"Command: `{args.cmd}`",
        "",
        f"Trained on {', '.join(TRAIN_SETS)} (`rerank-learned`); reported on these {len(recs)} utterances, used "
        "neither to train the reranker nor to choose its truncation guard.",
        "",
        *report(args.set, recs, systems),
    ]
    return "\n".join(lines).rstrip(), f"rerank-shipped-{args.set}"


# --- loso: a default for speech nobody tuned on ----------------------------------------------------------

GRID_C = (0.01, 0.1, 1.0)  # the regularisation strengths leave-one-set-out chooses among
# sign of each feature family's weight (+: more is better): a fit on short utterances cannot turn them round
SIGNS = {"am:": 1, "am_norm:": 1, "mbr:": 1, "lm:": 1, "rank:": -1}


def feature_signs(features: list[str]) -> dict[str, int]:
    signs = {f: s for f in features for prefix, s in SIGNS.items() if f.startswith(prefix)}
    return signs | {"words": 1}  # a length bonus that cannot go negative cannot reward truncation


def set_weights(sets: dict[str, list[NBest]]) -> list[float]:
    """Per record, so that every set weighs the same in the fit however many utterances and words it has."""
    out = []
    for recs in sets.values():
        out += [1.0 / len(recs)] * len(recs)
    return out


def with_margin(w: Any, margin: float) -> Any:
    """The weights with ``margin`` on the first pass (:data:`rescore.rerank.features.FIRST_PASS`)."""
    from rescore.rerank.features import FIRST_PASS
    from rescore.rerank.ranker import Weights

    return Weights(dict(w.scores) | {FIRST_PASS: margin}, w.length_bonus) if margin else w


def fit_pooled(
    sets: dict[str, list[NBest]],
    features: list[str],
    c: float,
    margin: float = 0.0,
    *,
    signs: dict[str, int] | None = None,
    normalizer: str = "whisper",
) -> Any:
    """One sign-bounded pairwise fit over every set's records, each set weighing the same."""
    from rescore.rerank.learned import fit_weights

    recs = [r for v in sets.values() for r in v]
    signs = signs or feature_signs(features)
    w = fit_weights(recs, features, c=c, record_weights=set_weights(sets), signs=signs, normalizer=normalizer)
    return with_margin(w, margin)


def choose_c_and_margin(
    sets: dict[str, list[NBest]],
    features: list[str],
    grid_c: tuple[float, ...],
    grid_m: tuple[float, ...] = (0.0,),
    *,
    guard: float = GUARD,
    signs: dict[str, int] | None = None,
    normalizer: str = "whisper",
) -> tuple[float, float]:
    """C and the margin by leave-one-set-out inside ``sets``: each left-out set's errors relative to its first
    pass, summed over the sets (ties: the earlier in the grids)."""
    from rescore.rerank.learned import errors_of_choice

    best, choice = None, (1.0, 0.0)
    for c in grid_c:
        fits = {
            s: fit_pooled({k: v for k, v in sets.items() if k != s}, features, c, signs=signs, normalizer=normalizer)
            for s in sets
        }
        for m in grid_m:
            cost = 0.0
            for s, recs in sets.items():
                first = errors_of_choice(recs, normalizer, first_pass=True)
                chosen = rerank_copy(recs, with_margin(fits[s], m), min_length_ratio=guard)
                cost += (errors_of_choice(chosen, normalizer) - first) / max(1, first)
            if best is None or cost < best - 1e-9:
                best, choice = cost, (c, m)
    return choice


def speaker_folds(set_name: str, recs: list[NBest], k: int = 5) -> list[list[NBest]]:
    """``k`` folds of a set's records grouped by speaker (the manifest's ``speaker``; by utterance when it has
    fewer than ``k`` speakers), speakers dealt to folds in a seeded order."""
    manifest = DATA / set_name / "manifest.jsonl"
    speaker = {}
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            speaker[d["id"]] = d.get("speaker", d["id"])
    groups = sorted({speaker.get(r.id, r.id) for r in recs})
    if len(groups) < k:
        speaker, groups = {}, sorted(r.id for r in recs)
    random.Random(0).shuffle(groups)
    fold_of = {g: i % k for i, g in enumerate(groups)}
    return [[r for r in recs if fold_of[speaker.get(r.id, r.id)] == i] for i in range(k)]


def cross_fitted(s: str, sets: dict[str, list[NBest]], features: list[str], c: float, m: float) -> str:
    """The set reranked fold by fold, each fold by weights fitted on the other folds and every other set."""
    chosen = []
    for fold in speaker_folds(s, sets[s]):
        ids = {r.id for r in fold}
        train = {k: v for k, v in sets.items() if k != s} | {s: [r for r in sets[s] if r.id not in ids]}
        chosen += rerank_copy(fold, fit_pooled(train, features, c, m), min_length_ratio=GUARD)
    cmp = rerank_comparison(chosen)
    return f"{100 * cmp.after.rate:.2f} ({cmp.better}/{cmp.worse}, p {cmp.p_value:.3f})"


def loso(args: argparse.Namespace) -> tuple[str, str]:
    from rescore.rerank.features import add_derived, feature_names

    def load_lists(specs: list[str]) -> dict[str, list[NBest]]:
        out = {}
        for spec in specs:
            name, path = spec.split("=", 1)
            out[name] = add_derived([r for r in read_nbest(path) if r.ok and r.hypotheses and r.reference])
        return out

    sets, reports = load_lists(args.lists), load_lists(args.report)
    names = feature_names([r for v in sets.values() for r in v])
    features = [f for f in names if f.split(":")[0] in {"am", "am_norm", "mbr", "lm", "rank"} and ":" in f]
    grid_c, grid_m = GRID_C, (0.0, 0.5, 1.0, 2.0)
    lines = [
        "### Rerank: a default for speech nobody tuned on (union + learned, leave one set out)",
        "",
        f"Command: `{args.cmd}`",
        "",
        "Lists: `rescore transcribe SET -o SET.union.jsonl --model whisper-tiny.en --model whisper-base --ascore`, then"
        " `rescore rerank SET.union.jsonl -o SET.lm.jsonl --lm smollm2-135m` (LM scores); librispeech-dev and an4-test"
        " whole, an4-train, arctic-cathy and speechocean-train as manifests of a seeded sample of 200 (the manifest's"
        " lines shuffled by `random.Random(0)`, the first 200). Features: "
        + ", ".join(features)
        + ", words, and `first_pass` (a margin the others must beat). Each set weighs the same in the fit; every"
        " weight keeps its sign (length bonus >= 0, ranks <= 0, scores >= 0); truncation guard 0.5. For each"
        " held-out set, C and the margin are chosen by leave-one-set-out among the other sets, the weights are fitted"
        " on them, and the held-out set is reported: it took no part in the fit or the choices.",
        "",
        "| held-out set | utts | tiny.en 1-best | base 1-best | union oracle | reranked | better/worse vs tiny.en | p |"
        " C, margin | 5-fold CV, the set in the fit (better/worse, p) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fold_rows = {}
    for s in sets:
        rest = {k: v for k, v in sets.items() if k != s}
        c, m = choose_c_and_margin(rest, features, grid_c, grid_m)
        fold_rows[s] = (c, m, fit_pooled(rest, features, c, m))
    final_c, final_m = choose_c_and_margin(sets, features, grid_c, grid_m)
    final = fit_pooled(sets, features, final_c, final_m)
    cv = {s: cross_fitted(s, sets, features, final_c, final_m) for s in sets}
    figures = {}
    for s, recs in [*sets.items(), *reports.items()]:
        c, m, w = fold_rows.get(s, (final_c, final_m, final))
        tiny = rerank_comparison(system_first(recs, MODELS[0]))
        base = rerank_comparison(system_first(recs, MODELS[1]))
        mine = rerank_comparison(rerank_copy(recs, w, min_length_ratio=GUARD))
        figures[s] = {
            "how": "left out of the fit" if s in sets else "report only, the shipped fit",
            "utterances": len(recs),
            "tiny.en 1-best %": round(100 * tiny.before.rate, 2),
            "whisper-base 1-best %": round(100 * base.after.rate, 2),
            "reranked %": round(100 * mine.after.rate, 2),
            "better/worse vs tiny.en": f"{mine.better}/{mine.worse}",
            "p": round(mine.p_value, 3),
            **({"5-fold CV with the set in the fit": cv[s]} if s in cv else {}),
        }
        label = s if s in sets else f"{s} (report only; the fit on all sets)"
        lines.append(
            f"| {label} | {len(recs)} | {100 * tiny.before.rate:.2f} | {100 * base.after.rate:.2f} | "
            f"{100 * tiny.oracle:.2f} | {100 * mine.after.rate:.2f} | {mine.better}/{mine.worse} | "
            f"{mine.p_value:.3f} | {c:g}, {m:g} | {cv.get(s, '')} |"
        )
    lines += [
        "",
        "CV column: the set's utterances in 5 folds grouped by speaker (by utterance for a one-speaker set), each fold"
        " reranked by weights fitted on the other folds and the other sets, with the C and margin chosen above.",
        "",
        f"The fit on all {len(sets)} sets (C {final_c:g}, margin {final_m:g}): "
        + ", ".join(f"{k} {v:+.3g}" for k, v in final.scores.items())
        + f", words {final.length_bonus:+.3g}.",
    ]
    if args.ship:
        from rescore.rerank.ranker import LMSpec, RerankConfig

        tuning = {
            "trained_on": {s: len(v) for s, v in sets.items()},
            "first_pass": list(MODELS),
            "command": args.cmd,
            "method": "pairwise logistic regression, sign-bounded (L-BFGS-B), each set weighted equally",
            "C": final_c,
            "first_pass_margin": final_m,
            "min_length_ratio": GUARD,
            "lists": "rescore transcribe SET -o SET.union.jsonl --model whisper-tiny.en --model whisper-base --ascore;"
            " rescore rerank SET.union.jsonl -o SET.lm.jsonl --lm smollm2-135m (training sets: a seeded sample of 200"
            " manifest lines, random.Random(0).shuffle, the first 200)",
            "figures_whisper_normalizer": figures,
            "reported_in": "eval/RESULTS.md, section rerank-loso",
        }
        RerankConfig(final, [LMSpec(LM, "hf")], "", 0, tuning).save(args.ship)
        print(f"wrote {args.ship}")
    return "\n".join(lines), "rerank-loso"


# --- loso-text: text-only lists (other toolkits' n-best) --------------------------------------------------

TEXT_FEATURES = ("rank", "lm:smollm2-135m")  # with the word count: rescore/data/default-weights.json's "rank" form
PAPER_LM_RANK = {"wsj": 4.3, "atis": 6.9, "chime4": 11.0}  # HyPoradise's LM_rank WER %, the data README's table


def loso_text(args: argparse.Namespace) -> tuple[str, str]:
    """Text-only weights (rank prior, LM, length) fitted across lists, each list reported left out of the fit."""
    from rescore.evaluate.metrics import bootstrap_ci, edit_counts, normalize, paired_change
    from rescore.rerank.ranker import Weights

    norm = "hyporadise"

    def load_lists(specs: list[str]) -> dict[str, list[NBest]]:
        named = (spec.split("=", 1) for spec in specs)
        return {name: [r for r in read_nbest(path) if r.ok and r.reference] for name, path in named}

    sets, reports = load_lists(args.lists), load_lists(args.report)
    feats = list(TEXT_FEATURES)
    signs = {"rank": -1, "lm:smollm2-135m": 1, "words": 1}

    def fit(train: dict[str, list[NBest]]) -> tuple[Weights, float]:
        """The weights with C chosen by leave-one-list-out in ``train``, on the defaults' scale (rank at -1)."""
        c, _ = choose_c_and_margin(train, feats, GRID_C, guard=0.0, signs=signs, normalizer=norm)
        w = fit_pooled(train, feats, c, signs=signs, normalizer=norm)
        scale = -1.0 / w.scores["rank"] if w.scores["rank"] < 0 else 1.0
        return Weights({k: v * scale for k, v in w.scores.items()}, w.length_bonus * scale), c

    def errors(recs: list[NBest], w: Weights | None) -> tuple[Any, Any]:
        chosen = rerank_copy(recs, w) if w is not None else recs
        refs = [normalize(r.reference or "", norm) for r in chosen]
        c = edit_counts(refs, [normalize(r.text("rerank" if w is not None else "first-pass"), norm) for r in chosen])
        return c.errors, c.ref

    old = Weights({"rank": -1.0, "lm:smollm2-135m": 0.23}, 2.2)  # the earlier defaults, fitted on ATIS train alone
    lines = [
        "### Rerank: text-only lists, leave one list out (HyPoradise)",
        "",
        f"Command: `{args.cmd}`",
        "",
        "Lists: `rescore import hyporadise FILE -o NAME.jsonl` then `rescore rerank NAME.jsonl -o NAME.lm.jsonl --lm"
        " smollm2-135m` (LM scores); ATIS train is a seeded sample of 1000 of its 3964 (random.Random(0) over the"
        " JSONL lines). Weights: -1 per list position (the prior) + w * LM + b * words, pairwise logistic regression"
        " with each list weighing the same and every weight held to its sign (b >= 0: the length term cannot run"
        " away), C chosen by leave-one-list-out among the others. Each list is reported left out of the fit; ATIS"
        " test was never fitted on. `hyporadise` normalizer; better/worse and p against the list's 1-best.",
        "",
        "| list (utterances) | 1-best | earlier defaults (ATIS train only: 0.23, 2.2) | leave-one-list-out fit |"
        " better/worse | p | paper LM_rank |",
        "|---|---|---|---|---|---|---|",
    ]
    fits = {s: fit({k: v for k, v in sets.items() if k != s})[0] for s in sets}
    final, final_c = fit(sets)
    for s, recs in [*sets.items(), *reports.items()]:
        w = fits.get(s, final)
        e0, n = errors(recs, None)
        e_old, _ = errors(recs, old)
        e1, _ = errors(recs, w)
        change = paired_change(e0, e1, n)
        lo, hi = bootstrap_ci(e1, n)
        label = s if s in sets else f"{s} (report only; the fit on all lists)"
        lines.append(
            f"| {label} ({len(recs)}) | {100 * e0.sum() / n.sum():.2f} | {100 * e_old.sum() / n.sum():.2f} | "
            f"**{100 * e1.sum() / n.sum():.2f}** ({100 * lo:.2f}-{100 * hi:.2f}) | {change.better}/{change.worse} | "
            f"{change.p:.3f} | {PAPER_LM_RANK.get(s, '')} |"
        )
    lines += [
        "",
        f"The fit on all lists (C {final_c:g}): "
        + ", ".join(f"{k} {v:+.3g}" for k, v in final.scores.items())
        + f", words {final.length_bonus:+.3g}.",
    ]
    return "\n".join(lines), "rerank-loso-text"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit-defaults", help="the default weights, fitted on training sets")
    p.add_argument("--per-set", type=int, default=80, help="training utterances per set")
    p.add_argument("--report-n", type=int, default=110, help="utterances of each report set")
    p.add_argument(
        "--min-length-bonus",
        type=float,
        default=None,
        help="search the length bonus only from here up (0: no negative bonus, which short training utterances "
        "teach and which truncates long ones)",
    )
    p.set_defaults(run=fit_defaults)
    p = sub.add_parser("learned", help="the learned reranker trained on the training sets only, reported")
    p.add_argument("--train-per-set", type=int, default=60)
    p.add_argument("--heldout-per-set", type=int, default=20)
    p.add_argument("--report", nargs="*", default=["librispeech-dev", "an4-test"])
    p.add_argument("--report-limit", type=int, default=0, help="first N utterances of each --report set (0: all)")
    p.set_defaults(run=learned)
    p = sub.add_parser("shipped", help="the shipped reranker on utterances nobody looked at")
    p.add_argument("--set", default="librispeech-dev")
    p.add_argument("--skip", type=int, default=40)
    p.add_argument("--limit", type=int, default=0, help="utterances after --skip (0: the rest)")
    p.set_defaults(run=shipped)
    p = sub.add_parser("loso", help="union + learned reranker for everyone: fit on sets, leave one set out")
    p.add_argument("--lists", nargs="+", required=True, help="NAME=PATH of union lists with LM scores to fit on")
    p.add_argument("--report", nargs="*", default=[], help="NAME=PATH of report-only lists (never fitted on)")
    p.add_argument("--ship", default="", help="write the fit on all --lists sets to this rerank config")
    p.set_defaults(run=loso)
    p = sub.add_parser("loso-text", help="text-only lists (HyPoradise): rank prior + LM + length, leave one list out")
    p.add_argument("--lists", nargs="+", required=True, help="NAME=PATH of imported lists with LM scores to fit on")
    p.add_argument("--report", nargs="*", default=[], help="NAME=PATH of report-only lists")
    p.set_defaults(run=loso_text)
    for p in sub.choices.values():
        add_publish_options(p)
    args = ap.parse_args(argv)
    args.cmd = command("bench_rerank", argv)
    markdown, section = args.run(args)
    publish(markdown, args.section or section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
