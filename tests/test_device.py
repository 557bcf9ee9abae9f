"""Device names resolved in one place, for every runtime."""

import subprocess
import sys

import pytest

from rescore.device import resolve_device


def test_resolve_device_names():
    import ctranslate2
    import torch

    assert resolve_device("cpu") == "cpu" and resolve_device("cuda") == "cuda"
    assert resolve_device("auto") == ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu")
    assert resolve_device("auto", runtime="torch") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="unknown runtime"):
        resolve_device("auto", runtime="jax")


@pytest.mark.model
def test_encoder_does_not_import_a_recognizer_backend():
    code = (
        "import sys, rescore.whisper.encoder, rescore.device; "
        "assert rescore.whisper.encoder.resolve_device is rescore.device.resolve_device; "
        "rescore.whisper.encoder.WhisperEncoder('whisper-tiny.en', device='auto'); "
        "assert not [m for m in sys.modules if m.startswith('rescore.recognize')], sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
