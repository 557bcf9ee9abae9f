"""CTC prefix beam search with two small plug-ins: a ``Lexicon`` (partial words must be prefixes of dictionary words)
and a ``Fusion`` of a word LM applied at each word end, as pyctcdecode does with KenLM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rescore.recognize.ctc_head import BLANK, CHARS, CharVocab

# word-LM fusion defaults (picked on the first 30 utterances of librispeech-dev; the shipped head's
# rescore/data/ctc-head.json has its figures); `rescore transcribe --lm-weight --word-bonus` override them
LM_WEIGHT = 0.5
WORD_BONUS = 1.5


def logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@dataclass
class _Beam:
    blank: float = -math.inf  # log P(prefix, path ends in blank)
    label: float = -math.inf  # log P(prefix, path ends in its last label)

    @property
    def total(self) -> float:
        return logsumexp(self.blank, self.label)


class Lexicon:
    """Words the CTC search may spell: partial words must be a prefix of one, finished words one of them.

    Character CTC without a language model misspells freely ("becam", "thr"); keeping the beam on real
    words removes most of those errors. The default word list is the CMU dictionary that ships with
    the ``pocketsphinx`` package (134k words), so nothing is downloaded.
    """

    def __init__(self, words: Iterable[str], vocab: CharVocab | None = None, name: str = "custom") -> None:
        self.vocab = vocab or CharVocab()
        self.words = {w for w in (self.vocab.normalize(x) for x in words) if w and " " not in w}
        self.prefixes = {w[:i] for w in self.words for i in range(1, len(w) + 1)}
        self.space = self.vocab.chars.index(" ") + 1
        self.name = name

    @classmethod
    def cmudict(cls, vocab: CharVocab | None = None) -> Lexicon:
        from rescore.io.models import package_dir

        d = package_dir("pocketsphinx")
        path = d / "model" / "en-us" / "cmudict-en-us.dict" if d else None
        if path is None or not path.exists():
            raise FileNotFoundError("the CMU dictionary comes with pocketsphinx: pip install pocketsphinx==5.1.1")
        with open(path, encoding="utf-8", errors="replace") as f:
            words = [line.split(" ", 1)[0].split("(", 1)[0] for line in f if line.strip()]
        return cls(words, vocab, "cmudict (pocketsphinx)")

    def _partial(self, prefix: tuple[int, ...]) -> str:
        out = []
        for c in reversed(prefix):
            if c == self.space:
                break
            out.append(self.vocab.chars[c - 1])
        return "".join(reversed(out))

    def allows(self, prefix: tuple[int, ...], label: int) -> bool:
        word = self._partial(prefix)
        if label == self.space:
            return bool(word) and word in self.words
        return word + self.vocab.chars[label - 1] in self.prefixes

    def complete(self, prefix: tuple[int, ...]) -> bool:
        word = self._partial(prefix)
        return not word or word in self.words


class WordLM:
    """A word n-gram language model for CTC shallow fusion: the en-US trigram shipped with pocketsphinx.

    Character CTC over two hours of narrow training speech spells words but cannot tell "there" from
    "their"; a word LM scored at each word end (as pyctcdecode does with KenLM) supplies that. Scores are
    natural-log probabilities; words the LM does not know get ``oov`` instead of its floor.
    """

    def __init__(self, path: str | Path, *, oov: float = -12.0, name: str | None = None) -> None:
        import pocketsphinx

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"word LM not found: {self.path}")
        logmath = pocketsphinx.LogMath()
        self._lm = pocketsphinx.NGramModel(pocketsphinx.Config(), logmath, str(self.path))
        self._scale = math.log(1.0001)  # pocketsphinx's default log base
        self.oov = oov
        self.order = 3
        self.name = name or self.path.name
        self._cache: dict[tuple[str, ...], float] = {}

    @classmethod
    def pocketsphinx(cls) -> WordLM:
        from rescore.io.models import package_dir

        d = package_dir("pocketsphinx")
        path = d / "model" / "en-us" / "en-us.lm.bin" if d else None
        if path is None or not path.exists():
            raise FileNotFoundError("the en-US word LM comes with pocketsphinx: pip install pocketsphinx==5.1.1")
        return cls(path, name="en-us trigram (pocketsphinx)")

    def score(self, word: str, history: tuple[str, ...]) -> float:
        """ln P(word | the last words of history); ``<s>`` starts every history."""
        ctx = ("<s>",) + history
        key = (word,) + tuple(reversed(ctx[-(self.order - 1) :]))
        got = self._cache.get(key)
        if got is None:
            raw = self._lm.prob(list(key))
            got = self.oov if raw <= -(1 << 28) else raw * self._scale
            if word != "</s>" and self._lm.prob([word]) <= -(1 << 28):
                got = self.oov
            self._cache[key] = got
        return got


@dataclass
class Fusion:
    """Shallow fusion of a word LM into the CTC search: ``ctc + weight * ln P_lm + bonus * words``."""

    lm: WordLM
    weight: float = 0.5
    bonus: float = 1.0

    def sentence(self, text: str) -> float:
        """ln P of a whole sentence (its words, then the sentence end), unweighted."""
        hist: tuple[str, ...] = ()
        total = 0.0
        for w in text.split():
            total += self.lm.score(w, hist)
            hist += (w,)
        return total + self.lm.score("</s>", hist)


def ctc_prefix_beam_search(
    log_probs: np.ndarray,
    beam_size: int = 8,
    nbest: int = 8,
    blank: int = BLANK,
    prune: float = -12.0,
    lexicon: Lexicon | None = None,
    fusion: Fusion | None = None,
) -> list[tuple[tuple[int, ...], float]]:
    """The ``nbest`` most probable label sequences of CTC log-posteriors ``[T, V]``, with log-probabilities.

    Each prefix keeps the probability of its paths ending in blank and in its last label, so a label
    repeated across a blank is told apart from one that is merely held. Labels with a frame log-prob
    below ``prune`` are not tried. With a beam as large as the number of prefixes the result is exact.
    With a ``lexicon`` only extensions it allows are tried, and sequences ending inside a word that is
    not one are dropped at the end (unless nothing else is left). With ``fusion`` each finished word adds
    its weighted word-LM score and bonus (kept per prefix, so beams are ranked by CTC plus LM); the
    returned score is then that sum, the last word and the sentence end included.
    """
    t_len, v = log_probs.shape
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(blank=0.0)}
    space = CHARS.index(" ") + 1
    # per prefix: its finished words and their fused LM score (only with fusion)
    words: dict[tuple[int, ...], tuple[tuple[str, ...], float]] = {(): ((), 0.0)}

    def lm_of(prefix: tuple[int, ...]) -> float:
        return words[prefix][1] if fusion is not None else 0.0

    for t in range(t_len):
        lp = log_probs[t]
        cands = [c for c in range(v) if c != blank and lp[c] >= prune]
        nxt: dict[tuple[int, ...], _Beam] = {}
        for prefix, b in beams.items():
            total = b.total
            # stay on the same prefix: a blank, or the last label held
            s = nxt.setdefault(prefix, _Beam())
            s.blank = logsumexp(s.blank, total + float(lp[blank]))
            if prefix:
                s.label = logsumexp(s.label, b.label + float(lp[prefix[-1]]))
            for c in cands:
                if lexicon is not None and not lexicon.allows(prefix, c):
                    continue
                ext = prefix + (c,)
                e = nxt.setdefault(ext, _Beam())
                # a repeated label needs a blank in between
                base = b.blank if prefix and prefix[-1] == c else total
                e.label = logsumexp(e.label, base + float(lp[c]))
                if fusion is not None and ext not in words:
                    hist, lm = words[prefix]
                    word = _last_word(prefix) if c == space else ""
                    if word:
                        lm += fusion.weight * fusion.lm.score(word, hist) + fusion.bonus
                        hist = hist + (word,)
                    words[ext] = (hist, lm)
        beams = dict(sorted(nxt.items(), key=lambda kv: kv[1].total + lm_of(kv[0]), reverse=True)[:beam_size])
    final = {p: b.total + lm_of(p) for p, b in beams.items()}
    if fusion is not None:  # the unfinished last word and the end of the sentence
        for p in final:
            hist, _ = words[p]
            word = _last_word(p)
            if word:
                final[p] += fusion.weight * fusion.lm.score(word, hist) + fusion.bonus
                hist = hist + (word,)
            final[p] += fusion.weight * fusion.lm.score("</s>", hist)
    ranked = sorted(final.items(), key=lambda kv: kv[1], reverse=True)
    if lexicon is not None:
        ranked = [kv for kv in ranked if lexicon.complete(kv[0])] or ranked
    return ranked[:nbest]


def _last_word(prefix: tuple[int, ...]) -> str:
    out = []
    for c in reversed(prefix):
        if c == CHARS.index(" ") + 1:
            break
        out.append(CHARS[c - 1])
    return "".join(reversed(out))


def ctc_greedy(log_probs: np.ndarray, blank: int = BLANK) -> list[int]:
    """Best path: argmax per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1)
    out, prev = [], blank
    for c in best.tolist():
        if c != blank and c != prev:
            out.append(c)
        prev = c
    return out


# --------------------------------------------------------------------------- the recognizer
