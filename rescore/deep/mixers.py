"""Token mixers for the bridge: each maps ``(x [B, T, D], mask [B, T])`` to ``[B, T, D]``.

``mask`` is True on real frames and False on padding. Every mixer gives each utterance of a padded batch
the same output on its real frames as it would get alone, and zeros on padding, so batching never changes
what the LLM sees. Three ways to let frames see each other (compared in docs/experiments/deep-fusion.md):

- :class:`SelfAttentionMixer`: multi-head dot-product attention, quadratic in T.
- :class:`SummaryMixing` (Parcollet et al., arXiv 2307.07421): a per-frame transform combined with the mean
  of a second transform over the utterance, linear in T.
- :class:`GaussianAdaptiveAttention` (Ioannides et al., arXiv 2401.11143): per head, frames are weighted by a
  Gaussian density around the utterance mean with learnable mean offsets and variance scales, linear in T.

Each is wrapped in the same pre-norm residual block with a feed-forward layer (:class:`MixerBlock`), so
only the way tokens are mixed differs between them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MIXERS = ("none", "attention", "summary", "gaussian")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of the real frames: ``[B, T, D] -> [B, 1, D]``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)


class SelfAttentionMixer(nn.Module):
    """Multi-head self-attention over the real frames (padding is masked out as keys)."""

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = mask[:, None, None, :]  # [B, 1, 1, T]: which keys each query may see
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class SummaryMixing(nn.Module):
    """SummaryMixing: ``c([f(x_t); mean_t s(x_t)])`` with f, s, c linear + GELU; linear time and memory in T."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.local = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.summary = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.combine = nn.Sequential(nn.Linear(2 * hidden, dim), nn.GELU())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        local = self.local(x)
        summary = masked_mean(self.summary(x), mask).expand_as(local)
        return self.combine(torch.cat([local, summary], -1))


class GaussianAdaptiveAttention(nn.Module):
    """Multi-head Gaussian adaptive attention (GAAM), normalised over time.

    Per head (a slice of the features) and feature, the mean and variance over the utterance's real frames
    are taken; each of ``gaussians`` learnable Gaussians shifts the mean (offset) and scales the variance,
    their densities are multiplied and normalised over time into weights, and the frames are re-weighted
    by them. The weights are scaled by the number of real frames so that they average 1 (the original
    sums to 1, which shrinks long utterances). An output projection then mixes the features.
    """

    def __init__(self, dim: int, heads: int = 8, gaussians: int = 2, eps: float = 1e-5) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.gaussians, self.eps = heads, gaussians, eps
        self.value = nn.Linear(dim, dim)
        self.mean_offset = nn.Parameter(torch.zeros(heads, gaussians))
        # log of the variance scale c^2, started at c = 2 (broad Gaussians, close to uniform weights)
        self.log_scale = nn.Parameter(torch.full((heads, gaussians), math.log(4.0)))
        self.out = nn.Linear(dim, dim)

    def weights(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[B, T, H, D/H]``, averaging 1 over the real frames of each utterance."""
        b, t, d = x.shape
        xh = x.view(b, t, self.heads, d // self.heads)
        m = mask.view(b, t, 1, 1).to(x.dtype)
        n = m.sum(1, keepdim=True).clamp(min=1.0)
        mean = (xh * m).sum(1, keepdim=True) / n
        var = (((xh - mean) * m) ** 2).sum(1, keepdim=True) / n + self.eps
        z = (xh - mean).unsqueeze(-1) - self.mean_offset[:, None, :]  # [B, T, H, D/H, G]
        log_density = -(z**2) / (2.0 * var.unsqueeze(-1) * self.log_scale.exp()[:, None, :])
        log_w = log_density.sum(-1)  # product of the Gaussians
        log_w = log_w.masked_fill(m == 0, float("-inf"))
        return torch.softmax(log_w, dim=1) * n

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        v = self.value(x).view(b, t, self.heads, d // self.heads)
        return self.out((v * self.weights(x, mask)).reshape(b, t, d))


def make_mixer(kind: str, dim: int, heads: int = 8) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "attention":
        return SelfAttentionMixer(dim, heads)
    if kind == "summary":
        return SummaryMixing(dim)
    if kind == "gaussian":
        return GaussianAdaptiveAttention(dim, heads)
    raise ValueError(f"unknown mixer {kind!r}: one of {', '.join(MIXERS)}")


class MixerBlock(nn.Module):
    """Pre-norm residual block: ``x + mix(LN(x))``, then ``x + FFN(LN(x))``; padding stays zero."""

    def __init__(self, kind: str, dim: int, heads: int = 8, ffn_mult: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        mixer = make_mixer(kind, dim, heads)
        if mixer is None:
            raise ValueError("a MixerBlock needs a mixer; use no block for 'none'")
        self.mixer = mixer
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = x * keep
        x = x + self.drop(self.mixer(self.norm1(x), mask)) * keep
        return x + self.drop(self.ffn(self.norm2(x))) * keep
