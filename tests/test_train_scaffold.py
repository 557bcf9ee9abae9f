"""The training scaffold the CTC head, deep fusion and LoRA loops share."""

import math
import time

import pytest

from rescore.train.scaffold import (
    Budget,
    EarlyStopping,
    atomic_write,
    autocast,
    held_out_split,
    stable_share,
    training_device,
    warmup_cosine,
)


def test_budget_progress_is_the_further_of_steps_and_time():
    b = Budget(minutes=0, max_steps=10)
    assert b.progress(5) == 0.5 and not b.spent(9) and b.spent(10)
    assert not Budget().spent(10**9)  # no limit given: never spent
    timed = Budget(minutes=0.5 / 60)  # half a second
    time.sleep(0.6)
    assert timed.spent() and timed.progress() == 1.0
    with pytest.raises(ValueError, match="clock"):
        Budget(clock="sundial")


def test_warmup_then_cosine_to_the_floor():
    assert warmup_cosine(0.025, warmup=0.05) == pytest.approx(0.5)
    assert warmup_cosine(0.05, warmup=0.05) == pytest.approx(1.0)
    assert warmup_cosine(1.0, warmup=0.05, floor=0.1) == pytest.approx(0.1)
    mid = warmup_cosine(0.525, warmup=0.05)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_held_out_split_keeps_groups_whole_and_is_reproducible():
    items = [(spk, i) for spk in "abcdefghij" for i in range(3)]
    train, held = held_out_split(items, 0.2, seed=0, group=lambda x: x[0])
    assert len(held) == 6 and {s for s, _ in held}.isdisjoint({s for s, _ in train})
    assert held_out_split(items, 0.2, seed=0, group=lambda x: x[0]) == (train, held)
    assert held_out_split(items, 0.2, seed=1, group=lambda x: x[0]) != (train, held)
    _, one = held_out_split(items[:3], 0.5, seed=0, group=lambda x: x[0], minimum=1)
    assert one == []  # a single group is never held out whole: training would be empty
    _, capped = held_out_split(items, 0.5, seed=0, most=2)
    assert len(capped) == 2
    ids = [f"utt{i}" for i in range(200)]
    _, stable = held_out_split(ids, 0.1, group=lambda x: x)
    assert stable == [i for i in ids if stable_share(i) < 0.1]
    _, more = held_out_split([*ids, "new1", "new2"], 0.1, group=lambda x: x)
    assert set(stable) <= set(more)  # hash mode: items added later never move an old one across


def test_early_stopping_keeps_the_best_state_and_counts_patience():
    stop = EarlyStopping(patience=2)
    assert stop.measure(1, 3.0, lambda: "s1")
    assert not stop.measure(2, 3.5, lambda: "s2") and not stop.should_stop
    assert not stop.measure(3, 3.1, lambda: "s3") and stop.should_stop
    assert (stop.best, stop.best_step, stop.best_state) == (3.0, 1, "s1")
    assert not EarlyStopping(patience=0).should_stop


def test_atomic_write_replaces_files_and_folders_whole(tmp_path):
    f = tmp_path / "ckpt.pt"
    atomic_write(f, lambda p: p.write_text("one"))
    atomic_write(f, lambda p: p.write_text("two"))
    assert f.read_text() == "two"

    def folder(text):
        def write(p):
            p.mkdir()
            (p / "weights").write_text(text)

        return write

    d = tmp_path / "adapter"
    atomic_write(d, folder("a"))
    atomic_write(d, folder("b"))
    assert (d / "weights").read_text() == "b"
    with pytest.raises(RuntimeError):
        atomic_write(d, lambda p: (_ for _ in ()).throw(RuntimeError("killed mid-write")))
    assert (d / "weights").read_text() == "b"  # the previous checkpoint survives
    assert sorted(x.name for x in tmp_path.iterdir()) == ["adapter", "ckpt.pt"]  # and no half-written one


def test_device_and_autocast_on_cpu():
    import torch

    assert training_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert training_device("auto") == "cpu"
        with pytest.raises(ValueError, match="cuda"):
            training_device("cuda")
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "fp8")
