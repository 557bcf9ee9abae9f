"""Guards around an LLM corrector: hypotheses quoted as data, output cleaned, abstain when it strays.

A small instruction model asked to fix a transcript sometimes answers a question spoken in the audio,
explains itself, wraps the answer in quotes, rewrites the sentence or runs on. Each guard here is on by
default and reports what it did, so every record says why its correction was kept or dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rapidfuzz.distance import Levenshtein

from rescore.evaluate.metrics import normalize

# Chat-format control tokens of common instruction models (ChatML, Llama 3, Gemma, Phi, Mistral).
_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]|<start_of_turn>|<end_of_turn>")
# Tags the shipped templates use around the data; a hypothesis must not be able to close them.
_DATA_TAGS = re.compile(r"</?\s*(transcript|best|hypothes[ie]s|data)\s*>", re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_INSTRUCTION_LIKE = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,30}\b(instructions?|above|previous|prompt|rules)\b"
    r"|\b(system prompt|you are now|new instructions?|respond with|reply with|say only|output only)\b",
    re.I,
)


@dataclass
class GuardConfig:
    """Thresholds of the guards. Every guard is on by default; ``False``/``None`` turns one off."""

    quote: bool = True  # hypotheses go into the prompt as sanitized JSON strings
    clean: bool = True  # strip quotes, "Corrected:" prefixes, explanations from the output
    max_edit_ratio: float | None = 0.3  # abstain when the output is farther than this from every hypothesis
    min_edit_budget: int = 1  # ... but always allow this many word edits (short utterances)
    max_novel_words: int | None = 1  # abstain when more output words than this occur in no hypothesis/list
    max_length_ratio: float | None = 2.0  # runaway: output words over this times the longest hypothesis (+3)
    # cut short: output words under this share of the reranked text's (the rerank's own truncation guard);
    # an n-best often holds a hypothesis that stops early, so the edit budget alone lets a cut through
    min_length_ratio: float | None = 0.5
    normalizer: str = "whisper"  # the comparison is made after the scorer's normalizer

    def __post_init__(self) -> None:
        """Refuse thresholds that would silently mean something else (a config typo, a negative "off")."""
        bad = []
        if self.max_edit_ratio is not None and not self.max_edit_ratio >= 0:
            bad.append(f"max_edit_ratio {self.max_edit_ratio!r} (>= 0, or None: no edit budget)")
        novel = self.max_novel_words
        if novel is not None and not (isinstance(novel, int) and novel >= 0):
            bad.append(f"max_novel_words {self.max_novel_words!r} (an integer >= 0, or None: no limit)")
        if self.max_length_ratio is not None and not self.max_length_ratio > 0:
            bad.append(f"max_length_ratio {self.max_length_ratio!r} (> 0, or None)")
        if self.min_length_ratio is not None and not 0 <= self.min_length_ratio <= 1:
            bad.append(f"min_length_ratio {self.min_length_ratio!r} (0 to 1, or None)")
        if not (isinstance(self.min_edit_budget, int) and self.min_edit_budget >= 0):
            bad.append(f"min_edit_budget {self.min_edit_budget!r} (an integer >= 0)")
        if bad:
            raise ValueError("bad guard setting: " + "; ".join(bad))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GuardConfig:
        """The settings stored in a record's ``correction['guard_config']`` (keys this version lacks ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------------------------- input


def sanitize(text: str) -> tuple[str, list[str]]:
    """Remove what could break out of the data quoting: control characters, chat tokens, data tags."""
    notes = []
    out = _CONTROL.sub(" ", text)
    if out != text:
        notes.append("control characters removed")
    t = _SPECIAL.sub(" ", out)
    if t != out:
        notes.append("chat control tokens removed")
    out = _DATA_TAGS.sub(" ", t)
    if out != t:
        notes.append("data tags removed")
    return " ".join(out.split()), notes


def quote(text: str) -> str:
    """A hypothesis as a JSON string literal: visibly data, its own quotes escaped."""
    return json.dumps(text, ensure_ascii=False)


def looks_like_instruction(text: str) -> bool:
    """Spoken words that read like an instruction to the model (reported; the quoting defuses them)."""
    return bool(_INSTRUCTION_LIKE.search(text))


@dataclass
class QuotedInput:
    """The hypotheses as they go into the prompt, with what the input guard did."""

    hypotheses: list[str]  # quoted (or raw when quoting is off), best first as recognized
    best: str
    others: list[str]
    notes: list[str] = field(default_factory=list)
    instruction_like: list[int] = field(default_factory=list)  # indices of hypotheses that read like orders


