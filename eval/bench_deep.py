"""Deep-fusion checks: overfitting a few utterances, and time-boxed training runs per bridge mixer.

``overfit``: the N shortest utterances of a set are trained until their greedy WER falls under a target
(or a time budget runs out): the bridge, the LM prefix, the loss masking and decoding work together.

``mixers``: the conv bridge with each mixer is trained for the same time budget on the training sets and
scored on the first utterances of librispeech-dev (dev loss during training, greedy WER at the end).
Training and reported sets are disjoint (ARCTIC, AN4 and speechocean762 against LibriSpeech).

    python -m eval.bench_deep overfit [--n 20] [--budget 30] [--mixer summary]
    python -m eval.bench_deep mixers [--budget 5] [--mixers attention,summary,gaussian] [--dev-limit 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_SETS = ["arctic-cathy", "an4-train", "speechocean-train"]


def shortest_manifest(src: Path, n: int, out: Path) -> Path:
    """A manifest of the n shortest utterances of src (absolute audio paths)."""
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    rows = sorted(rows, key=lambda r: (r.get("duration") or 0.0, r["id"]))[:n]
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["audio"] = str((src.parent / r["audio"]).resolve())
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def curve(log_path: Path, key: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [(r["step"], r[key]) for r in rows if key in r and not r.get("final")]


def run_overfit(args: argparse.Namespace) -> str:
    from rescore.deep.bridge import BridgeConfig
    from rescore.deep.model import SpeechLLMConfig, build_model
    from rescore.deep.train import TrainConfig, load_examples, train, transcribe_examples
    from rescore.evaluate.metrics import error_rate

    out = Path(args.out)
    manifest = shortest_manifest(DATA / args.set / "manifest.jsonl", args.n, out / "overfit.jsonl")
    mcfg = SpeechLLMConfig(bridge=BridgeConfig(mixer=args.mixer, dropout=0.0, factor=args.factor))
    cfg = TrainConfig(
        train=[str(manifest)],
        dev=str(manifest),
        out=str(out / "model"),
        model=mcfg,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=20,
        max_steps=args.max_steps,
        budget_minutes=args.budget,
        dev_limit=0,
        eval_every=args.wer_every,
        wer_every=args.wer_every,
        stop_wer=args.target,
        save_every=args.wer_every,
        threads=args.threads,
    )
    ex = load_examples([str(manifest)], mcfg.encoder, on_issue=print)
    model = build_model(mcfg)
    t0 = time.time()
    summary = train(cfg, model=model, examples=(ex, ex), on_step=lambda r: print(json.dumps(r), flush=True))
    wall = time.time() - t0
    refs, greedy, beam = [], [], []
    for e, h in transcribe_examples(model, ex, args.batch_size, "cpu", beam_size=4, nbest=4):
        refs.append(e.text)
        beam.append(h[0][0])
    for _, h in transcribe_examples(model, ex, args.batch_size, "cpu"):
        greedy.append(h[0][0])
    wer_g, wer_b = error_rate(refs, greedy).rate, error_rate(refs, beam).rate
    wers = curve(Path(cfg.out) / "log.jsonl", "dev_wer")
    losses = curve(Path(cfg.out) / "log.jsonl", "loss")
    samples = "\n".join(f"| {r} | {b} |" for r, b in list(zip(refs, beam, strict=True))[:5])
    command = "python -m eval.bench_deep " + " ".join(sys.argv[1:])
    return f"""### Deep fusion: overfit check

The {args.n} shortest utterances of {args.set} ({sum(e.states.shape[0] for e in ex) / 50:.0f} s of audio) trained
until their greedy WER (Whisper normalizer) was under {100 * args.target:.0f} %: Whisper tiny.en encoder states
(CTranslate2 int8, cached) -> conv bridge ({args.factor}x) with the {args.mixer} mixer (dropout off) -> SmolLM2-135M
(frozen), batch {args.batch_size}, AdamW lr {args.lr}, {args.threads} CPU thread(s). Command: `{command}`

- stopped by: {summary["stopped"]} after {summary["step"]} steps ({summary["epochs"]:.1f} epochs),
  {summary["train_seconds"] / 60:.1f} min of training ({wall / 60:.1f} min wall with evaluations)
- greedy WER during training (step: WER %): {", ".join(f"{s}: {100 * w:.1f}" for s, w in wers)}
- training loss (nats/token, every 10th step): {", ".join(f"{s}: {v:.2f}" for s, v in losses[::10])}
- final WER on the {args.n} utterances: greedy {100 * wer_g:.1f} %, beam 4 {100 * wer_b:.1f} %

