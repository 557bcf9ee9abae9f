"""Decoding with the gated cross-attention model: choosing among the prompt's hypotheses, or writing by beam search.

Both rank by the log-prob per step (the records' ``am_norm``); summed log-prob would prefer whatever hypothesis
drops words. Both run each utterance's prompt once and continue every candidate or beam from its cache.
:class:`XAttnDecoding` is a part of :class:`rescore.deep.xattn.XAttnLM`, kept here by concern.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from rescore.deep.model import LENGTH_PENALTY, Batch, BeamHypothesis, normalize_target, order_beams, parse_beams

if TYPE_CHECKING:
    from rescore.deep.xattn_config import XAttnConfig


def clean_reply(text: str) -> str:
    """The reply's first line without the list marker the prompt's hypotheses carry (``- ``): the untrained LM
    answers in the prompt's own list format."""
    line = next((x for x in text.splitlines() if x.strip()), "")
    return line.strip().removeprefix("- ").strip()


class LengthFloor:
    """A logits processor: no stop token for a row whose utterance has fewer than its floor of new tokens.

    Rows are utterance-major (``beams`` rows per utterance), as transformers' beam search lays them out."""

    def __init__(self, prompt_length: int, floors: Sequence[int], beams: int, stop_ids: Sequence[int]) -> None:
        self.prompt_length = prompt_length
        self.floors = torch.tensor(floors).repeat_interleave(beams)
        self.stop_ids = list(stop_ids)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        written = input_ids.shape[1] - self.prompt_length
        early = (self.floors.to(scores.device) > written).nonzero().flatten()
        if len(early):
            scores[early.unsqueeze(1), torch.tensor(self.stop_ids, device=scores.device)] = float("-inf")
        return scores


