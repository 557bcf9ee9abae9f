"""Recognizer options are checked at construction: an option a backend does not take is a TypeError."""

from __future__ import annotations

import inspect

import pytest

from rescore.io.datasets import load_dataset
from rescore.recognize.ctranslate2 import CT2WhisperRecognizer
from rescore.recognize.openai_whisper import OpenAIWhisperRecognizer
from rescore.recognize.pocketsphinx import PocketSphinxRecognizer

# what `rescore transcribe` passes today, and which of it each backend takes
CLI_OPTIONS = ("model", "device", "compute_type", "beam_size", "nbest", "batch_size", "language")
TAKES = {
    CT2WhisperRecognizer: set(CLI_OPTIONS),
    OpenAIWhisperRecognizer: set(CLI_OPTIONS) - {"compute_type"},
    PocketSphinxRecognizer: {"model", "nbest"},
}


@pytest.mark.parametrize("cls", list(TAKES), ids=lambda c: c.__name__)
def test_backends_take_only_their_options(cls):
    params = inspect.signature(cls).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # no **_ swallowing
    assert {o for o in CLI_OPTIONS if o in params} == TAKES[cls]


@pytest.mark.parametrize(
    ("cls", "option"),
    [
        (OpenAIWhisperRecognizer, {"compute_type": "int8"}),
        (OpenAIWhisperRecognizer, {"beam": 8}),
        (PocketSphinxRecognizer, {"beam_size": 8}),
        (PocketSphinxRecognizer, {"device": "cpu"}),
        (PocketSphinxRecognizer, {"language": "en"}),
    ],
)
def test_unknown_option_raises_type_error(cls, option):
    with pytest.raises(TypeError, match=next(iter(option))):
        cls(**option)


@pytest.mark.model
def test_pocketsphinx_model_none_is_the_bundled_model(tiny_manifest):
    """``model=None`` is the bundled en-US model; the same folder named explicitly decodes the same; a Whisper
    model name (the CLI's default --model) is no longer taken for it."""
    from pocketsphinx import get_model_path

    utt = next(u for u in load_dataset(tiny_manifest).utterances if u.id.endswith("0880"))
    default = PocketSphinxRecognizer(nbest=4)
    assert default.info["model"] == "en-us (pocketsphinx package)"
    explicit = PocketSphinxRecognizer(get_model_path("en-us/en-us"), nbest=4)
    assert explicit.info["model"] == get_model_path("en-us/en-us")
    (a,) = default.recognize([utt])
    (b,) = explicit.recognize([utt])
    assert a.ok and a.hypotheses and "young man" in a.hypotheses[0].text
    assert [h.text for h in a.hypotheses] == [h.text for h in b.hypotheses]
    with pytest.raises(ValueError, match="not a PocketSphinx acoustic model folder"):
        PocketSphinxRecognizer("whisper-tiny.en")
