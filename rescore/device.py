"""Device names (``auto``, ``cpu``, ``cuda``) resolved the same way for every model that runs on one.

Kept apart from the backends so that code using CTranslate2 or torch for its own ends (the encoder cache,
a recognizer) does not import another backend only for this rule.
"""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")


def cuda_available(runtime: str = "ctranslate2") -> bool:
    """Whether ``runtime`` (``ctranslate2`` or ``torch``) sees a CUDA device: each has its own build."""
    if runtime == "ctranslate2":
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    if runtime == "torch":
        import torch

        return torch.cuda.is_available()
    raise ValueError(f"unknown runtime {runtime!r}: expected ctranslate2 or torch")


def resolve_device(device: str, runtime: str = "ctranslate2") -> str:
    """``auto`` -> ``cuda`` when ``runtime`` sees a GPU, else ``cpu``; any other name than the three is an error."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if cuda_available(runtime) else "cpu"
    return device
