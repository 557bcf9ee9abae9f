"""``rescore rerank`` and ``rescore tune``: LM scores on n-best lists, weighted choice, weights from a dev set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rescore.cli import _load_records, _pct, app, console, fail, out, progress_bar, warn

LMOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--lm",
        help="LM: smollm2-135m, qwen2.5-0.5b, a GGUF file or a transformers folder. Repeat for an ensemble.",
    ),
]
BackendOpt = Annotated[str, typer.Option(help="LM backend: hf (transformers, batched) or llamacpp (GGUF).")]
ContextOpt = Annotated[str | None, typer.Option(help="Domain prompt the LM conditions on: P(hypothesis | prompt).")]
ContextFileOpt = Annotated[Path | None, typer.Option(help="Read the domain prompt from a file.")]
ThreadsOpt = Annotated[int, typer.Option(help="CPU threads for the LM.")]
BatchOpt = Annotated[int, typer.Option(help="Token budget of one forward pass (hf backend).")]


def _context(context: str | None, context_file: Path | None, default: str = "") -> str:
    if context is not None and context_file is not None:
        raise fail("give --context or --context-file, not both")
    if context_file is not None:
        try:
            return context_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise fail(f"cannot read --context-file {context_file}: {e.strerror or e}") from None
    return context if context is not None else default


def _scorers(names: list[str], backend: str, threads: int, batch_tokens: int) -> list:
    from rescore.lm import LMLoadError, make_scorer

    scorers = []
    for name in names:
        opts = {"threads": threads} | ({"batch_tokens": batch_tokens} if backend == "hf" else {})
        try:
            with console.status(f"loading {name} ({backend})"):
                s = make_scorer(name, backend, **opts)
        except (LMLoadError, ValueError) as e:
            raise fail(str(e)) from None
        s.warn = warn
        scorers.append(s)
    if len({s.name for s in scorers}) < len(scorers):
        raise fail("two --lm options give the same score name; use distinct models")
    return scorers


@app.command()
def rerank(
    file: Annotated[Path, typer.Argument(help="n-best JSONL (from transcribe).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    lm: LMOpt = None,
    backend: BackendOpt = "hf",
    config: Annotated[Path | None, typer.Option(help="Weights from `rescore tune` (also its LMs and context).")] = None,
    lm_weight: Annotated[
        list[float] | None,
        typer.Option(help="Weight of each --lm, in order (without --config; default 0.004 with am_norm)."),
    ] = None,
    length_bonus: Annotated[
        float | None, typer.Option(help="Bonus per word (without --config; default 0.03 with am_norm).")
    ] = None,
    am: Annotated[
        str, typer.Option(help="Acoustic score without --config: am_norm (per token, default) or am (summed).")
    ] = "am_norm",
    context: ContextOpt = None,
    context_file: ContextFileOpt = None,
    previous: Annotated[
        int | None, typer.Option(help="Condition on the N transcripts chosen before, in the same recording.")
    ] = None,
    threads: ThreadsOpt = 2,
    batch_tokens: BatchOpt = 1024,
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
) -> None:
    """Add lm:<name> scores to every hypothesis and choose by am + sum(w_i * lm_i) + b * words."""
    from rescore.lm import short_name
    from rescore.records import NBestWriter, RecordError, read_nbest
    from rescore.rerank import RerankConfig, default_weights, lm_key, rerank_iter

    cfg = None
    if config is not None:
        try:
            cfg = RerankConfig.load(config)
        except ValueError as e:
            raise fail(str(e)) from None
    names = list(lm or ([s.name for s in cfg.lms] if cfg else ["smollm2-135m"]))
    if cfg and lm and lm_weight is None:
        known = {lm_key(s.name) for s in cfg.lms}
        if {lm_key(short_name(n)) for n in names} - known:
            raise fail(f"--lm {', '.join(names)} differs from the LMs the config was tuned for; give --lm-weight")
    if cfg and not lm:
        backend = cfg.lms[0].backend if cfg.lms else backend
    ctx = _context(context, context_file, cfg.context if cfg else "")
    prev = previous if previous is not None else (cfg.previous if cfg else 0)
    if lm_weight is not None and len(lm_weight) != len(names):
        raise fail(f"{len(lm_weight)} --lm-weight value(s) for {len(names)} --lm model(s)")
    try:
        records = list(read_nbest(file))
    except (OSError, RecordError) as e:
        raise fail(str(e)) from None
    scorers = _scorers(names, backend, threads, batch_tokens)
    if cfg and lm_weight is None:
        weights = cfg.weights
    else:
        weights = default_weights([lm_key(s.name) for s in scorers])
        if am != "am_norm":
            weights.scores = {am: 1.0, **{k: v for k, v in weights.scores.items() if k != "am_norm"}}
        for s, w in zip(scorers, lm_weight or [], strict=False):
            weights.scores[lm_key(s.name)] = w
    if length_bonus is not None:
        weights.length_bonus = length_bonus
    console.print(f"total = {weights.describe()}", highlight=False)
    try:
        writer = NBestWriter(output, resume=resume)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    todo = [r for r in records if r.id not in writer.done]
    if len(todo) < len(records):
        console.print(f"resuming: {len(records) - len(todo)} of {len(records)} records already in {output}")
    failures: list[str] = []
    n_hyp = 0
    t0 = time.perf_counter()
    interrupted = False
    with writer, progress_bar() as bar:
        task = bar.add_task("rerank", total=len(todo))
        try:
            for r in rerank_iter(todo, scorers, weights, context=ctx, previous=prev):
                if r.ok:
                    n_hyp += len(r.hypotheses)
                r.extra["rerank"] = {"weights": weights.describe(), "backend": backend, "previous": prev}
                writer.write(r)
                if not r.ok:
                    failures.append(f"{r.id}: {r.error}")
                    if (r.error or "").startswith("rerank"):
                        console.print(f"[red]failed[/] {r.id}: {r.error}", highlight=False)
                    else:
                        warn(f"{r.id}: failed upstream, passed on unchanged: {r.error}")
                bar.update(task, advance=1)
        except KeyboardInterrupt:
            interrupted = True
    elapsed = time.perf_counter() - t0
    rate = f", {n_hyp / elapsed:.1f} hypotheses/s" if elapsed > 0 and n_hyp else ""
    console.print(f"wrote {len(todo)} records to {output} in {elapsed:.1f} s{rate}")
    if interrupted:
        raise fail("interrupted: the records written so far are kept; rerun the same command to resume", 130)
    if failures:
        raise fail(f"{len(failures)} record(s) failed (kept with an 'error' field); see the messages above", 1)


def comparison_table(title: str, c) -> Table:
    """One row per figure, so it fits a narrow terminal."""
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("utterances", str(c.utterances))
    t.add_row("1-best WER % [95 % CI]", f"{_pct(c.before.rate)} [{_pct(c.before.ci_low)}-{_pct(c.before.ci_high)}]")
    t.add_row("reranked WER % [95 % CI]", f"{_pct(c.after.rate)} [{_pct(c.after.ci_low)}-{_pct(c.after.ci_high)}]")
    t.add_row("n-best oracle WER %", _pct(c.oracle))
    t.add_row("gap to the oracle closed", "n/a" if c.gap_closed != c.gap_closed else f"{100 * c.gap_closed:.1f} %")
    t.add_row("utterances better/worse/same", f"{c.better}/{c.worse}/{c.unchanged}")
    t.add_row("p (paired bootstrap, reranked not better)", f"{c.p_value:.3f}")
    return t


def _usable(records: list, what: str) -> list:
    keep = []
    for r in records:
        if not r.ok:
            warn(f"{what}: {r.id} skipped: failed record ({r.error})")
        elif not r.hypotheses:
            warn(f"{what}: {r.id} skipped: no hypotheses")
        elif r.reference is None:
            warn(f"{what}: {r.id} skipped: no reference (use --reference)")
        elif any("am" not in h.scores for h in r.hypotheses):
            warn(f"{what}: {r.id} skipped: a hypothesis has no 'am' score")
        else:
            keep.append(r)
    return keep


@app.command()
def tune(
    file: Annotated[Path, typer.Argument(help="Dev n-best JSONL with references.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Config file (JSON) for `rerank --config`.")],
    lm: LMOpt = None,
    backend: BackendOpt = "hf",
    context: ContextOpt = None,
    context_file: ContextFileOpt = None,
    reference: Annotated[Path | None, typer.Option(help="Manifest with the references, if not in the records.")] = None,
    folds: Annotated[int, typer.Option(help="k of the k-fold cross-validation that reports the result (0: none).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
    report: Annotated[
        Path | None, typer.Option(help="Also report on this n-best file (must not share ids with the dev file).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Report on --report even where it shares ids with the dev file.")] = False,
    scored: Annotated[Path | None, typer.Option(help="Write the dev records with their LM scores here.")] = None,
    threads: ThreadsOpt = 2,
    batch_tokens: BatchOpt = 1024,
) -> None:
    """Search LM weights and length bonus minimising dev WER (grid, then refinement); report by k-fold CV."""
    from rescore.evaluate import rerank_comparison
    from rescore.records import write_nbest
    from rescore.rerank import LMSpec, Ranker, RerankConfig, score_nbest
    from rescore.rerank import tune as tune_weights

    ctx = _context(context, context_file)
    names = list(lm or ["smollm2-135m"])
    dev = _usable(_load_records(file, reference), "dev")
    if len(dev) < 2:
        raise fail(f"{file}: fewer than 2 usable records to tune on")
    test = None
    if report is not None:
        test = _usable(_load_records(report, reference), "report")
        shared = {r.id for r in dev} & {r.id for r in test}
        if shared and not force:
            raise fail(
                f"--report shares {len(shared)} id(s) with the dev file (e.g. {sorted(shared)[0]}): "
                "figures on tuned-on utterances are optimistic; use another set, or --force"
            )
        if shared:
            warn(f"--force: {len(shared)} reported id(s) were also tuned on; the --report figure is optimistic")
    scorers = _scorers(names, backend, threads, batch_tokens)
    t0 = time.perf_counter()
    with console.status(f"scoring {sum(len(r.hypotheses) for r in dev)} dev hypotheses"):
        for s in scorers:
            score_nbest(dev, s, context=ctx)
    console.print(f"scored the dev set in {time.perf_counter() - t0:.1f} s")
    if scored is not None:
        write_nbest(scored, dev)
    with console.status("searching weights"):
        result = tune_weights(dev, keys=[f"lm:{s.name}" for s in scorers], folds=folds, seed=seed)
    w = result.weights
    console.print(
        f"tuned on {len(dev)} utterances ({result.evaluated} settings): total = {w.describe()}", highlight=False
    )
    tuning: dict = {"dev": str(file), "utterances": len(dev), "in_sample_wer": result.wer, "normalizer": "whisper"}
    if result.cv is not None:
        cv = result.cv
        out.print(
            comparison_table(f"{file.name}: {cv.folds}-fold cross-validated rerank (held-out folds)", cv.comparison)
        )
        tuning["cv"] = cv.to_dict()
    else:
        warn(f"no cross-validation (--folds {folds}): in-sample WER {_pct(result.wer)} % is optimistic")
    if test is not None:
        for s in scorers:
            score_nbest(test, s, context=ctx)
        ranker = Ranker(w)
        for r in test:
            ranker.rank(r)
        c = rerank_comparison(test)
        out.print(comparison_table(f"{report.name}: reranked with the tuned weights", c))  # type: ignore[union-attr]
        tuning["report"] = {"file": str(report), **c.to_dict()}
    cfg = RerankConfig(w, [LMSpec(s.name, backend) for s in scorers], ctx, 0, tuning)
    try:
        cfg.save(output)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    console.print(f"wrote {output}")
