"""Generative error correction: an instruction-tuned LLM rewrites the reranked transcript from its n-best.

``Corrector.correct(nbest) -> NBest`` renders a prompt template (prompts/*.j2) with the quoted hypotheses,
the reranked choice, an optional domain description and the entity-list entries closest to the n-best,
asks the LLM greedily for one line, cleans it, and lets the guards accept it or abstain (keep the
reranked text). The record gets ``corrected`` and, in ``correction``, everything needed to audit it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from rescore.correct.entities import EntityRetriever, load_entities
from rescore.correct.guards import (
    GuardConfig,
    check_output,
    clean_output,
    prepare_input,
    prompt_texts,
    quote,
    vocabulary,
    vocabulary_used,
)
from rescore.correct.llm import ChatLLM, make_llm
from rescore.correct.prompts import PromptTemplate, load_template
from rescore.correct.verify import AudioVerifier, after_verification
from rescore.records import NBest

__all__ = [
    "Corrector",
    "CorrectorConfig",
    "FallbackCorrector",
    "GuardConfig",
    "LLMCorrector",
    "AudioVerifier",
    "examples_from_records",
    "make_corrector",
    "chat_llm_for",
]


class Corrector(Protocol):
    """Adds ``corrected`` and ``correction`` to a record (never drops anything)."""

    def correct(self, nbest: NBest) -> NBest: ...


@dataclass
class CorrectorConfig:
    """Everything that decides a correction; stored (minus the examples) in each record's metadata."""

    llm: str = "qwen2.5-0.5b"
    backend: str = "llama-cpp"
    template: str = "nbest"
    adapter: str | None = None  # LoRA adapter folder (transformers backend)
    domain: str | None = None
    entities: str | None = None  # file, one name or term per line
    top_k_entities: int = 5
    max_hypotheses: int = 8
    distinct: bool = True  # hypotheses equal after normalisation are shown once
    n_threads: int | None = None
    n_ctx: int = 4096
    reuse_prefix: bool = True
    new_tokens_factor: float = 2.0  # cap on new tokens: factor x the longest hypothesis + new_tokens_extra
    new_tokens_extra: int = 16
    guards: GuardConfig = field(default_factory=GuardConfig)
    examples: list[dict[str, Any]] = field(default_factory=list)  # few-shot: {hypotheses, best, output}


def examples_from_records(records: Iterable[NBest], k: int = 4, max_hypotheses: int = 4) -> list[dict[str, Any]]:
    """Few-shot examples from records with references (a training set): mostly ones the 1-best got wrong.

    Picks up to ``k - k // 4`` records whose first hypothesis differs from the reference and fills the rest
    with correct ones, in file order, so the examples show both fixing and keeping.
    """
    from rescore.evaluate.metrics import normalize

    wrong, right = [], []
    for r in records:
        if not r.ok or not r.hypotheses or not r.reference:
            continue
        hyps = [h.text for h in r.hypotheses[:max_hypotheses]]
        ex = {"hypotheses": [quote(h) for h in hyps], "best": quote(r.text("rerank")), "output": r.reference}
        (right if normalize(hyps[0]) == normalize(r.reference) else wrong).append(ex)
    n_right = k // 4
    return wrong[: k - n_right] + right[:n_right] if len(wrong) >= k - n_right else (wrong + right)[:k]