def prompt_texts(
    texts: Sequence[str], chosen: int, max_hypotheses: int, *, distinct: bool = True, normalizer: str = "whisper"
) -> tuple[list[str], int]:
    """The hypotheses a prompt shows, in the recognizer's order, and the index of the reranked one in them.

    With ``distinct``, a hypothesis that reads like one already shown after normalisation (case,
    punctuation, spelling variants) is left out: eight lists that differ by a comma cost the LLM eight times
    the reading and tell it nothing. The reranked text always goes in, in its own form, even past the cap.
    """
    if not distinct:
        shown = list(texts[:max_hypotheses])
        if chosen < len(shown):
            return shown, chosen
        return [*shown, texts[chosen]], len(shown)
    key = [normalize(t, normalizer) for t in texts]
    shown, seen, at = [], set(), -1
    for i, t in enumerate(texts):
        if key[i] in seen or len(shown) >= max_hypotheses:
            continue
        seen.add(key[i])
        if key[i] == key[chosen]:
            at, t = len(shown), texts[chosen]
        shown.append(t)
    if at < 0:
        at = len(shown)
        shown.append(texts[chosen])
    return shown, at


def prepare_input(texts: Sequence[str], chosen: int, config: GuardConfig) -> QuotedInput:
    """Sanitize and quote the n-best texts for a template (``chosen``: the reranked hypothesis)."""
    notes: list[str] = []
    clean = []
    for i, t in enumerate(texts):
        s, n = sanitize(t) if config.quote else (t, [])
        notes += [f"hypothesis {i}: {x}" for x in n]
        clean.append(s)
    q = [quote(t) for t in clean] if config.quote else clean
    flagged = [i for i, t in enumerate(texts) if looks_like_instruction(t)]
    return QuotedInput(q, q[chosen], [h for i, h in enumerate(q) if i != chosen], notes, flagged)


# --------------------------------------------------------------------------------------------- output

_PREFIX = re.compile(
    r"^\s*(?:(?:here is |here's )?(?:the )?(?:corrected|revised|true|final|fixed)?\s*"
    r"(?:transcript(?:ion)?|text|sentence|hypothesis|version|output|answer|correction|response)"
    r"(?:\s+is)?|corrected|revised|answer|output|assistant|response)\s*[:：\-–]\s*",
    re.I,
)
_EXPLANATION = re.compile(
    r"\s*(?:[(\[]\s*)?(?:explanation|note|reason(?:ing)?|changes?|correction)s?\s*:.*$"
    r"|\s+[(\[](?:[^)\]]*\b(?:corrected|changed|fixed|replaced|instead of|should be)\b[^)\]]*)[)\]]\s*$"
    r"|(?<=[.!?\"”])\s+(?:I|This|The)\s+(?:have\s+|has\s+)?(?:corrected|changed|fixed|replaced|corrects|fixes)\b.*$",
    re.I,
)
_WRAPPERS = [('"', '"'), ("“", "”"), ("'", "'"), ("‘", "’"), ("`", "`"), ("**", "**"), ("*", "*"), ("<", ">")]


def clean_output(raw: str) -> tuple[str, list[str]]:
    """The transcript inside an LLM answer: first non-empty line, without prefixes, quotes, explanations."""
    notes = []
    text = _SPECIAL.sub("", raw)
    lines = [x for x in text.splitlines() if x.strip()]
    if len(lines) > 1:
        notes.append("kept the first line")
    text = lines[0].strip() if lines else ""
    text = re.sub(r"^```\w*\s*|```$", "", text).strip()
    text = _DATA_TAGS.sub("", text).strip()
    for _ in range(3):
        t = _EXPLANATION.sub("", text).strip()
        if t != text:
            notes.append("explanation removed")
            text = t
        t = _PREFIX.sub("", text, count=1).strip()
        if t != text:
            notes.append("prefix removed")
            text = t
        for a, b in _WRAPPERS:
            if len(text) > len(a) + len(b) and text.startswith(a) and text.endswith(b):
                inner = text[len(a) : len(text) - len(b)]
                if a not in inner or a != b:
                    notes.append("quotes removed")
                    text = inner.strip()
            elif len(text) > 2 and text.startswith(a) and text[-2:] in {a + ".", a + "!", a + "?"} and a == b:
                notes.append("quotes removed")
                text = text[len(a) : -2].strip() + text[-1]
    if text.startswith("- "):
        text = text[2:].strip()
        notes.append("list marker removed")
    return text, notes


# ---------------------------------------------------------------------------------------------- check


@dataclass
class GuardResult:
    """The verdict on one output and the measurements behind it."""

    accepted: bool
    reason: str  # "ok", or why the corrector abstained
    edit_distance: float | None = None  # word edits to the closest hypothesis (after normalizing)
    edit_budget: float | None = None
    char_distance: float | None = None  # character edits, spaces ignored, to the closest hypothesis
    closest: int | None = None  # index of the closest hypothesis
    novel_words: list[str] = field(default_factory=list)
    changed: bool = False  # differs (normalized) from the reranked text

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _words(text: str, normalizer: str) -> list[str]:
    return normalize(text, normalizer).split()


def vocabulary(texts: Iterable[str], normalizer: str = "whisper") -> set[str]:
    """Normalized words of entity/context lists, for the novel-word guard."""
    return {w for t in texts for w in _words(t, normalizer)}


_MAX_RUN = 12  # longest run of output words that may spell one known word (letter by letter)


