"""``rescore run``: first pass, rerank, correct (and deep fusion), scoring and a report, from one config.

Each stage reads the previous stage's records and writes its own file in the run folder, named by a hash
of everything that determines its output (its options and the hash of its input). Changing a later stage's
options therefore reruns only that stage; a stage interrupted half-way resumes from its partial file. The
stages are the same objects the stage commands use (:mod:`rescore.stages`), streamed by the one runner
(:mod:`rescore.runner`), locally or on Ray (:mod:`rescore.scale`).
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rescore.io.datasets import Dataset, load_dataset
from rescore.io.writers import FORMATS, write_transcripts
from rescore.records import NBest, read_nbest
from rescore.registry import stages as stage_registry
from rescore.runner import Engine, LocalEngine, StageRun, run_stage
from rescore.stages import (
    AScoreOptions,
    CorrectOptions,
    DeepOptions,
    RerankOptions,
    TranscribeOptions,
    utterance_record,
)

TRANSCRIPTS_DIR = "transcripts"  # in the run folder: one file per audio (txt, srt, vtt), transcripts.tsv/json
STAGE_SECTIONS = ("transcribe", "ascore", "rerank", "correct", "deep")  # config sections, in the order they run


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RayOptions(_Strict):
    """``engine = "ray"``: model actors per stage, records per batch, GPUs per actor (0 on CPU clusters)."""

    actors: int = Field(1, ge=1, description="Model actors per stage.")
    batch_size: int = Field(8, ge=1, description="Records per batch sent to an actor.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per actor (0 on CPU clusters).")
    threads_per_actor: int = Field(
        0,
        ge=0,
        description="Each actor's OpenMP threads (OMP_NUM_THREADS); 0: the driver's own setting, else this"
        " machine's cores shared out among the actors.",
    )


class AScoreSection(AScoreOptions):
    """Acoustic scoring of every hypothesis by every model (see ``rescore ascore``); off unless enabled."""

    enabled: bool = Field(False, description="Run this stage (`rescore run`).")


class RunConfig(_Strict):
    """A whole run. Unknown keys anywhere are errors, so a typo never silently falls back to a default."""

    input: str = Field(description="Audio folder, JSONL manifest, LibriSpeech folder, Kaldi data dir or audio file.")
    reference: str | None = Field(None, description="A manifest or dataset whose references replace the input's.")
    name: str | None = Field(None, description="Run name, the run folder's (default: the input's name).")
    output: str = Field("runs", description="Folder that holds the run folders.")
    engine: Literal["local", "ray"] = Field("local", description="local, or ray: the stages in Ray actors ([ray]).")
    limit: int = Field(0, ge=0, description="Only the first N utterances (0: all).")
    transcribe: TranscribeOptions = TranscribeOptions()
    ascore: AScoreSection = AScoreSection()
    rerank: RerankOptions = RerankOptions()
    correct: CorrectOptions = CorrectOptions()
    deep: DeepOptions = DeepOptions()
    ray: RayOptions = RayOptions()
    output_format: list[str] = Field(
        ["txt", "tsv"], description="Final transcripts written into the run folder: some of txt, tsv, json, srt, vtt."
    )

    @property
    def run_name(self) -> str:
        return self.name or Path(self.input.rstrip("/")).name.removesuffix(".jsonl")

    @property
    def run_dir(self) -> Path:
        return Path(self.output) / self.run_name


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# The union of tiny.en and base, every hypothesis scored by both models (encoder output reused) and by SmolLM2, and
# the shipped reranker (rescore/data/reranker.json: fitted on every set with references but an4-test, each set
# left out in turn; its record has the data, command and figures). Correction is a preset of its own: on the sets
# it was measured on it changed little and cost most of the run time.
UNION = {"transcribe": {"model": ["whisper-tiny.en", "whisper-base"], "ascore": True}, "rerank": {"weights": "shipped"}}

DEFAULT = _merge(UNION, {"correct": {"enabled": False}})

PRESETS: dict[str, dict[str, Any]] = {
    "default": DEFAULT,
    # the default, then the LLM corrector (guards, whisper-base verification)
    "correct": UNION,
    "union": DEFAULT,  # the default's earlier name
    # whisper-tiny.en alone and LM rescoring with the default weights: seconds, not minutes
    "fast": {"correct": {"enabled": False}},
    "first-pass": {"rerank": {"enabled": False}, "correct": {"enabled": False}},
    # spelled letters and digits (AN4-like): no LM rerank (the LibriSpeech-tuned weights raise an4-test WER,
    # 41.5 -> 48.8 % in eval/RESULTS.md), and no LLM: the spelling template's fallback, the deterministic
    # spelled view of the text. Guards tuned on an4-train corrections (eval/bench_correct.py --tune-guards
    # an4-train) chose the corrector off over every guard setting (6.5 % there against 15.6 % at the default
    # guards); on an4-test the spelled view is 6.63 % and the LLM at default guards 11.65 %. To try the LLM:
    # [correct] llm = "qwen2.5-0.5b" (verification stays off: its spelled form "R U B O U T" is not what
    # Whisper writes, so a teacher-forced score would judge the format, not the words)
    "spelling": {
        "rerank": {"enabled": False},
        "correct": {
            "llm": "off",
            "verify": False,
            "prompt": "spelling",
            "domain": "names spelled letter by letter, phone and zip numbers, dates, and the command words RUBOUT, "
            "ERASE, ENTER, GO, YES, NO, STOP, REPEAT, HELP, START.",
        },
    },
}


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every problem with its key."""


