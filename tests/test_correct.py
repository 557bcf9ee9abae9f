"""The corrector: templates, the spelled view, entity retrieval, the CLI, and real small models end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rescore.cli import app
from rescore.correct import examples_from_records
from rescore.correct.entities import EntityRetriever, load_entities
from rescore.correct.prompts import VARIABLES, TemplateError, list_templates, load_template, spelled
from rescore.records import Hypothesis, NBest, read_nbest, write_nbest

runner = CliRunner()
SHIPPED = {"1best", "nbest", "domain", "entities", "fewshot", "spelling"}


def test_shipped_templates_document_their_variables():
    templates = {t.name: t for t in list_templates()}
    assert set(templates) >= SHIPPED
    for name in SHIPPED:
        t = templates[name]
        assert t.path.stem == name and t.description
        assert set(t.variables) <= set(VARIABLES), name
        assert t.used_variables() <= set(t.variables), f"{name} uses undocumented variables"


def test_render_fills_system_and_user():
    t = load_template("entities")
    msgs = t.render(
        {"best": '"a b"', "hypotheses": ['"a b"', '"a c"'], "others": ['"a c"'], "entities": ["Zed"], "domain": None}
    )
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Zed" in msgs[1]["content"] and '"a c"' in msgs[1]["content"] and "Domain" not in msgs[0]["content"]
    with pytest.raises(TemplateError, match="unknown template variable"):
        t.render({"bset": "x"})


def test_user_template_file_and_errors(tmp_path):
    f = tmp_path / "mine.j2"
    f.write_text(
        "{#- name: mine\ndescription: test\nvariables:\n  best: the text\n-#}"
        "{% block system %}S{% endblock %}{% block user %}U {{ best }}{% endblock %}"
    )
    assert load_template(str(f)).render({"best": "x"})[1]["content"] == "U x"
    bad = tmp_path / "bad.j2"
    bad.write_text("{% block system %}S{% endblock %}")
    with pytest.raises(TemplateError, match="block user"):
        load_template(str(bad))
    with pytest.raises(TemplateError, match="unknown prompt template"):
        load_template("no-such-template")


@pytest.mark.parametrize(
    ("text", "view"),
    [
        ("Rubout GMEF39", "RUBOUT G M E F THREE NINE"),
        ("C-I-N-D-Y.", "C I N D Y"),
        ("655-8740", "SIX FIVE FIVE EIGHT SEVEN FOUR ZERO"),
        ("Rub out gmef39", "RUB OUT G M E F THREE NINE"),
        ("I don't know.", "I DON'T KNOW"),
        ('"Go!"', '"GO"'),
    ],
)
def test_spelled_view(text, view):
    assert spelled(text) == view


def test_entity_retrieval_fuzzy_and_phonetic(tmp_path):
    f = tmp_path / "e.txt"
    f.write_text("# people\nSiobhan O'Neill\nPeter Pan\n\nPeter Pan\nKubernetes\nTinker Bell\n")
    entities = load_entities(f)
    assert entities == ["Siobhan O'Neill", "Peter Pan", "Kubernetes", "Tinker Bell"]
    r = EntityRetriever(entities, k=2)
    got = [m.entity for m in r.retrieve(["i met shivon oneal", "we deployed it on cooper netties"])]
    assert set(got) == {"Siobhan O'Neill", "Kubernetes"}
    assert r.retrieve(["completely unrelated words"]) == []
    with pytest.raises(ValueError, match="cannot read"):
        load_entities(tmp_path / "missing.txt")


def test_examples_prefer_errors():
    recs = [
        NBest(id=f"u{i}", hypotheses=[Hypothesis(h)], reference=ref)
        for i, (h, ref) in enumerate([("GMEF39", "G M E F THREE NINE"), ("yes", "YES"), ("CQ7", "C Q SEVEN")])
    ]
    ex = examples_from_records(recs, k=2)
    assert [e["output"] for e in ex] == ["G M E F THREE NINE", "C Q SEVEN"]
    assert ex[0]["hypotheses"] == ['"GMEF39"']


def test_cli_prompts_and_dispatch(tmp_path):
    res = runner.invoke(app, ["prompts", "list"])
    assert res.exit_code == 0 and "spelling" in res.output
    res = runner.invoke(app, ["prompts", "show", "nbest"])
    assert res.exit_code == 0 and "block system" in res.output
    res = runner.invoke(app, ["correct", "train", "--help"])
    assert res.exit_code == 0 and "LoRA" in res.output
    res = runner.invoke(app, ["correct", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "missing.jsonl" in res.output
    nb = tmp_path / "n.jsonl"
    write_nbest(nb, [NBest(id="a", hypotheses=[Hypothesis("x")])])
    res = runner.invoke(app, ["correct", str(nb), "-o", str(tmp_path / "o.jsonl"), "--prompt", "nope"])
    assert res.exit_code == 2 and "unknown prompt template" in res.output


# ------------------------------------------------------------------------------------------ real models


@pytest.fixture(scope="module")
def tiny_nbest(tmp_path_factory, tiny_manifest):
    """Real 8-best lists of two tiny-set utterances from Whisper tiny.en, plus a failed record."""
    from rescore.io.datasets import load_dataset
    from rescore.registry import make_recognizer

    utts = [u for u in load_dataset(tiny_manifest).utterances if u.id.endswith(("0880", "jfk"))]
    rec = make_recognizer("ctranslate2", model="whisper-tiny.en", device="cpu", nbest=8, beam_size=8)
    records = list(rec.recognize(utts))
    records.append(NBest(id="broken", error="cannot decode"))
    path = tmp_path_factory.mktemp("nbest") / "tiny.jsonl"
    write_nbest(path, records)
    return path


@pytest.mark.model
def test_real_correction_llama_cpp_end_to_end(tiny_nbest, tmp_path):
    out = tmp_path / "c.jsonl"
    args = ["correct", str(tiny_nbest), "-o", str(out), "--llm", "smollm2-135m", "--prompt", "nbest", "--threads", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output  # the failed input record is named and counted
    assert "broken" in res.output and "corrected 2 records" in res.output
    recs = {r.id: r for r in read_nbest(out)}
    assert set(recs) == {r.id for r in read_nbest(tiny_nbest)}
    for r in recs.values():
        if not r.ok:
            continue
        c = r.correction
        assert r.corrected and c["model"] == "smollm2-135m" and c["template"] == "nbest"
        assert c["backend"] == "llama-cpp" and c["prompt_tokens"] > 50 and c["new_tokens"] >= 1
        assert c["guards"]["quoted"] is True and "edit_budget" in c["guards"] or not c["accepted"]
        if not c["accepted"]:
            assert r.corrected == r.text("rerank")
        assert r.timing["correct"] > 0
    # the second record reuses the KV cache of the fixed prefix
    assert max(r.correction["reused_tokens"] for r in recs.values() if r.ok) > 50
    res = runner.invoke(app, args)  # rerun: done ids are skipped, only the failed one is retried
    assert "resuming: 2 of 3" in res.output


@pytest.mark.model
def test_real_lora_train_and_transformers_backend(tiny_nbest, tmp_path):
    adapter = tmp_path / "adapter"
    res = runner.invoke(
        app,
        [
            "correct",
            "train",
            str(tiny_nbest),
            "-o",
            str(adapter),
            "--llm",
            "smollm2-135m",
            "--prompt",
            "1best",
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--max-hypotheses",
            "2",
            "--threads",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads((adapter / "rescore-lora.json").read_text())
    assert info["steps"] == 2 and info["pairs"] == 2 and info["template"] == "1best"
    assert info["held_out_pairs"] == 0  # too few pairs to hold any out
    assert (adapter / "adapter_config.json").exists()
    out = tmp_path / "c.jsonl"
    res = runner.invoke(app, ["correct", str(tiny_nbest), "-o", str(out), "--adapter", str(adapter), "--limit", "2"])
    assert res.exit_code == 0, res.output
    recs = list(read_nbest(out))
    assert len(recs) == 2
    for r in recs:
        c = r.correction
        assert c["backend"] == "transformers" and c["template"] == "1best" and c["adapter"] == str(adapter)
        assert r.corrected and c["new_tokens"] >= 1
    assert recs[1].correction["reused_tokens"] > 20  # the second prompt reuses the cached system prefix


def test_held_out_split_is_seeded_and_disjoint():
    from rescore.correct.lora import split_pairs

    pairs = [([i], [i]) for i in range(40)]
    train, held = split_pairs(pairs, 0.1, seed=0)
    assert len(held) == 4 and len(train) == 36 and not {p[0][0] for p in held} & {p[0][0] for p in train}
    assert split_pairs(pairs, 0.1, seed=0) == (train, held) and split_pairs(pairs, 0.1, seed=1) != (train, held)
    assert split_pairs(pairs[:9], 0.5, seed=0) == (pairs[:9], [])  # under 10 pairs: nothing held out
    assert split_pairs(pairs, 0.0, seed=0) == (pairs, [])
    train, held = split_pairs(pairs, 0.5, seed=0, most=3)  # capped: the held-out loss is measured often
    assert len(held) == 3 and len(train) == 37


@pytest.mark.model
def test_real_lora_early_stopping_keeps_the_best_held_out_step(tiny_nbest, tmp_path):
    """Real n-best pairs (the fixture's two, five copies each: the mechanism, not generalisation), 1 held out,
    measured every step: the saved adapter is the one with the best held-out loss."""
    import copy

    from rescore.correct.lora import LoraConfig, train_lora

    base = [r for r in read_nbest(tiny_nbest) if r.ok and r.hypotheses and r.reference]
    records = []
    for k in range(5):
        for r in base:
            records.append(copy.deepcopy(r))
            records[-1].id = f"{r.id}-{k}"
    cfg = LoraConfig(llm="smollm2-135m", template="1best", max_hypotheses=1, batch_size=3, epochs=1, lr=3e-3,
                     threads=2, held_out=0.1, eval_every=1, patience=2)  # fmt: skip
    info = train_lora(records, tmp_path / "a", cfg)
    assert info["held_out_pairs"] == 1 and info["pairs"] == len(records)
    losses = dict((int(s), v) for s, v in info["held_out_losses"])
    assert info["best_step"] == min(losses, key=losses.get) and len(losses) == min(info["steps"], len(losses))
    assert info["early_stopped"] == (info["steps"] < info["planned_steps"])


def test_prompt_texts_shows_distinct_hypotheses_and_the_reranked_form():
    from rescore.correct.guards import prompt_texts

    texts = ["Hello world.", "hello world", "Hello, word.", "hello word", "yellow world"]
    shown, at = prompt_texts(texts, 1, 8)
    assert shown == ["hello world", "Hello, word.", "yellow world"] and at == 0  # the reranked form, in its slot
    shown, at = prompt_texts(texts, 4, 2)
    assert shown == ["Hello world.", "Hello, word.", "yellow world"] and at == 2  # past the cap, still shown
    shown, at = prompt_texts(texts, 0, 3, distinct=False)
    assert shown == texts[:3] and at == 0


def test_lookup_draft_copies_what_followed_the_last_ngram_in_the_prompt():
    from rescore.correct.llm import lookup_draft

    prompt = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 6]
    assert lookup_draft([*prompt, 2, 3], len(prompt), length=3) == [7, 8, 6]  # the latest occurrence first
    assert lookup_draft([*prompt, 5], len(prompt), length=2) == [9, 2]
    assert lookup_draft([*prompt, 42], len(prompt)) == []
    assert lookup_draft([*prompt, 8, 6], len(prompt)) == []  # nothing follows it inside the prompt


@pytest.mark.model
def test_real_prompt_lookup_decoding_writes_what_plain_greedy_writes(tiny_nbest):
    from rescore.correct import CorrectorConfig, LLMCorrector
    from rescore.correct.llm import LlamaCppChat

    records = [r for r in read_nbest(tiny_nbest, strict=False) if r.ok][:2]
    answers = {}
    for draft in (12, 0):
        llm = LlamaCppChat("smollm2-135m", n_threads=2, draft_tokens=draft)
        corrector = LLMCorrector(CorrectorConfig(llm="smollm2-135m"), llm=llm)
        gens = [llm.chat(corrector.prompt(r)[0], 64) for r in records]
        answers[draft] = [g.text for g in gens]
        assert all(g.new_tokens > 0 for g in gens)
    assert answers[12] == answers[0]


def test_no_llm_corrector_writes_the_templates_fallback():
    """``--llm off`` (the spelling preset): the spelled view for `spelling`, the reranked text for others."""
    from rescore.correct.prompts import spelled
    from rescore.pipeline import PRESETS
    from rescore.stages.correct import CorrectOptions, CorrectStage

    assert PRESETS["spelling"]["correct"]["llm"] == "off"
    recs = [NBest(id="a", hypotheses=[Hypothesis("GMEF39"), Hypothesis("G M E F 3 9")]), NBest(id="b", error="x")]
    out = CorrectStage(CorrectOptions(llm="off", prompt="spelling", verify=False)).process(recs)
    assert out[0].corrected == spelled("GMEF39") and out[0].correction["accepted"] is False
    assert out[1].corrected is None
    plain = CorrectStage(CorrectOptions(llm="off")).process([NBest(id="c", hypotheses=[Hypothesis("Hello there.")])])
    assert plain[0].corrected == "Hello there."
