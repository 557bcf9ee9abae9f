"""Start the cross-attention queries where Whisper's decoder looks (``XAttnConfig.q_init``).

The blocks' keys and values start from Whisper's decoder cross-attention (``init_from_whisper``),
but their queries come from the LM's hidden states, another space: a random query projection attends almost
uniformly over the audio, and 2 h of speech must first teach the blocks *where* to look before they can learn what
to take from it. Whisper's decoder, teacher-forced on the same transcript over the same encoder states, already
knows: the position that predicts a word queries that word's audio. A ridge regression from the LM's hidden state
at each block (normalised as the block normalises it) to Whisper's cross-attention query at the aligned position,
fitted on training examples, starts each block's query projection so that its attention follows the transcript
through the audio. Closed form, a minute or two on one CPU core; the gates stay shut, so the model is still
exactly the LM until training opens them.

Alignment: both tokenise the same normalised transcript; an LM target token is matched to the Whisper token that
covers its first character, and the LM position predicting it to the Whisper position predicting that token.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from rescore.deep.model import normalize_target

if TYPE_CHECKING:
    import numpy as np

    from rescore.deep.xattn import XAttnLM


class Example(Protocol):
    """What the fit reads of a training example (``rescore.deep.train.Example``, which imports this module)."""

    id: str
    states: np.ndarray
    text: str
    hypotheses: list[str]
    group: str


ALPHAS = (
    1e-3,
    1e-2,
    1e-1,
    1.0,
    10.0,
)  # ridge strengths, times the features' mean variance; chosen on held-out examples


def first_char(span: tuple[int, int], text: str) -> int:
    """The first character of a token's ``span`` in ``text`` that is not a space (the span's start if all are)."""
    a, b = span
    return next((c for c in range(a, b) if not text[c].isspace()), a)


def align_tokens(lm_spans: Sequence[tuple[int, int]], whisper_spans: Sequence[tuple[int, int]], text: str) -> list[int]:
    """For each LM token (character spans in ``text``), the index of the Whisper token covering its first
    character, or -1 where none does. ``whisper_spans`` are in ``text`` too (shift off Whisper's leading space)."""
    out = []
    for span in lm_spans:
        c = first_char(span, text)
        out.append(next((i for i, (a, b) in enumerate(whisper_spans) if a <= c < b), -1))
    return out


@dataclass
class RidgeFit:
    """``y ~ x @ weight + bias`` and its held-out R^2 (share of the queries' variance the LM's states explain)."""

    weight: torch.Tensor  # [in, out]
    bias: torch.Tensor  # [out]
    alpha: float
    r2: float


def _solve(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    lam = alpha * float(gram.diagonal().mean())
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc)
    return w, my - mx @ w


def r_squared(y: torch.Tensor, pred: torch.Tensor) -> float:
    return 1.0 - float(((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum().clamp_min(1e-12))


def ridge(x: torch.Tensor, y: torch.Tensor, groups: Sequence[int], seed: int = 0) -> RidgeFit:
    """Ridge regression with its strength chosen on a fifth of the ``groups`` (utterances) held out, then refitted
    on all rows; float64 throughout."""
    x, y = x.double(), y.double()
    ids = sorted(set(groups))
    random.Random(seed).shuffle(ids)
    held = set(ids[: max(1, len(ids) // 5)])
    test = torch.tensor([g in held for g in groups])
    best: tuple[float, float] = (-float("inf"), ALPHAS[-1])
    if test.any() and (~test).any():
        for alpha in ALPHAS:
            w, b = _solve(x[~test], y[~test], alpha)
            best = max(best, (r_squared(y[test], x[test] @ w + b), alpha))
    w, b = _solve(x, y, best[1])
    return RidgeFit(w.float(), b.float(), best[1], best[0])


def whisper_layer(j: int, blocks: int, layers: int) -> int:
    """The Whisper decoder layer block ``j`` of ``blocks`` takes its K/V from (as init_from_whisper maps them)."""
    return round(j * (layers - 1) / max(blocks - 1, 1))


def collect_pairs(
    model: XAttnLM, scorer: Any, examples: Sequence[Example]
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Per block, the LM's normalised hidden states at target-predicting positions ``[N, dim]`` and Whisper's
    queries at the aligned positions ``[N, d]``; and each row's example index."""
    decoder = model.llm.get_decoder()
    captured: dict[int, torch.Tensor] = {}

    def grab(i: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            captured[i] = (output[0] if isinstance(output, tuple) else output).detach()

        return hook

    hooks = [decoder.layers[i].register_forward_hook(grab(i)) for i in model.where]
    n_layers = scorer.decoder.n_layer
    xs: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    ys: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    rows: list[int] = []
    try:
        for e, ex in enumerate(examples):
            text = normalize_target(ex.text, model.config.text_norm)
            enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            lm_ids = enc["input_ids"][: model.config.max_target_tokens]
            w = scorer.tokenizer.encode(" " + text, add_special_tokens=False)
            w_ids, w_spans = w.ids, [(a - 1, b - 1) for a, b in w.offsets]
            if not lm_ids or not w_ids or len(w_ids) > scorer.max_tokens:  # past the decoder's context
                continue
            match = align_tokens(enc["offset_mapping"][: len(lm_ids)], w_spans, text)
            prompt = model.prompt_ids(ex.hypotheses)
            seq = prompt + lm_ids
            keep = [k for k, i in enumerate(match) if i >= 0]
            if not keep:
                continue
            with torch.no_grad():
                decoder(input_ids=torch.tensor([seq], device=model.device))
            queries = scorer.decoder.cross_queries(ex.states, scorer.prompt + w_ids)
            lm_pos = torch.tensor([len(prompt) - 1 + k for k in keep])
            w_pos = torch.tensor([len(scorer.prompt) - 1 + match[k] for k in keep])
            for j, (i, block) in enumerate(zip(model.where, model.blocks, strict=True)):
                with torch.no_grad():
                    xs[j].append(block.norm(captured[i][0, lm_pos]).float().cpu())
                ys[j].append(queries[whisper_layer(j, len(model.blocks), n_layers)][w_pos])
            rows.extend([e] * len(keep))
    finally:
        for h in hooks:
            h.remove()
    empty = torch.zeros(0)
    return [torch.cat(x) if x else empty for x in xs], [torch.cat(y) if y else empty for y in ys], rows


def whisper_scorer(model: str) -> Any:
    """Whisper ``model``'s teacher-forcing decoder (``ascore.WhisperScorer``, PyTorch on one CPU thread); build it
    once and pass it to :func:`fit_queries` and :func:`attention_agreement` when calling them several times."""
    from rescore.score.acoustic import WhisperScorer

    return WhisperScorer(model, device="cpu", method="torch", cpu_threads=1)


def fit_queries(
    model: XAttnLM, examples: Sequence[Example], *, limit: int = 300, seed: int = 0, scorer: Any = None
) -> list[RidgeFit]:
    """Fit every block's query projection to Whisper's (``config.kv_init``) decoder cross-attention queries on up
    to ``limit`` of ``examples`` (one per utterance); returns each block's fit. The blocks' keys must be
    Whisper's (kv_init) and the examples' states its encoder's, or the queries would look for nothing."""
    cfg = model.config
    if not cfg.kv_init:
        raise ValueError("q_init needs kv_init: the queries are fitted to the decoder whose keys the blocks have")
    if cfg.encoder != cfg.kv_init:
        raise ValueError(f"q_init needs the encoder states of {cfg.kv_init}, the K/V's model, not {cfg.encoder}'s")
    seen: set[str] = set()
    chosen = []
    for ex in sorted(examples, key=lambda x: random.Random(f"{seed}-{x.id}").random()):
        if (ex.group or ex.id) not in seen:
            seen.add(ex.group or ex.id)
            chosen.append(ex)
    chosen = chosen[:limit]
    scorer = scorer or whisper_scorer(cfg.kv_init)
    xs, ys, rows = collect_pairs(model, scorer, chosen)
    fits = [ridge(x, y, rows, seed) for x, y in zip(xs, ys, strict=True)]
    with torch.no_grad():
        for block, fit in zip(model.blocks, fits, strict=True):
            block.q.weight.copy_(fit.weight.T.to(block.q.weight))
            block.q.bias.copy_(fit.bias.to(block.q.bias))
    return fits


@dataclass
class Agreement:
    """How closely a block's attention follows Whisper's decoder over the same keys, per aligned position and
    head: ``overlap`` the shared probability mass (1: the same distribution), ``peak`` the share whose most
    attended frame is within ``PEAK_FRAMES`` of Whisper's (20 ms frames)."""

    overlap: float
    peak: float


PEAK_FRAMES = 2


def block_attention(block: Any, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """A block's attention ``[H, N, T]`` for queries ``[N, H * d]`` over its keys ``[1, H, T, d]``."""
    q = queries.view(queries.shape[0], block.heads, block.head_dim).transpose(0, 1)
    return torch.softmax(q @ keys[0].transpose(1, 2) / block.head_dim**0.5, -1)


def attention_agreement(model: XAttnLM, examples: Sequence[Example], scorer: Any = None) -> list[Agreement]:
    """Per block, the agreement of its attention (its query projection as it stands, its keys) with Whisper's
    (``scorer``; default: ``kv_init``'s) decoder attention (the decoder's own queries, the same keys) at the
    positions :func:`collect_pairs` aligns; each example weighs the same."""
    scorer = scorer or whisper_scorer(model.config.kv_init or "")
    overlaps: list[list[float]] = [[] for _ in model.blocks]
    peaks: list[list[float]] = [[] for _ in model.blocks]
    for ex in examples:
        xs, ys, rows = collect_pairs(model, scorer, [ex])
        if not rows:
            continue
        with torch.no_grad():
            states = torch.tensor(ex.states, dtype=torch.float32)[None]
            for j, block in enumerate(model.blocks):
                keys, _ = block.keys_values(states)
                ours, theirs = block_attention(block, block.q(xs[j]), keys), block_attention(block, ys[j], keys)
                overlaps[j].append(float(torch.minimum(ours, theirs).sum(-1).mean()))
                peaks[j].append(float(((ours.argmax(-1) - theirs.argmax(-1)).abs() <= PEAK_FRAMES).float().mean()))
    return [Agreement(sum(o) / max(len(o), 1), sum(p) / max(len(p), 1)) for o, p in zip(overlaps, peaks, strict=True)]
