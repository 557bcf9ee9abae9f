"""Whisper's text tokenization for teacher forcing: openai-whisper's tiktoken BPE, checked against the model."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def whisper_encoding(multilingual: bool, num_languages: int, eot: int) -> Any:
    """openai-whisper's own BPE (tiktoken) for text, when it is installed and matches the model's vocabulary.

    Some packaged ``tokenizer.json`` files do not reproduce Whisper's tokenization (whisper-base's splits
    " the" into " " + "the", tokens the model never saw there, which costs about a nat per token); the
    recognizer only decodes with them, but teacher forcing must encode text exactly as Whisper did.
    """
    try:
        from whisper.tokenizer import get_tokenizer
    except ImportError:  # pragma: no cover - openai-whisper is a dependency
        return None
    tok = get_tokenizer(multilingual, num_languages=num_languages)
    if tok.eot != eot:  # not the vocabulary this model was trained with: keep the model's own file
        log.warning("ascore: openai-whisper's tokenizer does not match the model (end token %s, not %s)", tok.eot, eot)
        return None
    return tok.encoding
