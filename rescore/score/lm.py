"""The LM scorer protocol and what its backends share: summed log-probability of a text after a context.

``score(texts, context)`` gives log P(text, end | start, context): the text is scored as written (casing,
punctuation) after a document-start token and the context (a domain prompt, previous transcripts), and
the end-of-text token is scored too, so an empty or cut-off hypothesis is not free. Backends: transformers
(``hf``: batched, shared-prefix KV cache; the default) and llama.cpp (``llamacpp``: GGUF directly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("rescore.score")

DEFAULT_LM = "smollm2-135m"


class LMLoadError(RuntimeError):
    """A language model that cannot be found or loaded (the message says which and why)."""


@dataclass(frozen=True)
class TextScore:
    """The score of one text: summed natural-log probability and how many tokens it covers."""

    logprob: float
    tokens: int
    truncated: bool = False


@runtime_checkable
class LMScorer(Protocol):
    """Scores texts after a context. ``name`` names the score key (``lm:<name>``) in records."""

    name: str
    info: dict[str, Any]

    def score(self, texts: Sequence[str], context: str = "") -> list[float]: ...

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[TextScore]: ...


@dataclass
class Encoded:
    """A (context, text) pair as token ids: the shared prefix and the tokens whose probability counts."""

    prefix: tuple[int, ...]
    target: list[int]
    truncated: bool


class BaseScorer:
    """What both backends share: tokenization plan, truncation with a warning, deduplication.

    Subclasses provide ``_tokenize(text) -> list[int]``, ``start_id``, ``end_id`` and
    ``_score_encoded(items) -> list[float]``.
    """

    name: str
    info: dict[str, Any]
    start_id: int
    end_id: int | None

    def __init__(self, *, max_tokens: int = 256, max_context_tokens: int = 512, end_token: bool = True) -> None:
        self.max_tokens = max_tokens
        self.max_context_tokens = max_context_tokens
        self.end_token = end_token
        self.warn: Callable[[str], None] = log.warning

    def _tokenize(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_encoded(self, items: Sequence[Encoded]) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, context: str, text: str) -> Encoded:
        ctx_ids: list[int] = self._tokenize(context) if context else []
        if len(ctx_ids) > self.max_context_tokens:
            ctx_ids = ctx_ids[-self.max_context_tokens :]  # the most recent part matters most
        body = text.strip()
        if context and body and not context[-1].isspace():
            body = " " + body
        ids = self._tokenize(body) if body else []
        truncated = len(ids) > self.max_tokens
        if truncated:
            ids = ids[: self.max_tokens]
        elif self.end_token and self.end_id is not None:
            ids = ids + [self.end_id]
        return Encoded((self.start_id, *ctx_ids), ids, truncated)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[TextScore]:
        """Scores of (context, text) pairs; identical pairs are scored once."""
        uniq: dict[tuple[str, str], int] = {}
        for p in pairs:
            uniq.setdefault(p, len(uniq))
        keys = list(uniq)
        encoded = [self.encode(c, t) for c, t in keys]
        for (_, text), e in zip(keys, encoded, strict=True):
            if e.truncated:
                self.warn(
                    f"{self.name}: text of {len(self._tokenize(text))} tokens truncated to {self.max_tokens}: "
                    f"{text[:60]!r}..."
                )
        todo = [i for i, e in enumerate(encoded) if e.target]
        values = [0.0] * len(encoded)
        for i, v in zip(todo, self._score_encoded([encoded[i] for i in todo]), strict=True):
            values[i] = v
        results = [TextScore(values[i], len(e.target), e.truncated) for i, e in enumerate(encoded)]
        return [results[uniq[p]] for p in pairs]

    def score(self, texts: Sequence[str], context: str = "") -> list[float]:
        """Summed log-probabilities of ``texts``, each after ``context``."""
        return [s.logprob for s in self.score_pairs([(context, t) for t in texts])]


def short_name(name: str) -> str:
    """The score-key name of a model: the name itself, or a path's file/folder stem."""
    from pathlib import Path

    from rescore.io.models import MODELS

    if name in MODELS:
        return name
    p = Path(name)
    return p.stem if p.suffix == ".gguf" else p.name
