import numpy as np
import pytest

from rescore.datasets import load_dataset
from rescore.encoder import WhisperEncoder

pytestmark = pytest.mark.slow


def test_encoder_states_are_trimmed_and_cached(tiny_manifest, tmp_path):
    enc = WhisperEncoder("whisper-tiny.en", cache=tmp_path / "cache")
    utts = load_dataset(tiny_manifest).utterances[:3]
    first = list(enc.states(utts))
    assert all(err is None for _, _, err in first)
    for u, st, _ in first:
        assert st.shape[1] == 384
        assert abs(st.shape[0] - u.duration * 50) <= 2
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3
    again = list(enc.states(utts))
    for (_, a, _), (_, b, _) in zip(first, again, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-2)  # float16 on disk


def test_encoder_cache_follows_the_audio_bytes(tiny_manifest, tmp_path):
    """A copied (re-synced) data folder reuses the cache; changed audio at the same path does not."""
    import dataclasses
    import shutil

    enc = WhisperEncoder("whisper-tiny.en", cache=tmp_path / "cache")
    u = load_dataset(tiny_manifest).utterances[0]
    copy = tmp_path / ("copy" + str(u.audio)[-5:])
    shutil.copy(u.audio, copy)
    moved = dataclasses.replace(u, audio=str(copy))
    assert enc._key(u) == enc._key(moved)
    other = load_dataset(tiny_manifest).utterances[1]
    shutil.copy(other.audio, copy)  # new bytes under the same path
    assert enc._key(moved) != enc._key(u)
