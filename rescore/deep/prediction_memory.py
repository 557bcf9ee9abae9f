"""Whisper's next-token predictions on the transcript as the blocks' memory (``XAttnConfig.memory = "prediction"``).

Over encoder frames the blocks must learn *where* to look and *what* a sound means from a couple of hours of
speech, and what they learn fits the training sets' small vocabularies. Whisper's decoder already does both:
teacher-forced on the transcript being scored, its last state at each position says what the audio (and the text
before it) makes the next token. This memory carries each such prediction (its top ``TOP_K`` tokens) into the LM's
own vocabulary as the expected LM input embedding, and each LM position reads only the latest state that has
consumed no more of the text than it has (character offsets of both tokenisations): an aligned, causal read with
nothing to learn about where to look; the blocks start as reading it (``XAttnLM.init_reads``).

The transcript must be known, so this memory serves teacher forcing: training, and choosing among the first-pass
hypotheses (``XAttnLM.choose``); such a model cannot write.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

TOP_K = 16  # Whisper's most likely next tokens a prediction carries (the rest of its mass is left out)


def aligned_mask(memory_ends: Sequence[int], column_ends: Sequence[int], slots: int = 0) -> torch.Tensor:
    """``[columns, slots]`` bool: which memory state each LM column reads. State ``m`` has consumed the text up to
    ``memory_ends[m]`` (non-decreasing; state 0 none of it), column ``r`` up to ``column_ends[r]``; a column reads
    the latest state that has consumed no more than it has, so nothing after the text it has seen reaches it.
    ``slots``: the memory's padded length."""
    ends = torch.tensor(list(memory_ends))
    cols = torch.tensor(list(column_ends))
    slots = max(slots, len(ends))
    allowed = torch.zeros(len(cols), slots, dtype=torch.bool)
    reach = (ends[None, :] <= cols[:, None]).sum(1).clamp(min=1)  # states 0..reach-1 have consumed no more
    allowed[torch.arange(len(cols)), reach - 1] = True
    return allowed


def whisper_to_lm_tokens(texts: Sequence[str], tokenizer: Any, text_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For each Whisper text token (``texts``: their strings, by id) the LM token that starts its text written as
    the LM's targets are (``text_norm``), -1 where nothing is left (punctuation, partial UTF-8): ``(mid, first)``,
    the first for a token in mid-transcript (its leading space kept), the second for the transcript's first token
    (the LM's reply starts without one)."""
    from rescore.deep.model import normalize_target

    maps = []
    for lead in (True, False):
        shown = []
        for t in texts:
            core = "" if "\ufffd" in t else normalize_target(t, text_norm)
            shown.append((" " if lead and t.startswith(" ") else "") + core if core else "")
        ids = tokenizer(shown, add_special_tokens=False)["input_ids"]
        maps.append(torch.tensor([i[0] if s and i else -1 for s, i in zip(shown, ids, strict=True)]))
    return maps[0], maps[1]


class WhisperPredictionMemory:
    """Whisper ``model``'s decoder (PyTorch, CPU) teacher-forced on transcripts over encoder states; each state's
    next-token prediction as the LM's expected input embedding: the top ``top_k`` of softmax(state x Whisper's token
    embeddings), each through :func:`whisper_to_lm_tokens` (the end of text to the LM's ``end_id``), weighted by its
    probability. ``embeddings``: the LM's input embeddings ``[V, dim]``. Each (utterance, text) is computed once and
    kept: training reads the same references every epoch, choosing the same hypotheses for every candidate row."""

    def __init__(
        self,
        model: str,
        tokenizer: Any,
        embeddings: torch.Tensor,
        end_id: int,
        text_norm: str,
        top_k: int = TOP_K,
        cache_size: int = 20_000,
    ) -> None:
        from rescore.score.acoustic import WhisperScorer

        self.scorer = WhisperScorer(model, device="cpu", method="torch", cpu_threads=1)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], tuple[torch.Tensor, list[int]]] = OrderedDict()
        self.embeddings = embeddings.detach().float().cpu()
        self.width = int(self.embeddings.shape[1])
        self.top_k = top_k
        self.vocab = self.scorer.decoder.w["token_embedding.weight"].float().cpu()  # Whisper's output layer (tied)
        mid, first = whisper_to_lm_tokens(self.scorer.token_texts(), tokenizer, text_norm)
        n = self.vocab.shape[0]
        self.mid = torch.full((n,), -1, dtype=torch.long)
        self.first = self.mid.clone()
        self.mid[: len(mid)], self.first[: len(first)] = mid, first
        self.mid[self.scorer.eot] = self.first[self.scorer.eot] = end_id

    def states(self, key: str, encoder_states: Any, text: str) -> tuple[torch.Tensor, list[int]]:
        """``(rows [M, dim], ends)``: the prediction before the first text token, then after each of ``text``'s
        Whisper tokens (up to the decoder's context), and how much of ``text`` (characters) each has consumed.
        ``key`` names the audio (the cache's key, with the text)."""
        hit = self._cache.get((key, text))
        if hit is not None:
            self._cache.move_to_end((key, text))
            return hit
        scorer = self.scorer
        tokens = scorer.tokenize(text)[: scorer.max_tokens]
        memory = np.ascontiguousarray(
            encoder_states.detach().float().cpu().numpy() if torch.is_tensor(encoder_states) else encoder_states,
            dtype=np.float32,
        )
        prompt = scorer.prompt
        states = scorer.decoder.final_states(memory, prompt + tokens)[len(prompt) - 1 :]
        out = (self.rows(states), [0, *scorer.token_ends(tokens)])
        self._cache[(key, text)] = out
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def rows(self, states: torch.Tensor) -> torch.Tensor:
        """``[M, dim]``: state 0 (before the text) through the transcript-start map, the rest mid-transcript."""
        with torch.no_grad():
            p, idx = (states.float() @ self.vocab.T).softmax(-1).topk(self.top_k, dim=-1)
            lm = self.mid[idx]
            lm[0] = self.first[idx[0]]
            weight = p * (lm >= 0)
            return (self.embeddings[lm.clamp(min=0)] * weight[..., None]).sum(1)

    def predicted(self, states: torch.Tensor) -> torch.Tensor:
        """The LM token of Whisper's most likely next token at each state ``[M, d]`` (-1: none): for inspection."""
        with torch.no_grad():
            idx = (states.float() @ self.vocab.T).argmax(-1)
            lm = self.mid[idx]
            lm[0] = self.first[idx[0]]
            return lm
