import numpy as np
import pytest

from rescore.io.datasets import load_dataset
from rescore.whisper.encoder import WhisperEncoder

pytestmark = pytest.mark.model


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


def test_states_come_out_in_input_order_with_a_partly_filled_cache(tiny_manifest, tmp_path, monkeypatch):
    """Cached items wait for earlier missing ones: outputs pair with inputs (CTC, deep fusion, --previous)."""
    from rescore.io.datasets import Utterance

    monkeypatch.setenv("RESCORE_CACHE", str(tmp_path / "cache"))
    enc = WhisperEncoder("whisper-tiny.en", batch_size=2)
    assert str(enc.cache).startswith(str(tmp_path / "cache"))
    utts = load_dataset(tiny_manifest).utterances[:6]
    warm = [utts[1], utts[3], utts[4]]
    expected = {u.id: st for u, st, _ in enc.states(warm)}
    assert len(list(enc.cache.rglob("*.npy"))) == 3
    missing = Utterance("missing", str(tmp_path / "missing.flac"))
    inputs = [utts[0], utts[1], missing, utts[2], utts[3], utts[4], utts[5]]
    out = list(enc.states(inputs))
    assert [u.id for u, _, _ in out] == [u.id for u in inputs]
    errors = {u.id: err for u, _, err in out}
    assert errors.pop("missing") and not any(errors.values())
    for u, st, _ in out:
        if u.id in expected:
            np.testing.assert_allclose(st, expected[u.id], atol=2e-2)  # the cached states, read back
        elif u.id != "missing":
            assert abs(st.shape[0] - u.duration * 50) <= 2  # computed for this utterance, not another's
    assert len(list(enc.cache.rglob("*.npy"))) == 6


def test_own_length_windows_are_cached_apart_and_close_to_padded_ones(tiny_manifest, tmp_path):
    """``window="own"`` encodes each utterance at its length: same frames and width, states near the padded ones
    (not equal: Whisper was trained on 30 s windows), its own cache folder, and a batch of several utterances gives
    each the states it gets alone (own-length windows are never padded to a batch's longest)."""
    utts = load_dataset(tiny_manifest).utterances[:3]
    padded = WhisperEncoder("whisper-tiny.en", cache=tmp_path / "padded")
    own = WhisperEncoder("whisper-tiny.en", window="own", batch_size=3)
    assert own.cache.name.endswith("-own") and not padded.cache.name.endswith("-own")
    from rescore.io.audio import load_audio

    audios = [load_audio(u.audio, u.start, u.end) for u in utts]
    a, b = padded.encode_audio(audios), own.encode_audio(audios)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        cos = np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert 0.9 < cos.mean() < 0.9999  # close, but another input than the padded window
    np.testing.assert_allclose(own.encode_audio(audios[1:2])[0], b[1], atol=1e-4)


def test_an_unknown_window_is_a_clear_error():
    with pytest.raises(ValueError, match="window must be one of padded, own"):
        WhisperEncoder("whisper-tiny.en", window="30s")
