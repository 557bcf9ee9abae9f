"""Keep third-party chatter (progress bars, deprecation notices, native logs) out of rescore's own output.

Loading a model prints transformers' "Loading weights" bar and deprecation notices in the middle of the
tables users read. :func:`quiet_third_party` turns that off without importing anything heavy: libraries
not imported yet are quieted through the environment variables they read at import (which child
processes such as Ray workers inherit too); libraries already imported are configured directly. Call it
first thing, and again after importing a library by hand if that happened before; it is idempotent.

Warnings attributed to rescore's own modules stay visible, as do errors.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Read at import by the library named in the comment; set only where the user has not set them.
ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # transformers' logger level
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",  # transformers' warning_advice()
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub bars, and transformers' ("Loading weights")
    "TQDM_DISABLE": "1",  # every tqdm bar (tqdm >= 4.66 reads TQDM_* defaults at import)
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # torch's C++ (c10) log
    "NUMBA_DISABLE_PERFORMANCE_WARNINGS": "1",  # numba
    "RAY_LOGGER_LEVEL": "error",  # ray's driver logger (the default of ray.init(logging_level=...))
    "RAY_DATA_LOG_LEVEL": "ERROR",  # ray.data's logger
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",  # ray.data's progress bars
    "RAY_DEDUP_LOGS": "1",
}

WARNING_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning)
NOISY_MODULES = ("numba", "torch", "transformers", "huggingface_hub", "ray", "llama_cpp")  # all their warnings
_NOT_RESCORE = r"(?!rescore(\.|$))"  # a module name that is not rescore or a submodule of it
LOGGERS = ("transformers", "huggingface_hub", "ray", "ray.data", "ray.train", "ray.tune", "llama-cpp-python", "numba")


def quiet_third_party(verbose: bool = False) -> None:
    """Silence third-party logging, progress bars and warnings, unless ``verbose`` (then nothing changes)."""
    if verbose:
        return
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    for category in WARNING_CATEGORIES:
        warnings.filterwarnings("ignore", category=category, module=_NOT_RESCORE)
    for module in NOISY_MODULES:
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    quiet_imported()


def quiet_imported() -> None:
    """Configure the noisy libraries that are already imported (the environment is too late for them)."""
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "ray.data" in sys.modules:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
