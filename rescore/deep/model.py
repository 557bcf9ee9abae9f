"""The speech-LLM: frozen encoder states -> :class:`Bridge` -> prefix embeddings of a frozen causal LM.

The LM reads ``[speech prefix][instruction][transcript][eos]`` (as in SLAM-ASR, arXiv 2312.03668, and
Speech-LLaMA); training puts the loss on the transcript and eos only, and transcription runs beam search
from ``[speech prefix][instruction]``. Sequences are left-padded with position ids counted over the real
positions, so training and batched generation see the same positions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from rescore.deep import CONFIG_FILE, TEXT_NORMS
from rescore.deep.bridge import Bridge, BridgeConfig

DEFAULT_INSTRUCTION = "\nTranscribe:"
WEIGHTS_FILE = "bridge.pt"


def normalize_target(text: str, mode: str = "lower") -> str:
    """Training targets in one style: the sets differ (AN4 and LibriSpeech upper case, ARCTIC punctuated),
    and a frozen LM learns one style faster. ``lower``: lower case, letters, digits and apostrophes.
    ``whisper``: Whisper's English normalizer (the one WER is scored under), so numbers, spellings and
    contractions are written alike in hypotheses and targets ("Chapter 17," and "CHAPTER SEVENTEEN" both
    "chapter 17") and the model is not taught conversions the score ignores."""
    if mode == "none":
        return text.strip()
    if mode not in TEXT_NORMS:
        raise ValueError(f"unknown text normalization {mode!r}: {', '.join(TEXT_NORMS)}")
    if mode == "whisper":
        from rescore.evaluate.metrics import normalize

        text = normalize(text, "whisper")
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower())
    return " ".join(text.split())


@dataclass
class LoraConfig:
    rank: int = 0  # 0: no LoRA, the LM stays fully frozen
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class SpeechLLMConfig:
    """What a trained model needs to be rebuilt: encoder, LM, bridge, prompt and target style."""

    encoder: str = "whisper-tiny.en"
    llm: str = "smollm2-135m"
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    instruction: str = DEFAULT_INSTRUCTION
    text_norm: str = "lower"
    max_target_tokens: int = 160

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpeechLLMConfig:
        d = dict(d)
        d["bridge"] = BridgeConfig(**d.get("bridge", {}))
        d["lora"] = LoraConfig(**d.get("lora", {}))
        return cls(**d)


@dataclass
class Batch:
    """Encoder states of a batch (padded) with their transcripts (may be empty for transcription)."""

    ids: list[str]
    states: torch.Tensor  # [B, T, D]
    mask: torch.Tensor  # [B, T]
    texts: list[str]
    hypotheses: list[list[str]] = field(default_factory=list)  # first-pass n-best (the cross-attention model's prompt)


# Beam search ranks finished hypotheses by summed log-prob / steps ** length_penalty; at 1 that is the
# records' ``am_norm`` (am / am_tokens), so the order searched, reported and reranked by is one score.
LENGTH_PENALTY = 1.0


class BeamHypothesis(NamedTuple):
    """One beam-search result; ``steps`` counts the scored steps (tokens, plus the eos when it ended)."""

    text: str
    tokens: list[int]
    score: float  # summed log-prob over the steps
    steps: int

    @property
    def per_step(self) -> float:
        """The score the beam search ranks by (``LENGTH_PENALTY`` 1): summed log-prob per step."""
        return self.score / max(self.steps, 1)


def order_beams(hyps: Sequence[BeamHypothesis]) -> list[BeamHypothesis]:
    """Best first by what the beam search ranked by (``per_step``); ties keep the search's own order."""
    return sorted(hyps, key=lambda h: -h.per_step)


