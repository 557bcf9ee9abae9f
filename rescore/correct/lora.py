"""LoRA fine-tuning of the corrector on (n-best, reference) pairs from training sets.

The prompt is the same template the adapter will be used with (stored beside the adapter), the target is
the reference transcript, and only the answer's tokens carry loss. Training is time-boxed so it fits a
shared CPU; on a GPU the same code runs in bfloat16. The adapter is a peft folder that
``rescore correct --adapter`` loads on the transformers backend.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rescore.correct.guards import GuardConfig, prepare_input, prompt_texts
from rescore.correct.prompts import load_template
from rescore.records import NBest
from rescore.train.scaffold import Budget, EarlyStopping, atomic_write, held_out_split, training_device

INFO = "rescore-lora.json"


@dataclass
class LoraConfig:
    """What is trained, on what, for how long."""

    llm: str = "smollm2-135m"
    template: str = "nbest"
    domain: str | None = None
    max_hypotheses: int = 8
    distinct: bool = True  # as CorrectorConfig.distinct: train on the prompts correction will show
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    lr: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 8
    max_minutes: float = 20.0
    max_length: int = 768  # prompt + answer tokens; longer pairs are skipped
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    # early stopping: this share of the pairs (seeded) is held out, its loss measured every `eval_every`
    # steps; the adapter saved is the one with the lowest held-out loss, and training stops after `patience`
    # measurements without a new best. 0: no held-out split, the last step is saved.
    held_out: float = 0.1
    max_held_out: int = 64  # at most this many held-out pairs
    eval_every: int = 10
    patience: int = 3


def read_adapter_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training config saved with an adapter (model, template, domain), or an error naming the folder."""
    p = Path(path)
    if not (p / "adapter_config.json").exists():
        raise ValueError(
            f"{p}: not a LoRA adapter folder (no adapter_config.json); make one with `rescore correct train`"
        )
    info = p / INFO
    return json.loads(info.read_text(encoding="utf-8")) if info.exists() else {}


def training_messages(record: NBest, cfg: LoraConfig, template: Any) -> list[dict[str, str]]:
    """The chat messages of one training pair: the same rendering as at correction time."""
    texts, chosen = prompt_texts(
        [h.text for h in record.hypotheses], record.chosen or 0, cfg.max_hypotheses, distinct=cfg.distinct
    )
    q = prepare_input(texts, chosen, GuardConfig())
    return template.render(
        {
            "best": q.best,
            "hypotheses": q.hypotheses,
            "others": q.others,
            "domain": cfg.domain,
            "entities": [],
            "examples": [],
        }
    )


def encode_pairs(records: Sequence[NBest], tokenizer: Any, cfg: LoraConfig) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per record; labels are -100 on the prompt so only the answer is learned."""
    template = load_template(cfg.template)
    pairs = []
    for r in records:
        messages = training_messages(r, cfg, template)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": r.reference}], tokenize=False)
        if not full.startswith(prompt):  # a template that renders the answer turn differently
            full = prompt + (r.reference or "") + (tokenizer.eos_token or "")
        p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        ids = tokenizer(full, add_special_tokens=False).input_ids
        if len(ids) > cfg.max_length or ids[: len(p_ids)] != p_ids:
            continue
        pairs.append((ids, [-100] * len(p_ids) + ids[len(p_ids) :]))
    return pairs


def split_pairs(pairs: list[Any], share: float, seed: int, most: int | None = None) -> tuple[list[Any], list[Any]]:
    """(train, held out): a seeded ``share`` of the pairs held out, at most ``most`` (none when fewer than 10
    pairs). The held-out loss is measured every few steps, so on a large set the cap keeps it from costing
    more than the training."""
    if len(pairs) < 10:
        return list(pairs), []
    return held_out_split(pairs, share, seed=seed + 1, most=most)


def padded(batch: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[Any, Any, Any]:
    """Input ids, labels (-100 where not scored) and attention mask, right-padded to the longest pair."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    x = torch.full((len(batch), width), pad, dtype=torch.long)
    y = torch.full((len(batch), width), -100, dtype=torch.long)
    m = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, labels) in enumerate(batch):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(ids)] = torch.tensor(labels)
        m[i, : len(ids)] = 1
    return x, y, m


