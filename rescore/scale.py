"""Scale-out on Ray Data: the same stage code in model actors, the same records out.

Each stage is given as a *factory* (a picklable callable that loads the model once per actor and returns a
function from a batch of records to a batch of records). Ray Data streams JSON-encoded records through
``map_batches`` with a pool of actors; order is preserved, so the output file is identical to the local
engine's. On a cluster, set ``RAY_ADDRESS`` (or run on the head node) and actors spread over its nodes,
taking a GPU each when ``num_gpus`` is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any

from rescore.datasets import Utterance
from rescore.records import NBest

BatchFn = Callable[[list[NBest]], Iterable[NBest]]


def ensure_ray(num_cpus: int | None = None) -> Any:
    """Connect to ``RAY_ADDRESS`` when set, else start (or reuse) a local Ray instance."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    return ray


class _Actor:
    """A model actor: builds the stage function once, then maps batches of JSON records."""

    def __init__(self, factory: Callable[[], BatchFn]) -> None:
        self.fn = factory()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        records = [NBest.from_dict(json.loads(s)) for s in batch["record"]]
        return {"record": [r.to_json() for r in self.fn(records)]}


def ray_map(
    records: Iterable[NBest],
    factory: Callable[[], BatchFn],
    *,
    actors: int = 1,
    batch_size: int = 8,
    num_gpus: float = 0.0,
) -> Iterator[NBest]:
    """Apply a stage to records with Ray Data actors; yields the results in input order."""
    ray = ensure_ray()
    items = [{"record": r.to_json()} for r in records]
    if not items:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = ray.data.from_items(items).map_batches(
        _Actor,
        fn_constructor_args=(factory,),
        batch_size=batch_size,
        concurrency=actors,
        num_gpus=num_gpus,
        batch_format="default",
    )
    for row in ds.iter_rows():
        yield NBest.from_dict(json.loads(row["record"]))


def utterance_records(utts: Iterable[Utterance]) -> list[NBest]:
    """Carry utterances through Ray as records (the first stage's input), audio span kept in ``extra``."""
    return [NBest(id=u.id, audio=u.audio, reference=u.reference, extra={"_utt": asdict(u)}) for u in utts]


class TranscribeFactory:
    """Picklable factory of the first-pass stage for :func:`ray_map`."""

    def __init__(self, backend: str, options: dict[str, Any]) -> None:
        self.backend, self.options = backend, options

    def __call__(self) -> BatchFn:
        from rescore.recognizers import make_recognizer

        recognizer = make_recognizer(self.backend, **self.options)

        def run(records: list[NBest]) -> list[NBest]:
            return list(recognizer.recognize([Utterance(**r.extra["_utt"]) for r in records]))

        return run
