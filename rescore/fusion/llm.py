"""Load a local causal LM (a model name, a GGUF file or a transformers folder) for the speech-LLM.

The installed LLMs are GGUF files; transformers dequantizes those on every load, so they are converted
once into a plain safetensors folder under ``cache_dir()/hf/``. The conversion is
:func:`rescore.lm.convert.ensure_hf_model` (shared with the LM scorers); the fallback below writes the same
layout, for installs where that module is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rescore.models import cache_dir, file_digest, resolve_model


def _convert_gguf(path: Path) -> Path:
    """GGUF -> ``cache_dir()/hf/<stem>-<digest>/`` (model.safetensors, config.json, tokenizer), once."""
    out = cache_dir() / "hf" / f"{path.stem}-{file_digest(path)}"
    marker = out / "rescore-converted.json"
    if marker.exists():
        return out
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        save_model(model, str(tmp / "model.safetensors"))
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(tmp)
        marker_tmp = tmp / marker.name
        marker_tmp.write_text(json.dumps({"source": str(path), "digest": file_digest(path)}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def hf_folder(name_or_path: str) -> Path:
    """A transformers folder for a model name, GGUF file or folder (converting a GGUF once)."""
    try:
        from rescore.lm.convert import ensure_hf_model
    except ImportError:
        ensure_hf_model = None
    if ensure_hf_model is not None:
        return ensure_hf_model(name_or_path)
    path = resolve_model(name_or_path)
    if path.is_dir() and (path / "config.json").exists():
        return path
    if path.is_dir():
        path = next(iter(sorted(path.glob("*.gguf"))), path)
    if path.suffix != ".gguf":
        raise ValueError(f"{path}: expected a .gguf file or a transformers model folder")
    return _convert_gguf(path)


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
