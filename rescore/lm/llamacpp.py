"""llama.cpp scorer: GGUF files directly, with llama.cpp's quantized kernels.

llama-cpp-python evaluates one sequence at a time; the prefix (start token + context) is evaluated once
per context and kept in the KV cache, each text is evaluated after it by rewinding ``n_tokens`` to the
prefix length (``eval`` drops the cache beyond that point), and ``logits_all`` gives every position's
logits for the log-probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

import numpy as np

from rescore.lm.base import BaseScorer, Encoded, LMLoadError, short_name


def _log_softmax_at(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log-softmax of each row of ``logits`` at the column given by ``ids`` (float64 for the sum)."""
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[:, 0]
    return x[np.arange(len(ids)), ids] - lse


class LlamaCppScorer(BaseScorer):
    """A GGUF model (name or path) scored with llama-cpp-python."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        name: str | None = None,
        threads: int | None = None,
        n_ctx: int = 1024,
        max_tokens: int = 256,
        max_context_tokens: int = 512,
        end_token: bool = True,
    ) -> None:
        max_context_tokens = min(max_context_tokens, n_ctx - max_tokens - 2)
        super().__init__(max_tokens=max_tokens, max_context_tokens=max_context_tokens, end_token=end_token)
        from rescore.models import ModelNotFoundError, resolve_model

        t0 = time.perf_counter()
        try:
            path = resolve_model(model)
            if path.is_dir():
                ggufs = sorted(path.glob("*.gguf"))
                if not ggufs:
                    raise LMLoadError(f"{path}: no .gguf file in the folder (llama.cpp reads GGUF only)")
                path = ggufs[0]
            from llama_cpp import Llama

            self.llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                logits_all=True,
                n_threads=threads,
                verbose=False,
            )
        except LMLoadError:
            raise
        except (ModelNotFoundError, ValueError, OSError, RuntimeError) as e:
            raise LMLoadError(f"cannot load language model {model!r} with llama.cpp: {e}") from e
        self.name = name or short_name(model)
        eot = self.llm.tokenize(b"<|endoftext|>", add_bos=False, special=True)
        if len(eot) == 1:
            self.start_id = self.end_id = eot[0]
        else:
            self.start_id = self.llm.token_bos()
            self.end_id = self.llm.token_eos()
        self.info = {
            "backend": "llamacpp",
            "model": model,
            "path": str(Path(path)),
            "load_seconds": time.perf_counter() - t0,
        }

    def _tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _score_encoded(self, items: Sequence[Encoded]) -> list[float]:
        llm = self.llm
        out = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: items[i].prefix)
        for prefix, group in groupby(order, key=lambda i: items[i].prefix):
            llm.reset()
            llm.eval(list(prefix))
            n_pre = len(prefix)
            first = llm.scores[n_pre - 1].copy()
            for i in group:
                target = items[i].target
                llm.n_tokens = n_pre
                llm.eval(target)
                rows = np.concatenate([first[None], llm.scores[n_pre : n_pre + len(target) - 1]])
                out[i] = float(_log_softmax_at(rows, np.asarray(target)).sum())
        return out
