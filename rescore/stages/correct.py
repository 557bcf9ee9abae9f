"""Generative error correction as a stage: an instruction LLM rewrites the reranked text, guards decide."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rescore.correct import (
    AudioVerifier,
    CorrectorConfig,
    FallbackCorrector,
    LLMCorrector,
    examples_from_records,
    make_corrector,
)
from rescore.correct.lora import adapter_settings
from rescore.records import NBest, read_nbest
from rescore.registry import make_llm
from rescore.runner import record_errors
from rescore.stages.base import BaseStage, StageOptions, file_digest, make_verifier, option_guards


class CorrectOptions(StageOptions):
    """See ``rescore correct``. A negative ``max_edit_ratio``/``max_novel_words`` turns that guard off."""

    enabled: bool = True
    llm: str = "qwen2.5-0.5b"  # "off": no LLM, the template's fallback text (correct.FallbackCorrector)
    backend: str = "llama-cpp"
    prompt: str | None = None  # template name or .j2 file; None: "nbest" (or the adapter's)
    domain: str | None = None
    entities: str | None = None
    top_k: int = Field(5, ge=0)
    adapter: str | None = None
    examples: str | None = None  # n-best JSONL with references (a training set): few-shot examples
    n_examples: int = Field(6, ge=0)
    max_hypotheses: int = Field(8, ge=1)
    distinct: bool = True  # hypotheses equal after normalisation are shown once (an adapter's own setting wins)
    max_edit_ratio: float = 0.3
    max_novel_words: int = 1
    quote: bool = True
    clean: bool = True
    threads: int = Field(0, ge=0)  # 0: the backend's default
    # acoustic verification (rescore.correct.verify): a proposal the guards let through must also win under
    # the weights the record was reranked with, scored against the audio; off: the guards alone decide
    verify: bool = True
    verify_margin: float = 0.0
    verify_device: str = "auto"
    # the judge: these acoustic models' summed scores (end token included, so a cut-off edit pays), a second
    # opinion beside the recognizer that made the error; empty: the weights the record was reranked with
    verify_with: list[str] = ["whisper-base"]


def corrector_config(o: CorrectOptions) -> tuple[CorrectorConfig, list[str]]:
    """The corrector's config from the stage options (adapter precedence applied) and notes to show."""
    s = adapter_settings(o.adapter, llm=o.llm, backend=o.backend, template=o.prompt, domain=o.domain)
    examples = examples_from_records(read_nbest(o.examples, strict=False), o.n_examples) if o.examples else []
    cfg = CorrectorConfig(
        llm=s.llm,
        backend=s.backend,
        template=s.template,
        adapter=o.adapter,
        domain=s.domain,
        entities=o.entities,
        top_k_entities=o.top_k,
        max_hypotheses=o.max_hypotheses,
        distinct=o.distinct if s.distinct is None else s.distinct,
        n_threads=o.threads or None,
        guards=option_guards(o.max_edit_ratio, o.max_novel_words, quote=o.quote, clean=o.clean),
        examples=examples,
    )
    return cfg, s.notes


class CorrectStage(BaseStage):
    """Corrects each record in place (``corrected``, ``correction``); records without hypotheses pass."""

    name = "correct"
    batch_size = 1  # seconds per record: progress and resume at every record

    def __init__(self, options: CorrectOptions) -> None:
        super().__init__(options)
        self.config, self.notes = corrector_config(options)

    def options(self) -> dict[str, Any]:
        o: CorrectOptions = self.opts  # type: ignore[assignment]
        return o.model_dump() | {
            "entities_digest": file_digest(o.entities),
            "adapter_digest": file_digest(o.adapter),
            "examples_digest": file_digest(o.examples),
        }

    def build(self) -> LLMCorrector | FallbackCorrector:
        verifier = self.verifier() if self.opts.verify else None  # type: ignore[attr-defined]
        return make_corrector(self.config, make=make_llm, verifier=verifier)

    def verifier(self) -> AudioVerifier:
        """The verifier of this stage's options (scorers load on first use)."""
        o: CorrectOptions = self.opts  # type: ignore[assignment]
        return make_verifier(o.verify_with, margin=o.verify_margin, device=o.verify_device)

    def process(self, records: list[NBest]) -> list[NBest]:
        corrector = self.load()
        return record_errors(records, corrector.correct, "correct", (ValueError, RuntimeError))
