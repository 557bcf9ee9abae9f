"""Deep fusion: bridge and mixer shapes and padding, CTC compression, and the real speech-LLM path."""

from __future__ import annotations

import json

import pytest
import torch

from rescore.deep.bridge import (
    Bridge,
    BridgeConfig,
    ConvDownsample,
    CTCCompress,
    FrameStack,
    ctc_segments,
    lengths_to_mask,
)
from rescore.deep.mixers import GaussianAdaptiveAttention, MixerBlock, SelfAttentionMixer, SummaryMixing
from rescore.deep.model import normalize_target

LENGTHS = [37, 64, 9]


def padded_batch(dim: int = 32, lengths: list[int] = LENGTHS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    x = torch.randn(len(lengths), t, dim, generator=g)
    mask = lengths_to_mask(torch.tensor(lengths), t)
    return x * mask.unsqueeze(-1) + 100.0 * (~mask).unsqueeze(-1), mask  # loud garbage in the padding


def check_padding_invariance(module, x: torch.Tensor, mask: torch.Tensor) -> None:
    """Each utterance of the padded batch gets what it gets alone, and padding outputs are zero."""
    module.eval()
    with torch.no_grad():
        out = module(x, mask)
        y, ymask = out if isinstance(out, tuple) else (out, mask)
        for i, n in enumerate(mask.sum(1).tolist()):
            alone = module(x[i : i + 1, :n], mask[i : i + 1, :n])
            a, amask = alone if isinstance(alone, tuple) else (alone, mask[i : i + 1, :n])
            m = int(amask.sum())
            assert int(ymask[i].sum()) == m
            torch.testing.assert_close(y[i, :m], a[0, :m], atol=1e-4, rtol=1e-4)
            if isinstance(out, tuple) or isinstance(module, MixerBlock):
                assert torch.all(y[i, m:] == 0)


@pytest.mark.parametrize("mixer", [SelfAttentionMixer(32, 4), SummaryMixing(32), GaussianAdaptiveAttention(32, 4)])
def test_mixers_keep_shape_and_ignore_padding(mixer):
    x, mask = padded_batch()
    assert mixer(x, mask).shape == x.shape
    check_padding_invariance(mixer, x, mask)


@pytest.mark.parametrize("kind", ["attention", "summary", "gaussian"])
def test_mixer_block_zeroes_padding(kind):
    x, mask = padded_batch()
    check_padding_invariance(MixerBlock(kind, 32, 4), x, mask)


def test_mixers_mix_tokens():
    """Changing one frame changes the others' outputs (the mixers really mix across time)."""
    x, mask = padded_batch(lengths=[20])
    for mixer in (SelfAttentionMixer(32, 4), SummaryMixing(32), GaussianAdaptiveAttention(32, 4)):
        x2 = x.clone()
        x2[0, 5] += 3.0
        assert not torch.allclose(mixer(x, mask)[0, 12], mixer(x2, mask)[0, 12])


def test_gaussian_weights_average_one_over_real_frames():
    x, mask = padded_batch()
    w = GaussianAdaptiveAttention(32, 4).weights(x, mask)
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(w[i, :n].mean(0), torch.ones_like(w[i, 0]))
        assert torch.all(w[i, n:] == 0)


def test_conv_downsample_lengths_and_padding():
    x, mask = padded_batch()
    conv = ConvDownsample(32, 16, factor=4)
    y, ymask = conv(x, mask)
    assert y.shape[-1] == 16
    assert ymask.sum(1).tolist() == [max(1, (n // 2) // 2) for n in LENGTHS]
    check_padding_invariance(conv, x, mask)
    with pytest.raises(ValueError):
        ConvDownsample(32, 16, factor=3)


def test_conv_downsample_single_frame():
    y, m = ConvDownsample(8, 8, 4)(torch.randn(1, 1, 8), torch.ones(1, 1, dtype=torch.bool))
    assert y.shape[:2] == (1, 1) and m.tolist() == [[True]]


def test_frame_stack_lengths_and_padding():
    x, mask = padded_batch()
    stack = FrameStack(32, 16, factor=4)
    y, ymask = stack(x, mask)
    assert y.shape == (3, 16, 16)
    assert ymask.sum(1).tolist() == [(n + 3) // 4 for n in LENGTHS]
    check_padding_invariance(stack, x, mask)


def one_hot_log_probs(labels: list[list[int]], vocab: int = 5) -> torch.Tensor:
    t = max(len(r) for r in labels)
    lp = torch.full((len(labels), t, vocab), -10.0)
    for i, row in enumerate(labels):
        for j, lab in enumerate(row):
            lp[i, j, lab] = 0.0
    return lp


def test_ctc_segments_drop_blanks_and_merge_repeats():
    # blank = 0: "a a _ a b b _ c" -> segments a | a | b | c (a blank separates the two a's)
    lp = one_hot_log_probs([[1, 1, 0, 1, 2, 2, 0, 3], [0, 0, 0, 0, 0, 0, 0, 0], [2, 2, 2, 0, 0, 0, 0, 0]])
    mask = lengths_to_mask(torch.tensor([8, 8, 3]), 8)
    seg, count = ctc_segments(lp, mask, blank=0)
    assert seg[0].tolist() == [0, 0, -1, 1, 2, 2, -1, 3]
    assert count.tolist() == [4, 1, 1]
    assert seg[1].tolist() == [0] * 8  # all blank: the whole utterance is one segment
    assert seg[2].tolist() == [0, 0, 0, -1, -1, -1, -1, -1]  # padding is never kept


class ConstantCTC(torch.nn.Module):
    """Constructed posteriors: returns fixed log-probs whatever the states are."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.log_probs = log_probs

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.log_probs[: x.shape[0], : x.shape[1]]


def test_ctc_compress_averages_segment_frames():
    lp = one_hot_log_probs([[1, 1, 0, 1, 2, 2, 0, 3], [4, 0, 4, 4, 0, 0, 0, 0]])
    mask = lengths_to_mask(torch.tensor([8, 5]), 8)
    x = torch.arange(2 * 8 * 2, dtype=torch.float32).view(2, 8, 2)
    comp = CTCCompress(2, 2, ConstantCTC(lp), blank=0)
    comp.proj = torch.nn.Identity()  # look at the averaged states themselves (GELU is applied after)
    y, ymask = comp(x, mask)
    assert ymask.sum(1).tolist() == [4, 2]
    expected = torch.stack([(x[0, 0] + x[0, 1]) / 2, x[0, 3], (x[0, 4] + x[0, 5]) / 2, x[0, 7]])
    torch.testing.assert_close(y[0], torch.nn.functional.gelu(expected))
    torch.testing.assert_close(y[1, :2], torch.nn.functional.gelu(torch.stack([x[1, 0], (x[1, 2] + x[1, 3]) / 2])))
    assert torch.all(y[1, 2:] == 0)
    assert not list(comp.state_dict().keys()).count("ctc")  # the head is external, not saved with the bridge


@pytest.mark.parametrize("reducer", ["conv", "stack"])
@pytest.mark.parametrize("mixer", ["none", "attention", "summary", "gaussian"])
def test_bridge_shapes_and_padding(reducer, mixer):
    cfg = BridgeConfig(in_dim=32, out_dim=24, reducer=reducer, mixer=mixer, dim=32, heads=4, proj_hidden=48)
    bridge = Bridge(cfg)
    x, mask = padded_batch()
    y, ymask = bridge(x, mask)
    assert y.shape == (3, ymask.shape[1], 24)
    assert ymask.sum(1).tolist() == [max(1, n // 4) if reducer == "conv" else (n + 3) // 4 for n in LENGTHS]
    check_padding_invariance(bridge, x, mask)


def test_bridge_with_ctc_reducer_and_bad_options():
    lp = one_hot_log_probs([[1, 1, 0, 1, 2, 2, 0, 3] * 8] * 3)
    cfg = BridgeConfig(in_dim=32, out_dim=24, reducer="ctc", mixer="summary", dim=32, heads=4, proj_hidden=48)
    x, mask = padded_batch()
    y, ymask = Bridge(cfg, ctc=ConstantCTC(lp))(x, mask)
    assert y.shape[-1] == 24 and ymask.shape[0] == 3
    with pytest.raises(ValueError, match="CTC head"):
        Bridge(cfg)
    with pytest.raises(ValueError, match="mixer"):
        Bridge(BridgeConfig(mixer="lstm"))
    with pytest.raises(ValueError, match="reducer"):
        Bridge(BridgeConfig(reducer="pool"))


def test_normalize_target():
    assert (
        normalize_target("Author of the danger trail, Philip Steels, etc.")
        == "author of the danger trail philip steels etc"
    )
    assert normalize_target("G M E F THREE NINE") == "g m e f three nine"
    assert normalize_target("  It's  ", "none") == "It's"
    with pytest.raises(ValueError, match="lower, whisper, none"):
        normalize_target("x", "upper")


def test_normalize_target_whisper_writes_hypothesis_and_reference_alike():
    """The WER's normalizer as the target style: a first pass's digits and a corpus's number words, British
    and American spellings, titles and contractions meet in one form, so copying a right hypothesis is the
    right target."""
    for hyp, ref in [
        ("Chapter 17, when Wendy grew up.", "CHAPTER SEVENTEEN WHEN WENDY GREW UP"),
        ("The colour of 1,000 men.", "THE COLOR OF ONE THOUSAND MEN"),
        ("Mr. Smith isn't here.", "MISTER SMITH IS NOT HERE"),
    ]:
        assert normalize_target(hyp, "whisper") == normalize_target(ref, "whisper")
        assert normalize_target(hyp, "lower") != normalize_target(ref, "lower")
    assert normalize_target("Chapter 17, when Wendy grew up.", "whisper") == "chapter 17 when wendy grew up"


# --------------------------------------------------------------------------- the real path


@pytest.fixture(scope="module")
def tiny_examples(tiny_manifest):
    from rescore.deep.examples import load_examples

    issues: list[str] = []
    ex = load_examples([str(tiny_manifest)], "whisper-tiny.en", limit=4, on_issue=issues.append)
    assert len(ex) == 4, issues
    return sorted(ex, key=lambda e: e.states.shape[0])[:3]


@pytest.mark.model
def test_two_steps_lower_the_loss_and_save_load_round_trip(tiny_examples, tmp_path):
    from rescore.deep.inference import dev_loss
    from rescore.deep.model import SpeechLLMConfig, build_model, load_model
    from rescore.deep.train import TrainConfig, train

    torch.manual_seed(0)
    mcfg = SpeechLLMConfig(bridge=BridgeConfig(mixer="summary", layers=1))
    model = build_model(mcfg)
    before = dev_loss(model, tiny_examples, 3, "cpu")
    cfg = TrainConfig(out=str(tmp_path / "m"), model=mcfg, batch_size=3, lr=2e-3, warmup_steps=1, max_steps=2)
    summary = train(cfg, model=model, examples=(tiny_examples, tiny_examples), on_issue=lambda m: None)
    assert summary["step"] == 2
    after = summary["dev_loss"]
    assert after < before, (before, after)
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]

    loaded = load_model(tmp_path / "m")
    for k, v in model.trainable_state_dict().items():
        torch.testing.assert_close(loaded.trainable_state_dict()[k], v)
    assert dev_loss(loaded, tiny_examples, 3, "cpu") == pytest.approx(after, rel=1e-4)

    # batched (left-padded) beam search gives each utterance what it gets alone
    from rescore.deep.inference import transcribe_examples

    batched = [h for _, h in transcribe_examples(loaded, tiny_examples, 3, "cpu", 2, 2, max_new_tokens=8)]
    alone = [h for _, h in transcribe_examples(loaded, tiny_examples[:1], 1, "cpu", 2, 2, max_new_tokens=8)]
    assert len(batched) == 3 and all(len(h) == 2 for h in batched)
    assert batched[0][0][1] == alone[0][0][1]
    assert batched[0][0][2] == pytest.approx(alone[0][0][2], abs=1e-2)

    # resume: a rerun with more steps continues from the checkpoint
    cfg.max_steps = 3
    summary = train(cfg, model=loaded, examples=(tiny_examples, tiny_examples), on_issue=lambda m: None)
    assert summary["step"] == 3


def test_ctc_reducer_with_the_recognizers_ctc_head():
    """The CTC head of rescore.recognize.ctc (untrained here) drives CTC compression through the adapter."""
    from rescore.deep.model import CTCHeadAdapter
    from rescore.recognize.ctc_head import CTCHeadConfig, build_ctc_head

    torch.manual_seed(0)
    head = build_ctc_head(CTCHeadConfig(input_dim=32, dim=32, layers=1, heads=4, ff_dim=64, dropout=0.0)).eval()
    adapter = CTCHeadAdapter(head)
    x, mask = padded_batch()
    lp = adapter(x, mask)
    assert lp.shape[:2] == x.shape[:2] and adapter.stride == 2
    torch.testing.assert_close(lp[:, 0], lp[:, 1])  # one head frame covers two encoder frames
    cfg = BridgeConfig(in_dim=32, out_dim=24, reducer="ctc", mixer="gaussian", dim=32, heads=4, proj_hidden=48)
    bridge = Bridge(cfg, ctc=adapter)
    check_padding_invariance(bridge, x, mask)
    assert not any("ctc" in k for k in bridge.state_dict())


def test_beams_are_ordered_by_the_score_the_search_ranks_by():
    """Length-normalised beam search: a long hypothesis with the lower sum but the better per-step score wins."""
    from rescore.deep.model import BeamHypothesis, order_beams

    short = BeamHypothesis("a", [1], -3.0, 2)  # -1.5 per step
    long = BeamHypothesis("a b c", [1, 2, 3], -4.0, 4)  # -1.0 per step: first, though its sum is lower
    tie = BeamHypothesis("a c", [1, 3], -3.0, 2)
    assert order_beams([short, long, tie]) == [long, short, tie]


@pytest.mark.model
def test_deep_records_carry_am_norm_for_the_default_rerank(tmp_path, tiny_manifest):
    """An (untrained) speech-LLM as a recognizer: its records rank with ``rerank``'s default weights."""
    from rescore.deep.model import SpeechLLMConfig, build_model, save_model
    from rescore.deep.recognize import DeepFusionRecognizer
    from rescore.io.datasets import load_dataset
    from rescore.rerank.ranker import Ranker, Weights, default_weights, words

    torch.manual_seed(0)
    save_model(build_model(SpeechLLMConfig(bridge=BridgeConfig(mixer="summary", layers=1))), tmp_path / "m")
    utts = sorted(load_dataset(tiny_manifest).utterances, key=lambda u: u.duration or 0.0)[:2]
    recognizer = DeepFusionRecognizer(tmp_path / "m", beam_size=3, nbest=3, batch_size=2, device="cpu", threads=2)
    records = list(recognizer.recognize(utts))
    assert [r.id for r in records] == [u.id for u in utts] and all(r.ok for r in records)
    for r in records:
        assert set(r.timing) == {"deep"}  # the pipeline stage's name, which the run report sums
        norms = [h.scores["am_norm"] for h in r.hypotheses]
        assert len(norms) == 3 and norms == sorted(norms, reverse=True)  # reported in the search's order
        for h in r.hypotheses:
            assert h.scores["am_tokens"] in {len(h.tokens), len(h.tokens) + 1}  # + the eos when it ended
            assert h.scores["am_norm"] == pytest.approx(h.scores["am"] / h.scores["am_tokens"])
        weights = default_weights([])
        Ranker(weights).rank(r)
        totals = [h.scores["am_norm"] + weights.length_bonus * words(h.text) for h in r.hypotheses]
        assert [h.scores["total"] for h in r.hypotheses] == pytest.approx(totals)
        assert r.chosen == max(range(3), key=lambda j: (totals[j], -j))
        Ranker(Weights({"am_norm": 1.0})).rank(r)  # the acoustic score alone keeps the search's best
        assert r.chosen == 0
