"""Deep fusion by gated cross-attention: a frozen causal LM that reads the first-pass n-best and consults the audio.

After every ``every``-th layer of the frozen LM a :class:`~rescore.deep.blocks.GatedCrossAttention` block reads a
memory of the audio and adds its output through a gate that starts at zero, so the untrained model *is* the LM
reading a text prompt: the first-pass hypotheses (prompts/deep.j2), after which it writes or chooses the transcript.
Training (only the new blocks and gates) teaches it to consult the audio where the hypotheses disagree. The memory
(``XAttnConfig.memory``) is Whisper's encoder frames (optionally through a mixer), or Whisper's next-token
predictions on the transcript (:mod:`rescore.deep.prediction_memory`).

Where the blocks act (``attend``): ``all`` at every position, the prompt's hypotheses too; ``reply`` only where
the transcript is written, from the prompt's last token on, so the prompt is read by the plain LM once, without
gradients, and only the reply runs through the blocks.

The blocks run as forward hooks on the LM's decoder layers: outside :meth:`XAttnLM.attending` the hooks pass the
layer's output through, and ``self.llm`` is the plain LM. ``audio=False`` is the no-audio ablation: the attention
gates are forced shut (and the attention skipped), the gated feed-forward layers still train, so the ablation has
the same budget and the same text-side capacity.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rescore.deep import CONFIG_FILE, XATTN_KEY
from rescore.deep.blocks import BlockMemory, GatedCrossAttention, init_from_whisper, whisper_cross_kv
from rescore.deep.mixers import MixerBlock
from rescore.deep.model import Batch, normalize_target
from rescore.deep.prediction_memory import WhisperPredictionMemory, aligned_mask
from rescore.deep.xattn_config import XAttnConfig
from rescore.deep.xattn_decode import XAttnDecoding

WEIGHTS_FILE = "xattn.pt"


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


class XAttnLM(XAttnDecoding, nn.Module):
    """Frozen causal LM + gated cross-attention blocks over Whisper's view of the audio; only the blocks (and the
    optional mixer over the states) train. The LM reads the n-best prompt and writes or chooses the transcript
    (decoding: :class:`rescore.deep.xattn_decode.XAttnDecoding`)."""

    def __init__(self, config: XAttnConfig, llm: Any, tokenizer: Any) -> None:
        super().__init__()
        problem = config.problem()
        if problem:
            raise ValueError(problem)
        self.config, self.llm, self.tokenizer = config, llm, tokenizer
        self._predictions: WhisperPredictionMemory | None = None  # loaded at first use (memory="prediction")
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
        self._memory: BlockMemory | None = None
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
        matter with one aligned state to read). Encoder frames: nothing."""
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
                tail = self.blocks[j](h[:, skip:], kv)
                h = tail if skip == 0 else torch.cat([h[:, :skip], tail], 1)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    @contextmanager
    def attending(
        self, states: torch.Tensor | None, mask: torch.Tensor | None, attend_from: int = 0, offset: int = 0
    ) -> Iterator[None]:
        """Within the block, the LM's forward passes go through the blocks over these memory states, from
        column ``attend_from`` on; the first pass starts at column ``offset`` (a prompt the LM has cached)."""
        device = self.device
        if states is not None and mask is not None and self.config.audio:
            states, mask = states.to(device), mask.to(device)
            for block in self.mixer:
                states = block(states, mask)
            self._memory = BlockMemory(self.blocks, states, mask, attend_from, offset)
        else:
            self._memory = BlockMemory(self.blocks, None, None, attend_from, offset)
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
        """Whether the model can write a transcript (:meth:`generate`); one over Whisper's predictions only chooses."""
        return self.config.writes

    def reply_memory(self, batch: Batch, columns: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the blocks attend over for ``columns`` reply columns of each row (the prompt's last token, then
        the row's transcript ``batch.texts``): the encoder states and their mask ``[B, T]``, or with
        ``memory="prediction"`` Whisper's predictions on the transcript ``[B, M, dim]`` and a mask per column
        ``[B, columns, M]`` (:func:`~rescore.deep.prediction_memory.aligned_mask`)."""
        if self.config.memory == "encoder" or not self.config.audio or batch.states is None:
            return batch.states, batch.mask
        if self._predictions is None:
            embeddings = self.llm.get_input_embeddings().weight
            c = self.config
            self._predictions = WhisperPredictionMemory(c.encoder, self.tokenizer, embeddings, self.eos_id, c.text_norm)
        rows = []
        for i, text in enumerate(batch.texts):
            target, _, token_ends = self.target_tokens(text)
            frames = int(batch.mask[i].sum())
            states, ends = self._predictions.states(batch.ids[i], batch.states[i, :frames], target)
            consumed = [0, *token_ends]  # the prompt's last column has consumed none of it
            consumed += [len(target)] * max(0, columns - len(consumed))  # padding: all of it
            rows.append((states, ends, consumed[:columns]))
        slots = max(s.shape[0] for s, _, _ in rows)
        memory = torch.zeros(len(rows), slots, rows[0][0].shape[1])
        mask = torch.zeros(len(rows), columns, slots, dtype=torch.bool)
        for i, (states, ends, consumed) in enumerate(rows):
            memory[i, : states.shape[0]] = states
            mask[i] = aligned_mask(ends, consumed, slots)
        return memory, mask

    def _target_logits(
        self, batch: Batch, shared_prompts: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, targets, row)`` of every transcript token (and eos) of the batch, teacher-forced.
        ``shared_prompts``: rows repeat prompts (choosing: one row per candidate), so each distinct prompt runs
        once into a cache (:meth:`_cached_prompt_hidden`); ``attend="reply"`` always runs that way."""
        if self.config.attend == "reply" or shared_prompts:
            hidden, target = self._cached_prompt_hidden(batch)
        else:
            ids, attn, positions, full_labels = self.build_inputs(batch, with_targets=True)
            with self.attending(batch.states, batch.mask):
                out = self.llm.get_decoder()(input_ids=ids, attention_mask=attn, position_ids=positions)
            hidden, target = out.last_hidden_state[:, :-1], full_labels[:, 1:]  # type: ignore[index]
        where = target != -100
        logits = self.llm.get_output_embeddings()(hidden[where]).float()
        rows = torch.arange(target.shape[0], device=target.device).unsqueeze(1).expand_as(target)[where]
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
        """Mean cross-entropy over the transcript tokens (and eos) of the batch, and their count."""
        logits, target, _ = self._target_logits(batch)
        return F.cross_entropy(logits, target), int(target.numel())

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
