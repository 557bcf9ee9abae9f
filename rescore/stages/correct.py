"""Generative error correction as a stage: an instruction LLM rewrites the reranked text, guards decide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from rescore.io.models import file_digest
from rescore.records import NBest, read_nbest
from rescore.registry import make_llm
from rescore.runner import record_errors
from rescore.stages.base import BaseStage, PathStr, StageOptions, make_verifier, option_guards

if TYPE_CHECKING:  # the corrector (numpy, jinja2, fuzzy matching) loads with the stage: every CLI call reads
    # these options to make its flags, and only `correct` needs the library
    from rescore.correct import AudioVerifier, CorrectorConfig, FallbackCorrector, LLMCorrector


class CorrectOptions(StageOptions):
    """See ``rescore correct``. A negative ``max_edit_ratio``/``max_novel_words`` turns that guard off."""

    enabled: bool = Field(True, description="Run this stage (`rescore run`).")
    llm: str = Field(
        "qwen2.5-0.5b",
        description="qwen2.5-0.5b, qwen2.5-1.5b, smollm2-135m, a GGUF file or transformers folder; off: no LLM, the"
        " template's fallback text (the reranked text, or its spelled view for `spelling`).",
    )
    backend: str = Field("llama-cpp", description="llama-cpp (GGUF, its own chat template) or transformers.")
    prompt: str | None = Field(
        None,
        description="Template name in prompts/ (see `rescore prompts list`) or a .j2 file (default: nbest, or the"
        " adapter's).",
    )
    domain: str | None = Field(None, description="Domain description for the prompt (domain, entities, fewshot).")
    entities: PathStr | None = Field(None, description="Entity list: one name or term per line.")
    top_k: int = Field(5, ge=0, description="Entities retrieved per utterance.")
    adapter: PathStr | None = Field(
        None, description="LoRA adapter from `rescore correct train` (transformers backend)."
    )
    examples: PathStr | None = Field(
        None, description="n-best JSONL with references (a training set): few-shot examples."
    )
    n_examples: int = Field(6, ge=0, description="Few-shot examples taken from `examples`.")
    max_hypotheses: int = Field(8, ge=1, description="Hypotheses shown to the LLM.")
    distinct: bool = Field(
        True,
        description="Show hypotheses that read alike after normalisation once (shorter prompts; an adapter's own"
        " setting wins).",
    )
    max_edit_ratio: float = Field(
        0.3, description="Abstain beyond this share of edited words from every hypothesis (<0: off)."
    )
    max_novel_words: int = Field(1, description="Abstain when more words occur in no hypothesis nor list (<0: off).")
    quote: bool = Field(True, description="Quote and sanitize hypotheses as data in the prompt.")
    clean: bool = Field(True, description="Strip quotes, prefixes and explanations from the output.")
    threads: int = Field(0, ge=0, description="CPU threads (0: up to 4).")
    verify: bool = Field(
        True,
        description="Score an edit the guards accept against the audio (`verify_with`); keep it only if it wins."
        " Records without audio: the guards alone decide.",
    )
    verify_margin: float = Field(0.0, description="What the edit's total must beat the reranked one by.")
    verify_device: str = Field("auto", description="Device of the judges' acoustic models: auto, cpu or cuda.")
    verify_with: list[str] = Field(
        ["whisper-base"],
        description="Judge edits by these acoustic models' summed scores, end token included (a second opinion"
        " beside the recognizer that made the error); rerank (or an empty list): by the weights each record was"
        " reranked with.",
    )

    @field_validator("verify_with")
    @classmethod
    def _rerank_is_no_model(cls, v: list[str]) -> list[str]:
        # "rerank" is how the command line says "no judge of its own" (a repeated flag cannot be empty)
        if "rerank" not in v:
            return v
        if len(v) > 1:
            raise ValueError("rerank judges by each record's rerank weights: give it alone, or acoustic models")
        return []


def corrector_config(o: CorrectOptions) -> tuple[CorrectorConfig, list[str]]:
    """The corrector's config from the stage options (adapter precedence applied) and notes to show."""
    from rescore.correct import CorrectorConfig, examples_from_records
    from rescore.correct.lora import adapter_settings

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
        from rescore.correct import make_corrector

        verifier = self.verifier() if self.opts.verify else None  # type: ignore[attr-defined]
        return make_corrector(self.config, make=make_llm, verifier=verifier)

    def verifier(self) -> AudioVerifier:
        """The verifier of this stage's options (scorers load on first use)."""
        o: CorrectOptions = self.opts  # type: ignore[assignment]
        return make_verifier(o.verify_with, margin=o.verify_margin, device=o.verify_device)

    def process(self, records: list[NBest]) -> list[NBest]:
        corrector = self.load()
        return record_errors(records, corrector.correct, "correct", (ValueError, RuntimeError))