def vocabulary_used(texts: Iterable[str], vocab: set[str], normalizer: str = "whisper") -> list[str]:
    """The words of ``vocab`` the novel-word guard can match in ``texts``: a word, or a run of words joined.

    Stored with a correction (its raw and cleaned output), they are all the guard needs of the vocabulary
    to re-decide that output later, so records need not carry the whole entity list.
    """
    found: set[str] = set()
    for text in texts:
        out = _words(text, normalizer)
        for i in range(len(out)):
            s = ""
            for j in range(i, min(i + _MAX_RUN, len(out))):
                s += out[j]
                if s in vocab:
                    found.add(s)
    return sorted(found)


def _supported(out: list[str], hyp_words: list[list[str]], vocab: set[str]) -> list[bool]:
    """Which output words a hypothesis or the vocabulary supports.

    Besides exact matches, re-spacing is supported: output words whose concatenation is a hypothesis word
    ("g m e f" for "gmef") and an output word that is the concatenation of adjacent hypothesis words.
    """
    known = vocab.union(*map(set, hyp_words)) if hyp_words else set(vocab)
    ok = [w in known for w in out]
    joined: set[str] = set()
    for hw in hyp_words:
        for i in range(len(hw)):
            s = hw[i]
            for j in range(i + 1, min(i + 6, len(hw))):
                s += hw[j]
                joined.add(s)
    long_words = {w for w in known if len(w) > 1}
    for i, w in enumerate(out):
        if not ok[i] and w in joined:
            ok[i] = True
    for i in range(len(out)):  # runs of output words that spell one known word
        s = ""
        for j in range(i, min(i + _MAX_RUN, len(out))):
            s += out[j]
            if j > i and s in long_words:
                for k in range(i, j + 1):
                    ok[k] = True
    return ok


def check_output(
    output: str,
    hypotheses: Sequence[str],
    reranked: str,
    config: GuardConfig,
    *,
    vocab: set[str] | None = None,
    truncated: bool = False,
) -> GuardResult:
    """Accept the cleaned ``output`` or abstain, and say why.

    Abstains on an empty output, a runaway one (cut by the token cap, or far longer than any hypothesis),
    one farther than the edit budget from every hypothesis (word edits, or character edits ignoring spaces
    when that is smaller, so re-spacing "GMEF39" as "G M E F 39" is cheap), or one adding more words than
    allowed that occur in no hypothesis and no entity/context list.
    """
    norm = config.normalizer
    out = _words(output, norm)
    hyps = [_words(h, norm) for h in hypotheses]
    changed = out != _words(reranked, norm)
    if not out:
        return GuardResult(False, "empty output")
    longest = max((len(h) for h in hyps), default=0)
    longest_chars = max((len("".join(h)) for h in hyps), default=0)
    if truncated:
        return GuardResult(False, "runaway output (hit the token cap)", changed=changed)
    ratio = config.max_length_ratio
    # too long in words and in letters: spelling a word out letter by letter multiplies words, not letters
    if ratio is not None and len(out) > ratio * longest + 3 and len("".join(out)) > ratio * longest_chars + 6:
        return GuardResult(False, f"runaway output ({len(out)} words, longest hypothesis {longest})", changed=changed)
    result = GuardResult(True, "ok", changed=changed)
    if hyps:
        best_i, best_ratio, best_d, best_c, best_budget = 0, float("inf"), 0.0, 0.0, 0.0
        o_chars = "".join(out)
        for i, h in enumerate(hyps):
            d = Levenshtein.distance(out, h)  # word-level: sequences of words
            budget = max(config.min_edit_budget, (config.max_edit_ratio or 0.0) * max(len(h), 1))
            h_chars = "".join(h)
            c = Levenshtein.distance(o_chars, h_chars)
            c_words = c / max(len(h_chars) / max(len(h), 1), 1.0)  # character edits in word units
            ratio = min(d, c_words) / budget
            if ratio < best_ratio:
                best_i, best_ratio, best_d, best_c, best_budget = i, ratio, d, c_words, budget
        result.closest, result.edit_distance, result.char_distance = best_i, float(best_d), round(best_c, 2)
        result.edit_budget = round(best_budget, 2)
        if config.max_edit_ratio is not None and best_ratio > 1.0:
            result.accepted = False
            result.reason = f"too far from every hypothesis ({min(best_d, best_c):.1f} > {best_budget:.1f} edits)"
            return result
    floor, n_reranked = config.min_length_ratio, len(_words(reranked, norm))
    if floor is not None and len(out) < floor * n_reranked:  # near a hypothesis that stops early
        result.accepted = False
        result.reason = f"cut short ({len(out)} words, reranked text {n_reranked})"
        return result
    ok = _supported(out, hyps, vocab or set())
    result.novel_words = [w for w, s in zip(out, ok, strict=True) if not s]
    if config.max_novel_words is not None and len(result.novel_words) > config.max_novel_words:
        result.accepted = False
        result.reason = f"{len(result.novel_words)} words in no hypothesis nor list: {' '.join(result.novel_words[:5])}"
    return result
