"""The package installed as a user gets it (not editable): the templates and the default CTC head go along."""

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.model
def test_non_editable_install_ships_prompts(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = next((venv / "lib").glob("python3*/site-packages"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    subprocess.run([*pip, str(REPO)], check=True, cwd=tmp_path)
    installed = target / "rescore"
    assert (installed / "prompts" / "nbest.j2").is_file() and not (installed / "prompts").is_symlink()
    # the dependencies come from this environment; rescore itself only from the fresh install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages())}
    probe = "import rescore, sys; print(rescore.__file__)"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout
    res = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "rescore", "prompts", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    for name in ("nbest", "1best", "spelling", "entities"):
        assert name in res.stdout, name
