"""A CTC recognizer: a small network over frozen Whisper encoder states, and a CTC prefix beam search.

No pretrained English CTC model installs here, so the head is trained in this project (``rescore ctc
train``) on the encoder states of the training sets; the package ships one such head in float16
(``rescore/data/ctc-head.*``, written by :func:`export_head`), used unless the user trained their own.
It gives per-frame log-posteriors over characters with a blank; the prefix beam search turns them into
n-best lists scored by their CTC log-probability (the sum over all alignments of each label sequence),
so a CTC n-best file has the same record format as Whisper's and every later stage works on it. The
deep-fusion bridge reuses the same head for CTC compression through :func:`load_ctc_head`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rescore.datasets import Utterance
from rescore.models import cache_dir
from rescore.recognizers.base import in_batches
from rescore.records import Hypothesis, NBest

if TYPE_CHECKING:
    import torch

# word-LM fusion defaults, picked on the first 30 utterances of librispeech-dev (eval/bench_recognizers.py
# reports the other 80); the --lm-weight and --word-bonus options of `rescore transcribe` override them
LM_WEIGHT = 0.5
WORD_BONUS = 1.5
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
    import os

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = asdict(head.config)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save({"config": cfg, "state_dict": head.state_dict(), "meta": meta or {}}, tmp)
    os.replace(tmp, path)
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


# --------------------------------------------------------------------------- prefix beam search


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@dataclass
class _Beam:
    blank: float = -math.inf  # log P(prefix, path ends in blank)
    label: float = -math.inf  # log P(prefix, path ends in its last label)

    @property
    def total(self) -> float:
        return _logsumexp(self.blank, self.label)


class Lexicon:
    """Words the CTC search may spell: partial words must be a prefix of one, finished words one of them.

    Character CTC without a language model misspells freely ("becam", "thr"); keeping the beam on real
    words removes most of those errors. The default word list is the CMU dictionary that ships with
    the ``pocketsphinx`` package (134k words), so nothing is downloaded.
    """

    def __init__(self, words: Iterable[str], vocab: CharVocab | None = None, name: str = "custom") -> None:
        self.vocab = vocab or CharVocab()
        self.words = {w for w in (self.vocab.normalize(x) for x in words) if w and " " not in w}
        self.prefixes = {w[:i] for w in self.words for i in range(1, len(w) + 1)}
        self.space = self.vocab.chars.index(" ") + 1
        self.name = name

    @classmethod
    def cmudict(cls, vocab: CharVocab | None = None) -> Lexicon:
        from rescore.models import package_dir

        d = package_dir("pocketsphinx")
        path = d / "model" / "en-us" / "cmudict-en-us.dict" if d else None
        if path is None or not path.exists():
            raise FileNotFoundError("the CMU dictionary comes with pocketsphinx: pip install pocketsphinx==5.1.1")
        with open(path, encoding="utf-8", errors="replace") as f:
            words = [line.split(" ", 1)[0].split("(", 1)[0] for line in f if line.strip()]
        return cls(words, vocab, "cmudict (pocketsphinx)")

    def _partial(self, prefix: tuple[int, ...]) -> str:
        out = []
        for c in reversed(prefix):
            if c == self.space:
                break
            out.append(self.vocab.chars[c - 1])
        return "".join(reversed(out))

    def allows(self, prefix: tuple[int, ...], label: int) -> bool:
        word = self._partial(prefix)
        if label == self.space:
            return bool(word) and word in self.words
        return word + self.vocab.chars[label - 1] in self.prefixes

    def complete(self, prefix: tuple[int, ...]) -> bool:
        word = self._partial(prefix)
        return not word or word in self.words


class WordLM:
    """A word n-gram language model for CTC shallow fusion: the en-US trigram shipped with pocketsphinx.

    Character CTC over two hours of narrow training speech spells words but cannot tell "there" from
    "their"; a word LM scored at each word end (as pyctcdecode does with KenLM) supplies that. Scores are
    natural-log probabilities; words the LM does not know get ``oov`` instead of its floor.
    """

    def __init__(self, path: str | Path, *, oov: float = -12.0, name: str | None = None) -> None:
        import pocketsphinx

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"word LM not found: {self.path}")
        logmath = pocketsphinx.LogMath()
        self._lm = pocketsphinx.NGramModel(pocketsphinx.Config(), logmath, str(self.path))
        self._scale = math.log(1.0001)  # pocketsphinx's default log base
        self.oov = oov
        self.order = 3
        self.name = name or self.path.name
        self._cache: dict[tuple[str, ...], float] = {}

    @classmethod
    def pocketsphinx(cls) -> WordLM:
        from rescore.models import package_dir

        d = package_dir("pocketsphinx")
        path = d / "model" / "en-us" / "en-us.lm.bin" if d else None
        if path is None or not path.exists():
            raise FileNotFoundError("the en-US word LM comes with pocketsphinx: pip install pocketsphinx==5.1.1")
        return cls(path, name="en-us trigram (pocketsphinx)")

    def score(self, word: str, history: tuple[str, ...]) -> float:
        """ln P(word | the last words of history); ``<s>`` starts every history."""
        ctx = ("<s>",) + history
        key = (word,) + tuple(reversed(ctx[-(self.order - 1) :]))
        got = self._cache.get(key)
        if got is None:
            raw = self._lm.prob(list(key))
            got = self.oov if raw <= -(1 << 28) else raw * self._scale
            if word != "</s>" and self._lm.prob([word]) <= -(1 << 28):
                got = self.oov
            self._cache[key] = got
        return got


@dataclass
class Fusion:
    """Shallow fusion of a word LM into the CTC search: ``ctc + weight * ln P_lm + bonus * words``."""

    lm: WordLM
    weight: float = 0.5
    bonus: float = 1.0

    def sentence(self, text: str) -> float:
        """ln P of a whole sentence (its words, then the sentence end), unweighted."""
        hist: tuple[str, ...] = ()
        total = 0.0
        for w in text.split():
            total += self.lm.score(w, hist)
            hist += (w,)
        return total + self.lm.score("</s>", hist)


def ctc_prefix_beam_search(
    log_probs: np.ndarray,
    beam_size: int = 8,
    nbest: int = 8,
    blank: int = BLANK,
    prune: float = -12.0,
    lexicon: Lexicon | None = None,
    fusion: Fusion | None = None,
) -> list[tuple[tuple[int, ...], float]]:
    """The ``nbest`` most probable label sequences of CTC log-posteriors ``[T, V]``, with log-probabilities.

    Each prefix keeps the probability of its paths ending in blank and in its last label, so a label
    repeated across a blank is told apart from one that is merely held. Labels with a frame log-prob
    below ``prune`` are not tried. With a beam as large as the number of prefixes the result is exact.
    With a ``lexicon`` only extensions it allows are tried, and sequences ending inside a word that is
    not one are dropped at the end (unless nothing else is left). With ``fusion`` each finished word adds
    its weighted word-LM score and bonus (kept per prefix, so beams are ranked by CTC plus LM); the
    returned score is then that sum, the last word and the sentence end included.
    """
    t_len, v = log_probs.shape
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(blank=0.0)}
    space = CHARS.index(" ") + 1
    # per prefix: its finished words and their fused LM score (only with fusion)
    words: dict[tuple[int, ...], tuple[tuple[str, ...], float]] = {(): ((), 0.0)}

    def lm_of(prefix: tuple[int, ...]) -> float:
        return words[prefix][1] if fusion is not None else 0.0

    for t in range(t_len):
        lp = log_probs[t]
        cands = [c for c in range(v) if c != blank and lp[c] >= prune]
        nxt: dict[tuple[int, ...], _Beam] = {}
        for prefix, b in beams.items():
            total = b.total
            # stay on the same prefix: a blank, or the last label held
            s = nxt.setdefault(prefix, _Beam())
            s.blank = _logsumexp(s.blank, total + float(lp[blank]))
            if prefix:
                s.label = _logsumexp(s.label, b.label + float(lp[prefix[-1]]))
            for c in cands:
                if lexicon is not None and not lexicon.allows(prefix, c):
                    continue
                ext = prefix + (c,)
                e = nxt.setdefault(ext, _Beam())
                # a repeated label needs a blank in between
                base = b.blank if prefix and prefix[-1] == c else total
                e.label = _logsumexp(e.label, base + float(lp[c]))
                if fusion is not None and ext not in words:
                    hist, lm = words[prefix]
                    word = _last_word(prefix) if c == space else ""
                    if word:
                        lm += fusion.weight * fusion.lm.score(word, hist) + fusion.bonus
                        hist = hist + (word,)
                    words[ext] = (hist, lm)
        beams = dict(sorted(nxt.items(), key=lambda kv: kv[1].total + lm_of(kv[0]), reverse=True)[:beam_size])
    final = {p: b.total + lm_of(p) for p, b in beams.items()}
    if fusion is not None:  # the unfinished last word and the end of the sentence
        for p in final:
            hist, _ = words[p]
            word = _last_word(p)
            if word:
                final[p] += fusion.weight * fusion.lm.score(word, hist) + fusion.bonus
                hist = hist + (word,)
            final[p] += fusion.weight * fusion.lm.score("</s>", hist)
    ranked = sorted(final.items(), key=lambda kv: kv[1], reverse=True)
    if lexicon is not None:
        ranked = [kv for kv in ranked if lexicon.complete(kv[0])] or ranked
    return ranked[:nbest]


def _last_word(prefix: tuple[int, ...]) -> str:
    out = []
    for c in reversed(prefix):
        if c == CHARS.index(" ") + 1:
            break
        out.append(CHARS[c - 1])
    return "".join(reversed(out))


def ctc_greedy(log_probs: np.ndarray, blank: int = BLANK) -> list[int]:
    """Best path: argmax per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1)
    out, prev = [], blank
    for c in best.tolist():
        if c != blank and c != prev:
            out.append(c)
        prev = c
    return out


