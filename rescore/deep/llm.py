"""Load a local causal LM (a model name, a GGUF file or a transformers folder) for the speech-LLM.

The installed LLMs are GGUF files; transformers dequantizes those on every load, so they are converted
once into a plain safetensors folder under ``cache_dir()/hf/`` by :func:`rescore.score.convert.ensure_hf_model`
(shared with the LM scorers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def hf_folder(name_or_path: str) -> Path:
    """A transformers folder for a model name, GGUF file or folder (converting a GGUF once, shared with the
    LM scorers)."""
    from rescore.score.convert import ensure_hf_model

    return ensure_hf_model(name_or_path)


def load_causal_lm(name_or_path: str, device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)``: the model frozen, in eval mode, float32 (bf16 autocast is applied by callers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = hf_folder(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
