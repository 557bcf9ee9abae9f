"""Deep fusion: a frozen causal LM fed Whisper's view of the audio, by gated cross-attention (``xattn``, the
default) or as a bridged prefix (``model``); see docs/deep-fusion.md.

The model folder's names live here, torch-free, so that ``rescore.stages.deep`` can tell the architectures apart
without importing torch.
"""

from typing import Literal, get_args

CONFIG_FILE = "deep-config.json"  # what `rescore deep train` writes into its model folder
XATTN_KEY = "xattn"  # the config file's key of a gated cross-attention model ("speech_llm": the prefix bridge)
# where the cross-attention blocks act (XAttnConfig.attend); the first is the default and what a model saved before
# the field had: every position
ATTEND = ("all", "reply")
# what the cross-attention blocks read (XAttnConfig.memory): Whisper's encoder frames, or whisper's next-token
# predictions on the transcript as LM embeddings (rescore.deep.prediction_memory)
MEMORIES = ("encoder", "prediction")
# the style of targets and prompt hypotheses (rescore.deep.model.normalize_target); the first is the default
TEXT_NORMS = ("lower", "whisper", "none")


def saved_attend(config: dict) -> str:
    """Where a saved cross-attention model's blocks act (its ``xattn`` config; saved before the field: all)."""
    return config.get("attend", ATTEND[0])


# how the deep stage decodes (``[deep] decode``): write (beam search), choose (rank the first-pass hypotheses it
# reads) or auto (write where the model can, else choose); here, torch- and numpy-free, for the option model
DecodeMode = Literal["auto", "write", "choose"]
DECODE_MODES: tuple[str, ...] = get_args(DecodeMode)
