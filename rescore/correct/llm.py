"""Chat backends for the corrector: llama.cpp with the GGUF's own chat template, and transformers.

Both decode greedily, stop at the first line end and reuse the KV cache of the longest token prefix the
new prompt shares with the previous one: the templates put the fixed instructions (and few-shot
examples) first, so only the utterance's own part is computed per utterance.

The llama.cpp backend also drafts from the prompt (prompt-lookup decoding): a corrected transcript is
mostly a copy of a hypothesis in the prompt, so the tokens that followed the last generated n-gram there
are proposed as a draft, checked in one batch, and every draft token the model would have chosen greedily
is kept. The text is the same as token-by-token greedy decoding; only the number of passes changes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rescore.io.models import resolve_model

BACKENDS = ("llama-cpp", "transformers")
ALIASES = {"llamacpp": "llama-cpp", "llama.cpp": "llama-cpp", "hf": "transformers"}
_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass
class Generation:
    """One answer and what it cost."""

    text: str
    prompt_tokens: int
    new_tokens: int
    reused_tokens: int  # prompt tokens whose KV cache came from the previous call
    truncated: bool  # stopped by the token cap, not by a line end or end of turn
    seconds: float
    prompt_seconds: float | None = None  # of ``seconds``, the prompt's evaluation (where the backend says)

    @property
    def tokens_per_second(self) -> float:
        return (self.new_tokens / self.seconds) if self.seconds > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float | None:
        """Prompt tokens evaluated (not reused) per second of prompt evaluation."""
        if not self.prompt_seconds:
            return None
        return (self.prompt_tokens - self.reused_tokens) / self.prompt_seconds


class ChatLLM(Protocol):
    """An instruction-tuned LLM answering chat messages greedily, one line."""

    info: dict[str, Any]

    def count_tokens(self, text: str) -> int: ...

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int) -> Generation: ...


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def lookup_draft(tokens: list[int], n_prompt: int, ngram: int = 3, length: int = 12) -> list[int]:
    """The prompt tokens that followed the latest earlier occurrence of the last ``ngram`` tokens (longest
    n-gram first, down to 1), at most ``length`` of them; [] when none matches.

    Only the prompt (``tokens[:n_prompt]``) is searched, from its end: the hypothesis being revised comes last.
    """
    for n in range(min(ngram, len(tokens)), 0, -1):
        tail = tokens[-n:]
        for start in range(n_prompt - n, -1, -1):
            if tokens[start : start + n] == tail:
                follow = tokens[start + n : min(start + n + length, n_prompt)]
                if follow:
                    return follow
    return []


def _threads(n: int | None) -> int:
    """Threads for llama.cpp: the cores that are idle now (at least 1, at most 4).

    llama.cpp's threads meet at a barrier after every layer; on a machine whose cores are busy with other
    jobs, a thread that is not scheduled stalls the others, and 2 threads ran about 5x slower than 1 here.
    """
    if n:
        return n
    cores = os.cpu_count() or 1
    try:
        idle = cores - os.getloadavg()[0]
    except OSError:
        idle = cores
    return max(1, min(4, int(idle)))


@dataclass
class LlamaCppChat:
    """A GGUF model through llama-cpp-python; the prompt is rendered with the chat template in the GGUF."""

    model: str = "qwen2.5-0.5b"
    n_ctx: int = 4096
    n_threads: int | None = None
    reuse_prefix: bool = True
    draft_tokens: int = 12  # prompt-lookup draft length; 0: one token per pass
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = resolve_model(self.model, kind="gguf")
        self._llm = Llama(str(path), n_ctx=self.n_ctx, n_threads=_threads(self.n_threads), seed=0, verbose=False)
        template = self._llm.metadata.get("tokenizer.chat_template") or _CHATML
        eos_id = self._llm.token_eos()
        bos_id = self._llm.token_bos()
        tok_text = self._llm._model.token_get_text  # the spelling of a special token
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=tok_text(eos_id) if eos_id >= 0 else "",
            bos_token=tok_text(bos_id) if bos_id >= 0 else "",
            stop_token_ids=[eos_id] if eos_id >= 0 else None,
        )
        self._n_vocab = self._llm.n_vocab()
        self._vocab = self._llm._model.vocab
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self.info = {
            "backend": "llama-cpp",
            "model": self.model,
            "file": path.name,
            "threads": self._llm.n_threads,
            "draft_tokens": self.draft_tokens,
            "chat_template": "gguf" if "tokenizer.chat_template" in self._llm.metadata else "chatml",
        }

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int) -> Generation:
        fmt = self._formatter(messages=messages)
        tokens = self._llm.tokenize(fmt.prompt.encode("utf-8"), add_bos=not fmt.added_special, special=True)
        if len(tokens) + max_new_tokens + self.draft_tokens + 1 > self.n_ctx:
            raise ValueError(f"prompt of {len(tokens)} tokens + {max_new_tokens} new exceeds the context {self.n_ctx}")
        llm = self._llm
        cached = list(llm._input_ids[: llm.n_tokens]) if self.reuse_prefix else []
        reused = min(_common_prefix(cached, tokens), len(tokens) - 1)
        t0 = time.perf_counter()
        llm.n_tokens = reused  # eval drops the KV cells past this point first
        llm.eval(tokens[reused:])
        prompt_seconds = time.perf_counter() - t0
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(self._n_vocab,))
        nxt = int(logits.argmax())
        new: list[int] = []
        ended = False
        while len(new) < max_new_tokens:
            if self._is_stop(nxt):
                ended = True
                break
            new.append(nxt)
            if "\n" in self._piece(nxt):
                ended = True
                break
            draft = lookup_draft(tokens + new, len(tokens), length=self.draft_tokens) if self.draft_tokens else []
            draft = draft[: max(0, max_new_tokens - len(new))]
            preds = self._decode_greedy([nxt, *draft])
            kept = 0
            while kept < len(draft) and draft[kept] == preds[kept] and not self._is_stop(draft[kept]):
                kept += 1
                if "\n" in self._piece(draft[kept - 1]):
                    break
            new += draft[:kept]
            llm.n_tokens -= len(draft) - kept  # the cells of refused draft tokens go at the next eval
            nxt = preds[kept]
            if new and "\n" in self._piece(new[-1]):
                ended = True
                break
        seconds = time.perf_counter() - t0
        text = llm.detokenize(new).decode("utf-8", errors="ignore").split("\n", 1)[0]
        return Generation(
            text=text,
            prompt_tokens=len(tokens),
            new_tokens=len(new),
            reused_tokens=max(reused, 0),
            truncated=not ended,
            seconds=seconds,
            prompt_seconds=prompt_seconds,  # reused < len(tokens): the prompt's last token is always evaluated
        )

    def _decode_greedy(self, batch: list[int]) -> list[int]:
        """Evaluate ``batch`` after the cache and return the greedy next token after each of its tokens."""
        llm = self._llm
        n_past = llm.n_tokens
        llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
        llm._ctx.decode(llm._batch)
        llm.input_ids[n_past : n_past + len(batch)] = batch
        llm.n_tokens += len(batch)
        rows = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch), self._n_vocab))
        return [int(i) for i in rows.argmax(-1)]

    def _is_stop(self, token: int) -> bool:
        """End of generation: the model's end-of-turn or end-of-text tokens."""
        return bool(self._is_eog(self._vocab, token))

    def _piece(self, token: int) -> str:
        return self._llm.detokenize([token]).decode("utf-8", errors="ignore")