class LLMCorrector:
    """The corrector: template + chat LLM + entity retrieval + guards."""

    def __init__(
        self,
        config: CorrectorConfig,
        llm: ChatLLM | None = None,
        template: PromptTemplate | None = None,
        verifier: AudioVerifier | None = None,
    ):
        self.config = config
        self.verifier = verifier  # None: the text-level guards alone decide
        self.template = template or load_template(config.template)
        self.entity_list = load_entities(config.entities) if config.entities else []
        self.retriever = EntityRetriever(self.entity_list, k=config.top_k_entities) if self.entity_list else None
        norm = config.guards.normalizer
        context = [*self.entity_list, config.domain or "", *(ex.get("output", "") for ex in config.examples)]
        self.vocab = vocabulary(context, norm)
        self.llm = llm or chat_llm_for(config)

    def metadata(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self.config).items() if k not in {"examples", "guards"} and v is not None}
        d["template"] = self.template.name
        d["guard_config"] = asdict(self.config.guards)  # read back by correct.tuning.reguard / tune_guards
        d["vocabulary_size"] = len(self.vocab)  # entity list + domain + examples: the novel-word guard's list
        d["n_examples"] = len(self.config.examples)
        d.update({k: v for k, v in self.llm.info.items() if k not in d})
        return d

    def prompt(self, nbest: NBest) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The chat messages for one record and the input-guard report."""
        texts, chosen = prompt_texts(
            [h.text for h in nbest.hypotheses],
            nbest.chosen or 0,
            self.config.max_hypotheses,
            distinct=self.config.distinct,
            normalizer=self.config.guards.normalizer,
        )
        q = prepare_input(texts, chosen, self.config.guards)
        entities = [m.entity for m in self.retriever.retrieve(texts)] if self.retriever else []
        variables = {
            "best": q.best,
            "hypotheses": q.hypotheses,
            "others": q.others,
            "domain": self.config.domain,
            "entities": entities,
            "examples": self.config.examples,
        }
        report: dict[str, Any] = {"quoted": self.config.guards.quote, "entities": entities}
        if q.notes:
            report["sanitized"] = q.notes
        if q.instruction_like:
            report["instruction_like"] = q.instruction_like
        return self.template.render(variables), report

    def max_new_tokens(self, texts: list[str]) -> int:
        longest = max((self.llm.count_tokens(t) for t in texts), default=8)
        return int(self.config.new_tokens_factor * longest) + self.config.new_tokens_extra

    def correct(self, nbest: NBest) -> NBest:
        """Correct one record in place and return it. A record without hypotheses, or one whose audio the
        recognizer found to hold no speech (``no_speech``), is left as it is: an LLM asked to fix an empty
        transcript writes a plausible sentence ("you") where nobody spoke."""
        if not nbest.ok or not nbest.hypotheses or nbest.extra.get("no_speech"):
            return nbest
        t0 = time.perf_counter()
        reranked = nbest.text("rerank")
        texts = [h.text for h in nbest.hypotheses]
        messages, input_report = self.prompt(nbest)
        gen = self.llm.chat(messages, self.max_new_tokens(texts[: self.config.max_hypotheses] + [reranked]))
        g = self.config.guards
        cleaned, clean_notes = clean_output(gen.text) if g.clean else (gen.text.strip(), [])
        verdict = check_output(cleaned, texts, reranked, g, vocab=self.vocab, truncated=gen.truncated)
        accepted, reason, checked = after_verification(verdict, nbest, cleaned, self.verifier)
        nbest.corrected = cleaned if accepted else self.template.abstain_text(reranked)
        seconds = time.perf_counter() - t0
        nbest.correction = {
            **self.metadata(),
            "accepted": accepted,
            "reason": reason,
            "changed": accepted and verdict.changed,
            "guards_accepted": verdict.accepted,
            "verification": checked.to_dict() if checked else None,
            "output": gen.text,
            "cleaned": cleaned,
            "truncated": gen.truncated,  # with the cleaned output: enough to re-decide under other guards
            # the part of the vocabulary the (raw or cleaned) output can match: the novel-word guard re-decides
            # with it (correct.tuning.reguard) as it decided here, without the entity list at hand
            "guard_vocabulary": vocabulary_used([gen.text, cleaned], self.vocab, g.normalizer),
            "guards": {**input_report, "cleaning": clean_notes, **verdict.to_dict()},
            "prompt_tokens": gen.prompt_tokens,
            "reused_tokens": gen.reused_tokens,
            "new_tokens": gen.new_tokens,
            "generate_seconds": round(gen.seconds, 4),
            "tokens_per_second": round(gen.tokens_per_second, 2),
        }
        for k in ("accepted", "changed", "reason"):  # keep these from being shadowed by the verdict's copy
            nbest.correction["guards"].pop(k, None)
        nbest.timing["correct"] = round(seconds, 4)
        return nbest


NO_LLM = "off"  # ``--llm off``: FallbackCorrector


class FallbackCorrector:
    """No LLM: every record gets the template's abstention text, the reranked text (or, for a template with
    ``fallback: spelled``, its spelled view). This is what guards tuned on a training set choose when no LLM
    edit paid there (``rescore correct tune-guards`` -> the corrector off): the `spelling` preset uses it,
    since on an4-train the LLM's spellings lost to the deterministic spelled view at every guard setting."""

    def __init__(self, template: PromptTemplate) -> None:
        self.template = template

    def correct(self, nbest: NBest) -> NBest:
        if not nbest.ok or not nbest.hypotheses:
            return nbest
        reranked = nbest.text("rerank")
        nbest.corrected = self.template.abstain_text(reranked)
        nbest.correction = {
            "llm": NO_LLM,
            "template": self.template.name,
            "accepted": False,
            "changed": False,
            "reason": f"no LLM (--llm {NO_LLM}): the template's fallback text",
        }
        nbest.timing.setdefault("correct", 0.0)
        return nbest


def chat_llm_for(config: CorrectorConfig, make: Callable[..., ChatLLM] = make_llm) -> ChatLLM:
    """The chat LLM a corrector config names, built by ``make`` (the library's backends by default; the stage
    layer passes the registry's, which knows plugins)."""
    return make(
        config.backend,
        config.llm,
        adapter=config.adapter,
        n_threads=config.n_threads,
        n_ctx=config.n_ctx,
        reuse_prefix=config.reuse_prefix,
    )


def make_corrector(
    config: CorrectorConfig, *, make: Callable[..., ChatLLM] = make_llm, verifier: AudioVerifier | None = None
) -> LLMCorrector | FallbackCorrector:
    """The corrector a config names: the template's fallback text for ``llm = "off"`` (no model loaded), else
    the LLM corrector over ``chat_llm_for(config, make)``."""
    if config.llm == NO_LLM:
        return FallbackCorrector(load_template(config.template))
    return LLMCorrector(config, llm=chat_llm_for(config, make), verifier=verifier)
