"""CTC prefix beam search against brute-force enumeration; the head's shapes, saving and a training step."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

from rescore.recognize.ctc_decode import ctc_greedy, ctc_prefix_beam_search
from rescore.recognize.ctc_head import (
    BLANK,
    CharVocab,
    CTCHeadConfig,
    build_ctc_head,
    default_checkpoint,
    export_head,
    load_ctc_head,
    resolve_checkpoint,
    save_ctc_head,
    shipped_checkpoint,
)


def _collapse(path: tuple[int, ...], blank: int = BLANK) -> tuple[int, ...]:
    out, prev = [], None
    for c in path:
        if c != blank and c != prev:
            out.append(c)
        prev = c
    return tuple(out)


def brute_force(log_probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """Log-probability of every label sequence: the sum over all V^T frame paths that collapse to it."""
    t, v = log_probs.shape
    probs: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(v), repeat=t):
        probs[_collapse(path)] += math.exp(sum(log_probs[i, c] for i, c in enumerate(path)))
    return {k: math.log(p) for k, p in probs.items()}


def random_posteriors(rng: np.random.Generator, t: int, v: int, sharpness: float = 2.0) -> np.ndarray:
    logits = rng.normal(size=(t, v)) * sharpness
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_exact_with_full_beam(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t, v = (5, 3) if seed % 2 else (4, 4)
    lp = random_posteriors(rng, t, v)
    exact = brute_force(lp)
    assert math.isclose(sum(math.exp(x) for x in exact.values()), 1.0, rel_tol=1e-9)
    got = ctc_prefix_beam_search(lp, beam_size=10_000, nbest=len(exact), prune=-math.inf)
    assert {p for p, _ in got} == set(exact)
    for labels, score in got:
        assert score == pytest.approx(exact[labels], abs=1e-9)
    ranked = sorted(exact.items(), key=lambda kv: kv[1], reverse=True)
    assert [s for _, s in got[:5]] == pytest.approx([s for _, s in ranked[:5]], abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_prefix_beam_search_small_beam_scores_are_exact(seed: int) -> None:
    """A pruned search may miss sequences, but the probabilities it reports are lower bounds that match
    brute force exactly whenever the prefix's paths all survived: here, for the best one on peaked inputs."""
    rng = np.random.default_rng(100 + seed)
    lp = random_posteriors(rng, 6, 3, sharpness=4.0)
    exact = brute_force(lp)
    got = ctc_prefix_beam_search(lp, beam_size=4, nbest=4)
    for labels, score in got:
        assert score <= exact[labels] + 1e-9
    best = max(exact.items(), key=lambda kv: kv[1])
    assert got[0][0] == best[0]
    assert got[0][1] == pytest.approx(best[1], abs=1e-3)


def test_repeated_label_needs_blank() -> None:
    # frames: a a  -> "a"; a _ a -> "a a"
    lp = np.log(np.array([[0.01, 0.99], [0.01, 0.99], [0.99, 0.01], [0.01, 0.99]]))
    best = ctc_prefix_beam_search(lp, beam_size=8, nbest=1)[0][0]
    assert best == (1, 1)
    assert ctc_greedy(lp) == [1, 1]


def test_vocab_round_trip() -> None:
    v = CharVocab()
    assert v.normalize("Not at this case, Tom, apologized \u2018Whittemore\u2019!") == (
        "not at this case tom apologized whittemore"
    )
    assert v.normalize("it's O'Brien's 'quote'") == "it's o'brien's quote"
    assert v.decode(v.encode("Hello  World")) == "hello world"
    assert v.size == 29


