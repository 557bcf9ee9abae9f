"""Named starting points for ``rescore deep train``: the options that belong together for one kind of model.

A recipe fills every option the command line leaves unset; an option given explicitly wins, and the model's own
rules (``XAttnConfig.memory_problem``) still judge the result. ``prediction`` is the default because it is the one
whose audio model came out below its own gates-shut twin on librispeech-dev in cross-fitted folds, pooled, in three
separate trainings; a fourth training of one fold did not confirm it (eval/RESULTS.md
``bench_xattn_session20_notes``). ``encoder`` is the design the deep-fusion
issue started from (the blocks over Whisper's encoder frames): it can write, but over 2 h of small-vocabulary
training speech its audio did not beat the gates-shut model. The prefix bridge (``--arch bridge``) reads encoder
frames too, so it starts from ``encoder``.

Torch-free, like the rest of ``rescore.deep``'s top level, so the CLI can resolve options before loading models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class DeepRecipe:
    """Defaults of ``rescore deep train`` for one kind of model (the fields are the CLI's option names)."""

    memory: str  # XAttnConfig.memory: what the blocks attend over
    encoder: str  # the Whisper model whose states (or decoder) the blocks read
    encoder_window: str  # padded (30 s) or own (each utterance at its own length)
    attend: str  # where the blocks act: all positions, or the reply only
    kv_init: str  # "encoder" (the encoder model's own decoder cross-attention), a model name, or "none"
    text_norm: str  # the style of targets and prompt hypotheses
    hyp_noise: float  # share of training examples whose hypotheses get look-alike words (rescore.deep.noise)
    summary: str  # one line for --help and the training log

    def overridden(self, **given: Any) -> DeepRecipe:
        """This recipe with every ``given`` option that is not None (set on the command line) in its place."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})


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
