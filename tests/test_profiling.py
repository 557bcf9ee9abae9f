"""The per-stage profile of ``rescore run --profile``: time, CPU time, a peak that belongs to its stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Run in a fresh interpreter: inside the test session the process already holds gigabytes that earlier tests
# freed (malloc keeps them resident), so a new 200 MiB block may not raise the peak at all.
SCENARIO = """
import json
from rescore.evaluate.profiling import Profiler
prof = Profiler()
with prof.stage("big"):
    block = bytearray(200 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touched: 200 MiB resident
    del block
with prof.stage("small"):
    sum(range(200_000))
print(json.dumps(prof.to_dict()))
"""


def test_each_stage_gets_its_own_time_and_peak(tmp_path: Path) -> None:
    from rescore.evaluate.profiling import Profiler

    out = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, check=True).stdout
    big, small = json.loads(out.strip().splitlines()[-1])["stages"]
    assert (big["name"], small["name"]) == ("big", "small")
    assert big["wall_seconds"] >= 0 and big["cpu_seconds"] >= 0
    assert big["peak_rss_mib"] >= 200
    if small["peak_is_per_stage"]:  # Linux: the peak was reset as the stage began
        assert small["peak_rss_mib"] < big["peak_rss_mib"] - 150
    prof = Profiler()
    with prof.stage("only"):
        pass
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"name": "x"}))
    prof.add_to(summary)
    data = json.loads(summary.read_text())
    assert data["name"] == "x" and [s["name"] for s in data["profile"]["stages"]] == ["only"]
