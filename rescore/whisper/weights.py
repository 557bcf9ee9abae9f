"""Whisper weights read from a CTranslate2 ``model.bin`` with numpy, and converted to an openai-whisper checkpoint.

CTranslate2's format (spec version 5/6): a flat list of named arrays, then an alias table. The fused
query/key/value projections are split into openai-whisper's names, so the PyTorch decoder, the openai-whisper
backend and deep fusion's key/value start all read the same installed model (no hub download).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from rescore.io.models import cache_dir, file_digest, resolve_model

# CTranslate2 DataType codes
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2_model(path: Path) -> dict[str, np.ndarray]:
    """All named arrays of a CTranslate2 ``model.bin`` (aliases resolved)."""
    with open(path, "rb") as f:

        def u(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            return struct.unpack("<" + fmt, f.read(size))

        def string() -> str:
            (n,) = u("H")
            return f.read(n).decode().rstrip("\0")

        (version,) = u("I")
        if version < 5:
            raise ValueError(f"{path}: CTranslate2 model spec version {version} is not supported (need 5 or 6)")
        string()  # spec name
        u("I")  # spec revision
        (n_vars,) = u("I")
        arrays: dict[str, np.ndarray] = {}
        for _ in range(n_vars):
            name = string()
            (rank,) = u("B")
            shape = u("I" * rank) if rank else ()
            (dtype_id,) = u("B")
            (n_bytes,) = u("I")
            if dtype_id not in _CT2_DTYPES:
                raise ValueError(f"{path}: {name} has a data type ({dtype_id}) this reader does not handle")
            arrays[name] = np.frombuffer(f.read(n_bytes), dtype=_CT2_DTYPES[dtype_id]).reshape(shape)
        (n_alias,) = u("I")
        for _ in range(n_alias):
            alias, target = string(), string()
            arrays[alias] = arrays[target]
    return arrays


def _split(a: np.ndarray, n: int) -> list[np.ndarray]:
    return list(np.split(a, n, axis=0))


def ct2_to_openai_state_dict(arrays: dict[str, np.ndarray], n_mels: int) -> tuple[dict[str, np.ndarray], dict]:
    """openai-whisper ``model_state_dict`` and ``dims`` from CTranslate2 Whisper arrays."""
    sd: dict[str, np.ndarray] = {}

    def attn(dst: str, src: str, fused_qkv: bool) -> None:
        if fused_qkv:  # self-attention: linear_0 = [q; k; v], linear_1 = out
            qw, kw, vw = _split(arrays[f"{src}/linear_0/weight"], 3)
            qb, _, vb = _split(arrays[f"{src}/linear_0/bias"], 3)  # Whisper's key has no bias
            out = "linear_1"
        else:  # cross-attention: linear_0 = q, linear_1 = [k; v], linear_2 = out
            qw, qb = arrays[f"{src}/linear_0/weight"], arrays[f"{src}/linear_0/bias"]
            kw, vw = _split(arrays[f"{src}/linear_1/weight"], 2)
            _, vb = _split(arrays[f"{src}/linear_1/bias"], 2)
            out = "linear_2"
        sd.update({f"{dst}.query.weight": qw, f"{dst}.query.bias": qb, f"{dst}.key.weight": kw})
        sd.update({f"{dst}.value.weight": vw, f"{dst}.value.bias": vb})
        sd.update({f"{dst}.out.weight": arrays[f"{src}/{out}/weight"], f"{dst}.out.bias": arrays[f"{src}/{out}/bias"]})

    def ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = arrays[f"{src}/gamma"]
        sd[f"{dst}.bias"] = arrays[f"{src}/beta"]

    def mlp(dst: str, src: str) -> None:
        for i, j in ((0, 0), (2, 1)):
            sd[f"{dst}.{i}.weight"] = arrays[f"{src}/linear_{j}/weight"]
            sd[f"{dst}.{i}.bias"] = arrays[f"{src}/linear_{j}/bias"]

    n_enc = len({k.split("/")[1] for k in arrays if re.match(r"encoder/layer_\d+/", k)})
    n_dec = len({k.split("/")[1] for k in arrays if re.match(r"decoder/layer_\d+/", k)})
    for c in ("conv1", "conv2"):
        sd[f"encoder.{c}.weight"] = arrays[f"encoder/{c}/weight"]
        sd[f"encoder.{c}.bias"] = arrays[f"encoder/{c}/bias"]
    sd["encoder.positional_embedding"] = arrays["encoder/position_encodings/encodings"]
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        attn(f"{dst}.attn", f"{src}/self_attention", True)
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        mlp(f"{dst}.mlp", f"{src}/ffn")
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    ln("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = arrays["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = arrays["decoder/position_encodings/encodings"]
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        attn(f"{dst}.attn", f"{src}/self_attention", True)
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        attn(f"{dst}.cross_attn", f"{src}/attention", False)
        ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        mlp(f"{dst}.mlp", f"{src}/ffn")
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    ln("decoder.ln", "decoder/layer_norm")
    vocab, state = arrays["decoder/embeddings/weight"].shape
    dims = {
        "n_mels": n_mels,
        "n_audio_ctx": int(arrays["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(state),
        "n_audio_head": int(arrays["encoder/num_heads"]),
        "n_audio_layer": n_enc,
        "n_vocab": int(vocab),
        "n_text_ctx": int(arrays["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(state),
        "n_text_head": int(arrays["decoder/num_heads"]),
        "n_text_layer": n_dec,
    }
    return sd, dims


def convert_ct2_to_openai(model: str = "whisper-tiny.en", output: Path | None = None) -> Path:
    """Convert a CTranslate2 Whisper folder into an openai-whisper ``.pt`` checkpoint, once (cached).

    The cache file name carries a fingerprint of ``model.bin``, so a changed model is converted again.
    """
    import torch

    folder = resolve_model(model, kind="whisper-ct2")
    src = Path(folder) / "model.bin"
    if not src.exists():
        raise ValueError(f"{folder}: not a CTranslate2 Whisper folder (no model.bin)")
    if output is None:
        output = cache_dir() / "openai-whisper" / f"{Path(model).name}-{file_digest(src)}.pt"
    if output.exists():
        return output
    n_mels = 80
    cfg = Path(folder) / "preprocessor_config.json"
    if cfg.exists():
        n_mels = int(json.loads(cfg.read_text()).get("feature_size", 80))
    arrays = read_ct2_model(src)
    if "encoder/conv1/weight" in arrays:
        n_mels = int(arrays["encoder/conv1/weight"].shape[1])
    sd, dims = ct2_to_openai_state_dict(arrays, n_mels)
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + f".{os.getpid()}.tmp")
    torch.save({"dims": dims, "model_state_dict": state}, tmp)
    os.replace(tmp, output)
    return output
