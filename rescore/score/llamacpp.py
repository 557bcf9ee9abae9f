"""llama.cpp scorer: GGUF files directly, with llama.cpp's quantized kernels, through its low-level API.

Only the log-probabilities of the target tokens are needed, so the scorer asks llama.cpp for the logits
of just the positions that predict a target token (``llama_batch.logits``), never for the context's.
The context prefix (start token + context) lives in sequence 0 of one unified KV cache and is kept
between calls: a new context rewinds it to the longest common prefix and evaluates only the rest.
Hypotheses are packed into one batch as a prefix tree: each of them is a sequence (a copy of sequence 0,
which costs no memory in a unified cache) and a token shared by several hypotheses' beginnings is one
batch entry belonging to all their sequences, so it runs once. The log-softmax is float32, over only the
rows that were returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np

from rescore.score.lm import BaseScorer, Encoded, LMLoadError, short_name

LOGIT_BUDGET = 1 << 26  # floats of logits per batch (256 MiB): caps the rows for large vocabularies
_backend_ready = False


def log_softmax_at(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log-softmax of each row at the column given by ``ids``, in float32 without copying ``rows`` twice."""
    m = rows.max(-1, keepdims=True)
    x = rows - m
    np.exp(x, out=x)
    lse = np.log(x.sum(-1)) + m[:, 0]
    return rows[np.arange(len(ids)), ids] - lse


@dataclass
class _Node:
    """One batch entry of a prefix tree: its token, depth, parent entry (-1: the prefix) and sequences."""

    token: int
    depth: int
    parent: int
    seqs: list[int] = field(default_factory=list)
    children: int = 0


def build_tree(targets: Sequence[Sequence[int]]) -> tuple[list[_Node], list[list[int]]]:
    """The prefix tree of ``targets`` (sequence ``i + 1`` for target ``i``) and each target's node path.

    Nodes come parent first, so a batch in this order never needs a token that comes later.
    """
    nodes: list[_Node] = []
    children: dict[tuple[int, int], int] = {}
    paths: list[list[int]] = []
    for i, t in enumerate(targets):
        parent, path = -1, []
        for depth, tok in enumerate(t):
            key = (parent, tok)
            n = children.get(key)
            if n is None:
                n = children[key] = len(nodes)
                nodes.append(_Node(tok, depth, parent))
                if parent >= 0:
                    nodes[parent].children += 1
            nodes[n].seqs.append(i + 1)
            path.append(n)
            parent = n
        paths.append(path)
    return nodes, paths


class _Context:
    """A llama.cpp model and context whose unified KV cache holds several sequences at once."""

    def __init__(self, path: Path, *, n_ctx: int, batch_tokens: int, min_batch: int, n_seq: int, threads: int) -> None:
        global _backend_ready
        import llama_cpp as C
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose
        from llama_cpp._utils import suppress_stdout_stderr

        set_verbose(False)
        if not _backend_ready:
            with suppress_stdout_stderr(disable=False):
                C.llama_backend_init()
            _backend_ready = True
        self.C = C
        self.model = _internals.LlamaModel(path_model=str(path), params=C.llama_model_default_params(), verbose=False)
        self.n_vocab = self.model.n_vocab()
        n_batch = max(min_batch, min(batch_tokens, LOGIT_BUDGET // self.n_vocab))
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.kv_unified = True  # a copied sequence shares the prefix's cells instead of copying them
        params.swa_full = True  # sliding-window layers keep every cell, so the prefix can be rewound
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        with suppress_stdout_stderr(disable=False):
            self.ctx = _internals.LlamaContext(model=self.model, params=params, verbose=False)
        self.memory = C.llama_get_memory(self.ctx.ctx)
        self.n_batch = n_batch
        self.n_seq = n_seq
        self.batch = C.llama_batch_init(n_batch, 0, n_seq)

    def close(self) -> None:
        if self.batch is not None:
            self.C.llama_batch_free(self.batch)
            self.batch = None
        self.ctx.close()
        self.model.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the process frees it anyway
            self.close()

    def decode(self, entries: Sequence[tuple[int, int, Sequence[int], bool]]) -> np.ndarray:
        """Evaluate (token, position, sequence ids, wants logits) entries; the logits rows asked for.

        The returned array is a view of llama.cpp's buffer, valid until the next decode.
        """
        b = self.batch
        n_out = 0
        for j, (tok, pos, seqs, out) in enumerate(entries):
            b.token[j] = tok
            b.pos[j] = pos
            b.n_seq_id[j] = len(seqs)
            for k, s in enumerate(seqs):
                b.seq_id[j][k] = s
            b.logits[j] = out
            n_out += out
        b.n_tokens = len(entries)
        rc = self.C.llama_decode(self.ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) on a batch of {len(entries)} tokens")
        if not n_out:
            return np.empty((0, self.n_vocab), np.float32)
        ptr = self.C.llama_get_logits(self.ctx.ctx)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_out, self.n_vocab))

    def seq_copy(self, src: int, dst: int) -> None:
        self.C.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def seq_remove(self, seq: int, start: int = -1) -> bool:
        return bool(self.C.llama_memory_seq_rm(self.memory, seq, start, -1))

    def clear(self) -> None:
        self.C.llama_memory_clear(self.memory, True)