def test_head_shapes_save_load_and_learns(tmp_path) -> None:
    import torch

    torch.manual_seed(0)
    cfg = CTCHeadConfig(input_dim=16, dim=32, layers=1, heads=2, ff_dim=64, dropout=0.0)
    head = build_ctc_head(cfg)
    x = torch.randn(2, 11, 16)
    lengths = torch.tensor([11, 7])
    head.eval()
    with torch.inference_mode():
        lp, out_len = head(x, lengths)
        lp_short, _ = head(x[1:, :7], lengths[1:])
    assert lp.shape == (2, 6, 29) and out_len.tolist() == [6, 4]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 6), atol=1e-5)
    # padding (here: random frames after the end) does not change the shorter item's output
    assert torch.allclose(lp[1, :4], lp_short[0, :4], atol=1e-5)
    head.train()
    # a few steps of CTC training lower the loss on a fixed batch
    targets = torch.tensor([3, 4, 5, 6, 7])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        lp, out_len = head(x, lengths)
        loss = torch.nn.functional.ctc_loss(lp.transpose(0, 1), targets, out_len, torch.tensor([3, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    path = tmp_path / "head.pt"
    save_ctc_head(head, path, {"note": "test"})
    loaded = load_ctc_head(path)
    assert loaded.meta["note"] == "test" and loaded.blank == 0 and loaded.stride == 2
    assert loaded.meta["checkpoint"] == {"path": str(path), "source": "given path"}
    head.eval()
    with torch.inference_mode():
        assert torch.allclose(loaded(x, lengths)[0], head(x, lengths)[0])
    with pytest.raises(FileNotFoundError):
        load_ctc_head(tmp_path / "missing.pt")


def test_export_head_float16_round_trip(tmp_path) -> None:
    """The shipped form (float16 safetensors + json) reads back as the float32 head, within float16 rounding."""
    import json

    import torch
    from safetensors.torch import load_file

    torch.manual_seed(3)
    head = build_ctc_head(CTCHeadConfig(input_dim=16, dim=32, layers=2, heads=2, ff_dim=64, dropout=0.0))
    with torch.no_grad():  # LayerNorms start at exactly 1 and 0, which float16 keeps: make them random too
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_ctc_head(head, tmp_path / "head.pt", {"note": "fp32", "best": {"epoch": 2}})
    weights, side = export_head(tmp_path / "head.pt", tmp_path / "ship", {"figures": {"wer": 0.5}})
    assert weights.name == "ctc-head.safetensors" and side == weights.with_suffix(".json")
    stored = load_file(str(weights))
    assert stored.keys() == head.state_dict().keys()
    assert all(v.dtype == torch.float16 for v in stored.values())
    info = json.loads(side.read_text())
    assert info["dtype"] == "float16" and info["config"]["dim"] == 32
    assert info["vocab"]["labels"][0] == "<blank>" and len(info["vocab"]["labels"]) == head.config.vocab_size
    assert info["meta"] == {"note": "fp32", "best": {"epoch": 2}, "figures": {"wer": 0.5}}
    assert weights.stat().st_size < 0.6 * (tmp_path / "head.pt").stat().st_size

    for loaded in (load_ctc_head(weights), load_ctc_head(tmp_path / "ship")):  # the file, or its folder
        assert loaded.meta["figures"] == {"wer": 0.5} and loaded.meta["checkpoint"]["path"] == str(weights)
        assert all(p.dtype == torch.float32 for p in loaded.parameters())
        # the weights are float16-rounded copies of the originals, not something else
        for k, v in head.state_dict().items():
            assert not torch.equal(loaded.state_dict()[k], v), k
            assert torch.allclose(loaded.state_dict()[k], v, rtol=1e-3, atol=1e-4)
        x, lengths = torch.randn(2, 21, 16), torch.tensor([21, 13])
        head.eval()
        with torch.inference_mode():
            ref, ref_len = head(x, lengths)
            got, got_len = loaded(x, lengths)
        assert torch.equal(ref_len, got_len)
        err = (got - ref).abs().max().item()
        assert 0 < err < 2e-2, err  # float16 rounding shows, and stays small
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.95


def test_default_head_is_the_users_else_the_shipped_one(tmp_path, monkeypatch) -> None:
    """``"default"``: a head ``rescore ctc train`` wrote into the cache wins over the one in the package."""
    monkeypatch.setenv("RESCORE_CACHE", str(tmp_path / "cache"))
    assert default_checkpoint().is_relative_to(tmp_path)
    assert resolve_checkpoint("default") == resolve_checkpoint(None) == (shipped_checkpoint(), "shipped")
    assert shipped_checkpoint().exists() and shipped_checkpoint().with_suffix(".json").exists()
    shipped = load_ctc_head("default")
    assert shipped.meta["checkpoint"]["source"] == "shipped with the package"
    assert shipped.meta["checkpoint"]["path"] == str(shipped_checkpoint())
    mine = build_ctc_head(CTCHeadConfig(dim=32, layers=1, heads=2, ff_dim=64))
    save_ctc_head(mine, default_checkpoint(), {"note": "mine"})
    assert resolve_checkpoint("default") == (default_checkpoint(), "user")
    loaded = load_ctc_head("default")
    assert loaded.meta["note"] == "mine" and loaded.config.dim == 32
    assert loaded.meta["checkpoint"]["source"] == "trained by the user (rescore ctc train)"


def test_ctc_recognizer_refuses_options_it_does_not_take(tmp_path) -> None:
    from rescore.recognize.ctc import CTCRecognizer
    from rescore.registry import RegistryError, make_recognizer

    path = tmp_path / "head.pt"
    save_ctc_head(build_ctc_head(CTCHeadConfig(dim=32, layers=1, heads=2, ff_dim=64)), path)
    with pytest.raises(TypeError, match="temperature"):
        CTCRecognizer(str(path), temperature=0.5)
    with pytest.raises(RegistryError, match="vad_filter"):  # the factory names it in one line
        make_recognizer("ctc", model=str(path), vad_filter=True)
    with pytest.raises(ValueError, match="English"):
        CTCRecognizer(str(path), language="de")
    with pytest.raises(ValueError, match="int8"):
        CTCRecognizer(str(path), compute_type="float16")


def test_sequence_log_probs_match_brute_force() -> None:
    from rescore.score.ctc import ctc_sequence_log_probs

    rng = np.random.default_rng(7)
    lp = random_posteriors(rng, 5, 3)
    exact = brute_force(lp)
    seqs = [list(s) for s in exact]
    got = ctc_sequence_log_probs(lp, seqs)
    assert got == pytest.approx([exact[tuple(s)] for s in seqs], abs=1e-5)
    assert ctc_sequence_log_probs(lp, [[1, 1, 1, 2, 2, 2]]) == [-math.inf]  # cannot fit in 5 frames


def test_lexicon_keeps_the_beam_on_words() -> None:
    from rescore.recognize.ctc_decode import Lexicon

    v = CharVocab()
    lex = Lexicon(["the", "cat", "cap", "Don't"], v)
    assert lex.allows(tuple(v.encode("ca")), v.encode("p")[0]) and not lex.allows(tuple(v.encode("ca")), 3)
    assert lex.allows(tuple(v.encode("the")), 1)  # label 1 is the space: a finished word may end
    assert not lex.allows(tuple(v.encode("th")), 1)  # "th" is not a word
    assert lex.complete(tuple(v.encode("the cat"))) and not lex.complete(tuple(v.encode("the ca")))
    assert "don't" in lex.words
    # frames that spell "cqt" most probably: with the lexicon the search must say "cat" (or "cap")
    labels = v.encode("cqt")
    lp = np.full((3, v.size), math.log(0.01))
    for t, c in enumerate(labels):
        lp[t, c] = math.log(0.6)
    lp[1, v.encode("a")[0]] = math.log(0.3)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    free = ctc_prefix_beam_search(lp, beam_size=8, nbest=1)[0][0]
    assert v.decode(free) == "cqt"
    constrained = ctc_prefix_beam_search(lp, beam_size=8, nbest=3, lexicon=lex)
    assert v.decode(constrained[0][0]) == "cat"
    assert all(v.decode(p) in {"cat", "cap", "the"} for p, _ in constrained if lex.complete(p))


def test_cmudict_lexicon_loads() -> None:
    from rescore.recognize.ctc_decode import Lexicon

    lex = Lexicon.cmudict()
    assert len(lex.words) > 100_000 and {"chapter", "seventeen", "wendy", "don't"} <= lex.words


def _spelling(text: str, alternatives: dict[int, tuple[str, float]], v: CharVocab) -> np.ndarray:
    """Frames spelling ``text`` one label each (blank between repeats), with an alternative label at some."""
    labels: list[int] = []
    for c in v.encode(text):
        if labels and labels[-1] == c:
            labels.append(BLANK)
        labels.append(c)
    lp = np.full((len(labels), v.size), math.log(0.01))
    for t, c in enumerate(labels):
        lp[t, c] = math.log(0.5)
    for t, (alt, p) in alternatives.items():
        lp[t, v.encode(alt)[0]] = math.log(p)
    return lp - np.log(np.exp(lp).sum(-1, keepdims=True))


def test_word_lm_scores_are_natural_log_probabilities() -> None:
    from rescore.recognize.ctc_decode import WordLM

    lm = WordLM.pocketsphinx()
    p_the = lm.score("the", ("of",))
    assert -5.0 < p_the < 0.0  # "of the" is common
    assert lm.score("thy", ("of",)) < p_the - 3.0
    assert lm.score("zzqxv", ()) == lm.oov


def test_word_lm_fusion_prefers_the_likely_sentence() -> None:
    from rescore.recognize.ctc_decode import Fusion, WordLM

    v = CharVocab()
    # "one of thy" spelled, with "e" almost as likely as "y" at the last frame
    lp = _spelling("one of thy", {9: ("e", 0.45)}, v)
    plain = ctc_prefix_beam_search(lp, beam_size=16, nbest=2)
    assert v.decode(plain[0][0]) == "one of thy"
    fusion = Fusion(WordLM.pocketsphinx(), weight=0.5, bonus=0.0)
    fused = ctc_prefix_beam_search(lp, beam_size=16, nbest=2, fusion=fusion)
    assert v.decode(fused[0][0]) == "one of the"
    # the fused score is the CTC score plus the weighted LM score of the whole sentence
    ctc = dict(ctc_prefix_beam_search(lp, beam_size=64, nbest=64))
    best, score = fused[0]
    assert score == pytest.approx(ctc[best] + 0.5 * fusion.sentence("one of the"), abs=1e-6)
    # weight and bonus 0: the same ranking and scores as without fusion
    zero = ctc_prefix_beam_search(lp, beam_size=16, nbest=2, fusion=Fusion(fusion.lm, 0.0, 0.0))
    assert [(p, pytest.approx(s)) for p, s in zero] == [(p, s) for p, s in plain]
