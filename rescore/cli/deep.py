"""``rescore deep ...``: train a speech-LLM bridge (Whisper encoder -> bridge -> causal LM) and transcribe with it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rescore.cli.console import console, fail, progress_bar, warn

deep_app = typer.Typer(
    no_args_is_help=True,
    help="Deep fusion: Whisper encoder states -> trained bridge -> causal LM that writes the text.",
)


def _default_output() -> Path:
    from rescore.stages.deep import default_model_dir

    return default_model_dir()


@deep_app.command("train")
def train(
    train_sets: Annotated[
        list[str], typer.Option("--train", help="Training manifest or dataset folder (repeat for several).")
    ],
    dev: Annotated[str | None, typer.Option(help="Dev manifest for the dev loss (and WER with --wer-every).")] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Model folder (default: the cache's deep/model).")
    ] = None,
    llm: Annotated[
        str, typer.Option(help="Causal LM: smollm2-135m, qwen2.5-0.5b, a GGUF or HF folder.")
    ] = "smollm2-135m",
    encoder: Annotated[str, typer.Option(help="Whisper model whose encoder states are the input.")] = "whisper-tiny.en",
    reducer: Annotated[str, typer.Option(help="Length reduction: conv, stack or ctc.")] = "conv",
    factor: Annotated[int, typer.Option(help="Frame-rate reduction of conv (power of 2) and stack.")] = 4,
    mixer: Annotated[str, typer.Option(help="Token mixer: none, attention, summary or gaussian.")] = "summary",
    layers: Annotated[int, typer.Option(help="Mixer blocks.")] = 2,
    dim: Annotated[int, typer.Option(help="Width inside the bridge.")] = 512,
    ctc_head: Annotated[
        str, typer.Option(help="CTC head for --reducer ctc: a checkpoint path or 'default'.")
    ] = "default",
    lora_rank: Annotated[int, typer.Option(help="LoRA rank on the LM's q/v projections (0: LM frozen).")] = 0,
    instruction: Annotated[str | None, typer.Option(help="Text between the speech prefix and the transcript.")] = None,
    text_norm: Annotated[str, typer.Option(help="Target style: lower (lower case, no punctuation) or none.")] = "lower",
    batch_size: Annotated[int, typer.Option()] = 8,
    grad_accum: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup: Annotated[int, typer.Option(help="Warm-up steps.")] = 50,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    minutes: Annotated[float, typer.Option(help="Training time budget (0: none); the schedule anneals over it.")] = 0.0,
    eval_every: Annotated[int, typer.Option(help="Steps between dev-loss evaluations.")] = 100,
    wer_every: Annotated[int, typer.Option(help="Steps between greedy dev WER evaluations (0: never).")] = 0,
    save_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 50,
    limit: Annotated[int, typer.Option(help="First N utterances of each training set (0: all).")] = 0,
    dev_limit: Annotated[int, typer.Option(help="First N dev utterances (0: all).")] = 40,
    device: Annotated[str, typer.Option(help="auto (CUDA with bf16 autocast if present), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="Torch CPU threads (0: torch's default).")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train the bridge (LM frozen, optional LoRA); rerunning with the same --output resumes."""
    from rescore.fusion.bridge import BridgeConfig
    from rescore.fusion.model import DEFAULT_INSTRUCTION, LoraConfig, SpeechLLMConfig
    from rescore.fusion.train import TrainConfig
    from rescore.fusion.train import train as run_training
    from rescore.models import ModelNotFoundError

    for s in [*train_sets, *([dev] if dev else [])]:
        if not Path(s).exists():
            raise fail(f"dataset not found: {s}")
    out = output or _default_output()
    model_cfg = SpeechLLMConfig(
        encoder=encoder,
        llm=llm,
        bridge=BridgeConfig(
            reducer=reducer,
            factor=factor,
            mixer=mixer,
            layers=layers,
            dim=dim,
            ctc_head=ctc_head if reducer == "ctc" else None,
        ),
        lora=LoraConfig(rank=lora_rank),
        instruction=instruction if instruction is not None else DEFAULT_INSTRUCTION,
        text_norm=text_norm,
    )
    cfg = TrainConfig(
        train=list(train_sets),
        dev=dev,
        out=str(out),
        model=model_cfg,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        warmup_steps=warmup,
        max_steps=max_steps,
        budget_minutes=minutes,
        eval_every=eval_every,
        wer_every=wer_every,
        save_every=save_every,
        limit=limit,
        dev_limit=dev_limit,
        device=device,
        threads=threads,
        seed=seed,
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
        if "dev_wer" in r:
            console.print(f"step {r['step']}: dev WER {100 * r['dev_wer']:.1f} %")

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
    if issues:
        warn(f"{len(issues)} item(s) skipped; see the messages above")


@deep_app.command("transcribe")
def transcribe(
    input: Annotated[str, typer.Argument(help="Audio folder, JSONL manifest, LibriSpeech folder or audio file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="n-best JSONL to write (appended to on resume).")],
    model: Annotated[Path | None, typer.Option(help="Trained model folder (default: the cache's deep/model).")] = None,
    beam_size: Annotated[int, typer.Option(help="Beam width.")] = 4,
    nbest: Annotated[int, typer.Option(help="Hypotheses kept per utterance (at most --beam-size).")] = 4,
    batch_size: Annotated[int, typer.Option(help="Utterances decoded together.")] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="Torch CPU threads (0: torch's default).")] = 0,
    resume: Annotated[bool, typer.Option(help="Skip ids already in the output.")] = True,
    limit: Annotated[int, typer.Option(help="Only the first N utterances (0: all).")] = 0,
) -> None:
    """Beam search from a trained speech-LLM; one n-best record per utterance (score/rerank/correct apply)."""
    from rescore.cli.transcribe import transcribe_dataset
    from rescore.stages import DeepOptions, DeepStage

    options = DeepOptions(
        enabled=True,
        checkpoint=str(model) if model else None,
        beam_size=beam_size,
        nbest=nbest,
        batch_size=batch_size,
        device=device,
        threads=threads,
    )
    transcribe_dataset(DeepStage(options), input, output, resume=resume, limit=limit, label="deep transcribe")
