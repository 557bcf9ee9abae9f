"""Forward+backward time and peak memory of the bridge's token mixers against sequence length.

Self-attention costs O(T^2) time; SummaryMixing and Gaussian adaptive attention only use utterance
statistics, O(T). Each mixer runs in its own child process on lengths in increasing order, so the child's
peak resident memory above its baseline is the peak of that length's forward+backward. Times are medians
of ``--reps`` runs; the growth ratios (time at T over time at the shortest T) are measured within one run.

    python -m eval.bench_mixers [--lengths 250,500,1000,2000,4000] [--dim 512] [--batch 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MIXER_NAMES = {"attention": "self-attention", "summary": "SummaryMixing", "gaussian": "Gaussian adaptive"}


def child(kind: str, lengths: list[int], dim: int, heads: int, batch: int, reps: int, threads: int) -> None:
    """Measure one mixer; prints one JSON line per length."""
    import resource
    import statistics
    import time

    import torch

    from rescore.deep.mixers import make_mixer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mixer = make_mixer(kind, dim, heads)

    def step(t: int) -> float:
        x = torch.randn(batch, t, dim, requires_grad=True)
        mask = torch.ones(batch, t, dtype=torch.bool)
        mask[0, t - t // 10 :] = False  # some padding, as in real batches
        t0 = time.perf_counter()
        mixer(x, mask).square().mean().backward()
        return time.perf_counter() - t0

    step(64)  # warm up kernels before taking the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for t in lengths:
        times = [step(t) for _ in range(reps)]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        row = {"mixer": kind, "frames": t, "seconds": statistics.median(times), "peak_mb": (peak - base) / 1024}
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="250,500,1000,2000,4000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)  # on a shared CPU, 2 threads spin and run 10x slower
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print only; do not update eval/RESULTS.md")
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.child:
        child(args.child, lengths, args.dim, args.heads, args.batch, args.reps, args.threads)
        return

    rows: dict[str, dict[int, dict]] = {}
    for kind in MIXER_NAMES:
        cmd = [sys.executable, "-m", "eval.bench_mixers", "--child", kind, "--lengths", args.lengths]
        cmd += ["--dim", str(args.dim), "--heads", str(args.heads), "--batch", str(args.batch)]
        cmd += ["--reps", str(args.reps), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[kind] = {}
        for line in proc.stdout.splitlines():
            r = json.loads(line)
            rows[kind][r["frames"]] = r
            print(
                f"{kind:10s} T={r['frames']:5d}  {1000 * r['seconds']:9.1f} ms  peak +{r['peak_mb']:8.1f} MB",
                flush=True,
            )

    t0, t1 = lengths[0], lengths[-1]
    head = "| frames | " + " | ".join(f"{MIXER_NAMES[k]} ms | MB" for k in MIXER_NAMES) + " |"
    lines = [head, "|---:|" + "---:|---:|" * len(MIXER_NAMES)]
    for t in lengths:
        cells = " | ".join(f"{1000 * rows[k][t]['seconds']:.1f} | {rows[k][t]['peak_mb']:.0f}" for k in MIXER_NAMES)
        lines.append(f"| {t} | {cells} |")
    growth = []
    for k in MIXER_NAMES:
        tr = rows[k][t1]["seconds"] / rows[k][t0]["seconds"]
        mr = rows[k][t1]["peak_mb"] / max(rows[k][t0]["peak_mb"], 1e-3)
        growth.append(f"| {MIXER_NAMES[k]} | {tr:.1f}x | {mr:.1f}x |")
    att_vs = [
        f"{MIXER_NAMES[k]} {rows['attention'][t1]['seconds'] / rows[k][t1]['seconds']:.1f}x"
        for k in ("summary", "gaussian")
    ]
    command = "python -m eval.bench_mixers " + " ".join(
        f"--{k} {v}" for k, v in [("lengths", args.lengths), ("dim", args.dim), ("batch", args.batch)]
    )
    md = f"""### Bridge mixers: time and memory against length

One mixer layer (width {args.dim}, {args.heads} heads, batch {args.batch}, 10 % padding in the first utterance),
forward+backward, median of {args.reps} runs, {args.threads} torch threads; peak = the child process's peak
resident memory above its baseline (CPU). Command: `{command}`

{chr(10).join(lines)}

Growth from {t0} to {t1} frames ({t1 // t0}x longer; linear would be {t1 // t0}x, quadratic {(t1 // t0) ** 2}x):

| mixer | time | peak memory |
|---|---:|---:|
{chr(10).join(growth)}

At {t1} frames self-attention takes longer than: {", ".join(att_vs)}. PyTorch's CPU attention kernel is
fused (it does not keep the T x T matrix for backward), so its memory can grow less than quadratically while
its time grows quadratically. The machine is shared: compare ratios within this table only.
"""
    print(md)
    if not args.no_write:
        from eval.results import update_section

        update_section("bench_mixers", md)


if __name__ == "__main__":
    main()
