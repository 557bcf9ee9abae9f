"""The gated cross-attention block, its start from Whisper's decoder, and the memory the blocks read in one pass.

A :class:`GatedCrossAttention` block adds ``tanh(gate) * attention`` and ``tanh(gate) * feed-forward`` to the LM's
residual stream (Flamingo's Gated XATTN-dense, arXiv 2204.14198; Whispering-LLaMA, arXiv 2310.06434). The gates
start at zero, so the untrained model is the LM exactly. Key/value projections can start from Whisper's decoder
cross-attention (tiny: 6 heads of 64, base: 8, the head width of SmolLM2), so the keys and values begin as features
Whisper's decoder already knows how to query.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class GatedCrossAttention(nn.Module):
    """``h + tanh(a) * XAttn(norm(h), memory)``, then ``h + tanh(f) * FFN(norm(h))``; a = f = 0 at the start,
    so the block returns its input exactly until training opens the gates."""

    def __init__(self, dim: int, enc_dim: int, heads: int, head_dim: int, ffn_mult: int = 2, eps: float = 1e-5):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(enc_dim, inner, bias=False)  # Whisper's key has no bias
        self.v = nn.Linear(enc_dim, inner)
        self.out = nn.Linear(inner, dim)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ffn_norm = nn.RMSNorm(dim, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.ffn_gate = nn.Parameter(torch.zeros(1))

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, enc_dim]`` -> keys and values ``[B, H, T, head_dim]`` (once per batch, reused every step)."""
        b, t, _ = memory.shape
        k = self.k(memory).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(memory).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        return k, v

    def forward(self, h: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """``h [B, S, dim]``; ``kv``: keys, values and the memory mask, ``[B, T]`` (every position reads the same
        frames) or ``[B, S, T]`` (each position its own: the prediction memory); None: no audio."""
        if kv is not None:
            k, v, mask = kv
            b, s, _ = h.shape
            q = self.q(self.norm(h)).view(b, s, self.heads, self.head_dim).transpose(1, 2)
            attn_mask = mask[:, None] if mask.dim() == 3 else mask[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask)
            read = self.out(y.transpose(1, 2).reshape(b, s, -1))
            h = h + torch.tanh(self.attn_gate).to(h.dtype) * read.to(h.dtype)
        return h + torch.tanh(self.ffn_gate).to(h.dtype) * self.ffn(self.ffn_norm(h)).to(h.dtype)


def whisper_cross_kv(model: str) -> list[dict[str, torch.Tensor]]:
    """Per decoder layer of a CTranslate2 Whisper model, its cross-attention ``{k.weight, v.weight, v.bias}``."""
    import numpy as np

    from rescore.io.models import resolve_model
    from rescore.whisper.weights import ct2_to_openai_state_dict, read_ct2_model

    sd, dims = ct2_to_openai_state_dict(read_ct2_model(Path(resolve_model(model)) / "model.bin"), 80)
    out = []
    for i in range(int(dims["n_text_layer"])):
        p = f"decoder.blocks.{i}.cross_attn"
        out.append(
            {
                "k.weight": torch.from_numpy(np.asarray(sd[f"{p}.key.weight"], dtype=np.float32)),
                "v.weight": torch.from_numpy(np.asarray(sd[f"{p}.value.weight"], dtype=np.float32)),
                "v.bias": torch.from_numpy(np.asarray(sd[f"{p}.value.bias"], dtype=np.float32)),
            }
        )
    return out


def init_from_whisper(blocks: Sequence[GatedCrossAttention], layers: Sequence[dict[str, torch.Tensor]]) -> None:
    """Block j of n takes Whisper decoder layer ``round(j * (L - 1) / (n - 1))``: low blocks the low layers."""
    n, n_layers = len(blocks), len(layers)
    with torch.no_grad():
        for j, block in enumerate(blocks):
            w = layers[round(j * (n_layers - 1) / max(n - 1, 1))]
            if w["k.weight"].shape != block.k.weight.shape:
                raise ValueError(
                    f"Whisper cross-attention K/V {tuple(w['k.weight'].shape)} do not fit the blocks' "
                    f"{tuple(block.k.weight.shape)}: heads x head_dim and the encoder width must match"
                )
            block.k.weight.copy_(w["k.weight"])
            block.v.weight.copy_(w["v.weight"])
            block.v.bias.copy_(w["v.bias"])


class BlockMemory:
    """What the blocks read during one :meth:`XAttnLM.attending` span: the memory states of the batch, with each
    block's keys and values computed once; beam search's expanded batch (each row repeated ``num_beams`` times) gets
    them repeated to match.

    It also counts the sequence's columns over the LM's forward calls (a prompt, then one token per step), so
    the blocks can leave the columns before ``attend_from`` as the plain LM wrote them; ``offset`` is the first
    column of the first call (a prompt already in the LM's cache)."""

    def __init__(
        self,
        blocks: nn.ModuleList,
        states: torch.Tensor | None,
        mask: torch.Tensor | None,
        attend_from: int = 0,
        offset: int = 0,
    ) -> None:
        self.blocks, self.states, self.mask = blocks, states, mask
        self.cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.attend_from, self.call_start, self.next_column = attend_from, offset, offset

    def begin_call(self, columns: int) -> None:
        """The first block's hook of a forward call: this call holds the next ``columns`` columns."""
        self.call_start, self.next_column = self.next_column, self.next_column + columns

    def skipped(self, columns: int) -> int:
        """How many of this call's leading columns the blocks leave alone (those before ``attend_from``)."""
        return min(max(self.attend_from - self.call_start, 0), columns)

    def get(self, j: int, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if self.states is None or self.mask is None:
            return None
        if (j, rows) not in self.cache:
            if (j, self.states.shape[0]) not in self.cache:
                k, v = self.blocks[j].keys_values(self.states)
                self.cache[(j, self.states.shape[0])] = (k, v, self.mask)
            k, v, m = self.cache[(j, self.states.shape[0])]
            r = rows // self.states.shape[0]
            self.cache[(j, rows)] = (k.repeat_interleave(r, 0), v.repeat_interleave(r, 0), m.repeat_interleave(r, 0))
        return self.cache[(j, rows)]
