"""Scoring what the stages did: WER and paired significance (``metrics``: pure functions on strings), records to
scores (``scoring``), the run report (``report``), per-utterance diffs, the terminal tables, and profiling.
"""
