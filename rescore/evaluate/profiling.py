"""Where a run's time and memory go: per-stage wall time, CPU time and peak RSS (``rescore run --profile``).

CPU time is this process's (all its threads), so a stage that waits on a busy machine shows a low
CPU/wall ratio. The peak RSS of each stage is Linux's ``VmHWM`` after resetting it through
``/proc/self/clear_refs`` as the stage starts; where that cannot be reset the figure is the process's
peak so far (``peak_is_per_stage`` says which).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """The peak resident set size since the last reset (Linux) or of the whole process (elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


@dataclass
class StageProfile:
    """One stage's cost in this process."""

    name: str
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    peak_is_per_stage: bool


@dataclass
class Profiler:
    """Collects a :class:`StageProfile` per ``with profiler.stage(name):`` block."""

    stages: list[StageProfile] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        per_stage = _reset_peak()
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.stages.append(
                StageProfile(
                    name,
                    round(time.perf_counter() - w, 3),
                    round(time.process_time() - c, 3),
                    round(peak_rss_mib(), 1),
                    per_stage,
                )
            )

    def to_dict(self) -> dict:
        return {"stages": [asdict(s) for s in self.stages], "peak_rss_mib": round(peak_rss_mib(), 1)}

    def add_to(self, summary_json: Path) -> None:
        """Write the profile into an existing summary.json under ``"profile"``."""
        data = json.loads(summary_json.read_text(encoding="utf-8"))
        data["profile"] = self.to_dict()
        summary_json.write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
