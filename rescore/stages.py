"""The later pipeline stages (rerank, correct, deep fusion), registered on :mod:`rescore.pipeline`."""

from __future__ import annotations
