"""rescore: make speech recognition more accurate with language models.

Library first: ``load_dataset`` finds utterances, a recognizer turns them into n-best records
(:mod:`rescore.records`), later stages rescore and correct them, and :mod:`rescore.evaluate.metrics` scores them.
"""

from rescore.io.datasets import Dataset, Utterance, load_dataset
from rescore.records import Hypothesis, NBest, NBestWriter, read_nbest, write_nbest

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "Hypothesis",
    "NBest",
    "NBestWriter",
    "Utterance",
    "load_dataset",
    "read_nbest",
    "write_nbest",
    "__version__",
]
