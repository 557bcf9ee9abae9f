"""Third-party noise stays out of user-facing output; rescore's own warnings do not. Each case in a fresh process."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

SCORE = """
from rescore.registry import make_scorer
scorer = make_scorer("smollm2-135m", "hf")
print("score", scorer.score(["the cat sat on the mat"])[0])
"""


def _python(code: str) -> subprocess.CompletedProcess:
    env_clean = {"TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE", "PYTHONWARNINGS"}
    env = {k: v for k, v in os.environ.items() if k not in env_clean}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, env=env
    )


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Loading" in line or "Warning" in line or "deprecated" in line]


@pytest.mark.model
@pytest.mark.parametrize("before", ["", "import transformers, tqdm"], ids=["fresh", "transformers-imported-first"])
def test_quiet_scorer_load_prints_nothing(before):
    p = _python(f"{before}\nfrom rescore.io.quiet import quiet_third_party\nquiet_third_party()\n{SCORE}")
    assert p.returncode == 0, p.stderr
    assert "score -" in p.stdout
    assert _noise(p.stderr) == [], p.stderr


@pytest.mark.model
def test_verbose_keeps_the_noise():
    p = _python(f"from rescore.io.quiet import quiet_third_party\nquiet_third_party(verbose=True)\n{SCORE}")
    assert p.returncode == 0, p.stderr
    assert any("Loading weights" in line for line in p.stderr.splitlines()), p.stderr


WARN = """
import warnings
from rescore.io.quiet import quiet_third_party
{call}
for name in ("fakelib.sub", "torch.nn", "numba.core", "rescore.fake"):
    for cat in (DeprecationWarning, FutureWarning, UserWarning):
        exec(f"import warnings; warnings.warn('from ' + {{name!r}} + ' ' + {{cat.__name__!r}}, {{cat.__name__}})",
             {{"__name__": name}})
"""


def _warned(call: str) -> set[str]:
    p = _python("import warnings\nwarnings.simplefilter('always')\n" + WARN.format(call=call))
    assert p.returncode == 0, p.stderr
    return set(re.findall(r"Warning: (from \S+ \w+)$", p.stderr, re.M))


def test_third_party_warnings_silenced_rescore_kept():
    assert _warned("quiet_third_party()") == {
        "from rescore.fake DeprecationWarning",
        "from rescore.fake FutureWarning",
        "from rescore.fake UserWarning",
    }
    everything = _warned("quiet_third_party(verbose=True)")
    assert len(everything) == 12 and "from fakelib.sub FutureWarning" in everything


def test_idempotent_lazy_and_environment():
    p = _python(
        """
        import os, sys, warnings
        from rescore.io.quiet import quiet_third_party
        quiet_third_party()
        n = len(warnings.filters)
        quiet_third_party()
        heavy = [m for m in ("torch", "transformers", "ray", "numba", "tqdm", "llama_cpp") if m in sys.modules]
        print(n == len(warnings.filters), heavy, os.environ["TRANSFORMERS_VERBOSITY"], os.environ["TQDM_DISABLE"])
        import tqdm
        print(tqdm.tqdm(range(3)).disable)
        """
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["True [] error 1", "True"]


def test_user_settings_win():
    p = _python(
        """
        import os
        os.environ["TRANSFORMERS_VERBOSITY"] = "info"
        from rescore.io.quiet import quiet_third_party
        quiet_third_party()
        print(os.environ["TRANSFORMERS_VERBOSITY"])
        """
    )
    assert p.stdout.strip() == "info"
