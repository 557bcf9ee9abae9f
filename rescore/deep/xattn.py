"""Deep fusion by gated cross-attention: a frozen causal LM that reads the first-pass n-best and consults the audio.

After every ``every``-th layer of the frozen LM a :class:`GatedCrossAttention` block attends over the
(optionally mixer-processed) Whisper encoder states and adds its output through ``tanh(gate)``; a gated
feed-forward layer follows (Flamingo's Gated XATTN-dense, arXiv 2204.14198; Whispering-LLaMA, arXiv
2310.06434). Every gate starts at zero, so the untrained model *is* the LM reading a text prompt: the
first-pass hypotheses (prompts/deep.j2), after which it writes the transcript. Training (only the new
blocks and gates) teaches it to consult the audio where the hypotheses disagree.

Where the blocks act (``attend``): ``all`` (the default) at every position, the prompt's hypotheses too;
``reply`` only where the transcript is written, from the prompt's last token on, so the prompt is read by the
plain LM. Training then runs the prompt once without gradients (its keys and values a cache) and only the reply
through the blocks: a step costs about 0.6. At equal CPU budget it learned less (eval/RESULTS.md
``bench_xattn_reply_folds``): the hypotheses' own tokens consulting the audio is what the model uses.

The key/value projections start from Whisper's own decoder cross-attention weights (tiny: 6 heads of 64,
base: 8, the head width of SmolLM2), read from the CTranslate2 ``model.bin`` with the reader ``ascore`` uses, so
the keys and values begin as features Whisper's decoder already knows how to query.

The blocks run as forward hooks on the LM's decoder layers: outside :meth:`XAttnLM.attending` the hooks
pass the layer's output through, and ``self.llm`` is the plain LM. ``audio=False`` is the no-audio
ablation: the attention gates are forced shut (and the attention skipped), the gated feed-forward layers
still train, so the ablation has the same budget and the same text-side capacity.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rescore.deep import ATTEND, CONFIG_FILE, XATTN_KEY, saved_attend
from rescore.deep.decoder_memory import MEMORIES, WhisperDecoderMemory, WhisperPredictionMemory, aligned_mask
from rescore.deep.mixers import MIXERS, MixerBlock
from rescore.deep.model import (
    LENGTH_PENALTY,
    Batch,
    BeamHypothesis,
    normalize_target,
    order_beams,
    parse_beams,
)

WEIGHTS_FILE = "xattn.pt"


@dataclass
class XAttnConfig:
    """What a trained model needs to be rebuilt: encoder, LM, where the blocks go, prompt and target style."""

    encoder: str = "whisper-tiny.en"
    # padded: Whisper's 30 s windows; own: each utterance at its own length (rescore.whisper.encoder.WINDOWS), a tenth
    # of the encoding time but other states: the model is decoded on the window it was trained on
    encoder_window: str = "padded"
    llm: str = "smollm2-135m"
    every: int = 6  # a block after layers every-1, 2*every-1, ... (SmolLM2-135M: 30 layers -> 5 blocks)
    enc_dim: int = 384  # encoder width (set from the states when training)
    heads: int = 6
    head_dim: int = 64
    ffn_mult: int = 2
    kv_init: str | None = "whisper-tiny.en"  # Whisper model whose decoder cross-attention K/V start the blocks
    # queries fitted to that decoder's cross-attention queries on the training examples before training
    # (rescore.deep.query_init): the blocks start attending where Whisper's decoder looks
    q_init: bool = False
    # training: weight of an auxiliary loss on what the blocks read: each block's attention output, through the
    # LM's final norm and output layer, predicts the next transcript token from the audio alone (0: none). The
    # transcript loss teaches the audio only where the prompt's text leaves the token in doubt (a few tokens an
    # utterance); this one asks for every token (eval/RESULTS.md bench_xattn_tokens)
    aux_weight: float = 0.0
    # training: weight of a loss on choosing (XAttnLM.choice_loss): the shown hypotheses' scores, softmaxed, towards
    # the fewest-error ones; teaches what choosing asks of the model, a memory on a wrong text among them (0: none)
    choice_weight: float = 0.0
    # what the blocks attend over (rescore.deep.decoder_memory): "encoder", Whisper's encoder states (every frame);
    # "decoder", the last states of the ``encoder`` model's own decoder teacher-forced on the transcript being scored,
    # each LM position reading the latest ``memory_window`` of those aligned to the text it has consumed;
    # "prediction", those states' next-token predictions as LM token embeddings (the blocks' width is then the LM's).
    # Both need attend="reply" and decode by choosing among the hypotheses only (the transcript must be known)
    memory: str = "encoder"
    memory_window: int = 1
    mixer: str = "none"  # none | attention | summary | gaussian, over the encoder states before the blocks
    mixer_layers: int = 1
    audio: bool = True  # False: attention gates forced shut (the no-audio ablation)
    attend: str = "all"  # all: blocks at every position; reply: from the prompt's last token on (prompt read as text)
    template: str = "deep"
    max_hypotheses: int = 4
    text_norm: str = "lower"
    max_target_tokens: int = 160
    dropout: float = 0.0
    # decoding: no end of transcript before this share of the shortest hypothesis's tokens (0: no floor); the
    # model trained on short utterances stops early on long ones. Chosen on held-out training examples
    # (rescore.deep.train.choose_length_floor) and saved with the model.
    min_length_ratio: float = 0.0

    @property
    def writes(self) -> bool:
        """Whether the model can write a transcript; one over decoder memory needs it, so it only chooses."""
        return self.memory == "encoder"

    def memory_problem(self) -> str | None:
        """Why this config's ``memory`` cannot be built (None: it can); the CLI and the model both ask."""
        if self.memory not in MEMORIES:
            return f"memory must be one of {', '.join(MEMORIES)}, not {self.memory!r}"
        if self.memory_window < 1:
            return f"memory_window must be at least 1, not {self.memory_window}"
        if self.memory != "encoder" and (
            self.attend != "reply" or self.kv_init or self.q_init or self.aux_weight or self.mixer != "none"
        ):
            return (
                f"memory={self.memory!r} needs attend='reply' (the prompt has no transcript to align), and no kv_init,"
                " q_init, aux_weight or mixer (they are made for encoder frames)"
            )
        return None

    def fit_width(self, width: int) -> XAttnConfig:
        """Fit the blocks to an encoder ``width`` (tiny 384, base 512); with K/V from Whisper, ``width // head_dim``
        heads (Whisper's are 64 wide: tiny 6, base 8), so the projections have the shape of the weights they
        start from."""
        self.enc_dim = width
        if self.kv_init:
            self.heads = width // self.head_dim
        return self

    def shown_hypotheses(self, texts: Sequence[str]) -> list[str]:
        """The hypotheses the prompt shows: the first ``max_hypotheses`` distinct ones, written as targets are."""
        return unique_hypotheses(texts, self.text_norm)[: self.max_hypotheses]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> XAttnConfig:
        return cls(**{**d, "attend": saved_attend(d)})