| reference | beam-4 output |
|---|---|
{samples}
"""


def run_mixers(args: argparse.Namespace) -> str:
    from rescore.deep.bridge import BridgeConfig
    from rescore.deep.model import SpeechLLMConfig, build_model
    from rescore.deep.train import TrainConfig, load_examples, train, transcribe_examples
    from rescore.evaluate.metrics import error_rate

    out = Path(args.out)
    train_sets = [str(DATA / s / "manifest.jsonl") for s in args.train.split(",")]
    dev = str(DATA / "librispeech-dev" / "manifest.jsonl")
    mcfg0 = SpeechLLMConfig()
    train_ex = load_examples(train_sets, mcfg0.encoder, limit=args.limit, max_frames=1500, on_issue=print)
    dev_ex = load_examples([dev], mcfg0.encoder, limit=args.dev_limit, on_issue=print)
    rows, curves = [], []
    seen_by_mixer: list[tuple[str, int]] = []
    for mixer in args.mixers.split(","):
        bcfg = BridgeConfig(mixer=mixer, factor=args.factor, reducer=args.reducer)
        if args.reducer == "ctc":
            bcfg.ctc_head = "default"  # the head `rescore ctc train` saved (issue 5's recognizer)
        mcfg = SpeechLLMConfig(bridge=bcfg)
        cfg = TrainConfig(
            train=train_sets,
            dev=dev,
            out=str(out / f"{args.reducer}-{mixer}"),
            model=mcfg,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup,
            max_steps=100_000,
            budget_minutes=args.budget,
            budget_clock=args.clock,
            limit=args.limit,
            dev_limit=args.dev_limit,
            eval_every=args.eval_every,
            save_every=25,
            threads=args.threads,
            seed=args.seed,
        )
        model = build_model(mcfg)
        n_params = sum(p.numel() for p in model.bridge.parameters())
        summary = train(
            cfg, model=model, examples=(train_ex, dev_ex), on_step=lambda r: print(json.dumps(r), flush=True)
        )
        refs, hyps = [], []
        for e, h in transcribe_examples(model, dev_ex, args.batch_size, "cpu"):
            refs.append(e.text)
            hyps.append(h[0][0])
        wer = error_rate(refs, hyps).rate
        print(f"{mixer}: dev WER {100 * wer:.1f} %", flush=True)
        seen = summary["step"] * args.batch_size
        seen_by_mixer.append((mixer, seen))
        rows.append(
            f"| {args.reducer} + {mixer} | {n_params / 1e6:.2f} M | {summary['step']} | {seen} | "
            f"{summary['train_seconds'] / 60:.1f} | {summary['dev_loss']:.3f} | {100 * wer:.1f} |"
        )
        dl = curve(Path(cfg.out) / "log.jsonl", "dev_loss")
        curves.append(f"- {args.reducer} + {mixer}: " + ", ".join(f"{s}: {v:.2f}" for s, v in dl))
        example = next(((r, h) for r, h in zip(refs, hyps, strict=True)), ("", ""))
        curves.append(f"  - e.g. reference `{example[0][:80]}` -> output `{example[1][:80]}`")
    command = "python -m eval.bench_deep " + " ".join(sys.argv[1:])
    hours = sum(e.states.shape[0] for e in train_ex) / 50 / 3600
    epochs = ", ".join(f"{mixer} {n / max(len(train_ex), 1):.1f}" for mixer, n in seen_by_mixer) + " epochs"
    return f"""### Deep fusion: {args.reducer} bridge with each mixer, equal CPU budget

Training: {len(train_ex)} utterances ({hours:.1f} h) of {args.train} (encoder states cached); each bridge got
the same {args.budget:g} min of training ({args.clock} time) on this shared 2-core CPU ({args.threads} torch thread),
batch {args.batch_size}, AdamW lr {args.lr} with {args.warmup} warm-up steps and cosine decay over the budget.
Dev: the first {len(dev_ex)} utterances of librispeech-dev (dev loss in nats per transcript token; greedy WER,
Whisper normalizer).
Command: `{command}`

| bridge | parameters | steps | utterances seen | train min | dev loss | dev WER % |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Dev loss during training (step: loss):
{chr(10).join(curves)}

Steps differ at equal time when the shared machine's load changes between runs (the frozen LM's forward
and backward dominate each step; the mixer's share is small): compare dev losses at equal steps in the curves.
Honest reading: {args.budget:g} CPU minutes ({epochs}) on {hours:.1f} h of narrow training speech is far from
the hours of GPU training on hundreds of hours that speech-LLM bridges get (SLAM-ASR trains on 960 h). The training
loss falls; whether the LibriSpeech dev loss and WER follow is in the table. They are not a usable recognizer at
this budget, and the WER says so.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    o = sub.add_parser("overfit")
    o.add_argument("--set", default="arctic-cathy")
    o.add_argument("--n", type=int, default=20)
    o.add_argument("--mixer", default="summary")
    o.add_argument("--factor", type=int, default=4)
    o.add_argument("--batch-size", type=int, default=2)  # more updates per epoch
    o.add_argument("--lr", type=float, default=2e-3)
    o.add_argument("--max-steps", type=int, default=1500)
    o.add_argument("--budget", type=float, default=30.0, help="training minutes")
    o.add_argument("--wer-every", type=int, default=50)
    o.add_argument("--target", type=float, default=0.10)
    m = sub.add_parser("mixers")
    m.add_argument("--train", default=",".join(TRAIN_SETS))
    m.add_argument("--mixers", default="attention,summary,gaussian")
    m.add_argument("--factor", type=int, default=4)
    m.add_argument("--reducer", default="conv", choices=["conv", "stack", "ctc"], help="length reduction")
    m.add_argument("--budget", type=float, default=5.0, help="training minutes per mixer")
    m.add_argument("--clock", default="cpu", choices=["cpu", "wall"], help="what the budget counts")
    m.add_argument("--batch-size", type=int, default=4)
    m.add_argument("--lr", type=float, default=1e-3)
    m.add_argument("--warmup", type=int, default=10)
    m.add_argument("--limit", type=int, default=0)
    m.add_argument("--dev-limit", type=int, default=12)
    m.add_argument("--eval-every", type=int, default=25)
    m.add_argument("--seed", type=int, default=0)
    for p in (o, m):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--out", default=None)
        p.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.out is None:
        from rescore.io.models import cache_dir

        args.out = str(cache_dir() / "deep" / f"bench-{args.mode}")
    md = run_overfit(args) if args.mode == "overfit" else run_mixers(args)
    print(md)
    if not args.no_write:
        from eval.results import update_section

        reducer = getattr(args, "reducer", "conv")
        update_section(f"bench_deep_{args.mode}" + ("" if reducer == "conv" else f"_{reducer}"), md)


if __name__ == "__main__":
    main()
