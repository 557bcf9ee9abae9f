"""The CTC head: a small network over frozen Whisper encoder states giving per-frame character log-posteriors.

No pretrained English CTC model installs here, so the head is trained in this project (``rescore ctc train``)
on the encoder states of the training sets; the package ships one such head in float16
(``rescore/data/ctc-head.*``, written by :func:`export_head`), used unless the user trained their own. The
deep-fusion bridge reuses it for CTC compression through :func:`load_ctc_head`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rescore.io.models import cache_dir

if TYPE_CHECKING:
    import torch

BLANK = 0
CHARS = " 'abcdefghijklmnopqrstuvwxyz"  # label i+1 is CHARS[i]; label 0 is the blank


SHIPPED_NAME = "ctc-head"  # rescore/data/ctc-head.safetensors (float16 weights) + ctc-head.json (config, meta)
SHIPPED_FORMAT = "rescore-ctc-head/1"


def default_checkpoint() -> Path:
    """Where ``rescore ctc train`` saves the head by default (``"default"`` loads it when it exists)."""
    return cache_dir() / "ctc" / "tiny-en-char" / "head.pt"


def shipped_checkpoint() -> Path:
    """The float16 head that ships with the package (``"default"`` when the user trained none)."""
    return Path(__file__).resolve().parent.parent / "data" / f"{SHIPPED_NAME}.safetensors"


def resolve_checkpoint(path: str | Path | None = "default") -> tuple[Path, str]:
    """The checkpoint file ``path`` names, and where it comes from ("user", "shipped" or "file").

    ``None`` or ``"default"``: the head ``rescore ctc train`` wrote into the cache if there is one, else
    the shipped one. A folder means its ``head.pt`` (or a shipped-form ``ctc-head.safetensors``).
    """
    if path in (None, "", "default"):
        user = default_checkpoint()
        return (user, "user") if user.exists() else (shipped_checkpoint(), "shipped")
    p = Path(path)  # type: ignore[arg-type]
    if p.is_dir():
        shipped_form = p / f"{SHIPPED_NAME}.safetensors"
        p = shipped_form if shipped_form.exists() and not (p / "head.pt").exists() else p / "head.pt"
    return p, "file"


# --------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class CharVocab:
    """Characters of the CTC head: blank at 0, then space, apostrophe and a-z."""

    chars: str = CHARS
    blank: int = BLANK

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def normalize(self, text: str) -> str:
        """Lower case, letters and apostrophes only: what the head can spell."""
        text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
        text = re.sub(r"[^a-z' ]+", " ", text)
        text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes
        return " ".join(text.split())

    def encode(self, text: str) -> list[int]:
        return [self.chars.index(c) + 1 for c in self.normalize(text)]

    def decode(self, labels: Iterable[int]) -> str:
        return " ".join("".join(self.chars[i - 1] for i in labels if i != self.blank).split())


# --------------------------------------------------------------------------- the head


@dataclass
class CTCHeadConfig:
    """Shape of the head. ``stride`` frames of encoder states are stacked into one output frame."""

    input_dim: int = 384
    dim: int = 192
    layers: int = 2
    heads: int = 4
    ff_dim: int = 768
    conv_kernel: int = 15
    dropout: float = 0.1
    stride: int = 2
    vocab: str = CHARS
    encoder: str = "whisper-tiny.en"
    encoder_compute_type: str = "int8"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 1


def _build_head(cfg: CTCHeadConfig) -> torch.nn.Module:
    """Torch is imported lazily so that ``rescore --help`` stays fast; the class is built on first use."""
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        """Depthwise convolution over time (a conformer's local context), residual."""

        def __init__(self, dim: int, kernel: int, dropout: float) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.pw1 = nn.Linear(dim, 2 * dim)
            self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
            self.act = nn.SiLU()
            self.pw2 = nn.Linear(dim, dim)
            self.drop = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            y = nn.functional.glu(self.pw1(self.norm(x)), dim=-1)
            y = y.masked_fill(mask.unsqueeze(-1), 0.0)
            y = self.act(self.dw(y.transpose(1, 2)).transpose(1, 2))
            return x + self.drop(self.pw2(y))

    class CTCHead(nn.Module):
        """Encoder states [B, T, input_dim] -> CTC log-posteriors [B, ceil(T / stride), vocab_size]."""

        def __init__(self, cfg: CTCHeadConfig) -> None:
            super().__init__()
            self.config = cfg
            self.stride = cfg.stride
            self.blank = BLANK
            self.vocab = CharVocab(cfg.vocab)
            self.proj = nn.Sequential(
                nn.LayerNorm(cfg.input_dim * cfg.stride),
                nn.Linear(cfg.input_dim * cfg.stride, cfg.dim),
                nn.Dropout(cfg.dropout),
            )
            self.convs = nn.ModuleList(ConvBlock(cfg.dim, cfg.conv_kernel, cfg.dropout) for _ in range(cfg.layers))
            self.attn = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    cfg.dim, cfg.heads, cfg.ff_dim, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
                )
                for _ in range(cfg.layers)
            )
            self.norm = nn.LayerNorm(cfg.dim)
            self.out = nn.Linear(cfg.dim, cfg.vocab_size)

        def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
            return (lengths + self.stride - 1) // self.stride

        def forward(
            self, states: torch.Tensor, lengths: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """Log-posteriors [B, T', V] and their valid lengths [B] (T' = ceil(T / stride))."""
            b, t, d = states.shape
            if lengths is None:
                lengths = torch.full((b,), t, dtype=torch.long, device=states.device)
            valid = torch.arange(t, device=states.device)[None, :] < lengths[:, None]
            states = states * valid.unsqueeze(-1)  # padding must not leak into the last stacked frame
            pad = (-t) % self.stride
            if pad:
                states = nn.functional.pad(states, (0, 0, 0, pad))
            x = states.reshape(b, (t + pad) // self.stride, d * self.stride)
            out_len = self.output_lengths(lengths)
            mask = torch.arange(x.shape[1], device=x.device)[None, :] >= out_len[:, None]
            x = self.proj(x)
            for conv, attn in zip(self.convs, self.attn, strict=True):
                x = conv(x, mask)
                x = attn(x, src_key_padding_mask=mask)
            logits = self.out(self.norm(x))
            return logits.log_softmax(-1), out_len

    return CTCHead(cfg)


def build_ctc_head(cfg: CTCHeadConfig | None = None) -> torch.nn.Module:
    """A fresh, untrained head."""
    return _build_head(cfg or CTCHeadConfig())


def save_ctc_head(head: torch.nn.Module, path: Path, meta: dict[str, Any] | None = None) -> None:
    """Weights and config in one ``.pt`` file (plus a readable ``config.json`` beside it), atomically."""
    import torch

    from rescore.train.scaffold import atomic_write

    cfg = asdict(head.config)
    atomic_write(
        path, lambda tmp: torch.save({"config": cfg, "state_dict": head.state_dict(), "meta": meta or {}}, tmp)
    )
    (path.parent / "config.json").write_text(json.dumps({"config": cfg, "meta": meta or {}}, indent=2) + "\n")


def load_ctc_head(path: str | Path | None = None, device: str = "cpu") -> torch.nn.Module:
    """A trained head, in eval mode: ``head(states [B, T, 384], lengths) -> (log_probs [B, T', V], lengths')``.

    ``head.blank`` is the blank index, ``head.vocab`` the label vocabulary (:class:`CharVocab`),
    ``head.stride`` the number of encoder frames per output frame. ``path`` ``None`` or ``"default"`` is
    the checkpoint that ``rescore ctc train`` writes by default if it exists, else the one shipped with
    the package (:func:`resolve_checkpoint`). Reads ``.pt`` checkpoints (float32, as training saves them)
    and the shipped form (``.safetensors`` float16 weights + a ``.json`` beside it; computed in float32).
    ``head.meta["checkpoint"]`` says which file was loaded and where it comes from.
    """
    import torch

    p, source = resolve_checkpoint(path)
    if not p.exists():
        raise FileNotFoundError(f"no CTC head at {p}: train one with `rescore ctc train`")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        side = p.with_suffix(".json")
        if not side.exists():
            raise FileNotFoundError(f"{p} has no {side.name} beside it (the head's config)")
        info = json.loads(side.read_text(encoding="utf-8"))
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(p)).items()}
        config, meta = info["config"], dict(info.get("meta", {}))
    else:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        state, config, meta = ckpt["state_dict"], ckpt["config"], dict(ckpt.get("meta", {}))
    head = _build_head(CTCHeadConfig(**config))
    head.load_state_dict(state)
    labels = {"user": "trained by the user (rescore ctc train)", "shipped": "shipped with the package"}
    meta["checkpoint"] = {"path": str(p), "source": labels.get(source, "given path")}
    head.meta = meta
    return head.to(device).eval()


def export_head(checkpoint: str | Path, out_dir: str | Path, meta: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``checkpoint``'s head in the shipped form: ``ctc-head.safetensors`` (float16 weights) and
    ``ctc-head.json`` (format, config, vocabulary, and its metadata updated with ``meta``).

    Returns the two paths. :func:`load_ctc_head` reads the result back (in float32).
    """
    import torch
    from safetensors.torch import save_file

    head = load_ctc_head(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, side = out / f"{SHIPPED_NAME}.safetensors", out / f"{SHIPPED_NAME}.json"
    state = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in head.state_dict().items()
    }
    save_file(state, str(weights), metadata={"format": SHIPPED_FORMAT, "dtype": "float16"})
    full = {k: v for k, v in head.meta.items() if k != "checkpoint"} | (meta or {})
    info = {
        "format": SHIPPED_FORMAT,
        "dtype": "float16",
        "config": asdict(head.config),
        "vocab": {"blank": head.blank, "labels": ["<blank>", *head.vocab.chars]},
        "meta": full,
    }
    side.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return weights, side
