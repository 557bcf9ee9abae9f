"""``rescore correct``: LLM error correction of n-best files; ``rescore correct train`` (LoRA); ``rescore prompts``.

``rescore correct NBEST -o OUT`` and ``rescore correct train ...`` both work: ``correct`` is a group whose
default command (``run``) is taken when the first argument is not a subcommand name.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer.core import TyperGroup

from rescore.cli import app, console, fail, out, progress_bar, warn


class _DefaultGroup(TyperGroup):
    """A group that runs its ``run`` command when the first argument is not one of its commands."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands and args[0] not in {"--help", "-h"}:
            args = ["run", *args]
        return super().parse_args(ctx, args)


correct_app = typer.Typer(
    cls=_DefaultGroup,
    no_args_is_help=True,
    help="Correct n-best files with an instruction LLM (rescore correct NBEST -o OUT), or train a LoRA adapter.",
)
prompts_app = typer.Typer(no_args_is_help=True, help="List and show the prompt templates of `rescore correct`.")
app.add_typer(correct_app, name="correct")
app.add_typer(prompts_app, name="prompts")

LLMOpt = Annotated[str, typer.Option("--llm", help="qwen2.5-0.5b, smollm2-135m, a GGUF file or transformers folder.")]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", help="Template name in prompts/ (see `rescore prompts list`) or a .j2 file.")
]
DomainOpt = Annotated[str | None, typer.Option(help="Domain description for the prompt (domain, entities, fewshot).")]
DomainFileOpt = Annotated[Path | None, typer.Option(help="Read the domain description from a file.")]


def _domain(domain: str | None, domain_file: Path | None) -> str | None:
    if domain is not None and domain_file is not None:
        raise fail("give --domain or --domain-file, not both")
    if domain_file is not None:
        try:
            return domain_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise fail(f"cannot read --domain-file {domain_file}: {e.strerror or e}") from None
    return domain


def _read(path: Path) -> list:
    from rescore.records import RecordError, read_nbest

    try:
        return list(read_nbest(path))
    except (OSError, RecordError) as e:
        raise fail(str(e)) from None


