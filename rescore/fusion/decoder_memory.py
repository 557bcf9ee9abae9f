"""Whisper's own decoder states as the blocks' memory (``XAttnConfig.memory = "decoder"``).

Over encoder frames the blocks must learn *where* to look and *what* to take, from 2 h of speech; what they
learned fits the training sets' small vocabularies and does not carry to LibriSpeech (eval/RESULTS.md
``bench_xattn_tokens_base-audio-qa``). Whisper's decoder already does both: teacher-forced on the transcript being
scored, over the utterance's encoder states, its last state at each position is what the audio (and the text
before it) says comes next; times Whisper's token embeddings it is the next-token logits. So the blocks here attend
over those states, and each LM position reads only the Whisper positions that have consumed no more of the text
than it has (character offsets of both tokenisations), the latest ``window`` of them: a causal read aligned by
construction, nothing to learn about where to look.

The transcript must be known, so this memory serves teacher forcing: training, and choosing among the first-pass
hypotheses (``XAttnLM.choose``). Writing a transcript would need Whisper's decoder run step by step beside the LM's
search; that is not built, and such a model refuses to write.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

MEMORIES = ("encoder", "decoder")


def aligned_mask(memory_ends: Sequence[int], column_ends: Sequence[int], window: int, slots: int = 0) -> torch.Tensor:
    """``[columns, slots]`` bool: which memory states each LM column reads. State ``m`` has consumed the text up to
    ``memory_ends[m]`` (non-decreasing; state 0 none of it), column ``r`` up to ``column_ends[r]``; a column reads
    the latest ``window`` states that have consumed no more than it has, so nothing after the text it has seen
    reaches it. State 0 (the audio alone) is always within reach. ``slots``: the memory's padded length."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    ends = torch.tensor(list(memory_ends))
    cols = torch.tensor(list(column_ends))
    slots = max(slots, len(ends))
    allowed = torch.zeros(len(cols), slots, dtype=torch.bool)
    reach = (ends[None, :] <= cols[:, None]).sum(1).clamp(min=1)  # states 0..reach-1 have consumed no more
    index = torch.arange(len(ends))[None, :]
    allowed[:, : len(ends)] = (index < reach[:, None]) & (index >= reach[:, None] - window)
    return allowed


class WhisperDecoderMemory:
    """Whisper ``model``'s decoder (PyTorch, CPU) teacher-forced on transcripts over encoder states; each
    (utterance, text) is computed once and kept (training reads the same references every epoch, choosing the
    same hypotheses for every candidate row)."""

    def __init__(self, model: str, cache_size: int = 20_000) -> None:
        from rescore.ascore import WhisperScorer

        self.scorer = WhisperScorer(model, device="cpu", method="torch", cpu_threads=1)
        self.width: int = self.scorer.decoder.d
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], tuple[torch.Tensor, list[int]]] = OrderedDict()

    def states(self, key: str, encoder_states: Any, text: str) -> tuple[torch.Tensor, list[int]]:
        """``(states [M, d], ends)``: the decoder's state before the first text token, then after each of ``text``'s
        Whisper tokens (up to the decoder's context), and how much of ``text`` (characters) each has consumed.
        ``key`` names the audio (the cache's key, with the text)."""
        hit = self._cache.get((key, text))
        if hit is not None:
            self._cache.move_to_end((key, text))
            return hit
        scorer = self.scorer
        tokens = scorer.tokenize(text)[: scorer.max_tokens]
        ends = [0, *scorer.token_ends(tokens)]
        memory = np.ascontiguousarray(
            encoder_states.detach().float().cpu().numpy() if torch.is_tensor(encoder_states) else encoder_states,
            dtype=np.float32,
        )
        prompt = scorer.prompt
        states = scorer.decoder.final_states(memory, prompt + tokens)[len(prompt) - 1 :]
        out = (states, ends)
        self._cache[(key, text)] = out
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out
