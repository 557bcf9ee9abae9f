"""The bridge between a frozen speech encoder and a causal LM: length reduction, token mixing, projection.

Whisper gives 50 states a second; an LLM prefix of that length is slow and its attention spread thin, so
the bridge first shortens the sequence (strided convolutions, frame stacking, or CTC compression, which
keeps one vector per recognised label), lets the frames see each other (a mixer from :mod:`mixers`), and
projects them to the LLM's embedding width. All parts take and return ``(x [B, T, D], mask [B, T])``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rescore.deep.mixers import MIXERS, MixerBlock

REDUCERS = ("conv", "stack", "ctc")


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    t = int(max_len if max_len is not None else lengths.max().item())
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


class ConvDownsample(nn.Module):
    """Strided 1-D convolutions (kernel 4, stride 2, padding 1), each halving the frame rate; stacked to
    ``factor`` (a power of two). Padding is zeroed before each layer, so a padded batch gives each
    utterance the states it would get alone."""

    def __init__(self, in_dim: int, out_dim: int, factor: int = 4) -> None:
        super().__init__()
        n = int(round(math.log2(factor)))
        if factor < 2 or 2**n != factor:
            raise ValueError(f"conv downsampling factor must be a power of two >= 2, got {factor}")
        dims = [in_dim] + [out_dim] * n
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel_size=4, stride=2, padding=1) for a, b in pairs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(1)
        for conv in self.convs:
            if x.shape[1] < 2:  # a conv of kernel 4 with padding 1 needs two frames
                x = F.pad(x, (0, 0, 0, 2 - x.shape[1]))
            x = x * lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
            x = F.gelu(conv(x.transpose(1, 2)).transpose(1, 2))
            lengths = torch.clamp(lengths // 2, min=1)
        mask = lengths_to_mask(lengths, x.shape[1])
        return x * mask.unsqueeze(-1).to(x.dtype), mask


class FrameStack(nn.Module):
    """Concatenate ``factor`` consecutive frames and project them: ``[B, T, D] -> [B, ceil(T/k), out]``."""

    def __init__(self, in_dim: int, out_dim: int, factor: int = 4) -> None:
        super().__init__()
        self.factor = factor
        self.proj = nn.Linear(in_dim * factor, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        k = self.factor
        pad = (-t) % k
        x = F.pad(x * mask.unsqueeze(-1).to(x.dtype), (0, 0, 0, pad))
        x = x.reshape(b, (t + pad) // k, d * k)
        mask = lengths_to_mask((mask.sum(1) + k - 1) // k, x.shape[1])
        return F.gelu(self.proj(x)) * mask.unsqueeze(-1).to(x.dtype), mask


def ctc_segments(log_probs: torch.Tensor, mask: torch.Tensor, blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC collapse as frame -> segment ids: ``(segment [B, T] with -1 for dropped frames, count [B])``.

    A frame is dropped when its argmax is blank (or it is padding); consecutive kept frames with the same
    argmax label form one segment, as CTC decoding merges repeats. An utterance with no kept frame keeps
    all its frames as one segment, so that the LLM still gets a prefix.
    """
    labels = log_probs.argmax(-1)
    keep = (labels != blank) & mask
    prev = F.pad(labels[:, :-1], (1, 0), value=-1)
    prev_keep = F.pad(keep[:, :-1], (1, 0), value=False)
    start = keep & ~(prev_keep & (labels == prev))
    seg = torch.cumsum(start.long(), 1) - 1
    seg = torch.where(keep, seg, torch.full_like(seg, -1))
    count = start.sum(1)
    empty = count == 0
    if empty.any():
        seg = torch.where(empty[:, None] & mask, torch.zeros_like(seg), seg)
        count = torch.where(empty, torch.ones_like(count), count)
    return seg, count


class CTCCompress(nn.Module):
    """CTC compression: average the frames of each CTC segment (see :func:`ctc_segments`), then project.

    ``ctc`` is any frozen module mapping ``(states [B, T, D], mask [B, T])`` to log-posteriors ``[B, T, V]``
    (a trained CTC head over the same encoder, see :class:`rescore.deep.model.CTCHeadAdapter`); it is
    not trained here and not saved with the bridge.
    """

    def __init__(self, in_dim: int, out_dim: int, ctc: nn.Module, blank: int = 0) -> None:
        super().__init__()
        self.ctc = [ctc]  # a list hides it from parameters() and state_dict(): it stays frozen and external
        self.blank = blank
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            log_probs = self.ctc[0](x, mask)
        seg, count = ctc_segments(log_probs, mask, self.blank)
        b, _, d = x.shape
        n = int(count.max().item())
        index = seg.clamp(min=0).unsqueeze(-1).expand(-1, -1, d)
        weight = (seg >= 0).unsqueeze(-1).to(x.dtype)
        sums = x.new_zeros(b, n, d).scatter_add(1, index, x * weight)
        sizes = x.new_zeros(b, n, 1).scatter_add(1, index[..., :1], weight)
        out = sums / sizes.clamp(min=1.0)
        mask = lengths_to_mask(count, n)
        return F.gelu(self.proj(out)) * mask.unsqueeze(-1).to(x.dtype), mask


@dataclass
class BridgeConfig:
    """Everything needed to rebuild a :class:`Bridge` (saved in the model's config file)."""

    in_dim: int = 384  # encoder width (Whisper tiny: 384, base: 512)
    out_dim: int = 576  # LLM embedding width (SmolLM2-135M: 576)
    reducer: str = "conv"  # conv | stack | ctc
    factor: int = 4  # frame-rate reduction of conv and stack
    mixer: str = "none"  # none | attention | summary | gaussian
    layers: int = 2  # mixer blocks
    dim: int = 512  # width inside the bridge
    heads: int = 8
    proj_hidden: int = 1024
    dropout: float = 0.1
    ctc_head: str | None = None  # path of the CTC head for reducer=ctc
    ctc_blank: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bridge(nn.Module):
    """Encoder states -> LLM prefix embeddings: ``reduce -> mixer blocks -> MLP projection``."""

    def __init__(self, config: BridgeConfig, ctc: nn.Module | None = None) -> None:
        super().__init__()
        c = self.config = config
        if c.mixer not in MIXERS:
            raise ValueError(f"unknown mixer {c.mixer!r}: one of {', '.join(MIXERS)}")
        if c.reducer == "conv":
            self.reduce: nn.Module = ConvDownsample(c.in_dim, c.dim, c.factor)
        elif c.reducer == "stack":
            self.reduce = FrameStack(c.in_dim, c.dim, c.factor)
        elif c.reducer == "ctc":
            if ctc is None:
                raise ValueError("reducer 'ctc' needs a CTC head (a module states -> log-posteriors)")
            self.reduce = CTCCompress(c.in_dim, c.dim, ctc, c.ctc_blank)
        else:
            raise ValueError(f"unknown reducer {c.reducer!r}: one of {', '.join(REDUCERS)}")
        layers = 0 if c.mixer == "none" else c.layers
        self.blocks = nn.ModuleList(MixerBlock(c.mixer, c.dim, c.heads, dropout=c.dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(c.dim)
        self.proj = nn.Sequential(nn.Linear(c.dim, c.proj_hidden), nn.GELU(), nn.Linear(c.proj_hidden, c.out_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states [B, T, in_dim], mask [B, T])`` -> ``(embeddings [B, T', out_dim], mask [B, T'])``."""
        x, mask = self.reduce(x, mask)
        for block in self.blocks:
            x = block(x, mask)
        x = self.proj(self.norm(x))
        return x * mask.unsqueeze(-1).to(x.dtype), mask
