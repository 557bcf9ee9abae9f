"""LM rescoring as a stage: ``lm:<name>`` scores on every hypothesis, then the weighted choice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from rescore.lm import short_name
from rescore.records import NBest
from rescore.registry import make_scorer
from rescore.rerank import AM_KEYS, RerankConfig, Weights, default_weights, lm_key, rerank_iter
from rescore.stages.base import BaseStage, StageOptions, file_digest


class RerankOptions(StageOptions):
    """See ``rescore rerank``. ``weights`` is a file from ``rescore tune``; its LMs, backend, context and
    previous apply unless given here; ``lm_weight``/``length_bonus``/``am`` replace its (or the default) weights."""

    enabled: bool = True
    lm: list[str] = ["smollm2-135m"]
    backend: str = "hf"
    weights: str | None = None
    context: str | None = None
    previous: int | None = Field(None, ge=0)
    lm_weight: list[float] | None = None
    length_bonus: float | None = None
    am: str = "am_norm"
    threads: int = Field(2, ge=1)
    batch_tokens: int = Field(1024, ge=16)


@dataclass
class RerankPlan:
    """Options resolved against a tuned config: which LMs, on what backend, after what, with what weights."""

    lms: list[str]
    backend: str
    context: str
    previous: int
    weights: Weights


def plan_rerank(o: RerankOptions) -> RerankPlan:
    """Precedence: explicit options, then the tuned config file, then the defaults. ValueError if they clash."""
    cfg = RerankConfig.load(o.weights) if o.weights else None
    lm_given = "lm" in o.model_fields_set
    names = list(o.lm) if lm_given or cfg is None else [s.name for s in cfg.lms] or list(o.lm)
    backend = o.backend
    if cfg is not None and not lm_given and cfg.lms and "backend" not in o.model_fields_set:
        backend = cfg.lms[0].backend
    keys = [lm_key(short_name(n)) for n in names]
    if len(set(keys)) < len(keys):
        raise ValueError("two LMs give the same score name; use distinct models")
    if o.lm_weight is not None and len(o.lm_weight) != len(names):
        raise ValueError(f"{len(o.lm_weight)} LM weight(s) for {len(names)} LM(s)")
    if cfg is not None and lm_given and o.lm_weight is None and set(keys) - {lm_key(s.name) for s in cfg.lms}:
        raise ValueError(f"LMs {', '.join(names)} differ from the ones {o.weights} was tuned for; give LM weights")
    if cfg is not None and o.lm_weight is None:
        weights = Weights(dict(cfg.weights.scores), cfg.weights.length_bonus)
    else:
        if o.am in AM_KEYS or o.lm_weight is None or o.length_bonus is None:
            weights = default_weights(keys, am=o.am)  # on the scale of that acoustic score (ValueError if none)
        else:
            weights = Weights({o.am: 1.0}, 0.0)  # another acoustic key, with every weight given
        for k, w in zip(keys, o.lm_weight or [], strict=False):
            weights.scores[k] = w
    if o.length_bonus is not None:
        weights.length_bonus = o.length_bonus
    context = o.context if o.context is not None else (cfg.context if cfg else "")
    previous = o.previous if o.previous is not None else (cfg.previous if cfg else 0)
    return RerankPlan(names, backend, context, previous, weights)


class RerankStage(BaseStage):
    """Scores hypotheses with each LM and picks by the weighted sum (``chosen``, ``total``)."""

    name = "rerank"
    batch_size = 32

    def __init__(self, options: RerankOptions, *, warn: Callable[[str], None] | None = None) -> None:
        super().__init__(options)
        self.plan = plan_rerank(options)
        self.warn = warn
        # with `previous`, each utterance is conditioned on those chosen before it: the whole input at once
        self.batch_size = None if self.plan.previous else 32

    def options(self) -> dict[str, Any]:
        return self.opts.model_dump() | {"weights_digest": file_digest(self.opts.weights)}

    def build(self) -> list[Any]:
        o: RerankOptions = self.opts  # type: ignore[assignment]
        scorers = []
        for name in self.plan.lms:
            extra = {"batch_tokens": o.batch_tokens} if self.plan.backend in {"hf", "transformers"} else {}
            scorer = make_scorer(name, self.plan.backend, threads=o.threads, **extra)
            if self.warn is not None:
                scorer.warn = self.warn
            scorers.append(scorer)
        return scorers

    def process(self, records: list[NBest]) -> list[NBest]:
        p = self.plan
        out = list(rerank_iter(records, self.load(), p.weights, context=p.context, previous=p.previous))
        for r in out:
            r.extra["rerank"] = {"weights": p.weights.describe(), "backend": p.backend, "previous": p.previous}
        return out
