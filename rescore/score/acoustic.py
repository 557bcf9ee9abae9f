"""Acoustic scoring of any text by teacher forcing through a Whisper model: ``am:<model>`` per hypothesis.

For every hypothesis of a record (from any recognizer, the corrector, a user's file) the scorer adds

- ``am:<model>``: the summed natural-log probability of the hypothesis' tokens and of the end-of-text
  token after them, given the audio and the prompt ``<|startoftranscript|> [<|en|> <|transcribe|>]
  <|notimestamps|>``: a hypothesis that stops early pays for the end token where the model expected more;
- ``am_tokens:<model>``: the number of tokens scored, the end token included.

Text is tokenized with the scoring model's tokenizer as Whisper does (a leading space); a hypothesis that
came from the scoring model itself keeps the recognizer's own tokens when they spell its text.
Probabilities are normalised as Whisper's decoding normalises them: over the tokens it does not suppress
(``suppress_ids`` of the model's config.json everywhere, ``suppress_ids_begin`` before the first token), so
a model scoring its own n-best reproduces the ``am`` its beam search reported up to int8 noise; a suppressed
token in text from elsewhere (a symbol the beam search never emits) is scored under the full softmax
instead of getting minus infinity. ``suppress=False`` uses the raw softmax everywhere.

How (measured with CTranslate2 4.8): ``Whisper.align`` returns ``text_token_probs`` from a softmax over the
text tokens only (ids below ``<|endoftext|>``), so the end token comes out as 0.0 and every other
probability is renormalised without the end-of-text mass; and ``align``/``generate`` want one row of
encoder output per sequence, so scoring 8 hypotheses recomputes the cross-attention keys and values of
the 1500 encoder frames 8 times, which costs as much as the encoder. The default method therefore runs
the encoder once per 30 s window with CTranslate2 (the recognizer's own int8 encoder) and the decoder in
PyTorch (float32), with the weights read from the same ``model.bin``: one parallel pass over the prefix
tree of a window's hypotheses (each distinct prefix computed once: an n-best list shares most of them),
the cross-attention keys and values computed once per window, the log-softmax over the whole vocabulary
at every position (so the end token is included). ``method="ct2"`` scores with CTranslate2 alone instead
(the hypotheses forced as a prefix of a greedy ``generate`` with ``return_logits_vocab``): the
recognizer's int8 arithmetic, at about the cost of a first pass.

Encoder output already computed (the first pass' own, see :class:`rescore.recognize.union.UnionRecognizer`) can be
passed to :meth:`WhisperScorer.score` (``memories``): those windows are scored against it and neither
their audio is read nor the encoder run; the scorer can also share the recognizer's loaded CTranslate2
model (``ct2_model``).

Long recordings: a record with ``windows`` is scored window by window (each window's hypotheses against
its audio span); a whole-recording hypothesis that is a combination of window hypotheses (as
:func:`rescore.recognize.base.combine_windows` makes them) gets the sums over its windows. What cannot
be scored is never cut: a hypothesis longer than the decoder's 448 positions, or whole-recording text
that is no combination of window hypotheses, gets no score and a line in ``extra["ascore_issues"]``; a
record without usable audio is passed through with ``extra["ascore"] = {"skipped": reason}``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rescore.device import cuda_available, resolve_device
from rescore.io.audio import SAMPLE_RATE, WINDOW_SECONDS, AudioError, load_audio
from rescore.io.models import resolve_model
from rescore.records import Hypothesis, NBest
from rescore.whisper.decoder import TeacherForcedDecoder, suppressed_log_probs, torch_threads
from rescore.whisper.tokenizer import whisper_encoding

log = logging.getLogger(__name__)

N_FRAMES = 3000  # Whisper's 30 s of mel frames
N_TEXT_CTX = 448  # decoder positions
SKIP_KEY = "ascore"  # extra["ascore"] = {"skipped": reason}
ISSUES_KEY = "ascore_issues"  # extra["ascore_issues"] = ["whisper-base: hypothesis 3 ...", ...]
CORRECTED_KEY = "corrected_scores"  # extra["corrected_scores"] = {"am:whisper-base": ..., ...}
METHODS = ("torch", "ct2")


def score_keys(model: str) -> tuple[str, str]:
    """The two score keys a model writes: ``am:<name>`` and ``am_tokens:<name>`` (a path's last part)."""
    name = Path(model).name if os.sep in model or Path(model).exists() else model
    return f"am:{name}", f"am_tokens:{name}"


@dataclass
class _Job:
    """One window of one record: its audio span, and the token sequences to score against it."""

    rec: int
    mel: np.ndarray | None  # None: the encoder output was given
    items: list[tuple[Any, list[int]]] = field(default_factory=list)  # (target, tokens)
    memory: np.ndarray | None = None


class WhisperScorer:
    """Teacher-forced Whisper scores (``am:<model>``, ``am_tokens:<model>``) of every hypothesis of n-best records.

    ``batch_size`` windows are encoded together and up to ``batch_size`` hypotheses of a window decoded
    together (against one copy of the window's encoder output). ``method``: ``"torch"`` (default, fast) or
    ``"ct2"`` (CTranslate2 alone, bit-for-bit the recognizer's int8 arithmetic, about a first pass' cost).
    ``ct2_model``: an already loaded ``ctranslate2.models.Whisper`` of the same model files (a recognizer's
    ``model``) to use instead of loading another copy; ``compute_type`` then only names what it runs.
    """

    def __init__(
        self,
        model: str = "whisper-base",
        *,
        device: str = "auto",
        compute_type: str = "auto",
        batch_size: int = 8,
        language: str = "en",
        method: str = "torch",
        cpu_threads: int = 0,
        decoder_threads: int = 1,
        suppress: bool = True,
        ct2_model: Any = None,
    ) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if method not in METHODS:
            raise ValueError(f"unknown scoring method {method!r}: expected one of {', '.join(METHODS)}")
        self.model_name = model
        self.path = Path(resolve_model(model, kind="whisper-ct2"))
        if not (self.path / "model.bin").exists():
            raise ValueError(f"{self.path}: not a CTranslate2 Whisper folder (no model.bin)")
        self.device = resolve_device(device)
        if compute_type == "auto":
            compute_type = "float16" if self.device == "cuda" else "int8"
        self.compute_type = compute_type
        self.batch_size = batch_size
        self.method = method
        self.model = ct2_model or ctranslate2.models.Whisper(
            str(self.path),
            device=self.device,
            compute_type=compute_type,
            intra_threads=cpu_threads or (os.cpu_count() or 1),
        )
        self.tokenizer = tokenizers.Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self.eot = self._token("<|endoftext|>")
        self._tiktoken = whisper_encoding(self.model.is_multilingual, self.model.num_languages, self.eot)
        self.prompt = [self._token("<|startoftranscript|>")]
        if self.model.is_multilingual:
            if self.tokenizer.token_to_id(f"<|{language}|>") is None:
                raise ValueError(f"unknown language code {language!r} for {model}")
            self.prompt += [self._token(f"<|{language}|>"), self._token("<|transcribe|>")]
        self.prompt.append(self._token("<|notimestamps|>"))
        self.max_tokens = N_TEXT_CTX - len(self.prompt)  # decoder inputs: prompt + text tokens
        self.am_key, self.tokens_key = score_keys(model)
        self.label = self.am_key.split(":", 1)[1]
        cfg = json.loads((self.path / "config.json").read_text()) if (self.path / "config.json").exists() else {}
        self.suppress = sorted({int(t) for t in cfg.get("suppress_ids", [])}) if suppress else []
        begin = {int(t) for t in cfg.get("suppress_ids_begin", [])} - set(self.suppress)
        self.suppress_begin = sorted(begin) if suppress else []  # also suppressed before the first token
        self.decoder_threads = decoder_threads
        # the decoder runs where PyTorch can: a CPU build of torch beside a CUDA CTranslate2 decodes on the CPU
        torch_device = "cuda" if self.device == "cuda" and cuda_available("torch") else "cpu"
        self.decoder = (
            TeacherForcedDecoder(
                self.path / "model.bin", self.model.n_mels, torch_device, self.suppress, self.suppress_begin
            )
            if method == "torch"
            else None
        )

    def _token(self, text: str) -> int:
        tid = self.tokenizer.token_to_id(text)
        if tid is None:
            raise ValueError(f"{self.path}: tokenizer lacks {text}")
        return tid

    # -- building blocks, public so that a caller holding encoder output can reuse it ------------------

    def tokenize(self, text: str) -> list[int]:
        """Whisper's tokens for ``text`` (with the leading space Whisper's transcripts start with)."""
        text = text.strip()
        if not text:
            return []
        if self._tiktoken is not None:
            return list(self._tiktoken.encode(" " + text))
        return self.tokenizer.encode(" " + text, add_special_tokens=False).ids

    def token_ends(self, tokens: list[int]) -> list[int]:
        """Where each of :meth:`tokenize`'s ``tokens`` ends in the text they encode (character offsets, the leading
        space Whisper adds not counted): what aligns them to another tokenizer's tokens of the same text."""
        if not tokens:
            return []
        if self._tiktoken is not None:
            text, starts = self._tiktoken.decode_with_offsets(tokens)
            return [max(e - 1, 0) for e in [*starts[1:], len(text)]]
        ends, n = [], 0
        for k in range(len(tokens)):  # the HF tokenizer has no offsets when decoding: each prefix decoded
            n = max(n, len(self.tokenizer.decode(tokens[: k + 1])) - 1)
            ends.append(max(n, 0))
        return ends

    def token_texts(self) -> list[str]:
        """The text of each text token, by id (those below the end of text; partial UTF-8 shows as U+FFFD)."""
        if self._tiktoken is not None:
            return [self._tiktoken.decode_single_token_bytes(i).decode("utf-8", "replace") for i in range(self.eot)]
        return [self.tokenizer.decode([i]) for i in range(self.eot)]

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel features [n_mels, 3000] of at most 30 s of 16 kHz audio, padded as the recognizer pads."""
        mel = self.features(audio, padding=N_FRAMES * 160)[:, :N_FRAMES]
        return np.ascontiguousarray(mel, dtype=np.float32)

    def encode(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """Encoder output [1500, dim] (float32) of each window's features, ``batch_size`` windows at a time."""
        import ctranslate2

        out: list[np.ndarray] = []
        for i in range(0, len(mels), self.batch_size):
            sv = ctranslate2.StorageView.from_array(np.stack(mels[i : i + self.batch_size]))
            enc = np.asarray(self.model.encode(sv, to_cpu=True), dtype=np.float32)
            out.extend(enc[j] for j in range(enc.shape[0]))
        return out

    def score_tokens(self, memory: np.ndarray, token_lists: list[list[int]]) -> list[float]:
        """Summed log-probability (end token included) of each token list against one window's encoder output."""
        return [float(lp.sum()) for lp in self.token_log_probs(memory, token_lists)]

    def token_log_probs(self, memory: np.ndarray, token_lists: list[list[int]]) -> list[np.ndarray]:
        """Per token list, the log-probability of each of its tokens and then of the end token."""
        seqs = [self.prompt + list(t) + [self.eot] for t in token_lists]
        too_long = [len(t) for t in token_lists if len(t) > self.max_tokens]
        if too_long:
            raise ValueError(f"{max(too_long)} tokens: more than the decoder's {self.max_tokens}")
        out: list[np.ndarray] = []
        if self.decoder is not None:
            with torch_threads(self.decoder_threads):
                kv = self.decoder.cross_kv(memory)
                for i in range(0, len(seqs), self.batch_size):
                    out += self.decoder.log_probs(kv, seqs[i : i + self.batch_size], len(self.prompt))
            return out
        for i in range(0, len(seqs), self.batch_size):
            out += self._ct2_log_probs(memory, token_lists[i : i + self.batch_size])
        return out

    def _ct2_log_probs(self, memory: np.ndarray, token_lists: list[list[int]]) -> list[np.ndarray]:
        """CTranslate2 alone: each token list forced as the prefix of a greedy ``generate``; the logits of every
        step (``return_logits_vocab``, nothing suppressed) give the tokens' and the end token's probabilities."""
        import ctranslate2

        n = len(token_lists)
        rep = ctranslate2.StorageView.from_array(np.repeat(memory[None], n, 0))
        longest = max(len(t) for t in token_lists) + 1
        start_step = len(self.prompt) - 1
        results = self.model.generate(
            rep,
            [self.prompt + list(t) for t in token_lists],
            beam_size=1,
            max_length=max(2 * longest, longest + start_step),  # CT2 decodes min(max_length / 2, max_length - prompt)
            return_logits_vocab=True,
            suppress_blank=False,
            suppress_tokens=[],
        )
        import torch

        sup = torch.tensor(self.suppress, dtype=torch.long)
        sup_begin = torch.tensor(self.suppress_begin, dtype=torch.long)
        out = []
        for toks, r in zip(token_lists, results, strict=True):
            logits = torch.from_numpy(np.asarray(r.logits[0], dtype=np.float64)[: len(toks) + 1])
            first = torch.zeros(len(toks) + 1, dtype=torch.bool)
            first[0] = True
            out.append(suppressed_log_probs(logits, torch.tensor([*toks, self.eot]), first, sup, sup_begin).numpy())
        return out

    # -- records ----------------------------------------------------------------------------------------

    def _tokens(self, hyp: Hypothesis, own: bool) -> list[int]:
        """The recognizer's own tokens when this model made the hypothesis and they spell its text, else Whisper's."""
        ok = own and hyp.tokens and all(0 <= t < self.eot for t in hyp.tokens)
        if ok and self.tokenizer.decode(hyp.tokens).strip() == hyp.text.strip():
            return list(hyp.tokens)
        return self.tokenize(hyp.text)

    def _own(self, rec: NBest) -> bool:
        made_by = str(rec.recognizer.get("model") or "")
        return bool(made_by) and score_keys(made_by)[0] == self.am_key and rec.recognizer.get("backend") != "union"

    def _skip(self, rec: NBest, reason: str) -> None:
        rec.extra[SKIP_KEY] = {"skipped": reason}
        log.warning("ascore: %s not scored: %s", rec.id, reason)

    def _prepare(self, i: int, rec: NBest, issues: list[str], memory: Sequence[np.ndarray] | None = None) -> list[_Job]:
        """The windows of one record with what to score in each; marks the record when it cannot be scored.

        ``memory``: the encoder output of each of the record's windows (one for a record without ``windows``),
        used instead of the audio; ignored (the audio read) when it does not match the windows."""
        rec.extra.pop(SKIP_KEY, None)
        if not rec.hypotheses and rec.corrected is None and not any(w.hypotheses for w in rec.windows):
            return []  # nothing to score
        own = self._own(rec)
        if memory is not None and len(memory) == max(len(rec.windows), 1):
            return self._jobs(i, rec, issues, own, [None] * len(memory), list(memory))
        if not rec.audio:
            self._skip(rec, "no audio (a text-only record)")
            return []
        try:
            audio = load_audio(rec.audio, rec.extra.get("start"), rec.extra.get("end"))
        except (AudioError, OSError) as e:
            self._skip(rec, f"audio {rec.audio}: {e}")
            return []
        if rec.windows:
            segs = [audio[int(round(w.start * SAMPLE_RATE)) : int(round(w.end * SAMPLE_RATE))] for w in rec.windows]
            return self._jobs(i, rec, issues, own, segs)
        if len(audio) > WINDOW_SECONDS * SAMPLE_RATE + 1:
            self._skip(
                rec,
                f"audio is {len(audio) / SAMPLE_RATE:.1f} s, longer than one {WINDOW_SECONDS:.0f} s window, and the"
                " record has no per-window n-best ('windows') to score window by window",
            )
            return []
        return self._jobs(i, rec, issues, own, [audio])

    def _jobs(
        self,
        i: int,
        rec: NBest,
        issues: list[str],
        own: bool,
        segs: list[np.ndarray | None],
        memory: list[np.ndarray] | None = None,
    ) -> list[_Job]:
        """The jobs of record ``i``: one per window with hypotheses (the record itself when it has no windows),
        from the window's audio (``segs``) or, where ``memory`` is given, its encoder output."""
        if not rec.windows:
            job = _Job(i, None if memory else self.mel(segs[0]), memory=memory[0] if memory else None)  # type: ignore[arg-type]
            job.items = [(h, self._tokens(h, own)) for h in rec.hypotheses]
            if rec.corrected is not None:
                job.items.append(("corrected", self.tokenize(rec.corrected)))
            return [job]
        jobs = []
        for w, (win, seg) in enumerate(zip(rec.windows, segs, strict=True)):
            if not win.hypotheses:
                continue
            if memory is None and (seg is None or len(seg) == 0):
                self._flag(issues, f"window {w} ({win.start:.1f}-{win.end:.1f} s)", "outside the audio: not scored")
                continue
            job = _Job(i, None if memory else self.mel(seg), memory=memory[w] if memory else None)  # type: ignore[arg-type]
            job.items = [(h, self._tokens(h, own)) for h in win.hypotheses]
            jobs.append(job)
        return jobs

    def _flag(self, issues: list[str], what: str, why: str) -> None:
        issues.append(f"{self.label}: {what}: {why}")

    def score(
        self, records: Iterable[NBest], memories: Sequence[Sequence[np.ndarray] | None] | None = None
    ) -> list[NBest]:
        """The records with ``am:<model>`` and ``am_tokens:<model>`` added to every hypothesis that can be scored.

        Failed records pass through unchanged; records without usable audio are marked (``extra["ascore"]``)
        and passed through; what cannot be scored is named in ``extra["ascore_issues"]``. ``memories``, one
        entry per record: this model's encoder output of each of the record's windows (one for a record
        without ``windows``; ``None``: not known), which is then used instead of the audio.
        """
        records = list(records)
        if memories is not None and len(memories) != len(records):
            raise ValueError(f"{len(memories)} encoder outputs for {len(records)} records")
        out: list[NBest] = []
        for start in range(0, len(records), self.batch_size):
            end = start + self.batch_size
            out += self._score_batch(records[start:end], memories[start:end] if memories is not None else None)
        return out

    def _score_batch(
        self, records: list[NBest], memories: Sequence[Sequence[np.ndarray] | None] | None = None
    ) -> list[NBest]:
        issues: dict[int, list[str]] = {}
        jobs: list[_Job] = []
        for i, rec in enumerate(records):
            if not rec.ok:
                continue
            # a rescored record replaces this model's earlier results
            old = [s for s in rec.extra.get(ISSUES_KEY) or [] if not str(s).startswith(f"{self.label}:")]
            issues[i] = old
            for h in [*rec.hypotheses, *(h for w in rec.windows for h in w.hypotheses)]:
                h.scores.pop(self.am_key, None)
                h.scores.pop(self.tokens_key, None)
            if isinstance(rec.extra.get(CORRECTED_KEY), dict):
                rec.extra[CORRECTED_KEY].pop(self.am_key, None)
                rec.extra[CORRECTED_KEY].pop(self.tokens_key, None)
            jobs += self._prepare(i, rec, issues[i], memories[i] if memories is not None else None)
        to_encode = [j for j in jobs if j.memory is None]
        for job, memory in zip(to_encode, self.encode([j.mel for j in to_encode]), strict=True):  # type: ignore[misc]
            job.memory = memory
            job.mel = None
        for job in jobs:
            self._score_job(job, records[job.rec], issues[job.rec])
            job.memory = None
        for i, rec in enumerate(records):
            if not rec.ok:
                continue
            if rec.windows and SKIP_KEY not in rec.extra:
                self._combine(rec, issues[i])
            if issues.get(i):
                rec.extra[ISSUES_KEY] = issues[i]
            else:
                rec.extra.pop(ISSUES_KEY, None)
        return records

    def _score_job(self, job: _Job, rec: NBest, issues: list[str]) -> None:
        todo, lists = [], []
        for target, toks in job.items:
            if len(toks) > self.max_tokens:
                what = "corrected text" if target == "corrected" else f"hypothesis {self._where(rec, target)}"
                self._flag(issues, what, f"{len(toks)} tokens, more than the decoder's {self.max_tokens}: not scored")
                continue
            todo.append(target)
            lists.append(toks)
        if not lists:
            return
        assert job.memory is not None
        for target, toks, lp in zip(todo, lists, self.score_tokens(job.memory, lists), strict=True):
            scores = {self.am_key: lp, self.tokens_key: float(len(toks) + 1)}
            if target == "corrected":
                rec.extra.setdefault(CORRECTED_KEY, {}).update(scores)
            else:
                target.scores.update(scores)

    @staticmethod
    def _where(rec: NBest, hyp: Hypothesis) -> str:
        for i, h in enumerate(rec.hypotheses):
            if h is hyp:
                return str(i)
        for w, win in enumerate(rec.windows):
            for i, h in enumerate(win.hypotheses):
                if h is hyp:
                    return f"{i} of window {w} ({win.start:.1f}-{win.end:.1f} s)"
        return "?"

    def _combine(self, rec: NBest, issues: list[str]) -> None:
        """Whole-recording hypotheses (and corrected text) of a long-form record: sums over their windows."""
        lists = [w.hypotheses for w in rec.windows if w.hypotheses]
        targets: list[tuple[str, str, dict[str, float] | None]] = [
            (f"hypothesis {i}", h.text, h.scores) for i, h in enumerate(rec.hypotheses)
        ]
        if rec.corrected is not None:
            targets.append(("corrected text", rec.corrected, None))
        for what, text, scores in targets:
            picked = combination(" ".join(text.split()), lists)
            if picked is None:
                self._flag(issues, what, "not a combination of the windows' hypotheses: not scored")
                continue
            if any(self.am_key not in h.scores for h in picked):
                self._flag(issues, what, "one of its windows' hypotheses was not scored")
                continue
            total = {
                self.am_key: sum(h.scores[self.am_key] for h in picked),
                self.tokens_key: sum(h.scores[self.tokens_key] for h in picked),
            }
            if scores is None:
                rec.extra.setdefault(CORRECTED_KEY, {}).update(total)
            else:
                scores.update(total)


def combination(text: str, lists: list[list[Hypothesis]]) -> list[Hypothesis] | None:
    """One hypothesis per window whose texts, joined with spaces, are ``text`` (the first such pick in rank
    order), or None. Windows whose picked text is empty add nothing, as in ``combine_windows``."""

    def norm(t: str) -> str:
        return " ".join(t.split())

    def walk(w: int, pos: int) -> list[Hypothesis] | None:
        if w == len(lists):
            return [] if pos >= len(text) else None
        for h in lists[w]:
            t = norm(h.text)
            if not t:
                nxt: int | None = pos
            elif text.startswith(t, pos) and (pos + len(t) == len(text) or text[pos + len(t)] == " "):
                nxt = pos + len(t) + 1
            else:
                nxt = None
            if nxt is not None:
                rest = walk(w + 1, nxt)
                if rest is not None:
                    return [h, *rest]
        return None

    return walk(0, 0)
