"""Scorers that add a named score to every hypothesis of a record.

Language models (``lm``: the protocol and shared tokenization; backends transformers ``hf`` and llama.cpp
``llamacpp``, built by name through :func:`rescore.registry.make_scorer`; ``convert`` to GGUF), and a second
acoustic opinion: Whisper teacher-forced (``acoustic``, ``am:<model>``) and the CTC head (``ctc``).
"""

from rescore.score.lm import DEFAULT_LM, BaseScorer, Encoded, LMLoadError, LMScorer, TextScore, short_name

__all__ = ["DEFAULT_LM", "BaseScorer", "Encoded", "LMLoadError", "LMScorer", "TextScore", "short_name"]
