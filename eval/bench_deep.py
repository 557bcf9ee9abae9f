"""Deep fusion's recipes against their gates-shut twins and the first pass, cross-fitted over librispeech-dev.

librispeech-dev is split into ``--folds`` folds of whole speakers (in file order). For each fold every system is
trained as `rescore deep train` trains it (``rescore.deep.recipes`` -> ``TrainConfig`` -> ``rescore.deep.train.train``)
on the training sets' first-pass lists and on the librispeech-dev utterances outside the fold, then decodes the fold
as `rescore run`'s deep stage does (``rescore.stages.deep.DeepStage``: decode auto, text guards, whisper-base
verification). Every utterance is thus reported by models that never saw it.

Systems: ``prediction`` (the default recipe), ``no-audio`` (the same with its attention gates shut, `--no-audio`),
``encoder`` (``--recipe encoder``), ``encoder-no-audio``, ``bridge`` (``--arch bridge``, the prefix projector; the
stage takes its transcript as it is). Decisions: raw (the model's answer), guarded (the stage's text guards alone: no
acoustic model in the decision, the clean audio ablation) and verified (as the deep stage decides).

    python -m eval.bench_deep --minutes 20                      # 5 systems x 3 folds x 20 CPU minutes, plus lists
    python -m eval.bench_deep --systems prediction,no-audio --minutes 0.05 --utterances 6 --train-limit 6 --no-write

First-pass lists are made on first use (``eval.common.nbest_for``), models and decodes are kept under ``--out`` (a rerun
skips what is done).
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_SETS = ("an4-train", "arctic-cathy", "speechocean-train")
BASE_LISTS = {"an4-train": 120, "arctic-cathy": 80, "speechocean-train": 80}  # utterances with a whisper-base list too
REPORT_SET = "librispeech-dev"
TWINS = {"prediction": "no-audio", "encoder": "encoder-no-audio"}  # audio system -> its gates-shut twin


@dataclass(frozen=True)
class System:
    """One trained system: its architecture, recipe, and whether its attention gates may open."""

    arch: str
    recipe: str
    audio: bool = True

    def model_config(self) -> Any:
        from rescore.deep.recipes import RECIPES, bridge_config, xattn_config

        recipe = RECIPES[self.recipe]
        return xattn_config(recipe, audio=self.audio) if self.arch == "xattn" else bridge_config(recipe)

    @property
    def hyp_noise(self) -> float:
        """The recipe's hypothesis noise (the bridge reads no hypotheses)."""
        from rescore.deep.recipes import RECIPES

        return RECIPES[self.recipe].hyp_noise if self.arch == "xattn" else 0.0


SYSTEMS = {
    "prediction": System("xattn", "prediction"),
    "no-audio": System("xattn", "prediction", audio=False),
    "encoder": System("xattn", "encoder"),
    "encoder-no-audio": System("xattn", "encoder", audio=False),
    "bridge": System("bridge", "encoder"),
}
DECISIONS = ("raw", "guarded", "verified")


def write_list(path: Path, records: list) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records), encoding="utf-8")
    return str(path)


def first_pass(set_name: str, model: str, ids: list[str]) -> list:
    """The set's first-pass records of ``model`` for ``ids``, in that order (made on first use)."""
    from eval.common import nbest_for
    from rescore.records import read_nbest

    by_id = {r.id: r for r in read_nbest(nbest_for(set_name, model, ids=ids), strict=False) if r.ok}
    return [by_id[i] for i in ids if i in by_id]


def speaker_folds(records: list, k: int) -> list[list]:
    """``k`` folds of whole speakers (LibriSpeech ids start with the speaker), contiguous in file order."""
    speakers = list(dict.fromkeys(r.id.split("-")[0] for r in records))
    if k < 2 or k > len(speakers):
        raise SystemExit(f"--folds {k}: between 2 and the {len(speakers)} speakers")
    cut = [round(i * len(speakers) / k) for i in range(k + 1)]
    return [[r for r in records if r.id.split("-")[0] in set(speakers[a:b])] for a, b in itertools.pairwise(cut)]


