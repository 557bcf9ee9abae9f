"""The cost of a deep-fusion training step, side by side in one run: blocks over every position (``attend all``,
the models of sessions 4-8) against blocks from the prompt's last token on (``attend reply``: the prompt in the
LM's cache, computed once without gradients), each in float32 and under bf16 autocast (on a CPU with AMX).

The same batches of real training examples (whisper-base states over tiny.en lists of each training set and
librispeech-dev, batch 4), one torch thread, CPU seconds per optimizer step (forward, backward, AdamW); each
configuration runs the batches twice and the second (warm) pass is reported. Ratios are to ``all, float32``.

    python -m eval.bench_xattn_step --per-set 12
"""

from __future__ import annotations

import argparse
import time

SETS = (
    ("librispeech-dev", "whisper-tiny.en"),
    ("an4-train", "tiny-en"),
    ("arctic-cathy", "tiny-en"),
    ("speechocean-train", "tiny-en"),
)
RUNS = (("all", "fp32"), ("all", "bf16"), ("reply", "fp32"), ("reply", "bf16"))


def step_seconds(attend: str, precision: str, examples: list, order: list[list[int]]) -> tuple[float, float]:
    """(CPU seconds per step on the warm pass, mean loss of that pass) of a fresh base-audio model."""
    import torch

    from rescore.deep.train import autocast, make_batch
    from rescore.deep.xattn import XAttnConfig, build_xattn

    torch.manual_seed(0)
    cfg = XAttnConfig(encoder="whisper-base", kv_init="whisper-base", attend=attend).fit_width(512)
    model = build_xattn(cfg)
    model.train()
    model.llm.eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    seconds, losses = 0.0, []
    for _ in range(2):
        t0, losses = time.process_time(), []
        for idx in order:
            with autocast("cpu", precision):
                loss, _ = model.loss(make_batch(examples, idx))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        seconds = (time.process_time() - t0) / len(order)
    return seconds, sum(losses) / len(losses)


def run(args: argparse.Namespace) -> str:
    import torch

    from eval.bench_xattn import nbest_file
    from rescore.deep.train import batches, load_nbest_examples

    torch.set_num_threads(1)
    files = [nbest_file(s, m) for s, m in SETS]
    examples = load_nbest_examples(files, "whisper-base", limit=args.per_set, on_issue=print)
    order = batches(examples, 4, 0)
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for attend, precision in RUNS:
        results[(attend, precision)] = step_seconds(attend, precision, examples, order)
        print(attend, precision, results[(attend, precision)], flush=True)
    ref = results[("all", "fp32")][0]
    lists = ", ".join(f"{s}.{m}" for s, m in SETS)
    rows = [
        f"| {attend} | {precision} | {sec:.2f} | {sec / ref:.2f} | {loss:.3f} |"
        for (attend, precision), (sec, loss) in results.items()
    ]
    return f"""### Deep fusion: cost of a training step (issue 15, session 9)

{len(examples)} examples ({args.per_set} of each of {lists}; whisper-base states), {len(order)} batches of 4,
one torch thread, CPU seconds per optimizer step on the second of two passes; loss: that pass's mean (the two
modes are different models, so their losses differ after the first steps). Command:
`python -m eval.bench_xattn_step --per-set {args.per_set}`

| attend | precision | CPU s / step | ratio to all, float32 | mean loss |
|---|---|---:|---:|---:|
{chr(10).join(rows)}
"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_xattn_reply_speed")
    ap.add_argument("--per-set", type=int, default=12, help="examples of each set")
    args = ap.parse_args()
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
