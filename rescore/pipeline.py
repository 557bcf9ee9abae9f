"""``rescore run``: first pass, rerank, correct (and deep fusion), scoring and a report, from one config.

Each stage reads the previous stage's records and writes its own file in the run folder, named by a hash
of everything that determines its output (its options and the hash of its input). Changing a later stage's
options therefore reruns only that stage; a stage interrupted half-way resumes from its partial file.
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rescore.datasets import Dataset, load_dataset
from rescore.records import NBest, NBestWriter, read_nbest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TranscribeOptions(_Strict):
    """First pass (see ``rescore transcribe``)."""

    backend: str = "ctranslate2"
    model: str = "whisper-tiny.en"
    nbest: int = Field(8, ge=1)
    beam_size: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    device: str = "auto"
    compute_type: str = "auto"
    language: str = "en"


class RerankOptions(_Strict):
    """LM rescoring (see ``rescore rerank``): ``weights`` is a file written by ``rescore tune``."""

    enabled: bool = True
    lm: list[str] = ["smollm2-135m"]
    backend: str = "hf"
    weights: str | None = None
    context: str | None = None
    previous: int = Field(0, ge=0)


class CorrectOptions(_Strict):
    """Generative error correction (see ``rescore correct``)."""

    enabled: bool = True
    llm: str = "qwen2.5-0.5b"
    backend: str = "llamacpp"
    prompt: str = "nbest"
    domain: str | None = None
    entities: str | None = None
    adapter: str | None = None
    examples: str | None = None  # n-best JSONL with references (a training set): few-shot examples
    n_examples: int = Field(6, ge=0)


class DeepOptions(_Strict):
    """Deep fusion decoding from a trained bridge checkpoint (see ``rescore deep``)."""

    enabled: bool = False
    checkpoint: str | None = None


class RayOptions(_Strict):
    """``engine = "ray"``: model actors per stage, records per batch, GPUs per actor (0 on CPU clusters)."""

    actors: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    gpus_per_actor: float = Field(0.0, ge=0)


class RunConfig(_Strict):
    """A whole run. Unknown keys anywhere are errors, so a typo never silently falls back to a default."""

    input: str
    reference: str | None = None
    name: str | None = None
    output: str = "runs"
    engine: Literal["local", "ray"] = "local"
    limit: int = Field(0, ge=0)
    transcribe: TranscribeOptions = TranscribeOptions()
    rerank: RerankOptions = RerankOptions()
    correct: CorrectOptions = CorrectOptions()
    deep: DeepOptions = DeepOptions()
    ray: RayOptions = RayOptions()

    @property
    def run_name(self) -> str:
        return self.name or Path(self.input.rstrip("/")).name.removesuffix(".jsonl")

    @property
    def run_dir(self) -> Path:
        return Path(self.output) / self.run_name


PRESETS: dict[str, dict[str, Any]] = {
    # every stage with the default models
    "default": {},
    # first pass and LM rescoring only: seconds, not minutes
    "fast": {"correct": {"enabled": False}},
    "first-pass": {"rerank": {"enabled": False}, "correct": {"enabled": False}},
    # spelled letters and digits (AN4-like): no LM rerank (the LibriSpeech-tuned weights raise an4-test WER,
    # 41.5 -> 48.8 % in eval/RESULTS.md), the spelling template with a domain description for the corrector
    "spelling": {
        "rerank": {"enabled": False},
        "correct": {
            "prompt": "spelling",
            "domain": "names spelled letter by letter, phone and zip numbers, dates, and the command words RUBOUT, "
            "ERASE, ENTER, GO, YES, NO, STOP, REPEAT, HELP, START.",
        },
    },
}


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every problem with its key."""


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path | None = None,
    *,
    input: str | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """A config from a TOML file, or from an input and a preset; ``overrides`` win over both."""
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


StageRunner = Callable[[RunConfig, Dataset, list[NBest]], Iterator[NBest]]


def _transcribe(cfg: RunConfig, dataset: Dataset, todo: list[NBest]) -> Iterator[NBest]:
    from rescore.recognizers import make_recognizer

    opts = cfg.transcribe.model_dump()
    backend = opts.pop("backend")
    wanted = {r.id for r in todo}
    utts = [u for u in dataset.utterances if u.id in wanted]
    if cfg.engine == "ray":
        from rescore.scale import TranscribeFactory, ray_map, utterance_records

        yield from ray_map(
            utterance_records(utts),
            TranscribeFactory(backend, opts),
            actors=cfg.ray.actors,
            batch_size=cfg.ray.batch_size,
            num_gpus=cfg.ray.gpus_per_actor,
        )
    else:
        yield from make_recognizer(backend, **opts).recognize(utts)