@dataclass
class TransformersChat:
    """A transformers causal LM (GGUF converted once into the cache), optionally with a LoRA adapter."""

    model: str = "qwen2.5-0.5b"
    adapter: str | None = None
    device: str = "auto"
    n_threads: int | None = None
    reuse_prefix: bool = True
    draft_tokens: int = 12  # transformers' prompt-lookup decoding; 0: one token per pass
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rescore.score.convert import ensure_hf_model

        if self.n_threads:
            torch.set_num_threads(self.n_threads)
        dev = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        folder = ensure_hf_model(self.model)
        self._tok = AutoTokenizer.from_pretrained(folder)
        dtype = torch.bfloat16 if dev == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(dev)
        if self.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
        self._model = model.eval()
        self._dev = dev
        self._cache: Any = None
        self._cache_ids: list[int] = []
        self.info = {"backend": "transformers", "model": self.model, "device": dev}
        if self.adapter:
            self.info["adapter"] = str(self.adapter)

    def count_tokens(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False).input_ids)

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int) -> Generation:
        import torch
        from transformers import DynamicCache

        prompt = self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self._tok(prompt, add_special_tokens=False).input_ids
        reused = 0
        if self.reuse_prefix and self._cache is not None:
            reused = min(_common_prefix(self._cache_ids, ids), len(ids) - 1)
        if reused > 0:
            extra = self._cache.get_seq_length() - reused
            if extra > 0:
                self._cache.crop(-extra)  # a negative count removes that many tokens (old and new transformers)
            cache = self._cache
        else:
            cache = DynamicCache()
        x = torch.tensor([ids], device=self._dev)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(
                x,
                attention_mask=torch.ones_like(x),
                past_key_values=cache,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                stop_strings=["\n"],
                tokenizer=self._tok,
                **({"prompt_lookup_num_tokens": self.draft_tokens} if self.draft_tokens else {}),
                pad_token_id=self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id,
            )
        seconds = time.perf_counter() - t0
        seq = out[0].tolist()
        new = seq[len(ids) :]
        self._cache = cache
        self._cache_ids = seq[: cache.get_seq_length()]
        text = self._tok.decode(new, skip_special_tokens=True)
        ended = bool(new) and (new[-1] == self._tok.eos_token_id or "\n" in text)
        return Generation(
            text=text.split("\n", 1)[0],
            prompt_tokens=len(ids),
            new_tokens=len(new),
            reused_tokens=reused,
            truncated=len(new) >= max_new_tokens and not ended,
            seconds=seconds,
        )


def make_llm(
    backend: str = "llama-cpp",
    model: str = "qwen2.5-0.5b",
    *,
    adapter: str | None = None,
    n_threads: int | None = None,
    n_ctx: int = 4096,
    reuse_prefix: bool = True,
    device: str = "auto",
) -> ChatLLM:
    """The chat backend by name. A LoRA adapter needs the transformers backend."""
    backend = ALIASES.get(backend, backend)
    if backend == "llama-cpp":
        if adapter:
            raise ValueError("a LoRA adapter needs --backend transformers")
        return LlamaCppChat(model, n_ctx=n_ctx, n_threads=n_threads, reuse_prefix=reuse_prefix)
    if backend == "transformers":
        return TransformersChat(model, adapter=adapter, device=device, n_threads=n_threads, reuse_prefix=reuse_prefix)
    raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
