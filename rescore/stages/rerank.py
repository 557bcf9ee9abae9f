"""LM rescoring as a stage: ``lm:<name>`` scores on every hypothesis, then the weighted choice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from rescore.io.models import file_digest
from rescore.records import NBest
from rescore.registry import make_scorer
from rescore.stages.base import BaseStage, PathStr, StageOptions

if TYPE_CHECKING:  # the ranker (numpy, rapidfuzz) loads with the stage: every CLI call reads these options
    from rescore.rerank.ranker import Weights

SHIPPED_RERANKER = Path(__file__).resolve().parents[1] / "data" / "reranker.json"


def needs_derived(weights: Weights) -> bool:
    """Whether the weights use features :func:`rescore.rerank.features.add_derived` computes."""
    from rescore.rerank.features import DERIVED_PREFIXES

    return any(k.startswith((*DERIVED_PREFIXES, "rank:")) for k in weights.scores)


def weights_file(path: str | None) -> str | None:
    """``shipped``: the learned reranker in the package (trained on training sets; see its ``tuning``)."""
    return str(SHIPPED_RERANKER) if path == "shipped" else path


class RerankOptions(StageOptions):
    """See ``rescore rerank``. ``weights`` is a file from ``rescore tune``; its LMs, backend, context and
    previous apply unless given here; ``lm_weight``/``length_bonus``/``am`` replace its (or the default) weights."""

    enabled: bool = Field(True, description="Run this stage (`rescore run`).")
    lm: list[str] = Field(
        ["smollm2-135m"],
        description="LM: smollm2-135m, qwen2.5-0.5b, a GGUF file or a transformers folder. Several (a list, or the"
        " flag repeated): an ensemble.",
    )
    backend: str = Field("hf", description="LM backend: hf (transformers, batched) or llamacpp (GGUF).")
    weights: PathStr | None = Field(
        None,
        description="Weights from `rescore tune` (also its LMs, backend, context and previous, unless given), or"
        " shipped: the learned reranker in the package.",
    )
    context: str | None = Field(None, description="Domain prompt the LM conditions on: P(hypothesis | prompt).")
    previous: int | None = Field(
        None, ge=0, description="Condition on the N transcripts chosen before, in the same recording."
    )
    lm_weight: list[float] | None = Field(
        None,
        description="Weight of each LM, in order, in place of the tuned or default ones (default 0.016 with am_norm,"
        " 0.1 with am).",
    )
    length_bonus: float | None = Field(
        None,
        description="Bonus per word, in place of the tuned or default one (default 0.05 with am_norm, 0.4 with am).",
    )
    am: str = Field("am_norm", description="Acoustic score of the default weights: am_norm (per token) or am (summed).")
    min_length_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Truncation guard: never choose a hypothesis with fewer words than this share of the first"
        " one's (0: off; default: the tuned weights' own, 0.5 with the default weights, else off).",
    )
    threads: int = Field(2, ge=1, description="CPU threads for the LM.")
    batch_tokens: int = Field(1024, ge=16, description="Token budget of one forward pass (hf backend).")


@dataclass
class RerankPlan:
    """Options resolved against a tuned config: which LMs, on what backend, after what, with what weights."""

    lms: list[str]
    backend: str
    context: str
    previous: int
    weights: Weights
    # for records without the acoustic score of ``weights`` but with their list ``rank`` (imported text-only
    # n-best): the rank-prior defaults; None when the weights were given or tuned (they apply to every record)
    text_only: Weights | None = None
    acoustic: str = "am_norm"
    min_length_ratio: float = 0.0


def plan_rerank(o: RerankOptions) -> RerankPlan:
    """Precedence: explicit options, then the tuned config file, then the defaults. ValueError if they clash."""
    from rescore.rerank.ranker import (
        DEFAULT_KEYS,
        DEFAULT_MIN_LENGTH_RATIO,
        RANK_KEY,
        RerankConfig,
        Weights,
        default_weights,
        lm_key,
    )
    from rescore.score import short_name

    cfg = RerankConfig.load(weights_file(o.weights)) if o.weights else None
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
    text_only = None
    if cfg is not None and o.lm_weight is None:
        weights = Weights(dict(cfg.weights.scores), cfg.weights.length_bonus)
    else:
        if o.lm_weight is None and o.length_bonus is None and "am" not in o.model_fields_set:
            text_only = default_weights(keys, am=RANK_KEY)  # used only where a record has no acoustic score
        if o.am in DEFAULT_KEYS or o.lm_weight is None or o.length_bonus is None:
            weights = default_weights(keys, am=o.am)  # on the scale of that acoustic score (ValueError if none)
        else:
            weights = Weights({o.am: 1.0}, 0.0)  # another acoustic key, with every weight given
        for k, w in zip(keys, o.lm_weight or [], strict=False):
            weights.scores[k] = w
    if o.length_bonus is not None:
        weights.length_bonus = o.length_bonus
    context = o.context if o.context is not None else (cfg.context if cfg else "")
    previous = o.previous if o.previous is not None else (cfg.previous if cfg else 0)
    ratio = o.min_length_ratio
    if ratio is None:  # a tuned config's own guard, else the default weights' (none for weights given by hand)
        default_ratio = DEFAULT_MIN_LENGTH_RATIO if o.lm_weight is None and o.length_bonus is None else 0.0
        ratio = float((cfg.tuning or {}).get("min_length_ratio", 0.0)) if cfg is not None else default_ratio
    return RerankPlan(names, backend, context, previous, weights, text_only, o.am, ratio)


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
        return self.opts.model_dump() | {"weights_digest": file_digest(weights_file(self.opts.weights))}

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
        """Rerank with the plan's weights; records without its acoustic score but with their list rank (an
        imported text-only n-best) get the rank-prior weights instead, unless weights were given or tuned."""
        from rescore.rerank.features import add_derived
        from rescore.rerank.ranker import SKIPPED_KEY, is_text_only, rerank_iter

        p = self.plan
        if needs_derived(p.weights):  # a learned reranker's features computed from the list itself
            add_derived(records)
        groups = [(p.weights, records)]
        if p.text_only is not None:
            text = [r for r in records if r.ok and is_text_only(r, p.acoustic)]
            if text:
                ids = {id(r) for r in text}
                groups = [(p.weights, [r for r in records if id(r) not in ids]), (p.text_only, text)]
        out: list[NBest] = []
        for weights, group in groups:
            if not group:
                continue
            done = list(
                rerank_iter(
                    group,
                    self.load(),
                    weights,
                    context=p.context,
                    previous=p.previous,
                    min_length_ratio=p.min_length_ratio,
                )
            )
            for r in done:
                skipped = r.extra.pop(SKIPPED_KEY, None)
                if skipped:  # passed through with its first pass: nothing of these weights applies to it
                    r.extra["rerank"] = {"skipped": skipped}
                    continue
                r.extra["rerank"] = {
                    "weights": weights.describe(),
                    "backend": p.backend,
                    "previous": p.previous,
                    # what verification of a later correction needs to judge it on the same scale
                    "weight_scores": dict(weights.scores),
                    "length_bonus": weights.length_bonus,
                    "min_length_ratio": p.min_length_ratio,
                }
            out.extend(done)
        if len(groups) > 1:  # both kinds: back in input order (rerank_iter yields the records it was given)
            order = {id(r): i for i, r in enumerate(records)}
            out.sort(key=lambda r: order[id(r)])
        return out
