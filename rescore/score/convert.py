"""GGUF -> transformers folder (safetensors + config + tokenizer), converted once into the cache.

transformers can read a GGUF file directly but dequantizes it on every load (SmolLM2: about 24 s, Qwen
0.5B: about a minute) and refuses to ``save_pretrained`` such a model. Saving its state dict with
safetensors beside its config (without ``quantization_config``) and tokenizer gives a plain folder that
reloads in about a second with identical outputs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rescore.io.models import cache_dir, file_digest, resolve_model

MARKER = "rescore-converted.json"


def converted_dir(gguf_path: Path) -> Path:
    """Where the conversion of one GGUF file lives (keyed by file name and fingerprint)."""
    return cache_dir() / "hf" / f"{gguf_path.stem}-{file_digest(gguf_path)}"


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


def ensure_hf_model(name_or_path: str) -> Path:
    """A model name, GGUF file or transformers folder -> a transformers folder to load (converting once).

    The conversion is written to a temporary folder and renamed, so an interrupted run leaves no half
    folder behind and concurrent runs do not read one.
    """
    path = resolve_model(name_or_path)
    if is_hf_folder(path):
        return path
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not ggufs:
            raise ValueError(f"{path}: neither a transformers folder (config.json) nor a folder with a .gguf file")
        path = ggufs[0]
    if path.suffix != ".gguf":
        raise ValueError(f"{path}: expected a .gguf file or a transformers model folder")
    out = converted_dir(path)
    if (out / MARKER).exists():
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
        save_model(model, str(tmp / "model.safetensors"))  # handles tied embeddings, unlike save_file
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": str(path), "digest": file_digest(path)}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