# name -> (runner, whether it is enabled in a config, the options that determine its output)
STAGES: dict[str, tuple[StageRunner, Callable[[RunConfig], bool], Callable[[RunConfig], dict[str, Any]]]] = {
    "transcribe": (_transcribe, lambda c: True, lambda c: c.transcribe.model_dump()),
}


def register_stage(
    name: str, runner: StageRunner, enabled: Callable[[RunConfig], bool], options: Callable[[RunConfig], dict[str, Any]]
) -> None:
    """Add a stage after the existing ones (later stages register themselves on import)."""
    STAGES[name] = (runner, enabled, options)


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
    name: str
    path: Path
    records: list[NBest]
    cached: bool
    seconds: float
    failed: list[str] = field(default_factory=list)


def run_stage(
    name: str,
    runner: StageRunner,
    cfg: RunConfig,
    dataset: Dataset,
    inputs: list[NBest],
    path: Path,
    on_record: Callable[[NBest], None] | None = None,
) -> StageResult:
    """Run one stage into ``path`` (resuming a partial file); a ``.done`` marker makes it a cache hit."""
    done_marker = path.with_suffix(".done")
    if done_marker.exists() and path.exists():
        records = list(read_nbest(path))
        return StageResult(name, path, records, True, 0.0, [r.id for r in records if not r.ok])
    t0 = time.perf_counter()
    with NBestWriter(path) as writer:
        todo = [r for r in inputs if r.id not in writer.done]
        passthrough = [r for r in todo if not r.ok]  # failed upstream: carried along, not retried here
        for r in passthrough:
            writer.write(r)
        for rec in runner(cfg, dataset, [r for r in todo if r.ok]):
            writer.write(rec)
            if on_record:
                on_record(rec)
    by_id = {r.id: r for r in read_nbest(path)}
    records = [by_id[r.id] for r in inputs if r.id in by_id]
    if len(records) == len(inputs):
        done_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return StageResult(name, path, records, False, time.perf_counter() - t0, [r.id for r in records if not r.ok])


def stage_plan(cfg: RunConfig) -> list[str]:
    """The stages this config runs, in order; a stage enabled in the config but not available is an error."""
    _load_stage_modules()
    for name in ("rerank", "correct", "deep"):
        if getattr(cfg, name).enabled and name not in STAGES:
            raise ConfigError(f"stage {name!r} is enabled but not available in this installation")
    return [name for name, (_, enabled, _) in STAGES.items() if enabled(cfg)]


def run_pipeline(
    cfg: RunConfig, *, on_stage: Callable[[str, int], Callable[[NBest], None] | None] | None = None
) -> tuple[list[StageResult], Any]:
    """Run every enabled stage, then score them all and write the report into the run folder."""
    from rescore.report import summarize_stages, write_report

    _load_stage_modules()
    t0 = time.perf_counter()
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
    records: list[NBest] = [NBest(id=u.id, audio=u.audio, reference=u.reference) for u in utts]
    for issue in dataset.issues:
        if issue.utterance_id:
            records.append(NBest(id=issue.utterance_id, error=issue.message))
    results: list[StageResult] = []
    for i, name in enumerate(stage_plan(cfg)):
        runner, _, options = STAGES[name]
        digest = hashlib.sha256(json.dumps([name, options(cfg), digest], sort_keys=True).encode()).hexdigest()
        path = run_dir / f"{i + 1:02d}-{name}.{digest[:12]}.jsonl"
        callback = on_stage(name, len(records)) if on_stage else None
        res = run_stage(name, runner, cfg, dataset, records, path, callback)
        results.append(res)
        records = res.records
    summary = summarize_stages(
        cfg.run_name, [(r.name, r.records) for r in results], config=cfg.model_dump(), wall=time.perf_counter() - t0
    )
    write_report(run_dir, summary)
    return results, summary


def _load_stage_modules() -> None:
    """Register the later stages (rerank, correct, deep fusion), which live beside their libraries."""
    import rescore.stages  # noqa: F401