# --------------------------------------------------------------------------- the recognizer


class CTCRecognizer:
    """Whisper encoder states (cached) -> trained CTC head -> prefix beam search n-best.

    Options not listed here are refused (``TypeError``): the head is English only and reads encoder
    states of one compute type, so ``language`` and ``compute_type`` are accepted only where they agree
    with it ("en"/"auto", "auto"/the head's type); ``device`` is where the encoder runs.
    """

    def __init__(
        self,
        model: str = "default",
        *,
        beam_size: int = 8,
        nbest: int = 8,
        batch_size: int = 8,
        device: str = "cpu",
        compute_type: str = "auto",
        language: str | None = "en",
        cpu_threads: int = 0,
        lexicon: str | None = "cmudict",
        word_lm: str | None = "pocketsphinx",
        lm_weight: float = LM_WEIGHT,
        word_bonus: float = WORD_BONUS,
        lm_beam: int = 32,
    ) -> None:
        import torch

        from rescore.encoder import WhisperEncoder

        if nbest < 1 or beam_size < 1 or batch_size < 1:
            raise ValueError("nbest, beam_size and batch_size must be at least 1")
        if language not in (None, "", "en", "auto"):
            raise ValueError(f"the CTC head spells English only, not language {language!r}")
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        from rescore.models import MODELS

        # a Whisper model name (the CLI's default --model) means the default head over that encoder
        spec = "default" if model in ("default", "", None) or model in MODELS else model
        self.path, _ = resolve_checkpoint(spec)
        try:
            self.head = load_ctc_head(spec)  # the spec, not the path: the head's meta says where it comes from
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        if model in MODELS and self.head.config.encoder != model:
            raise ValueError(f"the default CTC head reads {self.head.config.encoder} states, not {model}")
        cfg = self.head.config
        if compute_type not in (None, "", "auto", cfg.encoder_compute_type):
            raise ValueError(
                f"the CTC head was trained on {cfg.encoder_compute_type} encoder states: compute_type must be"
                f" auto or {cfg.encoder_compute_type}, not {compute_type!r}"
            )
        self.encoder = WhisperEncoder(
            cfg.encoder, device=device, compute_type=cfg.encoder_compute_type, batch_size=batch_size
        )
        self.beam_size = max(beam_size, nbest)
        self.nbest = nbest
        self.batch_size = batch_size
        self.lexicon: Lexicon | None = None
        if lexicon == "cmudict":
            try:
                self.lexicon = Lexicon.cmudict(self.head.vocab)
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
        elif lexicon not in (None, "", "none"):
            path = Path(lexicon)  # type: ignore[arg-type]
            if not path.exists():
                raise ValueError(f"lexicon not found: {path} (expected 'cmudict', 'none' or a word list file)")
            words = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            self.lexicon = Lexicon(words, self.head.vocab, str(path))
        self.fusion: Fusion | None = None
        if word_lm not in (None, "", "none"):
            try:
                lm = WordLM.pocketsphinx() if word_lm == "pocketsphinx" else WordLM(word_lm)  # type: ignore[arg-type]
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
            self.fusion = Fusion(lm, lm_weight, word_bonus)
            self.beam_size = max(self.beam_size, lm_beam)  # word-end LM scores reorder late: keep more prefixes
        self.info: dict[str, Any] = {
            "backend": "ctc",
            "word_lm": None if self.fusion is None else self.fusion.lm.name,
            "lm_weight": None if self.fusion is None else lm_weight,
            "word_bonus": None if self.fusion is None else word_bonus,
            "model": str(self.path),
            "model_source": self.head.meta["checkpoint"]["source"],
            "encoder": cfg.encoder,
            "units": "chars",
            "lexicon": self.lexicon.name if self.lexicon else None,
            "beam_size": self.beam_size,
            "nbest": nbest,
        }

    def log_posteriors(self, states: list[np.ndarray]) -> list[np.ndarray]:
        """Per-frame CTC log-posteriors of each utterance's encoder states."""
        import torch

        lengths = torch.tensor([len(s) for s in states])
        x = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
        for i, s in enumerate(states):
            x[i, : len(s)] = torch.from_numpy(s)
        with torch.inference_mode():
            lp, out_len = self.head(x, lengths)
        return [lp[i, : out_len[i]].numpy() for i in range(len(states))]

    def _hypotheses(self, log_probs: np.ndarray) -> list[Hypothesis]:
        # label sequences that differ only in leading, trailing or doubled spaces read the same: merge them
        merged: dict[str, tuple[list[int], float]] = {}
        for labels, score in ctc_prefix_beam_search(
            log_probs, self.beam_size, self.beam_size, self.head.blank, lexicon=self.lexicon, fusion=self.fusion
        ):
            text = self.head.vocab.decode(labels)
            if text in merged:
                merged[text] = (merged[text][0], _logsumexp(merged[text][1], score))
            else:
                merged[text] = (list(self.head.vocab.encode(text)), score)
        ranked = sorted(merged.items(), key=lambda kv: kv[1][1], reverse=True)[: self.nbest]
        hyps = []
        for text, (labels, score) in ranked:
            n = max(len(labels), 1)
            # am: what the search ranked by (CTC, plus the fused word LM when there is one)
            scores = {"am": score, "am_tokens": float(n), "am_norm": score / n, "ctc": score}
            if self.fusion is not None:
                lm = self.fusion.sentence(text)
                scores["word_lm"] = lm
                scores["ctc"] = score - self.fusion.weight * lm - self.fusion.bonus * len(text.split())
            hyps.append(Hypothesis(text, labels, scores))
        return hyps

    def _batch(self, utts: list[Utterance]) -> Iterator[NBest]:
        t0 = time.perf_counter()
        got = list(self.encoder.states(utts))
        ok = [(u, s) for u, s, e in got if e is None and s is not None and len(s)]
        posts = self.log_posteriors([s for _, s in ok]) if ok else []
        by_id = {u.id: lp for (u, _), lp in zip(ok, posts, strict=True)}
        elapsed = time.perf_counter() - t0
        for u, s, err in got:
            rec = NBest(id=u.id, audio=u.audio, reference=u.reference, recognizer=dict(self.info))
            if u.id not in by_id:
                rec.error = err or "no audio frames"
                yield rec
                continue
            t1 = time.perf_counter()
            rec.hypotheses = self._hypotheses(by_id[u.id])
            rec.duration = round(len(s) / 50, 3)  # type: ignore[arg-type]
            rec.timing = {"transcribe": round(elapsed / len(utts) + time.perf_counter() - t1, 4)}
            yield rec

    def recognize(self, utterances: Iterable[Utterance]) -> Iterator[NBest]:
        """Yield one n-best record per utterance, in input order."""
        for batch in in_batches(utterances, self.batch_size):
            yield from self._batch(batch)