def training_lists(args: argparse.Namespace) -> dict[str, list]:
    """The training sets' first-pass records: whisper-tiny.en lists of their (first ``--train-limit``) utterances,
    whisper-base lists of the first few of each as well (a second system's hypotheses over the same audio)."""
    from eval.common import dataset

    lists: dict[str, list] = {"tiny": [], "base": []}
    for name in TRAIN_SETS:
        ids = [u.id for u in dataset(name).utterances]
        ids = ids[: args.train_limit] if args.train_limit else ids
        lists["tiny"] += first_pass(name, "whisper-tiny.en", ids)
        lists["base"] += first_pass(name, "whisper-base", ids[: BASE_LISTS[name]])
    return lists


def train_system(name: str, folder: Path, files: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Train (or find trained) one system of one fold; returns the training summary."""
    from rescore.deep.train import TrainConfig, train

    done = folder / "bench-summary.json"
    if done.exists():
        return json.loads(done.read_text())
    system = SYSTEMS[name]
    model = system.model_config()
    cfg = TrainConfig(
        train=files,
        out=str(folder),
        model=model,
        batch_size=args.batch_size,
        warmup_steps=args.warmup,
        max_steps=100_000,
        budget_minutes=args.minutes,
        budget_clock="cpu",
        eval_every=args.eval_every,
        threads=args.threads,
        seed=args.seed,
        keep_best=system.arch == "xattn",
        hyp_noise=system.hyp_noise,
    )
    summary = train(cfg, on_issue=lambda m: print(m, flush=True))
    keep = {k: summary[k] for k in ("step", "stopped", "train_seconds", "best_dev_loss", "gates") if k in summary}
    done.write_text(json.dumps(keep))
    return keep


def decode_fold(folder: Path, records: list, args: argparse.Namespace) -> dict[str, list[str]]:
    """The fold's texts by decision, decoded as `rescore run`'s deep stage does (cached beside the model)."""
    from rescore.stages.deep import DeepOptions, DeepStage

    cache = folder / "decoded.json"
    if cache.exists():
        return json.loads(cache.read_text())
    options = DeepOptions(enabled=True, checkpoint=str(folder), threads=args.threads, device="cpu", verify=True)
    stage = DeepStage(options)
    outs = stage.process(records)
    texts: dict[str, list[str]] = {d: [] for d in DECISIONS}
    for source, out in zip(records, outs, strict=True):
        raw = out.hypotheses[0].text if out.ok and out.hypotheses else source.text()  # a failure keeps the first pass
        c = out.correction or {}
        texts["raw"].append(raw)
        texts["guarded"].append(raw if c.get("guards_accepted", stage.source == "audio") else source.text())
        texts["verified"].append(out.text() if c else raw)
    cache.write_text(json.dumps(texts))
    return texts


def pair(refs: list[str], base: list[str], hyps: list[str]) -> Any:
    """Utterances ``hyps`` makes better / worse than ``base``, and the paired bootstrap p that it is not better."""
    from eval.common import errors
    from rescore.evaluate.metrics import paired_change

    before, n = errors(refs, base)
    return paired_change(before, errors(refs, hyps)[0], n)


def run(args: argparse.Namespace) -> str:
    import torch

    from eval.common import ROW_HEAD, command, dataset, row
    from rescore.deep.recognize import prompt_texts
    from rescore.deep.word_sources import WORD_SOURCES_COLUMNS, WordSources
    from rescore.io.models import cache_dir

    torch.set_num_threads(args.threads)
    systems = args.systems.split(",")
    if unknown := set(systems) - set(SYSTEMS):
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; one of {', '.join(SYSTEMS)}")
    # one folder per data and budget, so a run never reuses models trained on other data
    tag = f"u{args.utterances}-t{args.train_limit}-f{args.folds}-m{args.minutes:g}-b{args.batch_size}-s{args.seed}"
    out = (Path(args.out).expanduser() if args.out else cache_dir() / "deep" / "bench-deep") / tag
    utts = dataset(REPORT_SET).utterances
    ids = [u.id for u in (utts[: args.utterances] if args.utterances else utts)]
    report = first_pass(REPORT_SET, "whisper-tiny.en", ids)
    base_lists = {r.id: r for r in first_pass(REPORT_SET, "whisper-base", [r.id for r in report])}
    train_lists = training_lists(args)
    folds = speaker_folds(report, args.folds)
    refs, first, texts, notes = [], [], {}, []
    sources = {s: WordSources() for s in systems}
    for k, fold in enumerate(folds, 1):
        span = f"{fold[0].id}..{fold[-1].id}"
        inside = {r.id for r in fold}
        rest = [r for r in report if r.id not in inside]
        lists = out / f"fold-{k}-of-{len(folds)}" / "lists"
        tiny = [write_list(lists / "train-tiny.jsonl", train_lists["tiny"] + rest)]
        base = [write_list(lists / "train-base.jsonl", train_lists["base"] + [base_lists[r.id] for r in rest])]
        refs += [r.reference or "" for r in fold]
        first += [r.text() for r in fold]
        for name in systems:
            folder = out / f"fold-{k}-of-{len(folds)}" / name
            files = tiny + base if SYSTEMS[name].arch == "xattn" else tiny  # the bridge reads each audio once
            summary = train_system(name, folder, files, args)
            gates = ", ".join(f"{a:+.2f}/{f:+.2f}" for a, f in summary.get("gates", []))
            dev = f", best held-out loss {summary['best_dev_loss']:.3f}" if "best_dev_loss" in summary else ""
            notes.append(
                f"- fold {k} ({span}, {len(fold)} utt.), {name}: {summary['step']} steps,"
                f" {summary['train_seconds'] / 60:.1f} CPU min, stopped by {summary['stopped']}{dev}"
                + (f"; gates attention/ffn {gates}" if gates else "")
            )
            decoded = decode_fold(folder, fold, args)
            for d in DECISIONS:
                texts.setdefault((name, d), []).extend(decoded[d])
            for r, written in zip(fold, decoded["raw"], strict=True):
                sources[name].add(r.reference or "", prompt_texts(r)[:4], written)
    rows = [row("first pass (whisper-tiny.en 1-best)", refs, first)]
    pairs = []
    for name in systems:
        decisions = ("raw",) if SYSTEMS[name].arch == "bridge" else DECISIONS
        rows += [row(f"{name}, {d}", refs, texts[(name, d)], first) for d in decisions]
        # an audio system against its own twin, else against the default recipe's (the bridge has none of its own)
        twin = next((t for t in (TWINS.get(name), "no-audio") if t in systems), None) if SYSTEMS[name].audio else None
        for d in decisions if twin else ():
            c = pair(refs, texts[(twin, d)], texts[(name, d)])
            pairs.append(f"- {name} vs {twin} ({d}): {c.better} better, {c.worse} worse, paired p {c.p:.3f}")
    return f"""### Deep fusion: recipes against their gates-shut twins and the first pass, cross-fitted

{len(refs)} librispeech-dev utterances in {len(folds)} speaker-grouped folds; each fold decoded by models trained on
the training sets ({", ".join(TRAIN_SETS)}; {args.train_limit or "every"} utterance(s) each, tiny.en lists and
whisper-base lists of the first ones) and the other folds' utterances, never on it. Training as `rescore deep train`
(recipes of `rescore.deep.recipes`), {args.minutes:g} CPU min per model and fold, {args.threads} thread(s), batch
{args.batch_size}; decoding as `rescore run`'s deep stage (decode auto). raw: the model's answer; guarded: through the
stage's text guards only; verified: guards, then whisper-base verification (the stage's decision; the bridge is
taken as it is). WER % (Whisper normalizer, 95 % bootstrap interval); better/worse and p (paired bootstrap, that
the system is not better) against the first pass.
Command: `{command("bench_deep")}`

{ROW_HEAD}
|---|---:|---:|---:|
{chr(10).join(rows)}

{chr(10).join(pairs)}

Where the raw answers' words come from (distinct words per utterance; the prompt's first 4 hypotheses):

| {" | ".join(WORD_SOURCES_COLUMNS)} |
|---|---:|---:|---:|---:|
{chr(10).join(sources[s].row(s) for s in systems)}

{chr(10).join(notes)}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated: {', '.join(SYSTEMS)}")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=20.0, help="training CPU minutes per model and fold")
    ap.add_argument("--utterances", type=int, default=0, help="the first N librispeech-dev utterances (0: all 110)")
    ap.add_argument("--train-limit", type=int, default=0, help="first N utterances of each training set (0: all)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=None, help="models and decodes, kept for reruns (default: the cache's deep/bench-deep)"
    )
    ap.add_argument("--section", default="deep-fusion-folds", help="the eval/RESULTS.md section written")
    ap.add_argument("--no-write", action="store_true", help="print only, leave eval/RESULTS.md alone")
    args = ap.parse_args()
    markdown = run(args)
    print(markdown)
    if not args.no_write:
        from eval.results import update_section

        update_section(args.section, markdown)


if __name__ == "__main__":
    main()