def collate(
    ids: Sequence[str],
    states: Sequence[np.ndarray],
    texts: Sequence[str],
    hypotheses: Sequence[Sequence[str]] | None = None,
) -> Batch:
    t = max(s.shape[0] for s in states)
    x = np.zeros((len(states), t, states[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(states), t), dtype=bool)
    for i, s in enumerate(states):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    hyps = [list(h) for h in hypotheses] if hypotheses is not None else [[] for _ in ids]
    return Batch(list(ids), torch.from_numpy(x), torch.from_numpy(mask), list(texts), hyps)


def parse_beams(
    llm: Any, tokenizer: Any, out: Any, n_items: int, nbest: int, eos_id: int
) -> list[list[BeamHypothesis]]:
    """``generate``'s output (``return_dict_in_generate``, ``output_scores``) as ``nbest`` hypotheses per item,
    best first: tokens up to the eos, the summed log-prob of the tokens and of the eos that ended them.
    ``eos_id`` may be several stop tokens."""
    stops = set(eos_id) if isinstance(eos_id, Sequence) else {eos_id}
    seqs = out.sequences
    beams = getattr(out, "beam_indices", None)  # greedy search has none; its scores are raw logits
    trans = llm.compute_transition_scores(seqs, out.scores, beams, normalize_logits=True)
    results: list[list[BeamHypothesis]] = []
    for i in range(n_items):
        hyps = []
        for j in range(i * nbest, (i + 1) * nbest):
            ids = seqs[j, -trans.shape[1] :].tolist() if seqs.shape[1] >= trans.shape[1] else seqs[j].tolist()
            steps = trans[j]
            toks = []
            for tok in ids:
                if tok in stops or tok == tokenizer.pad_token_id:
                    break
                toks.append(tok)
            n = min(len(toks) + 1, steps.shape[0])  # tokens plus the eos that ended the hypothesis
            score = float(steps[:n].sum())
            text = tokenizer.decode(toks, skip_special_tokens=True).strip()
            hyps.append(BeamHypothesis(text, toks, score, n))
        results.append(order_beams(hyps))
    return results


class SpeechLLM(nn.Module):
    """Bridge + frozen causal LM (optionally with LoRA adapters, the only LM weights that train)."""

    def __init__(self, config: SpeechLLMConfig, llm: Any, tokenizer: Any, ctc: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        config.bridge.out_dim = llm.get_input_embeddings().embedding_dim
        self.bridge = Bridge(config.bridge, ctc=ctc)
        if config.lora.rank > 0:
            from peft import LoraConfig as PeftLoraConfig
            from peft import get_peft_model

            lc = config.lora
            peft_config = PeftLoraConfig(
                r=lc.rank, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=list(lc.targets)
            )
            llm = get_peft_model(llm, peft_config)
        self.llm = llm
        self.instruction_ids: list[int] = tokenizer(config.instruction, add_special_tokens=False)["input_ids"]
        self.eos_id: int = tokenizer.eos_token_id

    # --- parameters that train and are saved -------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.named_parameters() if v.requires_grad} | {
            k: v.cpu() for k, v in self.bridge.named_buffers(prefix="bridge")
        }

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters()) | dict(self.bridge.named_buffers(prefix="bridge"))
        missing = [k for k, v in own.items() if (v.requires_grad or k.startswith("bridge.")) and k not in state]
        unknown = [k for k in state if k not in own]
        if missing or unknown:
            raise ValueError(f"checkpoint does not fit the model: missing {missing[:3]}, unexpected {unknown[:3]}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        save_model(self, folder, extra)

    # --- sequences ---------------------------------------------------------------------------------
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def target_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(normalize_target(text, self.config.text_norm), add_special_tokens=False)["input_ids"]
        return ids[: self.config.max_target_tokens] + [self.eos_id]

    def build_inputs(
        self, batch: Batch, with_targets: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Left-padded ``(inputs_embeds, attention_mask, position_ids, labels)`` for the LM."""
        device = next(self.bridge.parameters()).device
        prefix, pmask = self.bridge(batch.states.to(device), batch.mask.to(device))
        instr = self.embed_tokens(torch.tensor(self.instruction_ids, device=device))
        targets = [self.target_ids(t) for t in batch.texts] if with_targets else [[] for _ in batch.ids]
        pieces, labels = [], []
        for i, tgt in enumerate(targets):
            n = int(pmask[i].sum())
            tgt_ids = torch.tensor(tgt, dtype=torch.long, device=device)
            parts = [prefix[i, :n], instr.to(prefix.dtype)]
            if tgt:
                parts.append(self.embed_tokens(tgt_ids).to(prefix.dtype))
            pieces.append(torch.cat(parts, 0))
            lab = torch.full((n + len(self.instruction_ids),), -100, dtype=torch.long, device=device)
            labels.append(torch.cat([lab, tgt_ids]))
        total = max(p.shape[0] for p in pieces)
        dim = pieces[0].shape[1]
        embeds = prefix.new_zeros(len(pieces), total, dim)
        attn = torch.zeros(len(pieces), total, dtype=torch.long, device=device)
        lab_out = torch.full((len(pieces), total), -100, dtype=torch.long, device=device)
        for i, (p, lab) in enumerate(zip(pieces, labels, strict=True)):
            embeds[i, total - p.shape[0] :] = p
            attn[i, total - p.shape[0] :] = 1
            lab_out[i, total - p.shape[0] :] = lab
        positions = (attn.cumsum(1) - 1).clamp(min=0)
        return embeds, attn, positions, (lab_out if with_targets else None)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the transcript tokens (and eos) of the batch, and their count."""
        embeds, attn, positions, labels = self.build_inputs(batch, with_targets=True)
        # the LM head only where a transcript token is predicted: most positions are the speech prefix
        hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=attn, position_ids=positions)
        target = labels[:, 1:]  # type: ignore[index]
        where = target != -100
        logits = self.llm.get_output_embeddings()(hidden.last_hidden_state[:, :-1][where]).float()
        return nn.functional.cross_entropy(logits, target[where]), int(where.sum())

    @torch.no_grad()
    def generate(
        self, batch: Batch, beam_size: int = 4, nbest: int = 4, max_new_tokens: int | None = None
    ) -> list[list[BeamHypothesis]]:
        """Beam search per utterance: :class:`BeamHypothesis` (text, token ids, summed log-prob, steps), best first.

        "Best" is what the beam search itself ranks by: the log-prob per step (``length_penalty`` 1), so
        the order reported is the order searched. ``max_new_tokens`` defaults to what the longest audio of
        the batch could hold (7 tokens a second, plus 8), so a model that never says eos cannot run on."""
        embeds, attn, _, _ = self.build_inputs(batch, with_targets=False)
        nbest = min(nbest, beam_size)
        if max_new_tokens is None:
            seconds = int(batch.mask.sum(1).max()) / 50
            max_new_tokens = min(self.config.max_target_tokens + 1, 8 + math.ceil(7 * seconds))
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=attn,
            num_beams=beam_size,
            num_return_sequences=nbest,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            length_penalty=LENGTH_PENALTY,
            eos_token_id=self.eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        return parse_beams(self.llm, self.tokenizer, out, len(batch.ids), nbest, self.eos_id)


def save_model(model: SpeechLLM, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Write the config (everything needed to reload) and the trained weights (bridge, LoRA) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"speech_llm": model.config.to_dict(), **(extra or {})}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    torch.save(model.trainable_state_dict(), tmp)
    tmp.replace(folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))


