"""What the benchmarks share: the data folder, the first-pass lists they start from, a clock, table rows.

``nbest_for("librispeech-dev")`` returns ``cache_dir()/nbest/librispeech-dev.tiny-en.jsonl`` after making (or
finishing) it with ``rescore transcribe``'s recognizer settings (tiny.en, CTranslate2 int8, beam 8, 8 hypotheses), so
every benchmark reproduces from a clean machine with one command.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TAGS = {"whisper-tiny.en": "tiny-en", "whisper-base": "base"}
_RECOGNIZERS: dict[tuple[str, int], Any] = {}


def nbest_for(
    set_name: str,
    model: str = "whisper-tiny.en",
    *,
    nbest: int = 8,
    ids: list[str] | None = None,
    tag: str | None = None,
) -> Path:
    """The n-best file of a set of ../shared/data, transcribed (or resumed) when incomplete; with ``ids`` only
    those utterances are made sure of (the file may hold more). ``tag``: the file's model part (default:
    ``TAGS``'s short name of the model)."""
    from rescore.io.datasets import load_dataset
    from rescore.io.models import cache_dir
    from rescore.records import NBestWriter, read_nbest

    path = cache_dir() / "nbest" / f"{set_name}.{tag or TAGS.get(model, Path(model).name)}.jsonl"
    utts = load_dataset(DATA / set_name).utterances
    if ids is not None:
        wanted = set(ids)
        utts = [u for u in utts if u.id in wanted]
    if path.exists() and {u.id for u in utts} <= {r.id for r in read_nbest(path, strict=False) if r.ok}:
        return path  # complete: read without the writer's lock, so benchmarks started together share it
    with NBestWriter(path) as writer:
        todo = [u for u in utts if u.id not in writer.done]
        if todo:
            print(f"transcribing {len(todo)} utterances of {set_name} into {path}", flush=True)
            if (model, nbest) not in _RECOGNIZERS:  # one model load per process, however many sets
                _RECOGNIZERS[model, nbest] = first_pass(model, nbest=nbest, beam_size=nbest)
            for record in _RECOGNIZERS[model, nbest].recognize(todo):
                writer.write(record)
    return path


def first_pass(model: str | list[str], **options: Any) -> Any:
    """The recognizer ``rescore transcribe`` builds (its stage; on the CPU unless ``device`` is given)."""
    from rescore.stages import TranscribeOptions, TranscribeStage

    return TranscribeStage(TranscribeOptions(model=model, **{"device": "cpu", **options})).load()


def dataset(name_or_path: str | Path) -> Any:
    """A data set by name (a folder of ../shared/data) or by path."""
    from rescore.io.datasets import load_dataset

    path = Path(name_or_path)
    return load_dataset(path if path.exists() else DATA / path)


def command(prog: str, argv: Sequence[str] | None = None) -> str:
    """The command line that ran: ``python -m eval.PROG ARGS``."""
    return f"python -m eval.{prog} {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()


def load() -> float:
    """The 1-minute load average (2 shared cores: timings are noisy above 2)."""
    return os.getloadavg()[0]


class Clock:
    """Summed wall and CPU seconds (this process, all threads) of the blocks timed with it."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def errors(refs: Sequence[str], hyps: Sequence[str], normalizer: str = "whisper") -> tuple[Any, Any]:
    """Per-utterance word errors and reference lengths under ``normalizer``."""
    from rescore.evaluate.metrics import edit_counts, normalize

    c = edit_counts([normalize(r, normalizer) for r in refs], [normalize(h, normalizer) for h in hyps])
    return c.errors, c.ref


ROW_HEAD = "| system | WER % (95 % CI) | better/worse | p |"


def row(
    name: str,
    refs: Sequence[str],
    hyps: Sequence[str],
    base: Sequence[str] | None = None,
    *,
    normalizer: str = "whisper",
    extra: Sequence[str] = (),
) -> str:
    """One line of an accuracy table: WER with its bootstrap interval and, against the ``base`` texts,
    utterances made better/worse (the harm) and the paired bootstrap p that the system is not better."""
    from rescore.evaluate.metrics import bootstrap_ci, paired_change

    e, n = errors(refs, hyps, normalizer)
    lo, hi = bootstrap_ci(e, n)
    cells = [name, f"{100 * e.sum() / n.sum():.2f} ({100 * lo:.2f}-{100 * hi:.2f})", "", ""]
    if base is not None:
        c = paired_change(errors(refs, base, normalizer)[0], e, n)
        cells[2:] = [f"{c.better}/{c.worse}", f"{c.p:.3f}"]
    return "| " + " | ".join([*cells, *extra]) + " |"


def corrected(stage: Any, records: Sequence[Any], out: Path) -> list[Any]:
    """``records`` through a correct stage (``rescore correct``'s), resuming (then reading back) the file ``out``."""
    from rescore.records import NBestWriter, read_nbest

    out.parent.mkdir(parents=True, exist_ok=True)
    with NBestWriter(out, resume=True) as w:
        todo = [r for r in records if r.id not in w.done]
        print(f"{len(records) - len(todo)} already corrected in {out}; {len(todo)} to go", flush=True)
        for i, r in enumerate(todo, 1):
            r = stage.process([r])[0]
            w.write(r)
            c = r.correction or {}
            print(f"[{i}/{len(todo)}] {r.timing.get('correct', 0):.1f}s {c.get('reason')}: {r.corrected!r}", flush=True)
    done = {r.id: r for r in read_nbest(out)}
    return [done[r.id] for r in records if r.id in done]
