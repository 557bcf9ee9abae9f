"""Stage options declared once: the commands' flags are generated from the stage models, and docs/cli.md is
generated from both, so neither can drift from the models."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import typer
from pydantic import Field, field_validator
from typer.testing import CliRunner

from rescore.cli import app
from rescore.cli.reference import DOC, REGENERATE, plain, reference, stage_commands
from rescore.cli.stage_flags import StageFlags, stage_flags
from rescore.stages import (
    AScoreOptions,
    CorrectOptions,
    CTCScoreOptions,
    DeepOptions,
    RerankOptions,
    TranscribeOptions,
)
from rescore.stages.base import PathStr, StageOptions

runner = CliRunner()

# each generated command: its model, the fields it leaves out, and its hand-written parameters
COMMANDS = {
    "transcribe": (TranscribeOptions, set(), {"input", "output", "resume", "limit"}),
    "ascore": (AScoreOptions, set(), {"nbest", "output", "resume"}),
    "rerank": (RerankOptions, {"enabled"}, {"file", "output", "context_file", "resume"}),
    "tune": (
        RerankOptions,
        set(RerankOptions.model_fields) - {"lm", "backend", "context", "threads", "batch_tokens"},
        {"file", "output", "context_file", "reference", "folds", "seed", "report", "force", "scored", "method"}
        | {"feature"},
    ),
    "correct run": (CorrectOptions, {"enabled"}, {"file", "output", "domain_file", "resume", "limit"}),
    "ctc score": (CTCScoreOptions, set(), {"nbest", "output", "resume"}),
    "deep transcribe": (DeepOptions, {"enabled"}, {"input", "output", "resume", "limit"}),
}


def test_docs_cli_md_is_what_the_generator_writes() -> None:
    assert Path(__file__).resolve().parents[1] / "docs" / "cli.md" == DOC
    assert DOC.read_text(encoding="utf-8") == reference(), f"docs/cli.md is out of date: run `{REGENERATE}`"


def test_each_generated_command_takes_its_model_fields_and_its_own_parameters() -> None:
    commands = dict(stage_commands())
    assert set(commands) == set(COMMANDS)
    for path, (model, left_out, own) in COMMANDS.items():
        spec = commands[path].callback.stage_flags
        assert spec.model is model, path
        assert set(spec.fields) == set(model.model_fields) - left_out, path
        assert {p.name for p in commands[path].params} == set(spec.fields) | own, path


def test_generated_flags_carry_the_field_default_and_description() -> None:
    for path, command in stage_commands():
        spec = command.callback.stage_flags
        for param in command.params:
            if param.name not in spec.fields:
                continue
            field = spec.model.model_fields[param.name]
            default = list(param.default) if isinstance(param.default, (list, tuple)) else param.default
            assert default == field.get_default(), (path, param.name)
            assert plain(param.help) == field.description, (path, param.name)


def test_todays_flag_names_still_work() -> None:
    """Names the commands had before their flags were generated (scripts and the README use them)."""
    commands = dict(stage_commands())

    def names(path: str) -> set[str]:
        return {n for p in commands[path].params for n in [*p.opts, *p.secondary_opts]}

    assert {"--config", "--lm", "--lm-weight", "--length-bonus", "--am", "--previous", "--context"} <= names("rerank")
    assert {"--model", "-m", "--method"} <= names("ascore")
    assert {"--model", "--distinct", "--ascore", "--word-lm", "--beam-size"} <= names("transcribe")
    assert "--no-distinct" not in names("transcribe")  # off by default: a switch, as it was
    assert {"--verify-with", "--no-verify", "--no-distinct", "--max-edit-ratio", "--llm", "--prompt"} <= names(
        "correct run"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rerank", "{nbest}", "--previous", "-1"], "error: --previous: Input should be greater than or equal to 0"),
        (["transcribe", "{nbest}", "--nbest", "0"], "error: --nbest: Input should be greater than or equal to 1"),
        (["ascore", "{nbest}", "-m", "a", "--model", "a"], "error: --model: a model is listed twice"),
        (["transcribe", "{nbest}", "--ascore"], "error: ascore scores a union as it goes"),
        (["correct", "{nbest}", "--verify-with", "rerank", "--verify-with", "x"], "error: --verify-with: rerank"),
        (["ctc", "score", "{nbest}", "--batch-size", "0"], "error: --batch-size: Input should be greater"),
    ],
)
def test_a_value_the_model_refuses_is_one_line_naming_the_flag(tmp_path: Path, args: list[str], message: str) -> None:
    nbest = tmp_path / "n.jsonl"
    nbest.write_text("")
    res = runner.invoke(app, [a.format(nbest=nbest) for a in args] + ["-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2, res.output
    assert res.output.startswith(message) and len(res.output.strip().splitlines()) == 1, res.output


def test_verify_with_rerank_is_the_records_own_weights() -> None:
    assert CorrectOptions(verify_with=["rerank"]).verify_with == []
    assert CorrectOptions().verify_with == ["whisper-base"]


class Demo(StageOptions):
    enabled: bool = True
    count: int = Field(2, ge=1, description="How many [at least 1].")
    names: list[str] = Field(["a"], description="Names.")
    file: PathStr | None = Field(None, description="A file.")
    fast: bool = Field(False, description="Go fast.")
    check: bool = Field(True, description="Check.")
    mode: Literal["x", "y"] = Field("x", description="Mode.")
    model: str | list[str] | None = Field(None, description="One model or several.")

    @field_validator("names")
    @classmethod
    def _no_z(cls, v: list[str]) -> list[str]:
        if "z" in v:
            raise ValueError("z is no name")
        return v


built: list[Demo] = []
demo_app = typer.Typer()


@demo_app.command()
@stage_flags(Demo, names={"count": ("--count", "-n")}, section="demo")
def demo(
    flags: StageFlags[Demo],
    extra: str = "",
) -> None:
    built.append(flags.build(**({"names": [extra]} if extra else {})))


def test_generator_gives_the_model_only_what_was_given() -> None:
    built.clear()
    assert runner.invoke(demo_app, []).exit_code == 0
    assert built[-1] == Demo() and built[-1].model_fields_set == set()
    args = ["-n", "3", "--names", "b", "--names", "c", "--file", "f.txt", "--fast", "--no-check", "--mode", "y"]
    res = runner.invoke(demo_app, [*args, "--model", "m"])
    assert res.exit_code == 0, res.output
    d = built[-1]
    assert (d.count, d.names, d.file, d.fast, d.check, d.mode, d.model) == (
        3,
        ["b", "c"],
        "f.txt",
        True,
        False,
        "y",
        ["m"],
    )
    assert d.model_fields_set == {"count", "names", "file", "fast", "check", "mode", "model"}
    assert runner.invoke(demo_app, ["--extra", "e"]).exit_code == 0 and built[-1].names == ["e"]


def test_generator_errors_and_help() -> None:
    res = runner.invoke(demo_app, ["--count", "0", "--names", "z"])
    assert res.exit_code == 2
    assert res.output.strip() == ("error: --count: Input should be greater than or equal to 1; --names: z is no name")
    assert runner.invoke(demo_app, ["--enabled"]).exit_code == 2  # a run config's switch, not a flag
    assert runner.invoke(demo_app, ["--mode", "w"]).exit_code == 2
    res = runner.invoke(demo_app, ["--help"], terminal_width=200)
    assert "How many [at least 1]." in res.output and "[demo] in a run config" in res.output
    assert "--no-check" in res.output and "--no-fast" not in res.output
    with pytest.raises(TypeError, match="has no field nope"):
        stage_flags(Demo, names={"nope": ("--nope",)})
    with pytest.raises(TypeError, match="no 'flags' parameter"):
        stage_flags(Demo)(lambda x: x)


def test_stages_register_under_their_own_names() -> None:
    from rescore.registry import stages

    for name in ("transcribe", "rerank", "correct", "deep", "ctc-score", "ascore"):
        assert stages.factory(name).name == name


def test_the_command_line_starts_without_the_stage_libraries() -> None:
    """Every call builds the generated flags from the option models; the stages' libraries load on first use."""
    import subprocess
    import sys

    code = "import sys, rescore.cli; print(sorted(m for m in ('numpy', 'torch', 'jinja2') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
