"""Named starting points for ``rescore deep train``: the options that belong together for one kind of model.

A recipe fills every option the command line leaves unset; an option given explicitly wins, and the model's own
rules (``XAttnConfig.problem``) still judge the result. ``prediction`` is the default: the only recipe whose audio
model came out below the gates-shut model on librispeech-dev (cross-fitted, pooled, in three trainings; a fourth,
of one fold, went the other way: docs/deep-fusion.md). ``encoder`` is the Whispering-LLaMA design (the blocks over
Whisper's encoder frames, K/V from its decoder's cross-attention): it can write, but a couple of hours of
small-vocabulary training speech do not teach its blocks to read open-vocabulary audio. The prefix bridge
(``--arch bridge``) reads encoder frames too, so it starts from ``encoder``.

:func:`xattn_config` and :func:`bridge_config` turn a recipe into the model's config; the CLI and eval/bench_deep.py
both build their models through them. This module is torch-free, so the CLI resolves options before loading models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rescore.deep.model import SpeechLLMConfig
    from rescore.deep.xattn_config import XAttnConfig

DEFAULT_LLM = "smollm2-135m"


@dataclass(frozen=True)
class DeepRecipe:
    """Defaults of ``rescore deep train`` for one kind of model (the fields are the CLI's option names)."""

    memory: str  # XAttnConfig.memory: what the blocks attend over
    encoder: str  # the Whisper model whose states (or predictions) the blocks read
    encoder_window: str  # padded (30 s) or own (each utterance at its own length)
    attend: str  # where the blocks act: all positions, or the reply only
    kv_init: str  # "encoder" (the encoder model's own decoder cross-attention), a model name, or "none"
    text_norm: str  # the style of targets and prompt hypotheses
    hyp_noise: float  # share of training examples whose hypotheses get look-alike words (rescore.deep.noise)
    summary: str  # one line for --help and the training log

    def overridden(self, **given: Any) -> DeepRecipe:
        """This recipe with every ``given`` option that is not None (set on the command line) in its place."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    @property
    def kv_model(self) -> str | None:
        """The Whisper model whose decoder cross-attention K/V start the blocks (None: fresh K/V)."""
        return {"none": None, "encoder": self.encoder}.get(self.kv_init.lower(), self.kv_init)


RECIPES: dict[str, DeepRecipe] = {
    "prediction": DeepRecipe(
        memory="prediction",
        encoder="whisper-base",
        encoder_window="own",
        attend="reply",
        kv_init="none",
        text_norm="whisper",
        hyp_noise=0.5,
        summary="whisper-base's next-token predictions, aligned to the text, as LM embeddings; chooses among the"
        " hypotheses",
    ),
    "encoder": DeepRecipe(
        memory="encoder",
        encoder="whisper-tiny.en",
        encoder_window="padded",
        attend="all",
        kv_init="encoder",
        text_norm="lower",
        hyp_noise=0.0,
        summary="Whisper encoder frames, K/V from Whisper's decoder cross-attention; writes or chooses",
    ),
}
DEFAULT_RECIPE = "prediction"  # --arch xattn
BRIDGE_RECIPE = "encoder"  # --arch bridge: it reads encoder frames


def resolve_recipe(name: str | None, arch: str) -> tuple[str, DeepRecipe]:
    """``(name, recipe)``; ``name`` None: the architecture's (``xattn`` or ``bridge``). ValueError if unknown."""
    name = name or (DEFAULT_RECIPE if arch == "xattn" else BRIDGE_RECIPE)
    if name not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, not {name!r}")
    return name, RECIPES[name]


def xattn_config(
    recipe: DeepRecipe, *, llm: str = DEFAULT_LLM, audio: bool = True, mixer: str = "none", mixer_layers: int = 1
) -> XAttnConfig:
    """The gated cross-attention model of ``recipe``; ``audio=False`` is its gates-shut twin (the ablation)."""
    from rescore.deep.xattn_config import XAttnConfig

    return XAttnConfig(
        encoder=recipe.encoder,
        encoder_window=recipe.encoder_window,
        llm=llm,
        kv_init=recipe.kv_model,
        memory=recipe.memory,
        mixer=mixer,
        mixer_layers=mixer_layers,
        audio=audio,
        attend=recipe.attend,
        text_norm=recipe.text_norm,
    )


def bridge_config(
    recipe: DeepRecipe,
    *,
    llm: str = DEFAULT_LLM,
    reducer: str = "conv",
    factor: int = 4,
    mixer: str = "summary",
    layers: int = 2,
    ctc_head: str = "default",
    lora_rank: int = 0,
) -> SpeechLLMConfig:
    """The prefix bridge (SLAM-ASR style) over ``recipe``'s encoder, targets written in its style."""
    from rescore.deep.bridge import BridgeConfig
    from rescore.deep.model import LoraConfig, SpeechLLMConfig

    bridge = BridgeConfig(
        reducer=reducer, factor=factor, mixer=mixer, layers=layers, ctc_head=ctc_head if reducer == "ctc" else None
    )
    return SpeechLLMConfig(
        encoder=recipe.encoder, llm=llm, bridge=bridge, lora=LoraConfig(rank=lora_rank), text_norm=recipe.text_norm
    )
