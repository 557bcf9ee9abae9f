"""Where a rewriting model's words come from, against the hypotheses its prompt showed: whether it listens or copies.

The words only the audio can give (in no hypothesis) and those only a lower hypothesis has tell a model that reads
the audio from one that copies the 1-best. Counted on distinct words per utterance, after the WER's normaliser.
"""

from __future__ import annotations

from dataclasses import dataclass

WORD_SOURCES_COLUMNS = (
    "system",
    "reference words only a lower hypothesis had: written",
    "reference words in no hypothesis: written",
    "right 1-best words dropped",
    "words in no hypothesis: right / written",
)


@dataclass
class WordSources:
    """Counts over utterances (:meth:`add`), one markdown row each (:meth:`row`, columns ``WORD_SOURCES_COLUMNS``)."""

    below_first: int = 0  # reference words a lower hypothesis of the prompt had and the 1-best lacked
    below_first_written: int = 0
    unseen: int = 0  # reference words in none of the prompt's hypotheses
    unseen_written: int = 0
    first_right: int = 0  # reference words the 1-best had
    first_right_dropped: int = 0
    new_written: int = 0  # written words in none of the prompt's hypotheses
    new_right: int = 0

    def add(self, reference: str, hypotheses: list[str], written: str) -> None:
        """Count one utterance: its reference, the prompt's hypotheses (the 1-best first) and the model's output."""
        from rescore.evaluate.metrics import normalize

        ref, out = set(normalize(reference).split()), set(normalize(written).split())
        first = set(normalize(hypotheses[0]).split()) if hypotheses else set()
        shown = first.union(*(normalize(h).split() for h in hypotheses[1:]))
        below, unseen, new = (ref & shown) - first, ref - shown, out - shown
        self.below_first += len(below)
        self.below_first_written += len(below & out)
        self.unseen += len(unseen)
        self.unseen_written += len(unseen & out)
        self.first_right += len(ref & first)
        self.first_right_dropped += len((ref & first) - out)
        self.new_written += len(new)
        self.new_right += len(new & ref)

    def row(self, name: str) -> str:
        return (
            f"| {name} | {self.below_first_written}/{self.below_first} | {self.unseen_written}/{self.unseen} | "
            f"{self.first_right_dropped}/{self.first_right} | {self.new_right}/{self.new_written} |"
        )
