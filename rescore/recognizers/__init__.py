"""First-pass recognizers: each turns utterances into n-best records of the same format."""

from rescore.recognizers.base import Recognizer, combine_windows, make_recognizer

__all__ = ["Recognizer", "combine_windows", "make_recognizer"]