class XAttnDecoding:
    """The decoding methods of :class:`rescore.deep.xattn.XAttnLM` (which provides the attributes below)."""

    config: XAttnConfig
    llm: Any
    tokenizer: Any
    stop_ids: list[int]
    pad_id: int
    cache_arg: str
    writes: bool
    attending: Any
    attend_from: Any
    build_inputs: Any
    _target_logits: Any
    _prefill: Any

    def candidates(self, hypotheses: Sequence[str]) -> dict[str, str]:
        """What :meth:`choose` picks from: each distinct hypothesis the prompt shows, as the targets are written,
        with the first first-pass text written that way (its own casing, digits and punctuation)."""
        shown = set(self.config.shown_hypotheses(hypotheses))
        out: dict[str, str] = {}
        for h in hypotheses:
            n = normalize_target(h, self.config.text_norm)
            if n in shown:
                out.setdefault(n, h)
        return out

    @torch.no_grad()
    def choose(self, batch: Batch, nbest: int = 4, shared_prompts: bool = True) -> list[list[BeamHypothesis]]:
        """The prompt's own hypotheses ranked by the model's log-prob of each as the transcript (its tokens and the
        end) per step, best first, as the beam search ranks (:func:`order_beams`): decoding constrained to the
        n-best. It cannot skip, repeat or invent words, and the audio (through the blocks) still decides between
        the hypotheses where they disagree. Each answer's text is the first-pass form of the hypothesis; its tokens
        are the model's, of the normalised text it scored. Each utterance's prompt runs once and every candidate
        continues from its cache; ``shared_prompts=False`` runs one pass over prompt and candidate per candidate
        instead (the same scores, slower: for comparison)."""
        cands = [self.candidates(hs) for hs in batch.hypotheses]
        out: list[list[BeamHypothesis]] = [[] for _ in batch.ids]
        for (i, text), lp, tokens in self._candidate_log_probs(batch, cands, shared_prompts):
            out[i].append(BeamHypothesis(cands[i][text], tokens[:-1].tolist(), float(lp.sum()), len(tokens)))
        return [order_beams(hs)[:nbest] for hs in out]

    def _candidate_log_probs(
        self, batch: Batch, candidates: Sequence[Iterable[str]], shared_prompts: bool = True
    ) -> list[tuple[tuple[int, str], torch.Tensor, torch.Tensor]]:
        """``((row, text), token log-probs, tokens)`` of each of ``candidates[row]`` (normalised texts) scored as
        row's transcript, teacher-forced (the tokens end with the end)."""
        rows = [(i, c) for i, cs in enumerate(candidates) for c in cs]
        if not rows:
            return []
        which = torch.tensor([i for i, _ in rows])
        flat = Batch(
            [batch.ids[i] for i, _ in rows],
            batch.states[which] if batch.states is not None else None,
            batch.mask[which] if batch.mask is not None else None,
            [c for _, c in rows],
            [batch.hypotheses[i] for i, _ in rows],
        )
        logits, target, row = self._target_logits(flat, shared_prompts)
        token_lp = -F.cross_entropy(logits, target, reduction="none")
        counts = torch.bincount(row, minlength=len(rows)).tolist()  # the tokens come row by row, in order
        return list(zip(rows, token_lp.split(counts), target.split(counts), strict=True))

    def max_new_tokens(self, batch: Batch) -> int:
        """Room for the longest hypothesis of the batch and half again, plus 8 (capped by the targets' limit)."""
        longest = max(
            (len(self.tokenizer(h, add_special_tokens=False)["input_ids"]) for hs in batch.hypotheses for h in hs),
            default=8,
        )
        return min(self.config.max_target_tokens + 1, int(1.5 * longest) + 8)

    def length_floors(self, hypotheses: Sequence[Sequence[str]], ratio: float) -> list[int]:
        """Per utterance (its n-best texts), the fewest tokens before the end may come: ``ratio`` x its
        shortest hypothesis as the prompt shows them."""
        floors = []
        for hs in hypotheses:
            hyps = self.config.shown_hypotheses(hs)
            n = min((len(self.tokenizer(h, add_special_tokens=False)["input_ids"]) for h in hyps), default=0)
            floors.append(int(ratio * n))
        return floors

    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        beam_size: int = 4,
        nbest: int = 4,
        max_new_tokens: int | None = None,
        min_length_ratio: float | None = None,
        cached_prompt: bool = True,
    ) -> list[list[BeamHypothesis]]:
        """Beam search (greedy at beam 1) per utterance: best first by log-prob per step, as the bridge's.

        ``min_length_ratio`` (None: the config's) keeps the end of the transcript away until that share of the
        shortest hypothesis is written. Each prompt runs once and its cache is repeated per beam;
        ``cached_prompt=False`` runs every prompt once per beam instead (the same beams, slower: for comparison)."""
        from transformers import LogitsProcessorList

        if not self.writes:
            raise ValueError(
                "this model reads Whisper's predictions on the transcript (memory='prediction'): it decodes by "
                "choosing among the first-pass hypotheses (--decode choose), it cannot write"
            )
        ids, attn, _, _ = self.build_inputs(batch, with_targets=False)
        nbest = min(nbest, beam_size)
        ratio = self.config.min_length_ratio if min_length_ratio is None else min_length_ratio
        processors = LogitsProcessorList()
        if ratio > 0:
            floors = self.length_floors(batch.hypotheses, ratio)
            processors.append(LengthFloor(ids.shape[1], floors, beam_size, self.stop_ids))
        # one attending() for the prompt pass and the search: the blocks' keys and values are computed once, and
        # the column count runs on from the cached prompt to the tokens generate feeds
        with self.attending(batch.states, batch.mask, self.attend_from(ids.shape[1])):
            cache = {self.cache_arg: self._prompt_cache(ids, attn, beam_size)} if cached_prompt else {}
            out = self.llm.generate(
                input_ids=ids,
                attention_mask=attn,
                **cache,
                num_beams=beam_size,
                num_return_sequences=nbest,
                max_new_tokens=max_new_tokens or self.max_new_tokens(batch),
                do_sample=False,
                length_penalty=LENGTH_PENALTY,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                output_scores=True,
                logits_processor=processors,
            )
        beams = parse_beams(self.llm, self.tokenizer, out, len(batch.ids), nbest, self.stop_ids)
        return [[h._replace(text=clean_reply(h.text)) for h in hs] for hs in beams]

    def _prompt_cache(self, ids: torch.Tensor, attn: torch.Tensor, beams: int) -> Any:
        """The left-padded prompts ``ids`` but their last token through the LM once per utterance, the cache
        repeated for each of ``beams`` beams in beam search's row order: generation then starts at the last prompt
        token instead of running every prompt once per beam."""
        cache = self._prefill(ids[:, :-1], attn[:, :-1])
        if beams > 1:
            cache.batch_repeat_interleave(beams)
        return cache
