"""First-pass recognizers: each turns utterances into n-best records of the same format.

Build one by name with :func:`rescore.registry.make_recognizer`.
"""

from rescore.recognize.base import Recognizer, combine_windows, in_batches

__all__ = ["Recognizer", "combine_windows", "in_batches"]
