"""Whisper's text decoder in PyTorch, teacher-forced: the log-probability of given token sequences under the audio.

Shared by acoustic scoring (``rescore.score.acoustic``) and deep fusion (``rescore.deep``); the weights are read
from the CTranslate2 ``model.bin`` the recognizer uses (:mod:`rescore.whisper.weights`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rescore.whisper.weights import ct2_to_openai_state_dict, read_ct2_model


def suppressed_log_probs(
    logits: Any, targets: Any, first: Any, suppress: Any, suppress_begin: Any, rows: Any = None
) -> Any:
    """Log-probabilities of ``targets`` [n] under ``logits`` [rows, vocab] (torch; ``rows`` [n] picks each
    target's row, default one row each), normalised as Whisper's decoding normalises them: over the tokens it
    does not suppress (``suppress`` everywhere, ``suppress_begin`` too where ``first``). A suppressed target
    (text from elsewhere may hold one) is scored under the full softmax instead of getting minus infinity."""
    import torch

    if rows is None:
        rows = torch.arange(len(targets), device=logits.device)
    tgt = logits[rows, targets]
    full = torch.logsumexp(logits, 1)[rows]
    if not len(suppress) and not len(suppress_begin):
        return tgt - full
    # the normaliser without the suppressed tokens, from the full one and theirs (no [n, vocab] mask)
    sup = torch.logsumexp(logits[:, suppress], 1)[rows]
    hit = (targets[:, None] == suppress[None, :]).any(1)
    if len(suppress_begin):
        sup_b = torch.logsumexp(logits[:, torch.cat([suppress, suppress_begin])], 1)[rows]
        sup = torch.where(first, sup_b, sup)
        hit = hit | (first & (targets[:, None] == suppress_begin[None, :]).any(1))
    allowed = full + torch.log1p(-torch.exp(sup - full).clamp(max=1 - 1e-7))
    return torch.where(hit, tgt - full, tgt - allowed)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``n`` (0: unchanged) for the block; on a busy shared CPU one thread is
    many times faster than two that wait for each other."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TeacherForcedDecoder:
    """Whisper's text decoder in PyTorch, for teacher forcing many sequences against one encoder output."""

    def __init__(
        self, model_bin: Path, n_mels: int, device: str, suppress: list[int], suppress_begin: list[int]
    ) -> None:
        import torch

        sd, dims = ct2_to_openai_state_dict(read_ct2_model(model_bin), n_mels)
        self.device = device
        self.dtype = torch.float16 if device == "cuda" else torch.float32
        self.w = {
            k[len("decoder.") :]: torch.from_numpy(np.array(v, dtype=np.float32)).to(device, self.dtype)
            for k, v in sd.items()
            if k.startswith("decoder.")
        }
        self.n_layer = int(dims["n_text_layer"])
        self.n_head = int(dims["n_text_head"])
        self.d = int(dims["n_text_state"])
        self.suppress = torch.tensor(suppress, dtype=torch.long, device=device)
        self.suppress_begin = torch.tensor(suppress_begin, dtype=torch.long, device=device)

    def _ln(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        return F.layer_norm(x, (self.d,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], 1e-5)

    def _lin(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"))

    def cross_kv(self, memory: np.ndarray) -> list[tuple[Any, Any]]:
        """Per layer, the cross-attention keys and values of one window's encoder output [frames, dim]."""
        import torch

        with torch.inference_mode():
            m = torch.from_numpy(np.ascontiguousarray(memory, dtype=np.float32)).to(self.device, self.dtype)[None]
            h, dh = self.n_head, self.d // self.n_head
            out = []
            for i in range(self.n_layer):
                k = self._lin(m, f"blocks.{i}.cross_attn.key").view(1, -1, h, dh).transpose(1, 2)
                v = self._lin(m, f"blocks.{i}.cross_attn.value").view(1, -1, h, dh).transpose(1, 2)
                out.append((k.contiguous(), v.contiguous()))
        return out

    def log_probs(self, kv: list[tuple[Any, Any]], seqs: list[list[int]], first: int) -> list[np.ndarray]:
        """Log-probability of each token of ``seq[first:]`` given the ones before it, for each sequence.

        One parallel pass over the prefix tree of the sequences: an n-best list shares most of its prefixes
        (the prompt always), and each distinct prefix is computed once, attending to its own ancestors only.
        """
        import torch

        # the prefix tree of the decoder inputs seq[:-1]; parents come before their children
        child: dict[tuple[int, int], int] = {}
        tokens: list[int] = []
        depth: list[int] = []
        parent: list[int] = []
        pairs: list[tuple[int, int, bool]] = []  # (node, target, first position) in output order
        for s in seqs:
            node = -1
            for p, tok in enumerate(s[:-1]):
                nxt = child.get((node, tok))
                if nxt is None:
                    nxt = child[(node, tok)] = len(tokens)
                    tokens.append(tok)
                    depth.append(p)
                    parent.append(node)
                node = nxt
                if p >= first - 1:
                    pairs.append((node, s[p + 1], p == first - 1))
        n = len(tokens)
        mask = np.zeros((n, n), dtype=bool)  # mask[i, j]: node j is node i or one of its ancestors
        for i, par in enumerate(parent):
            if par >= 0:
                mask[i] = mask[par]
            mask[i, i] = True
        dev = self.device
        with torch.inference_mode():
            attn_mask = torch.from_numpy(mask).to(dev)
            x = self.w["token_embedding.weight"][torch.tensor(tokens, device=dev)]
            x = (x + self.w["positional_embedding"][torch.tensor(depth, device=dev)])[None]
            x = self._layers(x, attn_mask, kv)
            x = self._ln(x, "ln")[0]
            needed = sorted({node for node, _, _ in pairs})
            row_of = {node: r for r, node in enumerate(needed)}
            sel = x[torch.tensor(needed, device=dev)]
            pair_row = torch.tensor([row_of[node] for node, _, _ in pairs], device=dev)
            pair_tgt = torch.tensor([t for _, t, _ in pairs], device=dev)
            pair_first = torch.tensor([f for _, _, f in pairs], device=dev)
            out = torch.empty(len(pairs), dtype=torch.float64)
            emb = self.w["token_embedding.weight"]
            for c in range(0, len(needed), 512):  # [nodes, vocab] logits, a chunk at a time
                logits = (sel[c : c + 512] @ emb.T).float()
                idx = ((pair_row >= c) & (pair_row < c + 512)).nonzero()[:, 0]
                lp = suppressed_log_probs(
                    logits, pair_tgt[idx], pair_first[idx], self.suppress, self.suppress_begin, pair_row[idx] - c
                )
                out[idx.cpu()] = lp.double().cpu()
        counts = [len(q) - first for q in seqs]
        return list(np.split(out.numpy(), np.cumsum(counts)[:-1]))

    def _layers(self, x: Any, attn_mask: Any, kv: list[tuple[Any, Any]]) -> Any:
        """The decoder blocks over token states ``x [1, n, d]`` (``attn_mask [n, n]``: who sees whom)."""
        import torch.nn.functional as F

        n = x.shape[1]
        h, dh, d = self.n_head, self.d // self.n_head, self.d
        for i, (ck, cv) in enumerate(kv):
            b = f"blocks.{i}"
            y = self._ln(x, f"{b}.attn_ln")
            q, k, v = (
                self._lin(y, f"{b}.attn.{m}").view(1, n, h, dh).transpose(1, 2) for m in ("query", "key", "value")
            )
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(1, n, d)
            x = x + self._lin(a, f"{b}.attn.out")
            y = self._ln(x, f"{b}.cross_attn_ln")
            q = self._lin(y, f"{b}.cross_attn.query").view(1, n, h, dh).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, ck, cv).transpose(1, 2).reshape(1, n, d)
            x = x + self._lin(a, f"{b}.cross_attn.out")
            y = self._ln(x, f"{b}.mlp_ln")
            x = x + self._lin(F.gelu(self._lin(y, f"{b}.mlp.0")), f"{b}.mlp.2")
        return x

    def _teacher_forced(self, memory: np.ndarray, seq: list[int]) -> Any:
        """The decoder blocks' output ``[1, len(seq), d]`` over one teacher-forced token sequence (causal); call
        under ``torch.inference_mode``."""
        import torch

        dev, n = self.device, len(seq)
        x = self.w["token_embedding.weight"][torch.tensor(seq, device=dev)]
        x = (x + self.w["positional_embedding"][:n])[None]
        causal = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
        return self._layers(x, causal, self.cross_kv(memory))

    def final_states(self, memory: np.ndarray, seq: list[int]) -> Any:
        """The decoder's last states ``[len(seq), d]`` (after its final norm) of one teacher-forced token sequence over
        ``memory``: each position's state times the token embeddings is its next-token logits, so it is what the
        audio and the text before it say comes next (``rescore.deep.prediction_memory``)."""
        import torch

        with torch.inference_mode():
            x = self._ln(self._teacher_forced(memory, seq), "ln")[0]
        return x.float().cpu()
