"""Language-model scorers: summed log-probability of a text after a context, one protocol, two backends.

The backends (transformers ``hf``, llama.cpp ``llamacpp``) are built by name through
:func:`rescore.registry.make_scorer`; this package holds the protocol and the parts they share.
"""

from rescore.lm.base import DEFAULT_LM, BaseScorer, Encoded, LMLoadError, LMScorer, TextScore, short_name

__all__ = ["DEFAULT_LM", "BaseScorer", "Encoded", "LMLoadError", "LMScorer", "TextScore", "short_name"]
