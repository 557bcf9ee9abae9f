"""Scale-out on Ray Data: the same stage objects in model actors, the same records out.

:class:`RayEngine` is an :class:`rescore.runner.Engine`: the runner hands it a stage and its records, Ray
Data streams JSON-encoded records through ``map_batches`` with a pool of actors, each holding one copy of
the stage (its model loaded once per actor). Order is preserved, so the output file is identical to the
local engine's. On a cluster, set ``RAY_ADDRESS`` (or run on the head node) and actors spread over its
nodes, taking a GPU each when ``num_gpus`` is set. A stage that needs its whole input in one call
(``batch_size`` None, e.g. rerank conditioned on previous utterances) runs in this process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rescore.records import NBest
from rescore.runner import LocalEngine, Stage, in_input_order


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
    """A model actor: loads the stage once, then maps batches of JSON records through it."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        if hasattr(stage, "load"):
            stage.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        records = [NBest.from_dict(json.loads(s)) for s in batch["record"]]
        done = in_input_order(records, self.stage.process(records), self.stage.name)
        return {"record": [r.to_json() for r in done]}


@dataclass
class RayEngine:
    """Runs a stage's batches on ``actors`` Ray actors (``gpus_per_actor`` GPUs each)."""

    actors: int = 1
    batch_size: int = 8
    gpus_per_actor: float = 0.0
    threads_per_actor: int = 0  # 0: actor_threads() decides

    def actor_threads(self) -> str:
        """Each actor's OMP_NUM_THREADS: the option, else the driver's own, else this machine's cores shared among
        the actors. Ray would set 1, and on some CPUs CTranslate2's int8 kernels then score differently from the
        local engine's (about 1 % of ``am`` on an AMD EPYC: tests/test_pipeline.py)."""
        if self.threads_per_actor:
            return str(self.threads_per_actor)
        return os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // self.actors))

    def map(self, stage: Stage, records: list[NBest]) -> Iterator[NBest]:
        if stage.batch_size is None:
            yield from LocalEngine().map(stage, records)
            return
        if not records:
            return
        ray = ensure_ray()
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ds = ray.data.from_items([{"record": r.to_json()} for r in records]).map_batches(
            _Actor,
            fn_constructor_args=(stage,),
            batch_size=self.batch_size,
            concurrency=self.actors,
            num_gpus=self.gpus_per_actor,
            batch_format="default",
            runtime_env={"env_vars": {"OMP_NUM_THREADS": self.actor_threads()}},
        )
        for row in ds.iter_rows():
            yield NBest.from_dict(json.loads(row["record"]))