@correct_app.command("run")
def correct_run(
    file: Annotated[Path, typer.Argument(help="n-best JSONL (from transcribe or rerank).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    llm: LLMOpt = "qwen2.5-0.5b",
    prompt: PromptOpt = None,
    backend: Annotated[
        str, typer.Option(help="llama-cpp (GGUF, its own chat template) or transformers.")
    ] = "llama-cpp",
    adapter: Annotated[
        Path | None, typer.Option(help="LoRA adapter from `rescore correct train` (transformers backend).")
    ] = None,
    domain: DomainOpt = None,
    domain_file: DomainFileOpt = None,
    entities: Annotated[Path | None, typer.Option(help="Entity list: one name or term per line.")] = None,
    top_k: Annotated[int, typer.Option(help="Entities retrieved per utterance.")] = 5,
    examples: Annotated[
        Path | None, typer.Option(help="n-best JSONL with references (a training set): few-shot examples.")
    ] = None,
    n_examples: Annotated[int, typer.Option(help="Few-shot examples taken from --examples.")] = 6,
    max_hypotheses: Annotated[int, typer.Option(help="Hypotheses shown to the LLM.")] = 8,
    max_edit_ratio: Annotated[
        float, typer.Option(help="Abstain beyond this share of edited words from every hypothesis (<0: off).")
    ] = 0.3,
    max_novel_words: Annotated[
        int, typer.Option(help="Abstain when more words occur in no hypothesis nor list (<0: off).")
    ] = 1,
    quote: Annotated[bool, typer.Option(help="Quote and sanitize hypotheses as data in the prompt.")] = True,
    clean: Annotated[bool, typer.Option(help="Strip quotes, prefixes and explanations from the output.")] = True,
    threads: Annotated[int, typer.Option(help="CPU threads (0: up to 4).")] = 0,
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
    limit: Annotated[int, typer.Option(help="Only the first N records (0: all).")] = 0,
) -> None:
    """Correct each record's reranked text with an LLM; guards keep the reranked text when it strays."""
    from rescore.correct import CorrectorConfig, GuardConfig, LLMCorrector, examples_from_records
    from rescore.correct.lora import read_adapter_info
    from rescore.correct.prompts import TemplateError
    from rescore.models import ModelNotFoundError
    from rescore.records import NBestWriter

    records = _read(file)
    if limit:
        records = records[:limit]
    adapter_info = read_adapter_info(adapter) if adapter else {}
    if adapter and backend != "transformers":
        warn("a LoRA adapter runs on the transformers backend: using --backend transformers")
        backend = "transformers"
    dom = _domain(domain, domain_file)
    cfg = CorrectorConfig(
        llm=adapter_info.get("llm", llm) if adapter else llm,
        backend=backend,
        template=prompt or adapter_info.get("template", "nbest"),
        adapter=str(adapter) if adapter else None,
        domain=dom if dom is not None else adapter_info.get("domain"),
        entities=str(entities) if entities else None,
        top_k_entities=top_k,
        max_hypotheses=max_hypotheses,
        n_threads=threads or None,
        guards=GuardConfig(
            quote=quote,
            clean=clean,
            max_edit_ratio=max_edit_ratio if max_edit_ratio >= 0 else None,
            max_novel_words=max_novel_words if max_novel_words >= 0 else None,
        ),
        examples=examples_from_records(_read(examples), n_examples) if examples else [],
    )
    if adapter and llm != cfg.llm:
        warn(f"the adapter was trained on {cfg.llm}: using it instead of --llm {llm}")
    try:
        writer = NBestWriter(output, resume=resume)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    todo = [r for r in records if r.id not in writer.done]
    if len(todo) < len(records):
        console.print(f"resuming: {len(records) - len(todo)} of {len(records)} records already in {output}")
    try:
        with console.status(f"loading {cfg.llm} ({cfg.backend})"):
            corrector = LLMCorrector(cfg)
    except (ModelNotFoundError, TemplateError, ValueError, OSError, RuntimeError) as e:
        writer.close()
        raise fail(str(e)) from None
    failures: list[str] = []
    counts = {"accepted": 0, "changed": 0, "abstained": 0}
    t0 = time.perf_counter()
    interrupted = False
    with writer, progress_bar() as bar:
        task = bar.add_task("correct", total=len(todo))
        try:
            for r in todo:
                if not r.ok or not r.hypotheses:
                    failures.append(f"{r.id}: {r.error or 'no hypotheses'}")
                    warn(f"not corrected {r.id}: {r.error or 'no hypotheses'}")
                    writer.write(r)
                    bar.update(task, advance=1)
                    continue
                try:
                    corrector.correct(r)
                except (ValueError, RuntimeError) as e:  # one bad record: recorded, the batch goes on
                    r.error = f"correct: {e}"
                    failures.append(f"{r.id}: {r.error}")
                    console.print(f"[red]failed[/] {r.id}: {r.error}", highlight=False)
                else:
                    c = r.correction or {}
                    counts["accepted" if c.get("accepted") else "abstained"] += 1
                    counts["changed"] += bool(c.get("changed"))
                writer.write(r)
                bar.update(task, advance=1)
        except KeyboardInterrupt:
            interrupted = True
    n = counts["accepted"] + counts["abstained"]
    elapsed = time.perf_counter() - t0
    rate = f", {elapsed / n:.2f} s per utterance" if n else ""
    console.print(
        f"corrected {n} records into {output} in {elapsed:.1f} s{rate}: {counts['accepted']} accepted "
        f"({counts['changed']} changed), {counts['abstained']} abstained"
    )
    if interrupted:
        raise fail("interrupted: the records written so far are kept; rerun the same command to resume", 130)
    if failures:
        raise fail(f"{len(failures)} record(s) failed or had no hypotheses; see the messages above", 1)


@correct_app.command("train")
def correct_train(
    files: Annotated[list[Path], typer.Argument(help="n-best JSONL files with references (training sets only).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the LoRA adapter.")],
    llm: LLMOpt = "smollm2-135m",
    prompt: Annotated[str, typer.Option("--prompt", help="Template the adapter is trained (and used) with.")] = "nbest",
    domain: DomainOpt = None,
    domain_file: DomainFileOpt = None,
    max_hypotheses: Annotated[int, typer.Option(help="Hypotheses in each training prompt.")] = 8,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 2e-4,
    epochs: Annotated[float, typer.Option(help="Passes over the pairs (the time box may stop earlier).")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 8,
    max_minutes: Annotated[float, typer.Option(help="Time box: stop and save after this many minutes.")] = 20.0,
    device: Annotated[str, typer.Option(help="auto (GPU when there is one), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: default).")] = 0,
    seed: Annotated[int, typer.Option(help="Shuffling and initialisation seed.")] = 0,
) -> None:
    """Fine-tune the corrector with LoRA on (n-best, reference) pairs; `correct --adapter` loads the result."""
    from rescore.correct.lora import LoraConfig, train_lora

    records = [r for f in files for r in _read(f)]
    usable = [r for r in records if r.ok and r.hypotheses and r.reference]
    if len(usable) < len(records):
        warn(f"{len(records) - len(usable)} record(s) without hypotheses or reference skipped")
    if not usable:
        raise fail("no (n-best, reference) pair to train on")
    cfg = LoraConfig(
        llm=llm,
        template=prompt,
        domain=_domain(domain, domain_file),
        max_hypotheses=max_hypotheses,
        rank=rank,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        max_minutes=max_minutes,
        device=device,
        threads=threads or None,
        seed=seed,
    )
    with progress_bar() as bar:
        task = bar.add_task("train", total=None)

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, description=f"train loss {loss:.3f}")

        try:
            summary = train_lora(usable, output, cfg, on_step=on_step)
        except (ValueError, OSError, RuntimeError) as e:
            raise fail(str(e)) from None
    info_path = output / "rescore-lora.json"  # how to make it again
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["command"] = "rescore " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    console.print(
        f"saved the adapter to {output}: {summary['steps']} steps, {summary['pairs']} pairs, "
        f"loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}, {summary['seconds'] / 60:.1f} min"
    )


@correct_app.command("tune-guards")
def correct_tune_guards(
    tuning: Annotated[Path, typer.Argument(help="Corrected n-best of a training set, with references.")],
    apply: Annotated[
        Path | None, typer.Option(help="Corrected n-best to re-decide under the tuned guards (no LLM call).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write the re-decided --apply file.")
    ] = None,
) -> None:
    """Pick the guard thresholds (or the corrector off) with the lowest WER on a corrected training set.

    The LLM's output is stored in each corrected record, so the thresholds are tried without asking it
    again; --apply re-decides another corrected file (the one you report) with the chosen thresholds.
    """
    from rescore.correct.tuning import reguard, tune_guards
    from rescore.records import write_nbest

    if (apply is None) != (output is None):
        raise fail("give --apply and --output together")
    try:
        tuned = tune_guards(_read(tuning))
    except ValueError as e:
        raise fail(f"{tuning}: {e}") from None
    table = Table("max_edit_ratio", "max_novel_words", "WER %", title=f"guard settings on {tuning.name}")
    for ratio, novel, wer in tuned.tried:
        mark = " *" if wer == tuned.wer and (ratio, novel) == _setting(tuned.guards) else ""
        ratio_s, novel_s = ("off", "") if ratio is None else (str(ratio), str(novel))
        table.add_row(ratio_s, novel_s, f"{100 * wer:.2f}{mark}")
    console.print(table)
    g = tuned.guards
    chosen = (
        "the corrector off" if g is None else f"max_edit_ratio {g.max_edit_ratio}, max_novel_words {g.max_novel_words}"
    )
    console.print(f"chosen: {chosen} ({100 * tuned.wer:.2f} % on {tuned.utterances} utterances)")
    if apply is not None and output is not None:
        try:
            write_nbest(output, [reguard(r, g) for r in _read(apply)])
        except OSError as e:
            raise fail(f"cannot write {output}: {e.strerror or e}") from None
        console.print(f"wrote {output}")


def _setting(g: object) -> tuple[float | None, int | None]:
    return (None, None) if g is None else (g.max_edit_ratio, g.max_novel_words)  # type: ignore[attr-defined]


@prompts_app.command("list")
def prompts_list() -> None:
    """The templates in prompts/ (and $RESCORE_PROMPTS) with their descriptions and variables."""
    from rescore.correct.prompts import list_templates

    table = Table(title="prompt templates")
    table.add_column("name", no_wrap=True)
    table.add_column("description")
    table.add_column("variables")
    for t in list_templates():
        used = t.used_variables()
        table.add_row(t.name, t.description, ", ".join(v for v in t.variables if v in used))
    out.print(table)


@prompts_app.command("show")
def prompts_show(
    name: Annotated[str, typer.Argument(help="Template name or .j2 file.")],
    nbest: Annotated[Path | None, typer.Option(help="Render it for the first record of this n-best file.")] = None,
    domain: DomainOpt = None,
) -> None:
    """Print a template's source, or the chat messages it renders for a record."""
    from rescore.correct.guards import GuardConfig, prepare_input
    from rescore.correct.prompts import TemplateError, load_template

    try:
        t = load_template(name)
    except TemplateError as e:
        raise fail(str(e)) from None
    if nbest is None:
        out.print(f"[bold]{t.name}[/] ({t.path})", highlight=False)
        out.print(t.source, highlight=False, markup=False)
        return
    rec = next((r for r in _read(nbest) if r.ok and r.hypotheses), None)
    if rec is None:
        raise fail(f"{nbest}: no record with hypotheses")
    q = prepare_input([h.text for h in rec.hypotheses], rec.chosen or 0, GuardConfig())
    variables = {"best": q.best, "hypotheses": q.hypotheses, "others": q.others, "domain": domain}
    try:
        messages = t.render({**variables, "entities": [], "examples": []})
    except TemplateError as e:
        raise fail(str(e)) from None
    for m in messages:
        out.print(f"[bold]--- {m['role']} ---[/]", highlight=False)
        out.print(m["content"], highlight=False, markup=False)