def padded(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "left", width: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` of token sequences padded to the longest (or ``width``): on the left for prompts
    (every prompt ends in the last column, where the reply begins), on the right for replies that continue a
    cached prompt (each starts in the first column)."""
    width = max(width, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[i, cols], mask[i, cols] = torch.tensor(list(s)), 1
    return ids, mask


def unique_hypotheses(texts: Sequence[str], text_norm: str = "lower") -> list[str]:
    """The hypotheses normalised as the targets are, duplicates (after normalising) and empty ones dropped,
    order kept: an n-best list often differs only in punctuation, which would fill the prompt with repeats."""
    out: list[str] = []
    for t in texts:
        n = normalize_target(t, text_norm)
        if n and n not in out:
            out.append(n)
    return out


def clean_reply(text: str) -> str:
    """The reply's first line without the list marker the prompt's hypotheses carry (``- ``): the untrained LM
    answers in the prompt's own list format."""
    line = next((x for x in text.splitlines() if x.strip()), "")
    return line.strip().removeprefix("- ").strip()


class LengthFloor:
    """A logits processor: no stop token for a row whose utterance has fewer than its floor of new tokens.

    Rows are utterance-major (``beams`` rows per utterance), as transformers' beam search lays them out."""

    def __init__(self, prompt_length: int, floors: Sequence[int], beams: int, stop_ids: Sequence[int]) -> None:
        self.prompt_length = prompt_length
        self.floors = torch.tensor(floors).repeat_interleave(beams)
        self.stop_ids = list(stop_ids)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        written = input_ids.shape[1] - self.prompt_length
        early = (self.floors.to(scores.device) > written).nonzero().flatten()
        if len(early):
            scores[early.unsqueeze(1), torch.tensor(self.stop_ids, device=scores.device)] = float("-inf")
        return scores


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

    def forward(
        self,
        h: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
        reads: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``h [B, S, dim]``; ``kv``: keys, values and the memory mask ``[B, T]``, or ``[B, S, T]`` per position (None:
        no audio); ``reads``: the
        attention's output (before its gate) is appended to it, for the auxiliary loss."""
        if kv is not None:
            k, v, mask = kv
            b, s, _ = h.shape
            q = self.q(self.norm(h)).view(b, s, self.heads, self.head_dim).transpose(1, 2)
            # [B, T]: every position reads the same frames; [B, S, T]: each its own (decoder memory)
            attn_mask = mask[:, None] if mask.dim() == 3 else mask[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask)
            read = self.out(y.transpose(1, 2).reshape(b, s, -1))
            if reads is not None:
                reads.append(read)
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


class _Memory:
    """The encoder states of the batch being decoded, with each block's keys and values computed once;
    beam search's expanded batch (each row repeated ``num_beams`` times) gets them repeated to match.

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
        self.reads: list[torch.Tensor] | None = None  # a list: each block's attention output is kept (aux loss)

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


class XAttnLM(nn.Module):
    """Frozen causal LM + gated cross-attention blocks over Whisper encoder states; only the blocks (and the
    optional mixer over the states) train. The LM reads the n-best prompt and writes the transcript."""

    def __init__(self, config: XAttnConfig, llm: Any, tokenizer: Any) -> None:
        super().__init__()
        if config.mixer not in MIXERS:
            raise ValueError(f"unknown mixer {config.mixer!r}: one of {', '.join(MIXERS)}")
        if config.every < 1:
            raise ValueError(f"every must be >= 1, got {config.every}")
        if config.attend not in ATTEND:
            raise ValueError(f"attend must be one of {', '.join(ATTEND)}, not {config.attend!r}")
        problem = config.memory_problem()
        if problem:
            raise ValueError(problem)
        self.config, self.llm, self.tokenizer = config, llm, tokenizer
        self._decoder_memory: WhisperDecoderMemory | None = None  # loaded at first use (memory="decoder")
        layers = llm.get_decoder().layers
        dim = llm.get_input_embeddings().embedding_dim
        if config.memory == "prediction":  # the memory is in the LM's embedding space: blocks as wide as the LM
            if dim % config.head_dim:
                raise ValueError(f"memory='prediction': the LM's width {dim} is not a multiple of {config.head_dim}")
            config.enc_dim, config.heads = dim, dim // config.head_dim
        eps = float(getattr(llm.config, "rms_norm_eps", 1e-5))
        self.where = [i for i in range(len(layers)) if (i + 1) % config.every == 0]
        c = config
        self.blocks = nn.ModuleList(
            GatedCrossAttention(dim, c.enc_dim, c.heads, c.head_dim, c.ffn_mult, eps) for _ in self.where
        )
        n_mix = 0 if c.mixer == "none" else c.mixer_layers
        self.mixer = nn.ModuleList(MixerBlock(c.mixer, c.enc_dim, c.heads, dropout=c.dropout) for _ in range(n_mix))
        if not c.audio:  # the no-audio ablation: attention gates stay shut, the attention is never run
            for block in self.blocks:
                for p in (block.attn_gate, *block.q.parameters(), *block.k.parameters(), *block.v.parameters()):
                    p.requires_grad_(False)
                for p in block.out.parameters():
                    p.requires_grad_(False)
            for p in self.mixer.parameters():
                p.requires_grad_(False)
        self._memory: _Memory | None = None
        self.last_aux: float | None = None  # the last training batch's auxiliary loss (aux_weight), for the log
        self.last_choice: float | None = None  # and its choosing loss (choice_weight)
        self._hooks = [layers[i].register_forward_hook(self._hook(j)) for j, i in enumerate(self.where)]
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        # generation also stops at a line break: the transcript is one line (the untrained LM lists on)
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        self.stop_ids: list[int] = [self.eos_id, *newline[-1:]]
        from rescore.correct.prompts import load_template

        self.template = load_template(c.template)
        # the decoder's name for the key/value cache argument (transformers 5 renamed past_key_values)
        params = inspect.signature(llm.get_decoder().forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def init_kv_from_whisper(self) -> None:
        """Start the blocks' key/value projections from Whisper's decoder cross-attention (``kv_init``)."""
        if self.config.kv_init:
            init_from_whisper(list(self.blocks), whisper_cross_kv(self.config.kv_init))

    def init_reads(self) -> None:
        """``memory="prediction"``: each block's values and output start as the identity, the output scaled by the
        ratio of the LM's hidden-state norm after the block's layer to its embeddings' norm (measured on the prompt
        of one hypothesis), so an opened gate adds Whisper's predicted token as the LM writes its own tokens: the
        blocks start as reading the prediction, with nothing to learn about what it means (queries and keys do not
        matter with one aligned state to read). Other memories: nothing."""
        if self.config.memory != "prediction":
            return
        embeddings = self.llm.get_input_embeddings().weight
        norms: dict[int, float] = {}
        layers = self.llm.get_decoder().layers

        def measure(i: int) -> Any:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                h = output[0] if isinstance(output, tuple) else output
                norms[i] = float(h[0].norm(dim=-1).median())

            return hook

        handles = [layers[i].register_forward_hook(measure(i)) for i in self.where]
        try:
            with torch.no_grad():
                self.llm(input_ids=torch.tensor([self.prompt_ids(["the cat sat on the mat"])], device=self.device))
        finally:
            for h in handles:
                h.remove()
        scale = float(embeddings.norm(dim=-1).median())
        with torch.no_grad():
            for i, block in zip(self.where, self.blocks, strict=True):
                eye = torch.eye(block.v.weight.shape[0], device=block.v.weight.device)
                block.v.weight.copy_(eye)
                block.v.bias.zero_()
                block.out.weight.copy_(eye * norms[i] / scale)
                block.out.bias.zero_()

    def _hook(self, j: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if self._memory is None:  # outside attending(): the plain LM
                return output
            h = output[0] if isinstance(output, tuple) else output
            if j == 0:
                self._memory.begin_call(h.shape[1])
            skip = self._memory.skipped(h.shape[1])
            if skip < h.shape[1]:
                kv = self._memory.get(j, h.shape[0])
                if kv is not None and kv[2].dim() == 3:  # per-position masks start at attend_from: this call's rows
                    first = self._memory.call_start + skip - self._memory.attend_from
                    kv = (kv[0], kv[1], kv[2][:, first : first + h.shape[1] - skip])
                reads = self._memory.reads
                if skip == 0:
                    h = self.blocks[j](h, kv, reads)
                else:
                    h = torch.cat([h[:, :skip], self.blocks[j](h[:, skip:], kv, reads)], 1)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    @contextmanager
    def attending(
        self, states: torch.Tensor | None, mask: torch.Tensor | None, attend_from: int = 0, offset: int = 0
    ) -> Iterator[None]:
        """Within the block, the LM's forward passes go through the blocks over these encoder states, from
        column ``attend_from`` on; the first pass starts at column ``offset`` (a prompt the LM has cached)."""
        device = self.device
        if states is not None and mask is not None and self.config.audio:
            states, mask = states.to(device), mask.to(device)
            for block in self.mixer:
                states = block(states, mask)
            self._memory = _Memory(self.blocks, states, mask, attend_from, offset)
        else:
            self._memory = _Memory(self.blocks, None, None, attend_from, offset)
        try:
            yield
        finally:
            self._memory = None

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # --- parameters that train and are saved -------------------------------------------------------
    def new_modules(self) -> dict[str, nn.Module]:
        return {"blocks": self.blocks, "mixer": self.mixer}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight of the new blocks and the mixer (shut ones too: a checkpoint always fits its config)."""
        return {
            f"{name}.{k}": v.detach().cpu() for name, m in self.new_modules().items() for k, v in m.state_dict().items()
        }

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.trainable_state_dict()
        missing, unknown = [k for k in own if k not in state], [k for k in state if k not in own]
        if missing or unknown:
            raise ValueError(f"checkpoint does not fit the model: missing {missing[:3]}, unexpected {unknown[:3]}")
        for name, m in self.new_modules().items():
            prefix = name + "."
            m.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

    def gates(self) -> list[tuple[float, float]]:
        """``(tanh(attention gate), tanh(ffn gate))`` per block: how far training opened each."""
        return [(float(torch.tanh(b.attn_gate.detach())), float(torch.tanh(b.ffn_gate.detach()))) for b in self.blocks]

    # --- sequences ---------------------------------------------------------------------------------
    def prompt_ids(self, hypotheses: Sequence[str]) -> list[int]:
        """The chat prompt with the first ``max_hypotheses`` distinct hypotheses (normalised as targets are),
        ready for the assistant's reply."""
        hyps = self.config.shown_hypotheses(hypotheses)
        messages = self.template.render({"hypotheses": hyps or [""]})
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        text = "\n".join(m["content"] for m in messages) + "\nTranscript:"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def target_ids(self, text: str) -> list[int]:
        return self.target_tokens(text)[1]

    def target_tokens(self, text: str) -> tuple[str, list[int], list[int]]:
        """``(target, ids, ends)``: ``text`` written as the targets are, its tokens (at most ``max_target_tokens``,
        then the end) and how many of its characters each token has consumed once read (the end: all of them)."""
        target = normalize_target(text, self.config.text_norm)
        enc = self.tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
        keep = self.config.max_target_tokens
        ends = [b for _, b in enc["offset_mapping"][:keep]]
        return target, list(enc["input_ids"][:keep]) + [self.eos_id], [*ends, len(target)]

    def build_inputs(
        self, batch: Batch, with_targets: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Left-padded ``(input_ids, attention_mask, position_ids, labels)``: prompt, then the target."""
        device = self.device
        seqs, labels = [], []
        for i, hyps in enumerate(batch.hypotheses):
            prompt = self.prompt_ids(hyps)
            tgt = self.target_ids(batch.texts[i]) if with_targets else []
            seqs.append(prompt + tgt)
            labels.append([-100] * len(prompt) + tgt)
        ids, attn = padded(seqs, self.pad_id)
        lab, _ = padded(labels, -100)
        positions = (attn.cumsum(1) - 1).clamp(min=0)
        return ids.to(device), attn.to(device), positions.to(device), (lab.to(device) if with_targets else None)

    def attend_from(self, prompt_columns: int) -> int:
        """The first column the blocks act on, for left-padded prompts of ``prompt_columns``: the prompt's last
        token (which predicts the transcript's first) with ``attend="reply"``, every column with ``all``."""
        return prompt_columns - 1 if self.config.attend == "reply" else 0

    def logits(self, batch: Batch) -> torch.Tensor:
        """Next-token logits ``[B, S, V]`` over the left-padded prompts (for tests and inspection)."""
        ids, attn, positions, _ = self.build_inputs(batch, with_targets=False)
        states, mask = self.reply_memory(batch, 1)
        with self.attending(states, mask, self.attend_from(ids.shape[1])):
            return self.llm(input_ids=ids, attention_mask=attn, position_ids=positions).logits

    @property
    def writes(self) -> bool:
        """Whether the model can write a transcript (:meth:`generate`); one over decoder memory only chooses."""
        return self.config.writes

    def _new_decoder_memory(self) -> WhisperDecoderMemory:
        if self.config.memory == "prediction":
            embeddings = self.llm.get_input_embeddings().weight
            return WhisperPredictionMemory(
                self.config.encoder, self.tokenizer, embeddings, self.eos_id, self.config.text_norm
            )
        return WhisperDecoderMemory(self.config.encoder)

    def reply_memory(self, batch: Batch, columns: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the blocks attend over for ``columns`` reply columns of each row (the prompt's last token, then
        the row's transcript ``batch.texts``): the encoder states and their mask ``[B, T]``, or with
        ``memory="decoder"`` Whisper's decoder states on the transcript ``[B, M, d]`` and a mask per column
        ``[B, columns, M]`` (:func:`~rescore.deep.decoder_memory.aligned_mask`)."""
        if self.config.memory == "encoder" or not self.config.audio or batch.states is None:
            return batch.states, batch.mask
        if self._decoder_memory is None:
            self._decoder_memory = self._new_decoder_memory()
        rows = []
        for i, text in enumerate(batch.texts):
            target, _, token_ends = self.target_tokens(text)
            frames = int(batch.mask[i].sum())
            states, ends = self._decoder_memory.states(batch.ids[i], batch.states[i, :frames], target)
            consumed = [0, *token_ends]  # the prompt's last column has consumed none of it
            consumed += [len(target)] * max(0, columns - len(consumed))  # padding: all of it
            rows.append((states, ends, consumed[:columns]))
        slots = max(s.shape[0] for s, _, _ in rows)
        memory = torch.zeros(len(rows), slots, rows[0][0].shape[1])
        mask = torch.zeros(len(rows), columns, slots, dtype=torch.bool)
        for i, (states, ends, consumed) in enumerate(rows):
            memory[i, : states.shape[0]] = states
            mask[i] = aligned_mask(ends, consumed, self.config.memory_window, slots)
        return memory, mask

    def _target_logits(
        self, batch: Batch, shared_prompts: bool = False, reads: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, targets, row)`` of every transcript token (and eos) of the batch, teacher-forced.
        ``shared_prompts``: rows repeat prompts (choosing: one row per candidate), so each distinct prompt runs
        once into a cache (:meth:`_cached_prompt_hidden`); ``attend="reply"`` always runs that way. ``reads``: a
        list that receives each block's attention output (before its gate) at the positions predicting the
        targets ``[N, dim]``; only the one pass over every position keeps them."""
        if self.config.attend == "reply" or shared_prompts:
            if reads is not None:
                raise ValueError("the blocks' reads need attend='all' and audio (the blocks read every position)")
            hidden, target = self._cached_prompt_hidden(batch)
        else:
            ids, attn, positions, full_labels = self.build_inputs(batch, with_targets=True)
            with self.attending(batch.states, batch.mask):
                assert self._memory is not None
                self._memory.reads = reads
                out = self.llm.get_decoder()(input_ids=ids, attention_mask=attn, position_ids=positions)
            hidden, target = out.last_hidden_state[:, :-1], full_labels[:, 1:]  # type: ignore[index]
        where = target != -100
        logits = self.llm.get_output_embeddings()(hidden[where]).float()
        rows = torch.arange(target.shape[0], device=target.device).unsqueeze(1).expand_as(target)[where]
        if reads is not None:
            reads[:] = [r[:, :-1][where] for r in reads]
        return logits, target[where], rows

    def _cached_prompt_hidden(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced in two passes: the prompts but their last token once per distinct prompt into a cache,
        then each row's last prompt token and target from that cache. With ``attend="reply"`` the first pass is
        the plain LM without gradients (a prompt is the same whatever the audio); with ``all`` it goes through
        the blocks over its utterance's states (a prompt is distinct per utterance). Returns the reply's hidden
        states ``[B, R, dim]`` and the token each predicts ``[B, R]`` (-100: none)."""
        device, reply = self.device, self.config.attend == "reply"
        prompts = [self.prompt_ids(hs) for hs in batch.hypotheses]
        keys = [tuple(p[:-1]) if reply else (u, tuple(p[:-1])) for u, p in zip(batch.ids, prompts, strict=True)]
        distinct: dict[Any, int] = {}  # prompt (and utterance) -> its row in the first pass
        first: list[int] = []  # -> a batch row that has it
        for i, key in enumerate(keys):
            if key not in distinct:
                distinct[key] = len(first)
                first.append(i)
        prefix_ids, prefix_attn = padded([prompts[i][:-1] for i in first], self.pad_id)
        replies = [p[-1:] + self.target_ids(t) for p, t in zip(prompts, batch.texts, strict=True)]
        ids, attn = padded(replies, self.pad_id, "right")
        width = ids.shape[1]
        labels, _ = padded([r[1:] for r in replies], -100, "right", width)  # each token predicts the next
        rows = torch.tensor(first)
        blocks = nullcontext() if reply else self.attending(batch.states[rows], batch.mask[rows])
        with torch.no_grad() if reply else nullcontext(), blocks:
            cache = self._prefill(prefix_ids, prefix_attn)
        which = torch.tensor([distinct[k] for k in keys])
        if len(first) < len(prompts):
            cache.batch_select_indices(which.to(device))
        prefix_attn = prefix_attn[which]
        positions = prefix_attn.sum(1, keepdim=True) + torch.arange(width)
        columns = prefix_ids.shape[1]
        states, mask = self.reply_memory(batch, width)
        with self.attending(states, mask, self.attend_from(columns + 1), columns):
            hidden = self.llm.get_decoder()(
                input_ids=ids.to(device),
                attention_mask=torch.cat([prefix_attn, attn], 1).to(device),
                position_ids=positions.to(device),
                use_cache=True,
                **{self.cache_arg: cache},
            ).last_hidden_state
        return hidden, labels.to(device)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the transcript tokens (and eos) of the batch, and their count; in training with
        ``aux_weight``, plus that times the auxiliary loss (the blocks' mean :meth:`read_nll`; kept in ``last_aux``),
        and with ``choice_weight`` that times :meth:`choice_loss` (kept in ``last_choice``)."""
        if not (self.training and self.config.aux_weight > 0 and self.config.audio):
            logits, target, _ = self._target_logits(batch)
            loss = F.cross_entropy(logits, target)
        else:
            logits, target, reads = self.target_logits_and_reads(batch)
            aux = self.read_nll(reads, target).mean()
            self.last_aux = float(aux.detach())
            loss = F.cross_entropy(logits, target) + self.config.aux_weight * aux
        if self.training and self.config.choice_weight > 0:
            choice = self.choice_loss(batch)
            if choice is not None:
                self.last_choice = float(choice.detach())
                loss = loss + self.config.choice_weight * choice
        return loss, int(target.numel())

    def target_logits_and_reads(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One teacher-forced pass over every position (``attend="all"``): the logits and targets of the
        transcript tokens, as :meth:`_target_logits`, and each block's attention output (before its gate) at the
        positions predicting them ``[N, dim]``."""
        if not self.config.audio:
            raise ValueError("the blocks' reads need attend='all' and audio (the blocks read every position)")
        reads: list[torch.Tensor] = []
        logits, target, _ = self._target_logits(batch, reads=reads)
        return logits, target, reads

    def read_logits(self, reads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per block, next-token logits ``[N, vocab]`` from its read alone, taken as a last hidden state (the LM's
        final norm and output layer, frozen): what the audio, as the block reads it, says comes next."""
        norm, head = self.llm.get_decoder().norm, self.llm.get_output_embeddings()
        return [head(norm(r)).float() for r in reads]

    def read_nll(self, reads: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``[blocks, N]``: the cross-entropy of each transcript token under :meth:`read_logits`. The auxiliary
        loss (``aux_weight``) is its mean."""
        return torch.stack([F.cross_entropy(lg, target, reduction="none") for lg in self.read_logits(reads)])

    def candidates(self, hypotheses: Sequence[str]) -> dict[str, str]:
        """What :meth:`choose` picks from: each distinct hypothesis the prompt shows, as the targets are written,
        with the first first-pass text written that way (its own casing, digits and punctuation)."""
        shown = set(self.config.shown_hypotheses(hypotheses))
        out: dict[str, str] = {}
        for h in hypotheses:
            n = normalize_target(h, self.config.text_norm)
            if n in shown:
                out.setdefault(n, h)
        return out

    @torch.no_grad()
    def choose(self, batch: Batch, nbest: int = 4, shared_prompts: bool = True) -> list[list[BeamHypothesis]]:
        """The prompt's own hypotheses ranked by the model's log-prob of each as the transcript (its tokens and the
        end) per step, best first, as the beam search ranks (:func:`order_beams`): decoding constrained to the
        n-best. It cannot skip, repeat or invent words, and the audio (through the blocks) still decides between
        the hypotheses where they disagree. Summed log-prob would prefer whatever hypothesis drops words (a
        fragment such as "CHAPTER XI." over the sentence). Each answer's text is the first-pass form of the
        hypothesis; its tokens are the model's, of the normalised text it scored. Each utterance's prompt runs once
        and every candidate continues from its cache; ``shared_prompts=False`` runs one pass over prompt and
        candidate per candidate instead (the same scores, slower: for comparison)."""
        cands = [self.candidates(hs) for hs in batch.hypotheses]
        out: list[list[BeamHypothesis]] = [[] for _ in batch.ids]
        for (i, text), lp, tokens in self._candidate_log_probs(batch, cands, shared_prompts):
            out[i].append(BeamHypothesis(cands[i][text], tokens[:-1].tolist(), float(lp.sum()), len(tokens)))
        return [order_beams(hs)[:nbest] for hs in out]

    def _candidate_log_probs(
        self, batch: Batch, candidates: Sequence[Iterable[str]], shared_prompts: bool = True
    ) -> list[tuple[tuple[int, str], torch.Tensor, torch.Tensor]]:
        """``((row, text), token log-probs, tokens)`` of each of ``candidates[row]`` (normalised texts) scored as
        row's transcript, teacher-forced (the tokens end with the end); with gradients when they are on."""
        rows = [(i, c) for i, cs in enumerate(candidates) for c in cs]
        if not rows:
            return []
        which = torch.tensor([i for i, _ in rows])
        flat = Batch(
            [batch.ids[i] for i, _ in rows],
            batch.states[which] if batch.states is not None else None,
            batch.mask[which] if batch.mask is not None else None,
            [c for _, c in rows],
            [batch.hypotheses[i] for i, _ in rows],
        )
        logits, target, row = self._target_logits(flat, shared_prompts)
        token_lp = -F.cross_entropy(logits, target, reduction="none")
        counts = torch.bincount(row, minlength=len(rows)).tolist()  # the tokens come row by row, in order
        return list(zip(rows, token_lp.split(counts), target.split(counts), strict=True))

    def choice_loss(self, batch: Batch) -> torch.Tensor | None:
        """Training the model as :meth:`choose` uses it (``XAttnConfig.choice_weight``): per utterance whose shown
        hypotheses differ in word errors against the reference ``batch.texts``, the cross-entropy of a softmax over
        their scores (per-token log-prob, as choosing ranks, times the hypotheses' mean token count, so a one-word
        difference weighs about its nats) towards the fewest-error ones (shared alike). Teacher forcing on the
        reference alone never shows the blocks a memory on a wrong text, which is all choosing shows them apart
        from the right one. None: no utterance of the batch has such hypotheses."""
        from rescore.evaluate.metrics import edit_counts

        cands = []
        for hyps, ref in zip(batch.hypotheses, batch.texts, strict=True):
            shown = self.config.shown_hypotheses(hyps)
            errors = edit_counts([normalize_target(ref, self.config.text_norm)] * len(shown), shown).errors.tolist()
            cands.append(dict(zip(shown, errors, strict=True)) if len(set(errors)) > 1 else {})
        by_row: dict[int, list[tuple[torch.Tensor, int]]] = {}
        for (row, text), lp, _ in self._candidate_log_probs(batch, [list(c) for c in cands]):
            by_row.setdefault(row, []).append((lp, cands[row][text]))
        losses = []
        for scored in by_row.values():
            length = sum(len(lp) for lp, _ in scored) / len(scored)
            scores = torch.stack([lp.mean() for lp, _ in scored]) * length
            fewest = min(e for _, e in scored)
            best = torch.tensor([e == fewest for _, e in scored], device=scores.device)
            losses.append(torch.logsumexp(scores, 0) - torch.logsumexp(scores[best], 0))
        return torch.stack(losses).mean() if losses else None

    def max_new_tokens(self, batch: Batch) -> int:
        """Room for the longest hypothesis of the batch and half again, plus 8 (capped by the targets' limit)."""
        longest = max(
            (len(self.tokenizer(h, add_special_tokens=False)["input_ids"]) for hs in batch.hypotheses for h in hs),
            default=8,
        )
        return min(self.config.max_target_tokens + 1, int(1.5 * longest) + 8)

    def length_floors(self, hypotheses: Sequence[Sequence[str]], ratio: float) -> list[int]:
        """Per utterance (its n-best texts), the fewest tokens before the end may come: ``ratio`` x its
        shortest hypothesis as the prompt shows them."""
        floors = []
        for hs in hypotheses:
            hyps = self.config.shown_hypotheses(hs)
            n = min((len(self.tokenizer(h, add_special_tokens=False)["input_ids"]) for h in hyps), default=0)
            floors.append(int(ratio * n))
        return floors

    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        beam_size: int = 4,
        nbest: int = 4,
        max_new_tokens: int | None = None,
        min_length_ratio: float | None = None,
        cached_prompt: bool = True,
    ) -> list[list[BeamHypothesis]]:
        """Beam search (greedy at beam 1) per utterance: best first by log-prob per step, as the bridge's.

        ``min_length_ratio`` (None: the config's) keeps the end of the transcript away until that share of the
        shortest hypothesis is written. Each prompt runs once and its cache is repeated per beam;
        ``cached_prompt=False`` runs every prompt once per beam instead (the same beams, slower: for comparison)."""
        from transformers import LogitsProcessorList

        if not self.writes:
            raise ValueError(
                "this model reads Whisper's decoder states on the transcript (memory='decoder'): it decodes by "
                "choosing among the first-pass hypotheses (--decode choose), it cannot write"
            )
        ids, attn, _, _ = self.build_inputs(batch, with_targets=False)
        nbest = min(nbest, beam_size)
        ratio = self.config.min_length_ratio if min_length_ratio is None else min_length_ratio
        processors = LogitsProcessorList()
        if ratio > 0:
            floors = self.length_floors(batch.hypotheses, ratio)
            processors.append(LengthFloor(ids.shape[1], floors, beam_size, self.stop_ids))
        # one attending() for the prompt pass and the search: the blocks' keys and values are computed once, and
        # the column count runs on from the cached prompt to the tokens generate feeds
        with self.attending(batch.states, batch.mask, self.attend_from(ids.shape[1])):
            cache = {self.cache_arg: self._prompt_cache(ids, attn, beam_size)} if cached_prompt else {}
            out = self.llm.generate(
                input_ids=ids,
                attention_mask=attn,
                **cache,
                num_beams=beam_size,
                num_return_sequences=nbest,
                max_new_tokens=max_new_tokens or self.max_new_tokens(batch),
                do_sample=False,
                length_penalty=LENGTH_PENALTY,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                output_scores=True,
                logits_processor=processors,
            )
        beams = parse_beams(self.llm, self.tokenizer, out, len(batch.ids), nbest, self.stop_ids)
        return [[h._replace(text=clean_reply(h.text)) for h in hs] for hs in beams]

    def _prefill(self, ids: torch.Tensor, attn: torch.Tensor) -> Any:
        """The LM's key/value cache of the left-padded ``ids`` (through the blocks as the enclosing
        :meth:`attending` sets them, or the plain LM outside one)."""
        device = self.device
        out = self.llm.get_decoder()(
            input_ids=ids.to(device),
            attention_mask=attn.to(device),
            position_ids=(attn.cumsum(1) - 1).clamp(min=0).to(device),
            use_cache=True,
        )
        return getattr(out, "cache", None) or out.past_key_values

    def _prompt_cache(self, ids: torch.Tensor, attn: torch.Tensor, beams: int) -> Any:
        """The left-padded prompts ``ids`` but their last token through the LM once per utterance, the cache
        repeated for each of ``beams`` beams in beam search's row order: generation then starts at the last prompt
        token instead of running every prompt once per beam."""
        cache = self._prefill(ids[:, :-1], attn[:, :-1])
        if beams > 1:
            cache.batch_repeat_interleave(beams)
        return cache

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        """The config (everything needed to reload) and the new blocks' weights into folder."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        torch.save(self.trainable_state_dict(), tmp)
        tmp.replace(folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps({XATTN_KEY: self.config.to_dict(), **(extra or {})}, indent=2))


def build_xattn(config: XAttnConfig, device: str = "cpu") -> XAttnLM:
    """The LM (frozen) with fresh blocks, K/V from Whisper when ``kv_init`` is set; gates shut."""
    from rescore.deep.llm import load_causal_lm

    llm, tokenizer = load_causal_lm(config.llm, device=device)
    model = XAttnLM(config, llm, tokenizer)
    model.init_kv_from_whisper()
    model.init_reads()
    return model.to(device)


def load_xattn(folder: Path, config: dict[str, Any], device: str = "cpu") -> XAttnLM:
    cfg = XAttnConfig.from_dict(config[XATTN_KEY])
    cfg.kv_init = None  # the trained weights replace them
    model = build_xattn(cfg, device)
    model.load_trainable_state_dict(torch.load(Path(folder) / WEIGHTS_FILE, map_location=device))
    model.config.kv_init = config[XATTN_KEY].get("kv_init")
    model.eval()
    return model


def build_deep_model(config: Any, device: str = "cpu") -> Any:
    """A fresh deep-fusion model of either architecture: gated cross-attention or the prefix bridge."""
    if isinstance(config, XAttnConfig):
        return build_xattn(config, device)
    from rescore.deep.model import build_model

    return build_model(config, device)


def load_deep_model(folder: Path, device: str = "cpu") -> Any:
    """A trained model folder of either architecture (its config file says which)."""
    from rescore.deep.model import load_model

    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; not a trained deep-fusion model folder")
    config = json.loads(path.read_text())
    return load_xattn(folder, config, device) if XATTN_KEY in config else load_model(folder, device)