def load_config(
    path: str | Path | None = None,
    *,
    input: str | None = None,
    preset: str | None = "default",
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """A config: the ``preset`` (None: the stages' own defaults), then the TOML file, then ``input`` and
    ``overrides``, each winning over what came before."""
    data: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
        data = _merge(data, PRESETS[preset])
    if path is not None:
        try:
            data = _merge(data, tomllib.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None
    if input is not None:
        data["input"] = input
    data = _merge(data, overrides or {})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid config: {problems}") from None


def to_toml(cfg: RunConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.model_dump(exclude_none=True))


def dataset_fingerprint(dataset: Dataset, limit: int = 0) -> str:
    """A hash of the utterances (ids, audio paths, sizes, times, references): the first stage's input."""
    h = hashlib.sha256()
    utts = dataset.utterances[:limit] if limit else dataset.utterances
    for u in utts:
        p = Path(u.audio)
        stat = f"{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.exists() else "missing"
        h.update(json.dumps([u.id, u.audio, stat, u.reference, u.start, u.end]).encode())
    return h.hexdigest()


@dataclass
class StageResult:
    """One stage of a run: its file, its records (in input order), whether the cache answered."""

    name: str
    path: Path
    records: list[NBest]
    cached: bool
    seconds: float
    failed: list[str] = field(default_factory=list)


def build_stages(cfg: RunConfig) -> list[Any]:
    """The stage objects this config runs, in order (options checked now, models loaded on first use)."""
    out = []
    for name in STAGE_SECTIONS:
        options = getattr(cfg, name)
        if not getattr(options, "enabled", True):
            continue
        try:
            out.append(stage_registry.create(name, options))
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
    return out


def stage_plan(cfg: RunConfig) -> list[str]:
    """The names of the stages this config runs, in order; ConfigError for options that cannot work."""
    return [s.name for s in build_stages(cfg)]


def engine_for(cfg: RunConfig) -> Engine:
    if cfg.engine == "ray":
        from rescore.scale import RayEngine

        return RayEngine(cfg.ray.actors, cfg.ray.batch_size, cfg.ray.gpus_per_actor, cfg.ray.threads_per_actor)
    return LocalEngine()


def run_cached(
    stage: Any, inputs: list[NBest], path: Path, engine: Engine, on_record: Callable[[NBest], None] | None = None
) -> StageResult:
    """Run one stage into ``path`` (resuming a partial file); a ``.done`` marker makes it a cache hit."""
    done_marker = path.with_suffix(".done")
    if done_marker.exists() and path.exists():
        records = list(read_nbest(path))
        return StageResult(stage.name, path, records, True, 0.0, [r.id for r in records if not r.ok])
    run: StageRun = run_stage(stage, inputs, path, engine=engine, on_record=on_record)
    if run.interrupted:
        raise KeyboardInterrupt
    by_id = {r.id: r for r in read_nbest(path)}
    records = [by_id[r.id] for r in inputs if r.id in by_id]
    if len(records) == len(inputs):
        done_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return StageResult(stage.name, path, records, False, run.seconds, [r.id for r in records if not r.ok])


def run_pipeline(
    cfg: RunConfig,
    *,
    on_stage: Callable[[str, int], Callable[[NBest], None] | None] | None = None,
    profile: bool = False,
) -> tuple[list[StageResult], Any]:
    """Run every enabled stage, then score them all, write the report and the final transcripts. With
    ``profile``, summary.json also gets each stage's wall time, CPU time and peak RSS (``"profile"``)."""
    from contextlib import nullcontext

    from rescore.evaluate.profiling import Profiler
    from rescore.evaluate.report import summarize_stages, write_report

    profiler = Profiler() if profile else None

    t0 = time.perf_counter()
    stages = build_stages(cfg)
    bad_formats = set(cfg.output_format) - set(FORMATS)
    if bad_formats:
        raise ConfigError(
            f"output_format: unknown {', '.join(sorted(bad_formats))}; expected some of {', '.join(FORMATS)}"
        )
    dataset = load_dataset(cfg.input)
    if cfg.reference:
        refs = load_dataset(cfg.reference).references()
        for u in dataset.utterances:
            u.reference = refs.get(u.id, u.reference)
    utts = dataset.utterances[: cfg.limit] if cfg.limit else dataset.utterances
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    (run_dir / "input-issues.txt").write_text("".join(f"{i}\n" for i in dataset.issues), encoding="utf-8")
    digest = dataset_fingerprint(dataset, cfg.limit)
    placeholders: list[NBest] = [utterance_record(u) for u in utts]
    for issue in dataset.issues:
        if issue.utterance_id:
            placeholders.append(NBest(id=issue.utterance_id, error=issue.message))
    engine = engine_for(cfg)
    records = placeholders
    results: list[StageResult] = []
    for i, stage in enumerate(stages):
        inputs = placeholders if stage.source == "audio" else records
        digest = hashlib.sha256(json.dumps([stage.name, stage.options(), digest], sort_keys=True).encode()).hexdigest()
        path = run_dir / f"{i + 1:02d}-{stage.name}.{digest[:12]}.jsonl"
        callback = on_stage(stage.name, len(inputs)) if on_stage else None
        with profiler.stage(stage.name) if profiler else nullcontext():
            res = run_cached(stage, inputs, path, engine, callback)
        results.append(res)
        records = res.records
    summary = summarize_stages(
        cfg.run_name, [(r.name, r.records) for r in results], config=cfg.model_dump(), wall=time.perf_counter() - t0
    )
    write_report(run_dir, summary, [(r.name, r.records) for r in results])
    if profiler:
        profiler.add_to(run_dir / "summary.json")
    final = next((r for r in reversed(results) if r.name != "deep"), results[-1]) if results else None
    if final is not None:
        write_transcripts(final.records, run_dir / TRANSCRIPTS_DIR, formats=cfg.output_format)
    return results, summary
