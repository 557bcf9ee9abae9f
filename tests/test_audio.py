import numpy as np
import pytest

from rescore.io.audio import SAMPLE_RATE, AudioError, load_audio, split_windows


def test_resample_and_downmix(bad_inputs, speech):
    audio, rate, _ = speech
    d = bad_inputs.parent / "audio"
    for name in ("stereo48k.wav", "mono8k.flac"):
        a = load_audio(str(d / name))
        assert a.dtype == np.float32 and a.ndim == 1
        assert abs(len(a) - len(audio)) < SAMPLE_RATE * 0.05


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.wav", "empty file"),
        ("corrupt.flac", "cannot decode"),
        ("zero.wav", "zero length"),
        ("missing.wav", "not found"),
    ],
)
def test_bad_audio_messages(bad_inputs, name, message):
    with pytest.raises(AudioError, match=message):
        load_audio(str(bad_inputs.parent / "audio" / name))


def test_segment_and_command(tiny_dir):
    jfk = tiny_dir / "audio" / "jfk.flac"
    seg = load_audio(str(jfk), 1.0, 2.5)
    assert len(seg) == int(1.5 * SAMPLE_RATE)
    with pytest.raises(AudioError, match="after the end"):
        load_audio(str(jfk), 999.0, None)
    piped = load_audio(f"cat {jfk} |")
    assert len(piped) == len(load_audio(str(jfk)))
    with pytest.raises(AudioError, match="command failed"):
        load_audio("false |")


def test_split_windows_cuts_in_silence():
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 70 * SAMPLE_RATE).astype(np.float32)
    audio[27 * SAMPLE_RATE : int(27.3 * SAMPLE_RATE)] = 0.0  # a pause to cut in
    wins = split_windows(audio)
    assert wins[0].start == 0 and wins[-1].end == len(audio)
    assert all(b.start == a.end for a, b in zip(wins, wins[1:], strict=False))
    assert all(w.end - w.start <= 30 * SAMPLE_RATE for w in wins)
    assert 27 * SAMPLE_RATE <= wins[0].end <= 27.3 * SAMPLE_RATE
    assert split_windows(audio[: 10 * SAMPLE_RATE])[0].end == 10 * SAMPLE_RATE