class LlamaCppScorer(BaseScorer):
    """A GGUF model (name or path) scored with llama.cpp, many hypotheses per batch."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        name: str | None = None,
        threads: int | None = None,
        n_ctx: int = 1024,
        batch_tokens: int = 512,
        max_sequences: int = 64,
        max_tokens: int = 256,
        max_context_tokens: int = 512,
        end_token: bool = True,
        tree: bool = True,
    ) -> None:
        max_context_tokens = min(max_context_tokens, n_ctx - max_tokens - 2)
        super().__init__(max_tokens=max_tokens, max_context_tokens=max_context_tokens, end_token=end_token)
        from rescore.io.models import ModelNotFoundError, resolve_model

        t0 = time.perf_counter()
        threads = threads or os.cpu_count() or 1
        try:
            path = resolve_model(model)
            if path.is_dir():
                ggufs = sorted(path.glob("*.gguf"))
                if not ggufs:
                    raise LMLoadError(f"{path}: no .gguf file in the folder (llama.cpp reads GGUF only)")
                path = ggufs[0]
            self.lm = _Context(
                path,
                n_ctx=n_ctx,
                batch_tokens=batch_tokens,
                min_batch=max_tokens + 1,
                n_seq=max_sequences + 1,
                threads=threads,
            )
        except LMLoadError:
            raise
        except (ModelNotFoundError, ValueError, OSError, RuntimeError) as e:
            raise LMLoadError(f"cannot load language model {model!r} with llama.cpp: {e}") from e
        self.n_ctx = n_ctx
        self.tree = tree
        self.name = name or short_name(model)
        m = self.lm.model
        eot = m.tokenize(b"<|endoftext|>", add_bos=False, special=True)
        if len(eot) == 1:
            self.start_id = self.end_id = eot[0]
        else:
            self.start_id, self.end_id = m.token_bos(), m.token_eos()
        self._prefix: list[int] = []  # what sequence 0 holds now
        self._first: np.ndarray | None = None  # log-softmax after it
        self.info = {
            "backend": "llamacpp",
            "model": model,
            "path": str(path),
            "threads": threads,
            "batch_tokens": self.lm.n_batch,
            "load_seconds": time.perf_counter() - t0,
        }

    def _tokenize(self, text: str) -> list[int]:
        return list(self.lm.model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _set_prefix(self, prefix: Sequence[int]) -> np.ndarray:
        """Make sequence 0 hold ``prefix`` (rewinding to the common part); the log-softmax after it."""
        prefix = list(prefix)
        if prefix == self._prefix and self._first is not None:
            return self._first
        keep = 0
        while keep < min(len(prefix), len(self._prefix)) and prefix[keep] == self._prefix[keep]:
            keep += 1
        keep = min(keep, len(prefix) - 1)  # the last token runs again: its logits are needed
        if not self.lm.seq_remove(0, keep):
            self.lm.clear()
            keep = 0
        self._prefix, self._first = [], None
        row = None
        for s in range(keep, len(prefix), self.lm.n_batch):
            part = prefix[s : s + self.lm.n_batch]
            last = s + len(part) == len(prefix)
            rows = self.lm.decode([(t, s + k, (0,), last and k == len(part) - 1) for k, t in enumerate(part)])
            if last:
                row = rows[0].copy()
        assert row is not None
        self._prefix = prefix
        self._first = _log_softmax(row)
        return self._first

    def _score_encoded(self, items: Sequence[Encoded]) -> list[float]:
        out = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: (items[i].prefix, items[i].target))
        for prefix, group in groupby(order, key=lambda i: items[i].prefix):
            idx = list(group)
            first = self._set_prefix(prefix)
            room = min(self.lm.n_batch, self.n_ctx - len(prefix))
            for chunk in self._chunks([items[i].target for i in idx], room):
                targets = [items[idx[c]].target for c in chunk]
                for c, v in zip(chunk, self._score_chunk(first, len(prefix), targets), strict=True):
                    out[idx[c]] = v
        return out

    def _chunks(self, targets: list[list[int]], room: int) -> list[list[int]]:
        """Consecutive (sorted) targets cut so that each chunk's tree fits the batch and the sequences."""
        limit = (self.lm.n_seq - 1) if self.tree else 1
        chunks: list[list[int]] = []
        cur: list[int] = []
        size = 0
        for i, t in enumerate(targets):
            lcp = 0
            if cur:
                prev = targets[cur[-1]]
                while lcp < min(len(t), len(prev)) and t[lcp] == prev[lcp]:
                    lcp += 1
            if cur and (len(cur) >= limit or size + len(t) - lcp > room):
                chunks.append(cur)
                cur, size, lcp = [], 0, 0
            cur.append(i)
            size += len(t) - lcp
        if cur:
            chunks.append(cur)
        return chunks

    def _score_chunk(self, first: np.ndarray, n_pre: int, targets: list[list[int]]) -> list[float]:
        """Summed log-probs of targets after the prefix in sequence 0, their prefix tree in one batch."""
        nodes, paths = build_tree(targets)
        for s in range(1, len(targets) + 1):
            self.lm.seq_copy(0, s)
        try:
            wants = [n.children > 0 for n in nodes]  # a leaf predicts nothing that is scored
            rows = self.lm.decode([(n.token, n_pre + n.depth, n.seqs, w) for n, w in zip(nodes, wants, strict=True)])
            row_of = np.cumsum(wants) - 1
            at = [row_of[p] for path in paths for p in path[:-1]]  # each node that predicts a next token
            nxt = np.array([x for t in targets for x in t[1:]], dtype=np.int64)
            lp = log_softmax_at(rows[at], nxt)
        finally:
            for s in range(1, len(targets) + 1):
                self.lm.seq_remove(s)
        out, k = [], 0
        for t in targets:
            n = len(t) - 1
            out.append(float(first[t[0]]) + float(lp[k : k + n].sum(dtype=np.float64)))
            k += n
        return out

    def score_unbatched(self, items: Sequence[Encoded]) -> list[float]:
        """The plain loop, to check the batched path against: a fresh cache and a batch of its own per text."""
        out = []
        tree = self.tree
        self.tree = False
        try:
            for e in items:
                self.lm.clear()
                self._prefix, self._first = [], None
                out.extend(self._score_encoded([e]))
        finally:
            self.tree = tree
        return out


def _log_softmax(row: np.ndarray) -> np.ndarray:
    """The whole log-softmax of one row (the prefix's: every text's first token reads from it)."""
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))