class CTCHeadAdapter(nn.Module):
    """A CTC head ``head(states, lengths) -> (log_probs [B, T/stride, V], lengths)`` as the bridge's
    ``(states, mask) -> log_probs [B, T, V]``: each output frame is repeated over the ``stride`` encoder
    frames it covers, so CTC compression averages the full-rate encoder states of each label."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.blank = int(getattr(head, "blank", 0))
        self.stride = int(getattr(head, "stride", 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.head(x, mask.sum(1))
        log_probs = out[0] if isinstance(out, tuple) else out
        return log_probs.repeat_interleave(self.stride, dim=1)[:, : x.shape[1]]


def load_ctc_module(path: str) -> CTCHeadAdapter:
    """The trained CTC head of :func:`rescore.recognize.ctc.load_ctc_head` ("default": its default path)."""
    from rescore.recognize.ctc_head import load_ctc_head

    head = load_ctc_head(path)
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return CTCHeadAdapter(head)


def build_model(config: SpeechLLMConfig, device: str = "cpu") -> SpeechLLM:
    from rescore.deep.llm import load_causal_lm

    llm, tokenizer = load_causal_lm(config.llm, device=device)
    ctc = None
    if config.bridge.reducer == "ctc":
        ctc = load_ctc_module(config.bridge.ctc_head or "default").to(device)
        config.bridge.ctc_blank = ctc.blank
    return SpeechLLM(config, llm, tokenizer, ctc=ctc).to(device)


def load_model(folder: Path, device: str = "cpu") -> SpeechLLM:
    """Rebuild a trained speech-LLM from its folder (config file + weights)."""
    cfg_path = Path(folder) / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; not a trained deep-fusion model folder")
    config = SpeechLLMConfig.from_dict(json.loads(cfg_path.read_text())["speech_llm"])
    model = build_model(config, device)
    model.load_trainable_state_dict(torch.load(Path(folder) / WEIGHTS_FILE, map_location=device))
    model.eval()
    return model
