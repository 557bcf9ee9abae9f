"""The llama.cpp scorer on the real smollm2-135m GGUF: batched prefix trees, the kept prefix, agreement with hf."""

from __future__ import annotations

import pytest

from rescore.registry import make_scorer
from rescore.score.llamacpp import LlamaCppScorer, build_tree

TEXTS = [
    "He was not an ill disposed young man.",
    "He was knot and ill disposed young man.",
    "He was not",
    "He was not an ill",
    "Yes.",
    "I would like a cup of tea, please.",
    "A much longer sentence, with commas, that pads the batch quite a bit more.",
    "naïve café — 東京 🎉",
]
CONTEXTS = ("", "Read aloud:", "Read aloud: the next chapter.")


@pytest.fixture(scope="module")
def llama() -> LlamaCppScorer:
    return make_scorer("smollm2-135m", "llamacpp", threads=2)


def test_tree_shares_beginnings_and_keeps_each_path() -> None:
    nodes, paths = build_tree([[1, 2, 3], [1, 2, 4], [1, 5], [6]])
    assert [n.token for n in nodes] == [1, 2, 3, 4, 5, 6]
    assert nodes[0].seqs == [1, 2, 3] and nodes[1].seqs == [1, 2] and nodes[5].seqs == [4]
    assert paths == [[0, 1, 2], [0, 1, 3], [0, 4], [5]]
    assert [n.parent for n in nodes] == [-1, 0, 1, 1, 0, -1]
    assert all(nodes[p].depth + 1 == n.depth for n in nodes if (p := n.parent) >= 0)


@pytest.mark.model
def test_batched_scores_equal_one_at_a_time(llama) -> None:
    """Exact while the batch stays under 64 tokens; past that llama.cpp's CPU matmul takes another kernel
    (measured: one text's score moves by 0.1 nats when an unrelated sequence brings the batch to 64), so
    the big batch agrees within the same per-token noise as the backends do."""
    small = TEXTS[:5]  # 33 tokens in the tree
    for ctx in CONTEXTS:
        naive = llama.score_unbatched([llama.encode(ctx, t) for t in small])
        assert llama.score(small, context=ctx) == pytest.approx(naive, abs=2e-3)
        pairs = [(ctx, t) for t in TEXTS]
        batched = llama.score_pairs(pairs)
        naive = llama.score_unbatched([llama.encode(c, t) for c, t in pairs])
        for b, n in zip(batched, naive, strict=True):
            assert abs(b.logprob - n) <= 0.05 * b.tokens, (b, n)


@pytest.mark.model
def test_small_batches_and_few_sequences_give_the_same_scores() -> None:
    """Chunks cut by the sequence limit and by the batch size score as one big batch does."""
    big = make_scorer("smollm2-135m", "llamacpp", threads=2)
    small = make_scorer("smollm2-135m", "llamacpp", threads=2, max_sequences=2, max_tokens=32, batch_tokens=40)
    texts = TEXTS[:5] + ["He was not an ill disposed young man, and then some."]  # every batch under 64 tokens
    assert small.score(texts, context="Read aloud:") == pytest.approx(big.score(texts, context="Read aloud:"), abs=2e-3)


@pytest.mark.model
def test_kept_prefix_rewinds_to_the_common_part(llama) -> None:
    """Alternating contexts (shorter, longer, back) reuse sequence 0 and still score as a fresh cache."""
    fresh = {c: llama.score_unbatched([llama.encode(c, t) for t in TEXTS[:3]]) for c in CONTEXTS}
    for c in (*CONTEXTS, *reversed(CONTEXTS), CONTEXTS[1]):
        assert llama.score(TEXTS[:3], context=c) == pytest.approx(fresh[c], abs=2e-3)


@pytest.mark.model
def test_scores_within_005_nats_per_token_of_transformers(llama) -> None:
    """Same weights (hf runs the dequantized GGUF), different kernels: the summed gap over all tokens."""
    hf = make_scorer("smollm2-135m", "hf", threads=2)
    for ctx in CONTEXTS[:2]:
        pairs = [(ctx, t) for t in TEXTS]
        a, b = hf.score_pairs(pairs), llama.score_pairs(pairs)
        assert [x.tokens for x in a] == [y.tokens for y in b]
        gap = sum(abs(x.logprob - y.logprob) for x, y in zip(a, b, strict=True)) / sum(x.tokens for x in a)
        assert gap < 0.05, gap
