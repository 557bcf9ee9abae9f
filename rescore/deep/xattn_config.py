"""What a gated cross-attention model is made of (:class:`XAttnConfig`), saved as ``deep-config.json``'s ``xattn``.

Configs saved before a variant was removed still load when they hold its key at the neutral value (the variant was
off); a config that asks for a removed variant is refused by name (docs/experiments/deep-fusion.md says what each
showed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rescore.deep import ATTEND, MEMORIES, saved_attend
from rescore.deep.mixers import MIXERS
from rescore.deep.model import normalize_target

# fields of removed variants and the value that meant "off": queries fitted to Whisper's decoder, the auxiliary
# read loss, the choosing loss, the window over Whisper's decoder states
REMOVED_FIELDS: dict[str, Any] = {"q_init": False, "aux_weight": 0.0, "choice_weight": 0.0, "memory_window": 1}
REMOVED_MEMORIES = ("decoder",)  # Whisper's decoder states as they are (the prediction memory replaced them)


@dataclass
class XAttnConfig:
    """What a trained model needs to be rebuilt: encoder, LM, what the blocks read and where, prompt and targets."""

    encoder: str = "whisper-tiny.en"
    # padded: Whisper's 30 s windows; own: each utterance at its own length (rescore.whisper.encoder.WINDOWS), a tenth
    # of the encoding time but other states: the model is decoded on the window it was trained on
    encoder_window: str = "padded"
    llm: str = "smollm2-135m"
    every: int = 6  # a block after layers every-1, 2*every-1, ... (SmolLM2-135M: 30 layers -> 5 blocks)
    enc_dim: int = 384  # the memory's width (set from the states when training; the LM's with memory="prediction")
    heads: int = 6
    head_dim: int = 64
    ffn_mult: int = 2
    kv_init: str | None = "whisper-tiny.en"  # Whisper model whose decoder cross-attention K/V start the blocks
    # what the blocks read (rescore.deep.MEMORIES): "encoder", Whisper's encoder frames; "prediction", Whisper's
    # next-token predictions on the transcript as LM embeddings (rescore.deep.prediction_memory), which needs
    # attend="reply" and can only choose among the hypotheses (the transcript must be known)
    memory: str = "encoder"
    mixer: str = "none"  # none | attention | summary | gaussian, over the encoder states before the blocks
    mixer_layers: int = 1
    audio: bool = True  # False: attention gates forced shut (the no-audio ablation)
    attend: str = "all"  # all: blocks at every position; reply: from the prompt's last token on (prompt read as text)
    template: str = "deep"
    max_hypotheses: int = 4
    text_norm: str = "lower"
    max_target_tokens: int = 160
    dropout: float = 0.0
    # decoding: no end of transcript before this share of the shortest hypothesis's tokens (0: no floor); a model
    # trained on short utterances stops early on long ones. Chosen on held-out examples after training
    # (rescore.deep.length_floor) and saved with the model.
    min_length_ratio: float = 0.0

    @property
    def writes(self) -> bool:
        """Whether the model can write a transcript; one over Whisper's predictions needs it, so it only chooses."""
        return self.memory == "encoder"

    def problem(self) -> str | None:
        """Why this config cannot be built (None: it can); the CLI and the model both ask."""
        if self.memory not in MEMORIES:
            return f"memory must be one of {', '.join(MEMORIES)}, not {self.memory!r}"
        if self.attend not in ATTEND:
            return f"attend must be one of {', '.join(ATTEND)}, not {self.attend!r}"
        if self.mixer not in MIXERS:
            return f"mixer must be one of {', '.join(MIXERS)}, not {self.mixer!r}"
        if self.every < 1:
            return f"every must be at least 1, not {self.every}"
        if self.memory == "prediction" and (self.attend != "reply" or self.kv_init or self.mixer != "none"):
            return (
                "memory='prediction' needs attend='reply' (the prompt has no transcript to align), and no kv_init or"
                " mixer (they are made for encoder frames)"
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
        """A saved config; ValueError naming the field when it asks for a removed variant."""
        d = dict(d)
        for key, neutral in REMOVED_FIELDS.items():
            if key in d and (value := d.pop(key)) != neutral:
                raise ValueError(
                    f"deep-fusion config {key}={value!r}: that variant was removed (docs/experiments/deep-fusion.md);"
                    " retrain the model with a recipe of `rescore deep train`"
                )
        if d.get("memory") in REMOVED_MEMORIES:
            raise ValueError(
                f"deep-fusion config memory={d['memory']!r}: that variant was removed"
                " (docs/experiments/deep-fusion.md); retrain the model with a recipe of `rescore deep train`"
            )
        return cls(**{**d, "attend": saved_attend(d)})


def unique_hypotheses(texts: Sequence[str], text_norm: str = "lower") -> list[str]:
    """The hypotheses normalised as the targets are, duplicates (after normalising) and empty ones dropped,
    order kept: an n-best list often differs only in punctuation, which would fill the prompt with repeats."""
    out: list[str] = []
    for t in texts:
        n = normalize_target(t, text_norm)
        if n and n not in out:
            out.append(n)
    return out