def held_loss(model: Any, held: Sequence[tuple[list[int], list[int]]], pad: int, dev: str, batch_size: int) -> float:
    """Mean token loss on the held-out pairs (no dropout, no gradient)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(held), batch_size):
            x, y, m = padded(held[start : start + batch_size], pad)
            n = int((y[:, 1:] != -100).sum())
            total += model(input_ids=x.to(dev), attention_mask=m.to(dev), labels=y.to(dev)).loss.item() * n
            count += n
    model.train()
    return total / max(1, count)


def train_lora(
    records: Sequence[NBest],
    out_dir: str | os.PathLike[str],
    cfg: LoraConfig,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter and save it (with its config, and ``command``: how to make it again) to
    ``out_dir``; returns a summary.

    Stops at the end of ``epochs`` or when ``max_minutes`` is spent, whichever comes first, and saves what
    it has: the time box is part of the recipe on a shared CPU.
    """
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rescore.score.convert import ensure_hf_model

    budget = Budget(minutes=cfg.max_minutes)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    dev = training_device(cfg.device)
    folder = ensure_hf_model(cfg.llm)
    tok = AutoTokenizer.from_pretrained(folder)
    pairs = encode_pairs(records, tok, cfg)
    if not pairs:
        raise ValueError("no training pair fits max_length")
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(dev)
    peft_cfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_cfg)
    pairs, held = split_pairs(pairs, cfg.held_out, cfg.seed, cfg.max_held_out)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.1, 1 - s / total))
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    order: list[int] = []
    losses: list[float] = []
    step = 0
    stop = EarlyStopping(patience=cfg.patience)
    budget.max_steps = total

    def adapter_state() -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}

    while not budget.spent(step):
        if len(order) < cfg.batch_size:
            more = list(range(len(pairs)))
            random.shuffle(more)
            order += more
        batch = [pairs[i] for i in order[: cfg.batch_size]]
        del order[: cfg.batch_size]
        x, y, m = padded(batch, pad)
        loss = model(input_ids=x.to(dev), attention_mask=m.to(dev), labels=y.to(dev)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        losses.append(loss.detach().item())
        if on_step:
            on_step(step, total, sum(losses[-10:]) / len(losses[-10:]))
        if held and (step % cfg.eval_every == 0 or step == total):
            stop.measure(step, held_loss(model, held, pad, dev, cfg.batch_size), adapter_state)
            if stop.should_stop:
                break
    if held and (not stop.history or stop.history[-1][0] != step):  # the last steps, when not yet measured
        stop.measure(step, held_loss(model, held, pad, dev, cfg.batch_size), adapter_state)
    if stop.best_state is not None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, stop.best_state)
    seconds = budget.elapsed()
    summary = {
        "llm": cfg.llm,
        "template": cfg.template,
        "domain": cfg.domain,
        "distinct": cfg.distinct,
        "config": asdict(cfg),
        "pairs": len(pairs) + len(held),
        "train_pairs": len(pairs),
        "steps": step,
        "planned_steps": total,
        "time_boxed": step < total,
        "first_loss": sum(losses[:10]) / max(1, len(losses[:10])),
        "last_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "seconds": seconds,
        "device": dev,
        "held_out_pairs": len(held),
        "held_out_losses": stop.history,  # [step, loss] at each measurement
        "best_step": stop.best_step if held else step,
        "early_stopped": bool(held) and stop.should_stop,
    }
    if command:
        summary["command"] = command

    def write_adapter(folder: Path) -> None:
        model.save_pretrained(folder)
        (folder / INFO).write_text(json.dumps(summary, indent=2), encoding="utf-8")

    atomic_write(Path(out_dir), write_adapter)
    return summary


@dataclass
class AdapterSettings:
    """What an adapter decides about the corrector, and what the caller asked that it overrode."""

    llm: str
    backend: str
    template: str
    domain: str | None
    notes: list[str]
    distinct: bool | None = None  # the adapter's prompts showed distinct hypotheses only; None: the caller's


def adapter_settings(
    adapter: str | os.PathLike[str] | None, *, llm: str, backend: str, template: str | None, domain: str | None
) -> AdapterSettings:
    """Precedence with a LoRA adapter: it runs on transformers, on the LLM it was trained on; the template
    and domain it was trained with apply unless given. Without an adapter the arguments pass through."""
    if not adapter:
        return AdapterSettings(llm, backend, template or "nbest", domain, [])
    info = read_adapter_info(adapter)
    notes = []
    if backend not in {"transformers", "hf"}:
        notes.append("a LoRA adapter runs on the transformers backend: using --backend transformers")
    trained_on = info.get("llm", llm)
    if trained_on != llm:
        notes.append(f"the adapter was trained on {trained_on}: using it instead of --llm {llm}")
    return AdapterSettings(
        trained_on,
        "transformers",
        template or info.get("template", "nbest"),
        domain if domain is not None else info.get("domain"),
        notes,
        bool(info.get("distinct", False)),  # adapters from before the option saw every hypothesis
    )
