"""The later pipeline stages (rerank, correct), registered on :mod:`rescore.pipeline`.

Each stage is the same library call the stage's own command makes (``rescore rerank``, ``rescore correct``),
wrapped as a runner over records. Under ``engine = "ray"`` the model-loading part becomes a picklable
factory that Ray actors call once, and records stream through them in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rescore.datasets import Dataset
from rescore.pipeline import RunConfig, register_stage
from rescore.records import NBest

# ---------------------------------------------------------------------------------------------- rerank


def rerank_weights(cfg: RunConfig) -> Any:
    """Weights from the configured ``rescore tune`` file, else the rerank library's defaults.

    The defaults (``am_norm`` + 0.004 per LM + 0.03 per word) are what ``tune`` chose on librispeech-dev
    (tiny.en 8-best): figures reported on that set with them are in-sample; the cross-validated figure is
    in eval/RESULTS.md.
    """
    from rescore.lm import short_name
    from rescore.rerank import RerankConfig, default_weights, lm_key

    if cfg.rerank.weights:
        return RerankConfig.load(cfg.rerank.weights).weights
    return default_weights([lm_key(short_name(n)) for n in cfg.rerank.lm])


class RerankFactory:
    """Loads the LM scorers once (per process or Ray actor); returns a function streaming reranked records."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def __call__(self):
        from rescore.lm import make_scorer
        from rescore.rerank import rerank_iter

        opts = self.cfg.rerank
        scorers = [make_scorer(name, opts.backend) for name in opts.lm]
        weights = rerank_weights(self.cfg)

        def run(records: list[NBest]) -> Iterator[NBest]:
            return rerank_iter(records, scorers, weights, context=opts.context or "", previous=opts.previous)

        return run


def _rerank(cfg: RunConfig, dataset: Dataset, todo: list[NBest]) -> Iterator[NBest]:
    # --previous conditions each utterance on the ones chosen before it: that order only holds in one process
    if cfg.engine == "ray" and cfg.rerank.previous == 0:
        from rescore.scale import ray_map

        yield from ray_map(todo, RerankFactory(cfg), actors=cfg.ray.actors, batch_size=cfg.ray.batch_size)
    else:
        yield from RerankFactory(cfg)()(todo)


def _file_digest(path: str | Path | None) -> str | None:
    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


register_stage(
    "rerank",
    _rerank,
    lambda c: c.rerank.enabled,
    lambda c: c.rerank.model_dump() | {"weights_digest": _file_digest(c.rerank.weights)},
)


# ---------------------------------------------------------------------------------------------- correct


class CorrectFactory:
    """Loads the corrector LLM once (per process or Ray actor); returns a function correcting records."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def __call__(self):
        from rescore.correct import CorrectorConfig, LLMCorrector, examples_from_records
        from rescore.records import read_nbest

        o = self.cfg.correct
        examples = examples_from_records(read_nbest(o.examples, strict=False), o.n_examples) if o.examples else []
        config = CorrectorConfig(
            llm=o.llm,
            backend=o.backend,
            template=o.prompt,
            adapter=o.adapter,
            domain=o.domain,
            entities=o.entities,
            examples=examples,
        )
        corrector = LLMCorrector(config)

        def run(records: list[NBest]) -> Iterator[NBest]:
            for r in records:
                try:
                    corrector.correct(r)
                except (ValueError, RuntimeError) as e:  # one bad record: recorded, the run goes on
                    r.error = f"correct: {e}"
                yield r

        return run


def _correct(cfg: RunConfig, dataset: Dataset, todo: list[NBest]) -> Iterator[NBest]:
    if cfg.engine == "ray":
        from rescore.scale import ray_map

        yield from ray_map(todo, CorrectFactory(cfg), actors=cfg.ray.actors, batch_size=cfg.ray.batch_size)
    else:
        yield from CorrectFactory(cfg)()(todo)


register_stage(
    "correct",
    _correct,
    lambda c: c.correct.enabled,
    lambda c: (
        c.correct.model_dump()
        | {
            "entities_digest": _file_digest(c.correct.entities),
            "adapter_digest": _adapter_digest(c.correct.adapter),
            "examples_digest": _file_digest(c.correct.examples),
        }
    ),
)


def _adapter_digest(path: str | None) -> str | None:
    """A LoRA adapter folder changes when retrained: hash its weight files' sizes and times."""
    if not path or not Path(path).is_dir():
        return _file_digest(path) if path and Path(path).is_file() else None
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- deep fusion


def deep_checkpoint(cfg: RunConfig) -> Path:
    """The configured speech-LLM folder, else the one ``rescore deep train`` writes by default."""
    from rescore.models import cache_dir

    return Path(cfg.deep.checkpoint) if cfg.deep.checkpoint else cache_dir() / "deep" / "model"


def _deep(cfg: RunConfig, dataset: Dataset, todo: list[NBest]) -> Iterator[NBest]:
    """Decode the audio again with the deep-fusion speech-LLM: an alternative system, scored as its own row."""
    from rescore.fusion.recognize import DeepFusionRecognizer

    ckpt = deep_checkpoint(cfg)
    if not (ckpt / "config.json").exists() and not ckpt.is_dir():
        raise ValueError(f"deep fusion is enabled but {ckpt} holds no trained model: run `rescore deep train` first")
    recognizer = DeepFusionRecognizer(ckpt, device=cfg.transcribe.device)
    wanted = {r.id for r in todo}
    yield from recognizer.recognize([u for u in dataset.utterances if u.id in wanted])


def _deep_options(cfg: RunConfig) -> dict[str, Any]:
    ckpt = deep_checkpoint(cfg)
    return cfg.deep.model_dump() | {"checkpoint_digest": _adapter_digest(str(ckpt))}


register_stage("deep", _deep, lambda c: c.deep.enabled, _deep_options)
