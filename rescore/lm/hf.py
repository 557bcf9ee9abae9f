"""transformers scorer: many hypotheses in few forward passes.

Pairs are grouped by context; each group's prefix (start token + context) runs once and its KV cache is
repeated over the batch. Within a group, texts are sorted by length and cut into batches under a token
budget, so padding stays small. Padding goes on the right: with causal attention no real token sees a
pad, so no mask is needed and the scores equal those of one-at-a-time scoring.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from rescore.lm import BaseScorer, Encoded, LMLoadError, short_name


def _special_id(tokenizer: Any, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    ok = isinstance(tid, int) and tokenizer.convert_ids_to_tokens(tid) == token
    return tid if ok else None


class HFScorer(BaseScorer):
    """A causal LM from a transformers folder (GGUF models are converted once, see ``convert``)."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        name: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        batch_tokens: int = 1024,
        max_tokens: int = 256,
        max_context_tokens: int = 512,
        end_token: bool = True,
    ) -> None:
        super().__init__(max_tokens=max_tokens, max_context_tokens=max_context_tokens, end_token=end_token)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rescore.lm.convert import ensure_hf_model

        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        try:
            folder = ensure_hf_model(model)
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
        except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear message
            raise LMLoadError(f"cannot load language model {model!r} with transformers: {e}") from e
        self.torch = torch
        self.device = device
        self.batch_tokens = batch_tokens
        self.name = name or short_name(model)
        tok = self.tokenizer
        start = _special_id(tok, "<|endoftext|>")
        if start is None:
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise LMLoadError(f"{model!r}: the tokenizer has no document-start token")
        self.start_id = start
        self.end_id = start if _special_id(tok, "<|endoftext|>") is not None else tok.eos_token_id
        self.pad_id = self.end_id if self.end_id is not None else 0
        self.info = {"backend": "hf", "model": model, "path": str(folder), "load_seconds": time.perf_counter() - t0}

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _score_encoded(self, items: Sequence[Encoded]) -> list[float]:
        torch = self.torch
        out = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: (items[i].prefix, len(items[i].target)))
        with torch.inference_mode():
            for prefix, group in groupby(order, key=lambda i: items[i].prefix):
                idx = list(group)
                pre = self.model(torch.tensor([prefix], device=self.device), use_cache=True)
                first = pre.logits[0, -1].float().log_softmax(-1)
                cache = pre.past_key_values
                for batch in _batches(idx, [len(items[i].target) for i in idx], self.batch_tokens):
                    for i, v in zip(batch, self._forward(cache, first, [items[i].target for i in batch]), strict=True):
                        out[i] = v
        return out

    def _forward(self, cache: Any, first: Any, targets: list[list[int]]) -> list[float]:
        """Summed log-probs of right-padded targets continuing a shared prefix cache."""
        torch = self.torch
        n = len(targets)
        length = max(len(t) for t in targets)
        ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        for r, t in enumerate(targets):
            ids[r, : len(t)] = torch.tensor(t)
        ids = ids.to(self.device)
        scores = first[ids[:, 0]]  # the first token comes from the prefix's last position
        if length > 1:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(n)
            logits = self.model(ids[:, :-1], past_key_values=past, use_cache=True).logits.float()
            nxt = ids[:, 1:]
            lp = logits.gather(-1, nxt[..., None])[..., 0] - torch.logsumexp(logits, -1)
            lens = torch.tensor([len(t) for t in targets], device=self.device)
            mask = torch.arange(length - 1, device=self.device)[None, :] < (lens[:, None] - 1)
            scores = scores + (lp * mask).sum(1)
        return [float(x) for x in scores]

    def score_unbatched(self, items: Sequence[Encoded]) -> list[float]:
        """The naive loop: one forward pass per text over prefix + text, no cache, no batching."""
        torch = self.torch
        out = []
        with torch.inference_mode():
            for e in items:
                ids = torch.tensor([list(e.prefix) + e.target], device=self.device)
                logits = self.model(ids).logits[0, len(e.prefix) - 1 : -1].float()
                lp = logits.log_softmax(-1).gather(-1, ids[0, len(e.prefix) :, None])[:, 0]
                out.append(float(lp.sum()))
        return out


def _batches(idx: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Cut length-sorted items into batches whose padded size (rows x longest) stays within budget."""
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i, n in zip(idx, lengths, strict=True):
        if cur and (len(cur) + 1) * max(longest, n) > budget:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches
