"""Deep fusion by gated cross-attention: closed gates leave the LM exactly as it is, the Whisper K/V start,
beam-expanded memory, and on the real path the step-0 model equals the text-only prompt's LM; the prediction
memory; decoding; training; the deep stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rescore.deep.blocks import BlockMemory, GatedCrossAttention, init_from_whisper
from rescore.deep.model import Batch, collate
from rescore.deep.xattn import XAttnLM
from rescore.deep.xattn_config import XAttnConfig, unique_hypotheses
from rescore.deep.xattn_decode import clean_reply


def block(dim: int = 24, enc: int = 16) -> GatedCrossAttention:
    torch.manual_seed(0)
    return GatedCrossAttention(dim, enc, heads=2, head_dim=8).eval()


def memory(b: GatedCrossAttention, lengths: list[int], enc: int = 16) -> tuple:
    states = torch.randn(len(lengths), max(lengths), enc)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    k, v = b.keys_values(states)
    return states, mask, (k, v, mask)


def test_closed_gates_return_the_input_exactly():
    b = block()
    h = torch.randn(2, 5, 24) * 30
    _, _, kv = memory(b, [7, 3])
    assert torch.equal(b(h, kv), h)
    with torch.no_grad():
        b.attn_gate.fill_(0.5)
    assert not torch.allclose(b(h, kv), h)


def test_padding_frames_do_not_reach_the_output():
    b = block()
    with torch.no_grad():
        b.attn_gate.fill_(1.0)
    h = torch.randn(2, 4, 24)
    states, mask, kv = memory(b, [6, 3])
    garbage = states.clone()
    garbage[1, 3:] = 1e3
    k, v = b.keys_values(garbage)
    torch.testing.assert_close(b(h, kv), b(h, (k, v, mask)))
    alone = b(h[1:], b.keys_values(states[1:, :3]) + (mask[1:, :3],))
    torch.testing.assert_close(b(h, kv)[1:], alone)


def test_memory_is_repeated_for_beams():
    blocks = torch.nn.ModuleList([block()])
    states, mask, _ = memory(blocks[0], [5, 2])
    m = BlockMemory(blocks, states, mask)
    k, v, mk = m.get(0, 6)  # 2 utterances x 3 beams, as generate expands them
    assert k.shape[0] == 6 and torch.equal(k[0], k[2]) and torch.equal(mk[3], mask[1])
    assert BlockMemory(blocks, None, None).get(0, 6) is None


def test_whisper_kv_start_maps_layers_and_checks_shapes():
    blocks = [GatedCrossAttention(24, 16, 2, 8) for _ in range(3)]
    layers = [
        {"k.weight": torch.full((16, 16), float(i)), "v.weight": torch.full((16, 16), -i), "v.bias": torch.ones(16) * i}
        for i in range(4)
    ]
    init_from_whisper(blocks, layers)
    assert [float(b.k.weight[0, 0].detach()) for b in blocks] == [0.0, 2.0, 3.0]  # round(j * 3 / 2): 0, 2, 3
    with pytest.raises(ValueError, match="do not fit"):
        init_from_whisper([GatedCrossAttention(24, 16, 3, 8)], layers)


def test_fit_width_sizes_the_heads_to_the_whisper_weights():
    assert (XAttnConfig().fit_width(512).heads, XAttnConfig().fit_width(512).enc_dim) == (8, 512)
    assert XAttnConfig(kv_init=None, heads=4).fit_width(512).heads == 4  # fresh K/V: the heads as configured


@pytest.mark.model
def test_whisper_base_kv_fit_base_width_blocks():
    """whisper-base states (512 wide) with K/V from base's decoder: the blocks take the real weights as they are."""
    from rescore.deep.blocks import whisper_cross_kv

    layers = whisper_cross_kv("whisper-base")
    cfg = XAttnConfig(encoder="whisper-base", kv_init="whisper-base").fit_width(512)
    blocks = [GatedCrossAttention(576, cfg.enc_dim, cfg.heads, cfg.head_dim) for _ in range(2)]
    init_from_whisper(blocks, layers)
    torch.testing.assert_close(blocks[1].v.weight, layers[-1]["v.weight"])


def test_prompt_hypotheses_and_reply_cleaning():
    assert unique_hypotheses(["Enter 989.", "enter 989", "", "Enter, 1989"]) == ["enter 989", "enter 1989"]
    assert clean_reply("- the cat sat\n- the cat") == "the cat sat"
    assert clean_reply("\n  hello world ") == "hello world"


def test_config_round_trip():
    c = XAttnConfig(every=4, mixer="summary", audio=False)
    assert XAttnConfig.from_dict(c.to_dict()) == c
    assert c.attend == "all"
    reply = XAttnConfig(attend="reply")
    assert XAttnConfig.from_dict(reply.to_dict()) == reply
    old = {k: v for k, v in reply.to_dict().items() if k != "attend"}  # a model saved before ``attend``
    assert XAttnConfig.from_dict(old).attend == "all"
    own = XAttnConfig(encoder_window="own")
    assert XAttnConfig.from_dict(own.to_dict()) == own
    before = {k: v for k, v in own.to_dict().items() if k != "encoder_window"}  # saved before the window choice
    assert XAttnConfig.from_dict(before).encoder_window == "padded"


def test_memory_counts_columns_over_calls():
    """A prompt of 5 columns, then one token per step: with attend_from 4 the blocks skip the first 4 columns."""
    m = BlockMemory(torch.nn.ModuleList(), None, None, attend_from=4)
    m.begin_call(5)
    assert m.skipped(5) == 4
    m.begin_call(1)
    assert m.skipped(1) == 0
    cached = BlockMemory(torch.nn.ModuleList(), None, None, attend_from=7, offset=7)  # the prompt in the LM's cache
    cached.begin_call(3)
    assert cached.skipped(3) == 0


# --------------------------------------------------------------------------- the real path


HYPS = [["the cat sat on the mat", "the cat sat on a mat", "a cat sat on the mat"], ["hello world", "hello word"]]


@pytest.fixture(scope="module")
def real_model():
    from rescore.deep.xattn import build_xattn

    torch.manual_seed(0)
    return build_xattn(XAttnConfig(every=10, max_hypotheses=3)).eval()


@pytest.fixture(scope="module")
def audio_batch(real_model, tiny_manifest):
    from rescore.io.datasets import load_dataset
    from rescore.whisper.encoder import WhisperEncoder

    utts = sorted(load_dataset(tiny_manifest).utterances, key=lambda u: u.duration or 0.0)[:2]
    states = [s for _, s, _ in WhisperEncoder("whisper-tiny.en").states(utts)]
    return collate([u.id for u in utts], [s.astype(np.float32) for s in states], ["", ""], HYPS)


def test_whisper_kv_are_the_start(real_model):
    from rescore.deep.blocks import whisper_cross_kv

    layers = whisper_cross_kv("whisper-tiny.en")
    assert len(real_model.blocks) == 3 and real_model.where == [9, 19, 29]
    torch.testing.assert_close(real_model.blocks[0].k.weight, layers[0]["k.weight"])
    torch.testing.assert_close(real_model.blocks[2].v.bias, layers[3]["v.bias"])


def test_step_zero_equals_the_text_only_prompt(real_model, audio_batch):
    """Gates closed: the same logits as the plain LM on the text prompt, and the same greedy text."""
    model = real_model
    ids, attn, positions, _ = model.build_inputs(audio_batch, with_targets=False)
    with torch.no_grad():
        fused = model.logits(audio_batch)
        plain = model.llm(input_ids=ids, attention_mask=attn, position_ids=positions).logits  # no hooks active
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    real = attn.bool()
    assert torch.equal(fused[real], plain[real])

    greedy = model.generate(audio_batch, beam_size=1, nbest=1, max_new_tokens=12)
    for i, hyps in enumerate(HYPS):
        one = torch.tensor([model.prompt_ids(hyps)])
        out = model.llm.generate(one, max_new_tokens=12, do_sample=False, eos_token_id=model.stop_ids)
        text = model.tokenizer.decode(out[0, one.shape[1] :], skip_special_tokens=True).strip()
        assert greedy[i][0].text == clean_reply(text) and greedy[i][0].text

    with torch.no_grad():  # an open gate: now the audio changes the output, the text-only LM does not
        model.blocks[1].attn_gate.fill_(0.5)
        opened = model.logits(audio_batch)
        model.blocks[1].attn_gate.fill_(0.0)
    assert not torch.allclose(opened[real], plain[real])


def test_choose_ranks_the_prompt_hypotheses_by_the_model_log_prob(real_model, audio_batch):
    """Choosing: each distinct hypothesis scored as the transcript (its tokens and the end), best first by log-prob
    per step; at step 0 that is the text-only LM's log-prob of it after the prompt, computed here one sequence
    at a time."""
    model = real_model
    chosen = model.choose(audio_batch, nbest=8)
    for hyps, ranked in zip(HYPS, chosen, strict=True):
        assert sorted(h.text for h in ranked) == sorted(hyps)  # distinct already: each one, in its own form
        assert [h.per_step for h in ranked] == sorted((h.per_step for h in ranked), reverse=True)
        for h in ranked:
            prompt, target = model.prompt_ids(hyps), model.target_ids(h.text)
            ids = torch.tensor([prompt + target])
            with torch.no_grad():
                logp = model.llm(input_ids=ids).logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)
            expected = float(logp.gather(1, torch.tensor(target).unsqueeze(1)).sum())
            assert h.steps == len(target) and h.tokens == target[:-1]
            assert abs(h.score - expected) < 1e-3 * max(1.0, abs(expected))
    with torch.no_grad():  # an open gate: the audio moves the scores
        model.blocks[0].attn_gate.fill_(0.5)
        opened = model.choose(audio_batch, nbest=8)
        model.blocks[0].attn_gate.fill_(0.0)
    before = {h.text: h.score for hs in chosen for h in hs}
    assert any(abs(before[h.text] - h.score) > 1e-4 for hs in opened for h in hs)


def test_reply_pass_equals_one_pass_over_prompt_and_reply(real_model, audio_batch):
    """attend="reply" with open gates: training's two passes (the prompt cached without the blocks, then the reply
    through them, batched and padded) give the logits of one pass over each utterance's prompt and transcript
    with the blocks from the prompt's last token on, which is what generation runs."""
    model = real_model
    texts = ["the cat sat on the mat", "hello world"]
    batch = Batch(audio_batch.ids, audio_batch.states, audio_batch.mask, texts, HYPS)
    with torch.no_grad():
        for b in model.blocks:
            b.attn_gate.fill_(0.5)
        model.config.attend = "reply"  # the same blocks; the config says where they act
        try:
            logits, target, rows = model._target_logits(batch)
            for i, hyps in enumerate(HYPS):
                prompt, tgt = model.prompt_ids(hyps), model.target_ids(texts[i])
                ids = torch.tensor([prompt + tgt])
                n = int(batch.mask[i].sum())
                with model.attending(batch.states[i : i + 1, :n], batch.mask[i : i + 1, :n], len(prompt) - 1):
                    one = model.llm(input_ids=ids).logits[0, len(prompt) - 1 : -1]
                torch.testing.assert_close(logits[rows == i], one.float(), atol=2e-4, rtol=1e-4)
                assert target[rows == i].tolist() == tgt
            ranked = model.choose(audio_batch, nbest=8)  # one prompt cache per utterance, selected per candidate
            for i, hyps in enumerate(HYPS):
                n, prompt = int(batch.mask[i].sum()), model.prompt_ids(hyps)
                for h in ranked[i]:
                    tgt = model.target_ids(h.text)
                    with model.attending(batch.states[i : i + 1, :n], batch.mask[i : i + 1, :n], len(prompt) - 1):
                        one = model.llm(input_ids=torch.tensor([prompt + tgt])).logits[0, len(prompt) - 1 : -1]
                    expected = float(one.float().log_softmax(-1).gather(1, torch.tensor(tgt).unsqueeze(1)).sum())
                    assert abs(h.score - expected) < 1e-3 * max(1.0, abs(expected))
            plain = model.llm(input_ids=torch.tensor([model.prompt_ids(HYPS[0]) + model.target_ids(texts[0])])).logits
            assert not torch.allclose(logits[rows == 0], plain[0, len(model.prompt_ids(HYPS[0])) - 1 : -1], atol=1e-3)
        finally:
            model.config.attend = "all"
            for b in model.blocks:
                b.attn_gate.fill_(0.0)


def test_choose_shares_each_utterances_prompt_pass_with_the_blocks_on(real_model, audio_batch):
    """attend="all" with open gates: choosing runs each utterance's prompt through the blocks once into a cache and
    scores every candidate from it; the scores equal one pass per candidate over prompt and transcript. Two
    utterances showing the same hypotheses keep their own prompt pass (the blocks read each one's audio)."""
    model = real_model
    same = Batch(audio_batch.ids, audio_batch.states, audio_batch.mask, ["", ""], [HYPS[0], HYPS[0]])
    with torch.no_grad():
        for b in model.blocks:
            b.attn_gate.fill_(0.5)
            b.ffn_gate.fill_(0.3)
        try:
            for batch in (audio_batch, same):
                ranked = model.choose(batch, nbest=8)
                for i, hyps in enumerate(batch.hypotheses):
                    n, prompt = int(batch.mask[i].sum()), model.prompt_ids(hyps)
                    assert sorted(h.text for h in ranked[i]) == sorted(hyps)
                    for h in ranked[i]:
                        tgt = model.target_ids(h.text)
                        with model.attending(batch.states[i : i + 1, :n], batch.mask[i : i + 1, :n]):
                            one = model.llm(input_ids=torch.tensor([prompt + tgt])).logits[0, len(prompt) - 1 : -1]
                        expected = float(one.float().log_softmax(-1).gather(1, torch.tensor(tgt).unsqueeze(1)).sum())
                        assert abs(h.score - expected) < 1e-3 * max(1.0, abs(expected))
            scores = [{h.text: h.score for h in hs} for hs in model.choose(same, nbest=8)]
            assert any(abs(scores[0][t] - scores[1][t]) > 1e-3 for t in HYPS[0])
        finally:
            for b in model.blocks:
                b.attn_gate.fill_(0.0)
                b.ffn_gate.fill_(0.0)


@pytest.mark.parametrize("attend", ["all", "reply"])
def test_beam_search_from_the_cached_prompt_equals_one_over_the_whole_prompt(real_model, audio_batch, attend):
    """Open gates, beam 3: generating from each utterance's prompt run once and cached (repeated per beam) gives the
    beams of generating over the whole prompt once per beam, as `generate` did before (``cached_prompt=False``: the
    plain HF beam search under the hooks)."""
    model = real_model
    closed = model.generate(audio_batch, beam_size=3, nbest=3, max_new_tokens=10, min_length_ratio=0.0)
    with torch.no_grad():
        for b in model.blocks:
            b.attn_gate.fill_(0.5)
            b.ffn_gate.fill_(0.3)
        model.config.attend = attend
        try:
            cached = model.generate(audio_batch, beam_size=3, nbest=3, max_new_tokens=10, min_length_ratio=0.0)
            whole = model.generate(
                audio_batch, beam_size=3, nbest=3, max_new_tokens=10, min_length_ratio=0.0, cached_prompt=False
            )
            for got, want in zip(cached, whole, strict=True):
                assert [h.tokens for h in got] == [h.tokens for h in want]
                for g, w in zip(got, want, strict=True):
                    assert g.score == pytest.approx(w.score, abs=1e-3, rel=1e-4)
            before = [h.score for hs in closed for h in hs]  # the open gates change the beams: the test has teeth
            assert any(abs(a - b) > 1e-3 for a, b in zip(before, [h.score for hs in cached for h in hs], strict=True))
        finally:
            model.config.attend = "all"
            for b in model.blocks:
                b.attn_gate.fill_(0.0)
                b.ffn_gate.fill_(0.0)


@pytest.mark.model
def test_training_steps_and_save_load_round_trip(tmp_path, audio_batch):
    from rescore.deep.examples import Example
    from rescore.deep.train import TrainConfig, train
    from rescore.deep.xattn import load_deep_model

    ex = [
        Example(f"u{i}", audio_batch.states[i, : int(audio_batch.mask[i].sum())].numpy().astype(np.float16), t, h)
        for i, (t, h) in enumerate(zip(["the cat sat on the mat", "hello world"], HYPS, strict=True))
    ]
    cfg = TrainConfig(
        out=str(tmp_path / "m"),
        model=XAttnConfig(every=15),
        batch_size=2,
        lr=1e-3,
        warmup_steps=1,
        max_steps=2,
        eval_every=1,
        keep_best=True,
    )
    summary = train(cfg, examples=(ex, ex), on_issue=lambda m: None)
    assert summary["step"] == 2 and len(summary["gates"]) == 2
    assert all(abs(a) > 0 for a, _ in summary["gates"])  # the gates moved off zero
    loaded = load_deep_model(tmp_path / "m")
    assert len(loaded.blocks) == 2 and loaded.config.every == 15


def test_held_out_keeps_utterances_whole():
    from rescore.deep.examples import Example, held_out

    z = np.zeros((2, 4), dtype=np.float16)
    ex = [Example(f"{lst}/u{i}", z, "t", ["t"], f"u{i}") for i in range(20) for lst in ("tiny", "base")]
    train_ex, dev_ex = held_out(ex, 0.1, seed=0)
    dev_groups = {e.group for e in dev_ex}
    assert len(dev_groups) == 2 and len(dev_ex) == 4
    assert not dev_groups & {e.group for e in train_ex}


def test_stage_reads_records_for_a_cross_attention_model(tmp_path):
    import json

    from rescore.stages.deep import DeepOptions, DeepStage

    xattn, bridge = tmp_path / "x", tmp_path / "b"
    for folder, cfg in ((xattn, {"xattn": {}}), (bridge, {"speech_llm": {}})):
        folder.mkdir()
        (folder / "deep-config.json").write_text(json.dumps(cfg))
    assert DeepStage(DeepOptions(enabled=True, checkpoint=str(xattn))).source == "records"
    assert DeepStage(DeepOptions(enabled=True, checkpoint=str(bridge))).source == "audio"


def test_whisper_text_norm_gives_one_target_and_one_prompt_line_per_scored_form(real_model):
    """``text_norm="whisper"``: a first pass's "Chapter 17," and a corpus's "CHAPTER SEVENTEEN" are one target,
    and hypotheses that differ only in such conventions are one line of the prompt and one candidate."""
    norm = real_model.config.text_norm
    real_model.config.text_norm = "whisper"
    try:
        assert real_model.target_ids("CHAPTER SEVENTEEN") == real_model.target_ids("Chapter 17,")
        assert real_model.prompt_ids(["Chapter 17,", "chapter seventeen"]) == real_model.prompt_ids(["chapter 17"])
        assert real_model.candidates(["Chapter 17,", "chapter seventeen", "Chapter 70."]) == {
            "chapter 17": "Chapter 17,",
            "chapter 70": "Chapter 70.",
        }
    finally:
        real_model.config.text_norm = norm
    assert real_model.target_ids("CHAPTER SEVENTEEN") != real_model.target_ids("Chapter 17,")


def test_prompt_puts_the_reranked_choice_first():
    from rescore.deep.recognize import prompt_texts
    from rescore.records import Hypothesis, NBest

    r = NBest(id="a", hypotheses=[Hypothesis("x", [], {}), Hypothesis("y", [], {}), Hypothesis("z", [], {})])
    assert prompt_texts(r) == ["x", "y", "z"]
    r.chosen = 2
    assert prompt_texts(r) == ["z", "x", "y"]


def test_cli_train_rejects_an_unknown_architecture(tmp_path):
    from typer.testing import CliRunner

    from rescore.cli import app

    f = tmp_path / "n.jsonl"
    f.write_text("")
    result = CliRunner().invoke(app, ["deep", "train", "--train", str(f), "--arch", "lstm", "-o", str(tmp_path / "m")])
    assert result.exit_code != 0 and "xattn or bridge" in result.output


def test_cli_kv_init_follows_the_encoder(deep_train_cli):
    """``--kv-init encoder`` (the encoder recipe's) starts K/V from the ``--encoder`` model; a name or none as
    given. The training itself is replaced (it is tested on real models above): this checks the options' mapping
    only."""
    run, seen = deep_train_cli.run, deep_train_cli.configs
    enc = ["--recipe", "encoder"]
    for extra in (["--encoder", "whisper-base"], [], ["--kv-init", "none"], ["--kv-init", "whisper-tiny.en"]):
        result = run([*enc, *extra])
        assert result.exit_code != 0 and "stopped before training" in result.output
    assert [c.model.kv_init for c in seen] == ["whisper-base", "whisper-tiny.en", None, "whisper-tiny.en"]

    seen.clear()
    own = ["--attend", "reply", "--precision", "bf16", "--encoder-window", "own", "--text-norm", "whisper"]
    for extra in ([], own):
        assert "stopped before training" in run([*enc, *extra]).output
    options = [(c.model.attend, c.precision, c.model.encoder_window, c.model.text_norm) for c in seen]
    assert options == [("all", "auto", "padded", "lower"), ("reply", "bf16", "own", "whisper")]
    for bad in (["--attend", "prompt"], ["--precision", "fp16"], ["--encoder-window", "30s"], ["--text-norm", "upper"]):
        result = run(bad)
        assert result.exit_code != 0 and bad[0] in result.output


@pytest.mark.model
def test_deep_stage_rewrites_first_pass_records(tmp_path, real_model, tiny_manifest):
    """The stage over first-pass records: one new record each, in order, the input texts kept, am_norm ranked;
    a record without hypotheses fails alone."""
    from rescore.io.datasets import load_dataset
    from rescore.records import Hypothesis, NBest
    from rescore.stages.deep import DeepOptions, DeepStage

    real_model.save(tmp_path / "m")
    utts = sorted(load_dataset(tiny_manifest).utterances, key=lambda u: u.duration or 0.0)[:2]
    records = [
        NBest(id=u.id, audio=u.audio, reference=u.reference, hypotheses=[Hypothesis(u.reference or "", [], {})])
        for u in utts
    ]
    records.insert(1, NBest(id="empty", audio=utts[0].audio))
    stage = DeepStage(DeepOptions(enabled=True, checkpoint=str(tmp_path / "m"), beam_size=2, nbest=2, threads=1))
    assert stage.source == "records"
    out = stage.process(records)
    assert [r.id for r in out] == [utts[0].id, "empty", utts[1].id]
    assert not out[1].ok and out[0].ok and out[2].ok
    for r, u in zip((out[0], out[2]), utts, strict=True):
        assert r.extra["first_pass"]["texts"] == [u.reference]
        norms = [h.scores["am_norm"] for h in r.hypotheses]
        assert len(norms) == 2 and norms == sorted(norms, reverse=True)
        c = r.correction  # the answer verified as a correction: taken, or the input's own text
        assert c["proposal"] == r.hypotheses[0].text and r.text() == (c["proposal"] if c["accepted"] else u.reference)


def test_deep_stage_choosing_returns_the_first_pass_hypotheses(tmp_path, real_model, tiny_manifest):
    """decode="choose": the new record's hypotheses are the input's own distinct ones in their first-pass form,
    best first by the model's log-prob per token, which the record carries as ``am_norm``."""
    from rescore.io.datasets import load_dataset
    from rescore.records import Hypothesis, NBest
    from rescore.stages.deep import DeepOptions, DeepStage

    real_model.save(tmp_path / "m")
    u = sorted(load_dataset(tiny_manifest).utterances, key=lambda u: u.duration or 0.0)[0]
    texts = [u.reference or "", (u.reference or "").lower(), "And so on.", "and so on"]  # 2 repeats
    record = NBest(id=u.id, audio=u.audio, reference=u.reference, hypotheses=[Hypothesis(t, [], {}) for t in texts])
    options = DeepOptions(enabled=True, checkpoint=str(tmp_path / "m"), nbest=4, decode="choose", threads=1)
    (out,) = DeepStage(options).process([record])
    assert out.ok and out.recognizer["decode"] == "choose"
    assert sorted(h.text for h in out.hypotheses) == sorted([texts[0], texts[2]])
    per_token = [h.scores["am_norm"] for h in out.hypotheses]
    assert per_token == sorted(per_token, reverse=True)
    assert out.correction["proposal"] == out.hypotheses[0].text


def test_length_floor_keeps_the_stop_tokens_away_until_the_floor():
    from rescore.deep.xattn_decode import LengthFloor

    floor = LengthFloor(prompt_length=5, floors=[3, 0], beams=2, stop_ids=[7, 9])
    scores = floor(torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, 10))  # one token written
    assert torch.isinf(scores[:2, [7, 9]]).all() and not torch.isinf(scores[2:]).any()
    assert not torch.isinf(scores[:2, :7]).any()
    scores = floor(torch.zeros(4, 8, dtype=torch.long), torch.zeros(4, 10))  # three written: the floor is met
    assert not torch.isinf(scores).any()


def test_real_length_floor_in_greedy_decoding(real_model, audio_batch):
    floors = real_model.length_floors(audio_batch.hypotheses, 1.0)
    assert floors == [len(real_model.tokenizer(h[-1], add_special_tokens=False)["input_ids"]) for h in HYPS] or all(
        f > 0 for f in floors
    )
    out = real_model.generate(audio_batch, beam_size=1, nbest=1, max_new_tokens=40, min_length_ratio=1.0)
    for hyps, floor in zip(out, floors, strict=True):
        written = len(real_model.tokenizer(hyps[0].text, add_special_tokens=False)["input_ids"])
        assert written >= floor - 2  # the reply's list marker and spaces are cleaned off after decoding


def test_deep_answer_is_verified_as_a_correction():
    """Guards first, then the verifier; refused: the input record's text. A fake verifier: the logic only
    (the real path runs in test_deep_stage_rewrites_first_pass_records)."""
    from rescore.correct.verify import Verdict
    from rescore.records import Hypothesis, NBest
    from rescore.stages.deep import DeepOptions, DeepStage

    class Refuses:
        calls = 0

        def verify(self, record, proposal):
            Refuses.calls += 1
            return Verdict(True, False, "the reranked choice scores higher: not supported (-1.000)")

    stage = DeepStage.__new__(DeepStage)
    stage.opts = DeepOptions(enabled=True)
    stage._verifier = Refuses()
    source = NBest(id="u", audio="a.flac", hypotheses=[Hypothesis("the cat sat on the mat"), Hypothesis("a cat sat")])
    same = stage.verified(source, NBest(id="u", hypotheses=[Hypothesis("The cat sat on the mat.")]))
    assert same.correction["accepted"] and not same.correction["changed"] and Refuses.calls == 0
    edit = stage.verified(source, NBest(id="u", hypotheses=[Hypothesis("the cat sat on the hat")]))
    assert not edit.correction["accepted"] and edit.correction["guards_accepted"] and Refuses.calls == 1
    assert edit.text() == "the cat sat on the mat" and "verification" in edit.correction["reason"]
    stray = stage.verified(source, NBest(id="u", hypotheses=[Hypothesis("completely different words here now")]))
    assert not stray.correction["guards_accepted"] and Refuses.calls == 1 and stray.text() == "the cat sat on the mat"


@pytest.mark.model
def test_real_length_floor_choice_is_saved_with_the_model(tmp_path, real_model, tiny_manifest):
    """The floor of the lowest held-out WER goes into the model's config, and the reloaded model decodes with it."""
    import json

    from rescore.deep.examples import Example
    from rescore.deep.length_floor import save_length_floor
    from rescore.deep.xattn import load_deep_model
    from rescore.io.datasets import load_dataset
    from rescore.whisper.encoder import WhisperEncoder

    utts = sorted(load_dataset(tiny_manifest).utterances, key=lambda u: u.duration or 0.0)[:2]
    states = {u.id: s for u, s, _ in WhisperEncoder("whisper-tiny.en").states(utts)}
    examples = [Example(u.id, states[u.id], u.reference or "", [u.reference or ""], u.id) for u in utts]
    real_model.save(tmp_path / "m")
    chosen = save_length_floor(tmp_path / "m", examples, 2, "cpu")
    assert chosen["min_length_ratio"] in (0.0, 0.5, 0.7, 0.8, 0.9) and len(chosen["floor_dev_wer"]) == 5
    best = min(chosen["floor_dev_wer"].values())
    assert chosen["floor_dev_wer"][chosen["min_length_ratio"]] == best
    config = json.loads((tmp_path / "m" / "deep-config.json").read_text())
    assert config["xattn"]["min_length_ratio"] == chosen["min_length_ratio"] and "length_floor" in config
    assert load_deep_model(tmp_path / "m").config.min_length_ratio == chosen["min_length_ratio"]


def test_training_precision_names_its_autocast():
    from contextlib import nullcontext

    from rescore.deep.inference import autocast

    assert isinstance(autocast("cpu"), nullcontext) and isinstance(autocast("cpu", "fp32"), nullcontext)
    ctx = autocast("cpu", "bf16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "fp16")


def test_resuming_refuses_a_checkpoint_of_another_model(tmp_path):
    """A checkpoint of blocks that attend everywhere has the shapes of attend="reply"'s: resuming it must fail."""
    import json

    from rescore.deep.train import TrainConfig, check_same_model

    (tmp_path / "train-config.json").write_text(
        json.dumps(TrainConfig(out=str(tmp_path), model=XAttnConfig(attend="all")).to_dict())
    )
    check_same_model(tmp_path, XAttnConfig())
    with pytest.raises(ValueError, match="attend: 'all' -> 'reply'"):
        check_same_model(tmp_path, XAttnConfig(attend="reply"))


@pytest.mark.model
def test_a_model_trained_on_own_length_windows_is_decoded_on_them(tmp_path, real_model):
    """The encoder window is part of the model: its recognizer encodes (and caches) as the model was trained."""
    from rescore.deep.recognize import DeepFusionRecognizer

    window = real_model.config.encoder_window
    try:
        real_model.config.encoder_window = "own"
        real_model.save(tmp_path / "m")
    finally:
        real_model.config.encoder_window = window
    recognizer = DeepFusionRecognizer(tmp_path / "m", device="cpu", threads=1)
    assert recognizer.encoder.window == "own" and recognizer.encoder.cache.name.endswith("-own")
    assert recognizer.info["encoder_window"] == "own"


def test_cli_train_rejects_a_hypothesis_noise_share_outside_0_1(tmp_path):
    from typer.testing import CliRunner

    from rescore.cli import app

    f = tmp_path / "n.jsonl"
    f.write_text("")
    args = ["deep", "train", "--train", str(f), "--hyp-noise", "1.5", "-o", str(tmp_path / "m")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "--hyp-noise" in result.output


def test_hypothesis_noise_changes_the_real_models_training_loss_only(real_model, audio_batch):
    """The real model reads the corrupted prompt in training (its loss changes); the held-out loss reads the
    hypotheses as they are, whatever noise the run trains with."""
    from rescore.deep.examples import Example, make_batch
    from rescore.deep.inference import dev_loss
    from rescore.deep.noise import HypothesisNoise

    refs = ["the cat sat on the mat", "hello world"]
    ex = [
        Example(f"u{i}", audio_batch.states[i, : int(audio_batch.mask[i].sum())].numpy().astype(np.float16), t, h)
        for i, (t, h) in enumerate(zip(refs, HYPS, strict=True))
    ]
    noise = HypothesisNoise(examples=1.0, words=1.0).fit([*refs, "then cap sap at a map", "help word"])
    with torch.no_grad():
        clean, _ = real_model.loss(make_batch(ex, [0, 1]))
        noisy_batch = make_batch(ex, [0, 1], noise, seed="0-0-0")
        noisy, _ = real_model.loss(noisy_batch)
        held_out = dev_loss(real_model, ex, 2, "cpu")
    assert noisy_batch.hypotheses != HYPS
    assert float(noisy) > float(clean)  # the n-best no longer spell the target out
    assert held_out == pytest.approx(float(clean), rel=1e-4)


# --------------------------------------------------------------------------- prediction memory (memory="prediction")


def test_aligned_mask_reads_the_latest_state_within_the_text_seen():
    from rescore.deep.prediction_memory import aligned_mask

    # Whisper states: before any text, after "the" (3), after " cat" (7); LM columns consumed 0, 2, 3, 7, 7 chars
    mask = aligned_mask([0, 3, 7], [0, 2, 3, 7, 7], slots=4)
    assert mask.tolist() == [
        [True, False, False, False],
        [True, False, False, False],  # "th" seen: the state after "the" would tell the rest of the word
        [False, True, False, False],
        [False, False, True, False],
        [False, False, True, False],
    ]


@pytest.fixture(scope="module")
def prediction_model():
    from rescore.deep.xattn import build_xattn

    torch.manual_seed(0)
    cfg = XAttnConfig(every=10, max_hypotheses=3, attend="reply", memory="prediction", kv_init=None)
    return build_xattn(cfg).eval()


def test_prediction_memory_reads_whispers_decoder_on_the_transcript(prediction_model, audio_batch):
    """Whisper's decoder states on the transcript times its token embeddings give back the teacher-forced log-probs
    the acoustic scorer computes (up to the scorer's suppressed tokens), and each state's text offset ends where its
    token does."""
    model = prediction_model
    text = "the cat sat on the mat"
    model.reply_memory(Batch(audio_batch.ids[:1], audio_batch.states[:1], audio_batch.mask[:1], [text], HYPS[:1]), 1)
    memory = model._predictions
    assert memory is not None
    scorer = memory.scorer
    tokens = scorer.tokenize(text)
    n = int(audio_batch.mask[0].sum())
    rows, ends = memory.states(audio_batch.ids[0], audio_batch.states[0, :n], text)
    assert rows.shape == (len(tokens) + 1, memory.width) and ends == [0, 3, 7, 11, 14, 18, 22]
    states = scorer.decoder.final_states(audio_batch.states[0, :n].numpy(), scorer.prompt + tokens)
    states = states[len(scorer.prompt) - 1 :]
    emb = scorer.decoder.w["token_embedding.weight"].float()
    logp = (states @ emb.T).log_softmax(-1)
    ours = logp.gather(1, torch.tensor([*tokens, scorer.eot])[:, None])[:, 0]
    theirs = torch.tensor(scorer.token_log_probs(audio_batch.states[0, :n].numpy(), [tokens])[0], dtype=torch.float32)
    torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0.02)


def test_prediction_memory_is_causal_and_closed_gates_are_the_text_only_lm(prediction_model, audio_batch):
    """Open gates: two transcripts alike up to a word score alike up to it (no position reads Whisper's prediction
    on text it has not consumed), and differ after it; shut gates: the plain LM's log-probs."""
    model = prediction_model
    texts = ["the cat sat on the mat", "the cat ran on the mat"]
    batch = Batch(
        audio_batch.ids[:1] * 2,
        audio_batch.states[:1].repeat(2, 1, 1),
        audio_batch.mask[:1].repeat(2, 1),
        texts,
        HYPS[:1] * 2,
    )
    with torch.no_grad():
        logits, target, rows = model._target_logits(batch)
        prompt = model.prompt_ids(HYPS[0])
        plain = model.llm(input_ids=torch.tensor([prompt + model.target_ids(texts[0])])).logits[0, len(prompt) - 1 : -1]
        torch.testing.assert_close(logits[rows == 0], plain.float(), atol=2e-4, rtol=1e-4)
        for b in model.blocks:
            b.attn_gate.fill_(0.5)
        try:
            opened, _, _ = model._target_logits(batch)
        finally:
            for b in model.blocks:
                b.attn_gate.fill_(0.0)
    a, b = opened[rows == 0], opened[rows == 1]
    same = 3  # columns predicting "the", " cat", " sat"/" ran": they have consumed "", "the", "the cat"
    assert model.target_ids(texts[0])[:2] == model.target_ids(texts[1])[:2]
    torch.testing.assert_close(a[:same], b[:same], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(a[same], b[same], atol=1e-3)
    assert not torch.allclose(a[:same], logits[rows == 0][:same], atol=1e-3)  # the audio reaches them


def test_prediction_memory_model_chooses_and_refuses_to_write(prediction_model, audio_batch):
    model = prediction_model
    assert not model.writes
    ranked = model.choose(audio_batch, nbest=8)
    assert [sorted(h.text for h in r) for r in ranked] == [sorted(h) for h in HYPS]
    with pytest.raises(ValueError, match="choosing"):
        model.generate(audio_batch, beam_size=1, nbest=1, max_new_tokens=4)
    with pytest.raises(ValueError, match="attend='reply'"):
        XAttnLM(XAttnConfig(memory="prediction", kv_init=None), model.llm, model.tokenizer)


def test_prediction_memory_training_step_opens_the_gates(prediction_model, audio_batch):
    model = prediction_model
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    texts = ["the cat sat on the mat", "hello world"]
    batch = Batch(audio_batch.ids, audio_batch.states, audio_batch.mask, texts, HYPS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model.llm.eval()
    try:
        loss, n = model.loss(batch)
        loss.backward()
        assert model.blocks[0].attn_gate.grad is not None and float(model.blocks[0].attn_gate.grad.abs()) > 0
        opt.step()
        opt.zero_grad(set_to_none=True)
    finally:
        model.eval()
        model.load_trainable_state_dict(before)
    assert n == sum(len(model.target_ids(t)) for t in batch.texts)


def test_whisper_tokens_map_to_the_lm_tokens_that_start_them(prediction_model):
    from rescore.deep.prediction_memory import whisper_to_lm_tokens

    tok = prediction_model.tokenizer

    def first_id(text: str) -> int:
        return tok(text, add_special_tokens=False)["input_ids"][0]

    mid, first = whisper_to_lm_tokens([" the", "The", ",", " \ufffd", " Hello"], tok, "lower")
    assert mid.tolist() == [first_id(" the"), first_id("the"), -1, -1, first_id(" hello")]
    assert first.tolist() == [first_id("the"), first_id("the"), -1, -1, first_id("hello")]


def test_prediction_memory_carries_whispers_next_word_into_the_lm(prediction_model, audio_batch, tiny_manifest):
    """On real speech and its reference: Whisper's most likely next token, mapped, is mostly the LM's own first
    token of the reference's next word; the blocks start as reading it (values and output a scaled identity), so
    opening the last block's gate, before any training, raises the LM's log-prob of the reference."""
    import torch.nn.functional as F

    from rescore.deep.model import normalize_target
    from rescore.io.datasets import load_dataset

    model = prediction_model
    assert (model.config.enc_dim, model.config.heads) == (576, 9) and not model.writes
    utts = sorted(load_dataset(tiny_manifest).utterances, key=lambda u: u.duration or 0.0)[:2]
    refs = [normalize_target(u.reference or "", "lower") for u in utts]
    batch = Batch(audio_batch.ids, audio_batch.states, audio_batch.mask, refs, HYPS)
    model.reply_memory(batch, 1)
    memory = model._predictions
    scorer = memory.scorer
    hits = words = 0
    for i, ref in enumerate(refs):
        n = int(audio_batch.mask[i].sum())
        tokens = scorer.tokenize(ref)
        raw = scorer.decoder.final_states(audio_batch.states[i, :n].numpy(), scorer.prompt + tokens)
        predicted = memory.predicted(raw[len(scorer.prompt) - 1 :])
        rows, _ = memory.states(audio_batch.ids[i], audio_batch.states[i, :n], ref)
        assert rows.shape == (len(tokens) + 1, 576)
        ref_words = ref.split()
        for k, word in enumerate(ref_words):  # the state before word k has consumed the Whisper tokens of words < k
            at = len(scorer.tokenize(" ".join(ref_words[:k]))) if k else 0
            lm_first = model.tokenizer((" " if k else "") + word, add_special_tokens=False)["input_ids"][0]
            hits += int(predicted[at]) == lm_first
            words += 1
    assert hits >= 0.7 * words, (hits, words)
    last = model.blocks[-1]
    m = torch.randn(1, 1, 576)
    with torch.no_grad():
        read = last.out(last.v(m))  # the scaled identity: every coordinate scaled alike, by more than 1
    scale = float(read[0, 0, 0] / m[0, 0, 0])
    torch.testing.assert_close(read, scale * m, atol=1e-4, rtol=1e-4)
    assert scale > 1
    with torch.no_grad():
        logits, target, _ = model._target_logits(batch)
        shut = -F.cross_entropy(logits, target)
        last.attn_gate.fill_(0.2)
        try:
            logits, target, _ = model._target_logits(batch)
        finally:
            last.attn_gate.fill_(0.0)
        opened = -F.cross_entropy(logits, target)
    assert float(opened) > float(shut) + 0.05, (float(shut), float(opened))


def test_deep_stage_chooses_by_default_with_a_model_that_cannot_write(tmp_path, prediction_model, tiny_manifest):
    """decode "auto" (the default): a model over Whisper's decoder predictions chooses, on the real path."""
    from rescore.io.datasets import load_dataset
    from rescore.records import Hypothesis, NBest
    from rescore.stages.deep import DeepOptions, DeepStage

    prediction_model.save(tmp_path / "m")
    u = sorted(load_dataset(tiny_manifest).utterances, key=lambda u: u.duration or 0.0)[0]
    texts = [u.reference or "", "and so on"]
    record = NBest(id=u.id, audio=u.audio, reference=u.reference, hypotheses=[Hypothesis(t, [], {}) for t in texts])
    stage = DeepStage(DeepOptions(enabled=True, checkpoint=str(tmp_path / "m"), verify=False, threads=1))
    (out,) = stage.process([record])
    assert out.ok and out.recognizer["decode"] == "choose"
    assert sorted(h.text for h in out.hypotheses) == sorted(texts)


def test_cli_default_recipe_is_the_prediction_model_the_benchmark_trains(deep_train_cli):
    """No options: the ``prediction`` recipe, built as eval/bench_deep.py builds it (``recipes.xattn_config``); an
    option given explicitly wins over the recipe; the bridge starts from the ``encoder`` recipe; an unknown recipe is
    refused."""
    from rescore.deep.recipes import RECIPES, xattn_config

    run, seen = deep_train_cli.run, deep_train_cli.configs
    assert "stopped before training" in run([]).output
    (cfg,) = seen
    assert cfg.model.to_dict() == xattn_config(RECIPES["prediction"]).to_dict()
    fields = ("memory", "encoder", "encoder_window", "attend", "kv_init", "text_norm")
    assert [getattr(cfg.model, f) for f in fields] == ["prediction", "whisper-base", "own", "reply", None, "whisper"]
    assert cfg.hyp_noise == 0.5 and cfg.model.audio

    seen.clear()
    for extra in (["--hyp-noise", "0", "--encoder", "whisper-tiny.en"], ["--recipe", "encoder"], ["--arch", "bridge"]):
        assert "stopped before training" in run(extra).output
    given, encoder, bridge = seen
    assert (given.hyp_noise, given.model.encoder, given.model.memory) == (0.0, "whisper-tiny.en", "prediction")
    expected = RECIPES["encoder"]
    assert (encoder.model.memory, encoder.model.kv_init, encoder.model.attend) == ("encoder", "whisper-tiny.en", "all")
    assert (bridge.model.encoder, bridge.model.text_norm) == (expected.encoder, expected.text_norm)
    result = run(["--recipe", "frames"])
    assert result.exit_code != 0 and "--recipe" in result.output


def test_cli_prediction_recipe_refuses_options_made_for_encoder_frames(deep_train_cli):
    """Whisper's predictions are aligned to the reply's text: the blocks act on the reply only, with fresh K/V and no
    mixer; the model's own rule refuses the rest, naming the recipe."""
    run, seen = deep_train_cli.run, deep_train_cli.configs
    for bad in (["--attend", "all"], ["--kv-init", "encoder"], ["--mixer", "summary"]):
        result = run(bad)
        assert result.exit_code != 0 and "--recipe prediction" in result.output and "attend='reply'" in result.output
    assert "stopped before training" in run(["--recipe", "encoder", "--mixer", "summary"]).output
    assert [c.model.mixer for c in seen] == ["summary"]
    for removed in (["--q-init"], ["--aux-weight", "0.1"], ["--choice-weight", "1"], ["--memory", "decoder"]):
        assert run(removed).exit_code != 0


def test_configs_saved_with_removed_variants_off_load_and_those_with_them_on_are_refused():
    """A deep-config.json written before the variants were removed holds their fields at the values that meant off:
    it loads as it was; one that asks for a removed variant is refused in one line that names the field."""
    saved = {**XAttnConfig(attend="reply").to_dict(), "q_init": False, "aux_weight": 0.0, "choice_weight": 0.0}
    saved["memory_window"] = 1
    assert XAttnConfig.from_dict(saved) == XAttnConfig(attend="reply")
    for key, value in (("q_init", True), ("aux_weight", 0.1), ("choice_weight", 1.0), ("memory_window", 2)):
        with pytest.raises(ValueError, match=f"{key}={value!r}: that variant was removed") as e:
            XAttnConfig.from_dict({**saved, key: value})
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="memory='decoder': that variant was removed"):
        XAttnConfig.from_dict({**saved, "memory": "decoder", "kv_init": None})


def test_a_model_saved_with_removed_variants_off_loads(tmp_path, real_model):
    """The whole folder: a config file holding the removed fields at their neutral values loads and decodes as saved;
    one asking for a removed variant fails to load, naming the field."""
    import json

    from rescore.deep.xattn import load_deep_model

    real_model.save(tmp_path / "m")
    path = tmp_path / "m" / "deep-config.json"
    config = json.loads(path.read_text())
    config["xattn"].update(q_init=False, aux_weight=0.0, choice_weight=0.0, memory_window=1)
    path.write_text(json.dumps(config))
    loaded = load_deep_model(tmp_path / "m")
    assert loaded.config == real_model.config
    config["xattn"]["aux_weight"] = 0.1
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="aux_weight=0.1"):
        load_deep_model(tmp_path / "m")
