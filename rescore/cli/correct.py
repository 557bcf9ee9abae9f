"""``rescore correct``: LLM error correction of n-best files; ``rescore correct train`` (LoRA); ``rescore prompts``.

``rescore correct NBEST -o OUT`` and ``rescore correct train ...`` both work: ``correct`` is a group whose
default command (``run``) is taken when the first argument is not a subcommand name.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer.core import TyperGroup

from rescore.cli.console import check_writable, console, fail, load_stage, out, progress_bar, run_stage_command, warn
from rescore.cli.records_io import read_records, read_text_option
from rescore.cli.stage_flags import StageFlags, stage_flags
from rescore.stages import CorrectOptions


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

LLMOpt = Annotated[
    str,
    typer.Option(
        "--llm",
        help="qwen2.5-0.5b, qwen2.5-1.5b, smollm2-135m, a GGUF file or transformers folder; off: no LLM, the template's"
        " fallback text (the reranked text, or its spelled view for `spelling`).",
    ),
]
DomainOpt = Annotated[str | None, typer.Option(help="Domain description for the prompt (domain, entities, fewshot).")]
DomainFileOpt = Annotated[Path | None, typer.Option(help="Read the domain description from a file.")]


def _domain(domain: str | None, domain_file: Path | None) -> str | None:
    return read_text_option(domain, domain_file, "domain")


@correct_app.command("run")
@stage_flags(CorrectOptions, section="correct")
def correct_run(
    file: Annotated[Path, typer.Argument(help="n-best JSONL (from transcribe or rerank).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    flags: StageFlags[CorrectOptions],
    domain_file: DomainFileOpt = None,
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
    limit: Annotated[int, typer.Option(help="Only the first N records (0: all).")] = 0,
) -> None:
    """Correct each record's reranked text with an LLM; guards and acoustic verification keep the reranked
    text when the edit strays or the audio does not support it."""
    from rescore.stages import CorrectStage

    records = read_records(file)
    if limit:
        records = records[:limit]
    options = flags.build(domain=_domain(flags.values.get("domain"), domain_file))
    try:
        stage = CorrectStage(options)
    except (ValueError, OSError) as e:
        raise fail(str(e).splitlines()[0]) from None
    for note in stage.notes:
        warn(note)
    check_writable(output, resume)
    load_stage(stage, f"{stage.config.llm} ({stage.config.backend})")
    no_hyps = [r.id for r in records if r.ok and not r.hypotheses]
    for rid in no_hyps:
        warn(f"not corrected {rid}: no hypotheses")

    def summary(run, written) -> str:
        done = [r for r in written if r.ok and r.correction]
        accepted = sum(1 for r in done if r.correction.get("accepted"))
        changed = sum(1 for r in done if r.correction.get("changed"))
        checked = [r.correction["verification"] for r in done if r.correction.get("verification")]
        refused = sum(1 for v in checked if v.get("checked") and not v.get("taken"))
        rate = f", {run.seconds / len(done):.2f} s per utterance" if done else ""
        verified = f"; verification refused {refused} of {len(checked)} edits" if checked else ""
        return (
            f"corrected {len(done)} records into {output} in {run.seconds:.1f} s{rate}: {accepted} accepted "
            f"({changed} changed), {len(done) - accepted} abstained{verified}"
        )

    run_stage_command(stage, records, output, resume=resume, label="correct", summary=summary)


@correct_app.command("train")
def correct_train(
    files: Annotated[list[Path], typer.Argument(help="n-best JSONL files with references (training sets only).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the LoRA adapter.")],
    llm: LLMOpt = "smollm2-135m",
    prompt: Annotated[str, typer.Option("--prompt", help="Template the adapter is trained (and used) with.")] = "nbest",
    domain: DomainOpt = None,
    domain_file: DomainFileOpt = None,
    max_hypotheses: Annotated[int, typer.Option(help="Hypotheses in each training prompt.")] = 8,
    distinct: Annotated[
        bool, typer.Option(help="Show hypotheses that read alike after normalisation once, as `correct` does.")
    ] = True,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 2e-4,
    epochs: Annotated[float, typer.Option(help="Passes over the pairs (the time box may stop earlier).")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 8,
    max_minutes: Annotated[float, typer.Option(help="Time box: stop and save after this many minutes.")] = 20.0,
    device: Annotated[str, typer.Option(help="auto (GPU when there is one), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: default).")] = 0,
    seed: Annotated[int, typer.Option(help="Shuffling and initialisation seed.")] = 0,
    held_out: Annotated[
        float, typer.Option(help="Share of pairs held out for early stopping (0: none, save the last step).")
    ] = 0.1,
    eval_every: Annotated[int, typer.Option(help="Steps between held-out loss measurements.")] = 10,
    patience: Annotated[int, typer.Option(help="Measurements without a new best before stopping.")] = 3,
) -> None:
    """Fine-tune the corrector with LoRA on (n-best, reference) pairs; `correct --adapter` loads the result.

    Train on n-best lists of training sets (e.g. `rescore transcribe` of a training set with one or more
    `--model`, or `rescore import hyporadise train_atis.json`), never on the set you report."""
    from rescore.correct.lora import LoraConfig, train_lora

    records = [r for f in files for r in read_records(f)]
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
        distinct=distinct,
        rank=rank,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        max_minutes=max_minutes,
        device=device,
        threads=threads or None,
        seed=seed,
        held_out=held_out,
        eval_every=eval_every,
        patience=patience,
    )
    with progress_bar() as bar:
        task = bar.add_task("train", total=None)

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, description=f"train loss {loss:.3f}")

        try:
            command = "rescore " + " ".join(shlex.quote(a) for a in sys.argv[1:])  # how to make it again
            summary = train_lora(usable, output, cfg, on_step=on_step, command=command)
        except (ValueError, OSError, RuntimeError) as e:
            raise fail(str(e)) from None
    held = (
        f"; held-out loss best at step {summary['best_step']} of {summary['held_out_pairs']} pairs"
        f"{' (stopped early)' if summary['early_stopped'] else ''}"
        if summary["held_out_pairs"]
        else ""
    )
    console.print(
        f"saved the adapter to {output}: {summary['steps']} steps, {summary['pairs']} pairs, "
        f"loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}, {summary['seconds'] / 60:.1f} min{held}"
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
        tuned = tune_guards(read_records(tuning))
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
            write_nbest(output, [reguard(r, g) for r in read_records(apply)])
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
    rec = next((r for r in read_records(nbest) if r.ok and r.hypotheses), None)
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
