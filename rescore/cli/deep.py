"""``rescore deep ...``: train a deep-fusion model and transcribe with it.

Default architecture: gated cross-attention from a frozen causal LM (reading the first-pass n-best) into
Whisper's view of the audio (``--arch xattn``, its recipes in :mod:`rescore.deep.recipes`); ``--arch bridge``: the
prefix bridge (encoder -> bridge -> LM prefix). docs/deep-fusion.md is the user's guide.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rescore.cli.console import console, fail, progress_bar, warn
from rescore.cli.stage_flags import StageFlags, stage_flags
from rescore.deep import ATTEND, TEXT_NORMS
from rescore.deep.recipes import (
    BRIDGE_RECIPE,
    DEFAULT_LLM,
    DEFAULT_RECIPE,
    RECIPES,
    bridge_config,
    resolve_recipe,
    xattn_config,
)
from rescore.stages import DeepOptions
from rescore.train.scaffold import PRECISIONS

deep_app = typer.Typer(
    no_args_is_help=True,
    help="Deep fusion: a causal LM that reads the first-pass n-best and attends to Whisper encoder states"
    " (gated cross-attention, default), or the prefix bridge.",
)


def _default_output() -> Path:
    from rescore.stages.deep import default_model_dir

    return default_model_dir()


@deep_app.command("train")
def train(
    train_sets: Annotated[
        list[str],
        typer.Option(
            "--train",
            help="xattn: first-pass n-best JSONL with references and audio (`rescore transcribe` output); bridge:"
            " a manifest or dataset folder. Repeat for several.",
        ),
    ],
    dev: Annotated[
        str | None,
        typer.Option(help="Dev set (same kind as --train) for the dev loss; xattn default: a tenth held out."),
    ] = None,
    arch: Annotated[str, typer.Option(help="xattn (gated cross-attention, default) or bridge (prefix).")] = "xattn",
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Defaults for the options below that are not given: "
            + "; ".join(f"{n}: {r.summary}" for n, r in RECIPES.items())
            + f" (default: {DEFAULT_RECIPE} for xattn, {BRIDGE_RECIPE} for bridge)."
        ),
    ] = None,
    audio: Annotated[bool, typer.Option(help="xattn: --no-audio forces the attention gates shut (ablation).")] = True,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Model folder (default: the cache's deep/model).")
    ] = None,
    llm: Annotated[str, typer.Option(help="Causal LM: smollm2-135m, qwen2.5-0.5b, a GGUF or HF folder.")] = DEFAULT_LLM,
    encoder: Annotated[
        str | None, typer.Option(help="Whisper model whose states are the input (default: the recipe's).")
    ] = None,
    encoder_window: Annotated[
        str | None,
        typer.Option(
            help="padded (Whisper's 30 s windows) or own (each utterance at its own length: about a tenth of the"
            " encoding time; the model keeps the choice for decoding) (default: the recipe's)."
        ),
    ] = None,
    attend: Annotated[
        str | None,
        typer.Option(
            help="xattn: where the blocks act: all (every position) or reply (from the prompt's last token on: the"
            " prompt read as text) (default: the recipe's)."
        ),
    ] = None,
    kv_init: Annotated[
        str | None,
        typer.Option(
            help="xattn: Whisper model whose decoder cross-attention K/V start the blocks: encoder (the --encoder"
            " model's own), a model name, or none (default: the recipe's)."
        ),
    ] = None,
    text_norm: Annotated[
        str | None,
        typer.Option(
            help="Target style: lower (lower case, no punctuation), whisper (the WER's normalizer) or none"
            " (default: the recipe's)."
        ),
    ] = None,
    hyp_noise: Annotated[
        float | None,
        typer.Option(
            help="xattn: share of training examples whose hypotheses get look-alike words in place of some of"
            " theirs, alike in every hypothesis, so the audio is needed to put them right (default: the recipe's)."
        ),
    ] = None,
    mixer: Annotated[
        str | None,
        typer.Option(help="Token mixer: none, attention, summary or gaussian (default: none for xattn, summary)."),
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Mixer blocks (default: 1 for xattn, 2).")] = None,
    reducer: Annotated[str, typer.Option(help="bridge: length reduction: conv, stack or ctc.")] = "conv",
    factor: Annotated[int, typer.Option(help="bridge: frame-rate reduction of conv (power of 2) and stack.")] = 4,
    ctc_head: Annotated[
        str, typer.Option(help="bridge, --reducer ctc: the CTC head, a checkpoint path or 'default'.")
    ] = "default",
    lora_rank: Annotated[int, typer.Option(help="bridge: LoRA rank on the LM's q/v projections (0: LM frozen).")] = 0,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    minutes: Annotated[float, typer.Option(help="Training time budget (0: none); the schedule anneals over it.")] = 0.0,
    eval_every: Annotated[int, typer.Option(help="Steps between dev-loss evaluations.")] = 100,
    patience: Annotated[int, typer.Option(help="Stop after N dev evaluations without improvement (0: never).")] = 0,
    limit: Annotated[int, typer.Option(help="First N utterances of each training set (0: all).")] = 0,
    dev_limit: Annotated[int, typer.Option(help="First N dev utterances (0: all).")] = 40,
    device: Annotated[str, typer.Option(help="auto (CUDA with bf16 autocast if present), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="Torch CPU threads (0: torch's default).")] = 0,
    precision: Annotated[
        str,
        typer.Option(help="Training autocast: auto (bf16 on CUDA, float32 on CPU), bf16 (CPUs with AMX too) or fp32."),
    ] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train the new modules (LM frozen); rerunning with the same --output resumes."""
    from rescore.deep.noise import HypothesisNoise
    from rescore.deep.train import TrainConfig
    from rescore.deep.train import train as run_training
    from rescore.io.models import ModelNotFoundError
    from rescore.whisper.encoder import WINDOWS

    if arch not in ("xattn", "bridge"):
        raise fail(f"--arch must be xattn or bridge, not {arch!r}")
    try:
        name, base = resolve_recipe(recipe, arch)
    except ValueError as e:
        raise fail(str(e)) from None
    if arch == "xattn":
        console.print(f"recipe {name}: {base.summary} (options given explicitly override it)")
    chosen = base.overridden(
        encoder=encoder,
        encoder_window=encoder_window,
        attend=attend,
        kv_init=kv_init,
        text_norm=text_norm,
        hyp_noise=hyp_noise,
    )
    for s in [*train_sets, *([dev] if dev else [])]:
        if not Path(s).exists():
            raise fail(f"dataset not found: {s}")
    if chosen.attend not in ATTEND:
        raise fail(f"--attend must be {' or '.join(ATTEND)}, not {chosen.attend!r}")
    if precision not in PRECISIONS:
        raise fail(f"--precision must be {', '.join(PRECISIONS)}, not {precision!r}")
    if chosen.encoder_window not in WINDOWS:
        raise fail(f"--encoder-window must be {' or '.join(WINDOWS)}, not {chosen.encoder_window!r}")
    if chosen.text_norm not in TEXT_NORMS:
        raise fail(f"--text-norm must be {', '.join(TEXT_NORMS)}, not {chosen.text_norm!r}")
    try:  # the shares' bounds live in HypothesisNoise
        HypothesisNoise(examples=chosen.hyp_noise)
    except ValueError as e:
        raise fail(f"--hyp-noise {chosen.hyp_noise}: {e}") from None
    out = output or _default_output()
    model_cfg: Any
    if arch == "xattn":
        model_cfg = xattn_config(chosen, llm=llm, audio=audio, mixer=mixer or "none", mixer_layers=layers or 1)
        problem = model_cfg.problem()
        if problem:  # the model's own rule, in its field names (--attend, --kv-init, --mixer)
            raise fail(f"--recipe {name} with these options: {problem}")
    else:
        mixer, layers = mixer or "summary", layers or 2
        model_cfg = bridge_config(
            chosen,
            llm=llm,
            reducer=reducer,
            factor=factor,
            mixer=mixer,
            layers=layers,
            ctc_head=ctc_head,
            lora_rank=lora_rank,
        )
    cfg = TrainConfig(
        train=list(train_sets),
        dev=dev,
        out=str(out),
        model=model_cfg,
        batch_size=batch_size,
        lr=lr,
        max_steps=max_steps,
        budget_minutes=minutes,
        eval_every=eval_every,
        limit=limit,
        dev_limit=dev_limit,
        device=device,
        threads=threads,
        precision=precision,
        seed=seed,
        keep_best=arch == "xattn",
        patience=patience,
        hyp_noise=chosen.hyp_noise if arch == "xattn" else 0.0,
    )
    issues: list[str] = []

    def on_issue(message: str) -> None:
        issues.append(message)
        warn(message)

    bar = progress_bar()
    task = bar.add_task("train", total=max_steps)

    def on_start(step: int, total: int) -> None:
        bar.start()
        bar.update(task, completed=step, total=total)

    def on_step(r: dict) -> None:
        if "loss" in r:
            desc = f"train loss {r['loss']:.3f}"
            if "dev_loss" in r:
                desc += f" dev {r['dev_loss']:.3f}"
            bar.update(task, completed=r["step"], description=desc)

    t0 = time.perf_counter()
    try:
        summary = run_training(cfg, on_issue=on_issue, on_step=on_step, on_start=on_start)
    except (ValueError, FileNotFoundError, ModelNotFoundError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail(
            f"interrupted: the last checkpoint in {out} is kept; rerun the same command to resume", 130
        ) from None
    finally:
        bar.stop()
    dev_part = f", dev loss {summary['dev_loss']:.3f}" if "dev_loss" in summary else ""
    console.print(
        f"trained {summary['step']} steps ({summary['epochs']:.2f} epochs, stopped by {summary['stopped']}) on "
        f"{summary['train_utterances']} utterances in {(time.perf_counter() - t0) / 60:.1f} min{dev_part}; "
        f"model in {out}"
    )
    if "gates" in summary:
        console.print(
            "gates tanh(attention)/tanh(ffn): " + ", ".join(f"{a:+.2f}/{f:+.2f}" for a, f in summary["gates"])
        )
    if "min_length_ratio" in summary:
        wers = ", ".join(f"{r:g}: {100 * w:.1f} %" for r, w in summary["floor_dev_wer"].items())
        console.print(
            f"length floor {summary['min_length_ratio']:g} x the shortest hypothesis, chosen on the held-out"
            f" examples (greedy WER by floor: {wers})"
        )
    if issues:
        warn(f"{len(issues)} item(s) skipped; see the messages above")


@deep_app.command("transcribe")
@stage_flags(DeepOptions, names={"checkpoint": ("--model",)}, section="deep")
def transcribe(
    input: Annotated[
        str,
        typer.Argument(
            help="xattn model: a first-pass n-best JSONL (with audio paths); bridge model: an audio folder, JSONL"
            " manifest, LibriSpeech folder or audio file."
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    flags: StageFlags[DeepOptions],
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
    limit: Annotated[int, typer.Option(help="Only the first N utterances (0: all).")] = 0,
) -> None:
    """Decode with a trained deep-fusion model; one n-best record per utterance (score/rerank/correct apply)."""
    from rescore.cli.transcribe import transcribe_dataset
    from rescore.stages import DeepStage

    stage = DeepStage(flags.build(enabled=True))
    if stage.source == "audio":
        transcribe_dataset(stage, input, output, resume=resume, limit=limit, label="deep transcribe")
        return
    from rescore.cli.console import check_writable, load_stage, run_stage_command
    from rescore.cli.records_io import read_records

    if not Path(input).is_file():
        raise fail(f"{input}: the cross-attention model reads a first-pass n-best JSONL (`rescore transcribe`)")
    records = read_records(Path(input))
    records = records[:limit] if limit else records
    check_writable(output, resume)
    load_stage(stage, "deep transcribe")
    run_stage_command(stage, records, output, resume=resume, label="deep transcribe", unit="utterances")
