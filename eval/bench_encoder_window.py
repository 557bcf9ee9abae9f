"""What the encoder's own-length window saves, and how far its states move: Whisper encoder states of the same
utterances with every window padded to 30 s (``padded``, as Whisper was trained) and cut to the utterance's
own length (``own``), in one run.

CPU seconds per utterance of ``WhisperEncoder.encode_audio`` (CTranslate2 int8, the cache bypassed) for each
window, their ratio, and the per-frame cosine between the two windows' states (mean over frames, then over
utterances; and the lowest utterance). The first N utterances of each set, for tiny.en and base.

    python -m eval.bench_encoder_window --per-set 16
"""

from __future__ import annotations

import argparse
import time

SETS = ("arctic-cathy", "an4-train", "speechocean-train", "librispeech-dev")
MODELS = ("whisper-tiny.en", "whisper-base")


def cosines(a: list, b: list) -> list[float]:
    """Mean per-frame cosine of each pair of state arrays."""
    import numpy as np

    out = []
    for x, y in zip(a, b, strict=True):
        cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-9)
        out.append(float(cos.mean()))
    return out


def run(args: argparse.Namespace) -> str:
    from eval.nbest_cache import DATA
    from rescore.io.audio import load_audio
    from rescore.io.datasets import load_dataset
    from rescore.whisper.encoder import WhisperEncoder

    audios, seconds = {}, {}
    for name in SETS:
        utts = load_dataset(DATA / name).utterances[: args.per_set]
        audios[name] = [load_audio(u.audio, u.start, u.end) for u in utts]
        seconds[name] = sum(len(a) for a in audios[name]) / 16000 / max(len(utts), 1)
    rows = []
    for model in MODELS:
        enc = {w: WhisperEncoder(model, window=w) for w in ("padded", "own")}
        for name in SETS:
            states, cpu = {}, {}
            for w, e in enc.items():
                e.encode_audio(audios[name][:1])  # warm-up
                t0 = time.process_time()
                states[w] = e.encode_audio(audios[name])
                cpu[w] = (time.process_time() - t0) / len(audios[name])
            cos = cosines(states["padded"], states["own"])
            rows.append(
                f"| {model} | {name} | {len(audios[name])} | {seconds[name]:.1f} | {cpu['padded']:.2f} | "
                f"{cpu['own']:.2f} | {cpu['own'] / cpu['padded']:.2f} | {sum(cos) / len(cos):.3f} | {min(cos):.3f} |"
            )
            print(rows[-1], flush=True)
    import sys

    command = "python -m eval.bench_encoder_window " + " ".join(sys.argv[1:])
    return f"""### Encoder windows: padded to 30 s against each utterance's own length

`WhisperEncoder.encode_audio` (CTranslate2 int8, no cache) of the first {args.per_set} utterances of each set,
both windows in one run; CPU seconds per utterance (the process's, both cores); cosine: per-frame cosine between
the two windows' states, mean over frames then over utterances, and the lowest utterance's.
Command: `{command}`

| encoder | set | utterances | mean audio s | padded CPU s/utt | own CPU s/utt | ratio | cosine mean | cosine min |
|---|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

The own window is another input than the one Whisper was trained on (cosine below 1), so a deep model trained on
it is decoded on it (`XAttnConfig.encoder_window`); the saving shrinks as utterances approach 30 s.
"""


def main() -> None:
    from eval.results import bench_parser, publish_run

    ap = bench_parser(__doc__, "bench_encoder_window")
    ap.add_argument("--per-set", type=int, default=16)
    args = ap.parse_args()
    publish_run(run(args), args)


if __name__ == "__main__":
    main()
