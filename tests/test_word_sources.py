"""The word-source counts of a rewriting deep-fusion model: which written words came from the audio, not the prompt."""

from rescore.deep.word_sources import WORD_SOURCES_COLUMNS, WordSources


def test_word_sources_counts_each_origin():
    c = WordSources()
    # "sat" only in the second hypothesis, "mat" in none; the output takes "sat", finds "mat", drops "the"
    c.add("The cat sat on the mat.", ["the cat sit on the map", "the cat sat on the map"], "cat sat on a mat")
    assert (c.below_first, c.below_first_written) == (1, 1)
    assert (c.unseen, c.unseen_written) == (1, 1)
    assert (c.first_right, c.first_right_dropped) == (3, 1)  # the, cat, on; "the" dropped
    assert (c.new_written, c.new_right) == (2, 1)  # "a" and "mat"; "mat" right
    assert c.row("m").count("|") == len(WORD_SOURCES_COLUMNS) + 1


def test_word_sources_copying_the_first_hypothesis_recovers_nothing():
    c = WordSources()
    c.add("a b c", ["a b x", "a b c"], "a b x")
    assert (c.below_first_written, c.unseen_written, c.first_right_dropped, c.new_written) == (0, 0, 0, 0)
    assert c.below_first == 1