# --------------------------------------------------------------------------- joint CTC/attention scoring


def ctc_sequence_log_probs(log_probs: np.ndarray, label_seqs: list[list[int]], blank: int = BLANK) -> list[float]:
    """Exact CTC log-probability of each label sequence under per-frame log-posteriors ``[T, V]``.

    The forward algorithm (torch's ``ctc_loss``) sums over every alignment; a sequence that cannot fit in
    ``T`` frames gets ``-inf``.
    """
    import torch

    if not label_seqs:
        return []
    n = len(label_seqs)
    lp = torch.from_numpy(np.ascontiguousarray(log_probs, dtype=np.float32))[:, None, :].expand(-1, n, -1)
    targets = torch.tensor([c for s in label_seqs for c in s], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(
        lp,
        targets,
        torch.full((n,), log_probs.shape[0], dtype=torch.long),
        torch.tensor([len(s) for s in label_seqs], dtype=torch.long),
        blank=blank,
        reduction="none",
        zero_infinity=False,
    )
    return [-float(x) for x in loss]


class CTCScorer:
    """Adds the CTC head's log-probability of each hypothesis (``scores["ctc"]``) to n-best records of any
    recognizer: with Whisper's ``am`` it gives joint CTC/attention scores, as hybrid CTC/attention
    decoders use, for the reranker to weigh. Text is normalised to the head's characters first.
    """

    def __init__(self, model: str = "default", *, batch_size: int = 8, key: str = "ctc") -> None:
        from rescore.encoder import WhisperEncoder

        self.head = load_ctc_head(None if model == "default" else model)
        cfg = self.head.config
        self.encoder = WhisperEncoder(cfg.encoder, compute_type=cfg.encoder_compute_type, batch_size=batch_size)
        self.batch_size = batch_size
        self.key = key

    def _posteriors(self, states: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            lp, _ = self.head(torch.from_numpy(states)[None])
        return lp[0].numpy()

    def score(self, records: Iterable[NBest]) -> Iterator[NBest]:
        """Yield the records with ``ctc`` scores added; a record whose audio fails gets ``error`` set."""
        batch: list[NBest] = []

        def flush() -> Iterator[NBest]:
            utts = [
                Utterance(r.id, r.audio or "", r.reference, start=r.extra.get("start"), end=r.extra.get("end"))
                for r in batch
            ]
            for rec, (_, states, err) in zip(batch, self.encoder.states(utts), strict=True):
                if err is not None or states is None:
                    rec.error = f"ctc scoring: {err}"
                    yield rec
                    continue
                lp = self._posteriors(states)
                labels = [self.head.vocab.encode(h.text) for h in rec.hypotheses]
                for h, s in zip(rec.hypotheses, ctc_sequence_log_probs(lp, labels, self.head.blank), strict=True):
                    h.scores[self.key] = s if math.isfinite(s) else -1e9
                yield rec
            batch.clear()

        for rec in records:
            if not rec.ok or not rec.hypotheses or not rec.audio:
                yield rec
                continue
            batch.append(rec)
            if len(batch) >= self.batch_size:
                yield from flush()
        if batch:
            yield from flush()
