"""Names -> factories: recognizers, LM scorers, chat LLMs and pipeline stages.

Callers ask for a thing by name (``recognizers.create("ctranslate2", nbest=8)``) and never import a backend
module themselves. Entries are ``"module:attribute"`` strings, imported on first use, so ``rescore --help``
does not load torch. A plug-in adds itself with ``recognizers.register("mine", "my_pkg.asr:MyRecognizer")``
or, from another distribution, with an entry point in the ``rescore.plugins`` group whose target is a
function called once with this module. Options are checked against the factory's signature before it
runs, so an option a backend does not take is a one-line error, not a traceback from deep inside it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class RegistryError(ValueError):
    """An unknown name, or options the named factory does not take."""


@dataclass
class Registry:
    """One kind of pluggable thing: names (and aliases) -> lazily imported factories."""

    kind: str
    _entries: dict[str, str | Callable[..., Any]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def register(self, name: str, factory: str | Callable[..., Any], *, aliases: tuple[str, ...] = ()) -> None:
        """Add (or replace) ``name``; ``factory`` is a callable or a ``"module:attribute"`` path to one."""
        self._entries[name] = factory
        for a in aliases:
            self._aliases[a] = name

    def names(self) -> list[str]:
        _load_plugins()
        return list(self._entries)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; RegistryError if unknown."""
        _load_plugins()
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r}: expected one of {', '.join(self._entries)}")
        return name

    def factory(self, name: str) -> Callable[..., Any]:
        name = self.canonical(name)
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def create(self, name: str, /, *args: Any, **options: Any) -> Any:
        """Build the named thing; options it does not take raise RegistryError naming them."""
        factory = self.factory(name)
        check_options(factory, options, f"{self.kind} {self.canonical(name)!r}")
        return factory(*args, **options)


def accepted_options(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword options ``factory`` takes (``None``: any, it has ``**kwargs``)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}


def check_options(factory: Callable[..., Any], options: dict[str, Any], what: str) -> None:
    accepted = accepted_options(factory)
    if accepted is None:
        return
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise RegistryError(
            f"{what} does not take {', '.join(unknown)} (it takes: {', '.join(sorted(accepted)) or 'no options'})"
        )


recognizers = Registry("recognizer backend")
recognizers.register("ctranslate2", "rescore.recognize.ctranslate2:CT2WhisperRecognizer", aliases=("ct2",))
recognizers.register("openai-whisper", "rescore.recognize.openai_whisper:OpenAIWhisperRecognizer")
recognizers.register("ctc", "rescore.recognize.ctc:CTCRecognizer")
recognizers.register("pocketsphinx", "rescore.recognize.pocketsphinx:PocketSphinxRecognizer")
recognizers.register("deep", "rescore.deep.recognize:DeepFusionRecognizer", aliases=("deep-fusion",))

lm_scorers = Registry("LM backend")
lm_scorers.register("hf", "rescore.score.hf:HFScorer", aliases=("transformers",))
lm_scorers.register("llamacpp", "rescore.score.llamacpp:LlamaCppScorer", aliases=("llama.cpp", "llama-cpp"))

chat_llms = Registry("chat LLM backend")
chat_llms.register("llama-cpp", "rescore.correct.llm:LlamaCppChat", aliases=("llamacpp", "llama.cpp", "gguf"))
chat_llms.register("transformers", "rescore.correct.llm:TransformersChat", aliases=("hf",))

acoustic_scorers = Registry("acoustic scorer")
acoustic_scorers.register("ctc", "rescore.score.ctc:CTCScorer")
acoustic_scorers.register("whisper", "rescore.score.acoustic:WhisperScorer")

stages = Registry("stage")  # filled by rescore.stages (the stage classes live above this module)


def make_recognizer(backend: str = "ctranslate2", **options: Any) -> Any:
    """A first-pass recognizer by backend name (see :class:`rescore.recognize.base.Recognizer`)."""
    return recognizers.create(backend, **options)


def make_scorer(name: str = "smollm2-135m", backend: str = "hf", **options: Any) -> Any:
    """An LM scorer (:class:`rescore.score.LMScorer`) for a model name or local path, by backend name."""
    return lm_scorers.create(backend, name, **options)


def make_llm(
    backend: str = "llama-cpp",
    model: str = "qwen2.5-0.5b",
    *,
    adapter: str | None = None,
    n_ctx: int | None = None,
    **options: Any,
) -> Any:
    """A chat LLM (:class:`rescore.correct.llm.ChatLLM`) by backend name; a LoRA adapter needs transformers,
    the context size applies to llama.cpp (transformers has none to set)."""
    name = chat_llms.canonical(backend)
    if adapter:
        if name != "transformers":
            raise RegistryError("a LoRA adapter needs --backend transformers")
        options["adapter"] = adapter
    if n_ctx is not None and name == "llama-cpp":
        options["n_ctx"] = n_ctx
    return chat_llms.create(name, model, **options)


_plugins_loaded = False


def _load_plugins() -> None:
    """Call each ``rescore.plugins`` entry point once, with this module, so it can register its names."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import sys
    from importlib.metadata import entry_points

    for ep in entry_points(group="rescore.plugins"):
        ep.load()(sys.modules[__name__])
