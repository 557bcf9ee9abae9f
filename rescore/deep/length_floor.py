"""The cross-attention model's length floor: no end of transcript before a share of the shortest hypothesis's
tokens (``XAttnConfig.min_length_ratio``), chosen after training on held-out examples and saved with the model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rescore.deep import CONFIG_FILE, XATTN_KEY
from rescore.deep.examples import Example
from rescore.deep.inference import transcribe_examples

LENGTH_FLOORS = (0.0, 0.5, 0.7, 0.8, 0.9)


def floored(
    model: Any, examples: Sequence[Example], base: dict[str, str], ratio: float, batch_size: int, device: str
) -> dict[str, str]:
    """Greedy outputs under a length floor, from the outputs ``base`` without one: a floor changes only the
    outputs shorter than it, so only those are decoded again."""
    out = dict(base)
    if ratio <= 0:
        return out
    short = [
        ex
        for ex in examples
        if len(model.tokenizer(base[ex.id], add_special_tokens=False)["input_ids"])
        < model.length_floors([ex.hypotheses], ratio)[0]
    ]
    for ex, h in transcribe_examples(model, short, batch_size, device, 1, 1, None, ratio):
        out[ex.id] = h[0].text if h else ""
    return out


def choose_length_floor(
    model: Any, examples: Sequence[Example], batch_size: int, device: str, ratios: Sequence[float] = LENGTH_FLOORS
) -> tuple[float, dict[float, float]]:
    """The length floor (``XAttnConfig.min_length_ratio``) of the lowest greedy WER on ``examples``, which must
    be held-out training or dev examples, never a reported set; ties go to the lower floor. Returns it and
    the WER of each."""
    from rescore.evaluate.metrics import error_rate

    examples = list(examples)
    decoded = transcribe_examples(model, examples, batch_size, device, 1, 1, None, 0.0)
    base = {ex.id: (h[0].text if h else "") for ex, h in decoded}
    refs = [ex.text for ex in examples]
    wer: dict[float, float] = {}
    for r in ratios:
        hyps = floored(model, examples, base, r, batch_size, device)
        wer[r] = error_rate(refs, [hyps[ex.id] for ex in examples]).rate
    best = min(ratios, key=lambda r: (round(wer[r], 6), r))
    return best, wer


def save_length_floor(folder: Path, examples: Sequence[Example], batch_size: int, device: str) -> dict[str, Any]:
    """Choose the saved model's length floor on ``examples`` (held-out training or dev examples) and write it
    into its config; returns what was chosen and the WER of each floor, for the run's summary."""
    from rescore.deep.xattn import load_deep_model

    model = load_deep_model(folder, device)
    ratio, wers = choose_length_floor(model, examples, batch_size, device)
    path = Path(folder) / CONFIG_FILE
    config = json.loads(path.read_text())
    config[XATTN_KEY]["min_length_ratio"] = ratio
    config["length_floor"] = {"chosen_on": f"{len(examples)} dev/held-out examples", "dev_wer": wers}
    path.write_text(json.dumps(config, indent=2))
    return {"min_length_ratio": ratio, "floor_dev_wer": wers}
