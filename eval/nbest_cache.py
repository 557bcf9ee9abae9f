"""The first-pass n-best lists the benchmarks start from, made once per set and kept in the cache folder.

``nbest_for("librispeech-dev")`` returns ``cache_dir()/nbest/librispeech-dev.tiny-en.jsonl`` after making
(or finishing) it with the same recognizer settings as ``rescore transcribe`` (tiny.en, CTranslate2 int8,
beam 8, 8 hypotheses), so every benchmark reproduces from a clean machine with one command.
"""

from __future__ import annotations

from pathlib import Path

from rescore.io.datasets import load_dataset
from rescore.io.models import cache_dir
from rescore.records import NBestWriter, read_nbest
from rescore.registry import make_recognizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TAGS = {"whisper-tiny.en": "tiny-en", "whisper-base": "base"}


_RECOGNIZERS: dict[tuple[str, int], object] = {}


def nbest_for(
    set_name: str,
    model: str = "whisper-tiny.en",
    *,
    nbest: int = 8,
    ids: list[str] | None = None,
    tag: str | None = None,
) -> Path:
    """The n-best file of a set of ../shared/data, transcribed (or resumed) when incomplete; with ``ids``
    only those utterances are made sure of (the file may hold more). ``tag``: the file's model part (default:
    ``TAGS``'s short name of the model)."""
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
            key = (model, nbest)
            if key not in _RECOGNIZERS:  # one model load per process, however many sets
                _RECOGNIZERS[key] = make_recognizer(
                    "ctranslate2", model=model, nbest=nbest, beam_size=nbest, device="cpu"
                )
            for record in _RECOGNIZERS[key].recognize(todo):  # type: ignore[attr-defined]
                writer.write(record)
    return path
