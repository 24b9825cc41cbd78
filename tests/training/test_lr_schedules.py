"""LR schedules against mindcv 0.3.0's ``create_scheduler`` (every scheduler name, integer epochs) and
against hand-written formulas where mindcv has no answer (fractional epochs, min_lr 0 for one_cycle)."""

from __future__ import annotations

import itertools
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest

from mindcv_mobile.training import create_lr_schedule
from mindcv_mobile.training.lr import SCHEDULER_CHOICES, list_schedulers, schedule_kwargs

MINDCV_NAMES = (
    "constant",
    "cosine_decay",
    "warmup_cosine_decay",
    "exponential_decay",
    "polynomial_decay",
    "step_decay",
    "multi_step_decay",
    "one_cycle",
    "cyclic",
)
WHOLE_RUN = ("one_cycle", "cyclic")
LR = 0.3
NUM_EPOCHS = 9


@pytest.fixture(scope="module")
def mindcv_scheduler():
    module = pytest.importorskip(
        "mindcv.scheduler", reason="mindcv is the reference for LR schedules: pip install mindcv==0.3.0 --no-deps"
    )
    return module.create_scheduler


def _assert_same(ours, reference, label):
    assert len(ours) == len(reference), label
    diff = np.max(np.abs(np.asarray(ours) - np.asarray(reference))) if ours else 0.0
    assert diff <= 1e-12, f"{label}: max abs diff {diff}"


def _grid(name):
    """Integer-epoch cases mindcv accepts (one_cycle/cyclic: no warm-up, no stair; one_cycle: min_lr > 0,
    mindcv divides by it). decay_epochs 2 is shorter than the run, 20 longer; min_lr 0.05 lies above
    where step/multi-step/exponential/polynomial_decay end, so a floor at min_lr would show."""
    for spe, warmup, factor, stair, (cycles, cycle_decay), decay_epochs, min_lr, milestones in itertools.product(
        (1, 3, 7),
        (0, 2),
        (0.0, 0.01),
        (False, True),
        ((1, 1.0), (2, 0.5)),
        (2, 20),
        (0.0, 1e-5, 0.05),
        ([5, 2], [1, 1, 4]),
    ):
        if name in WHOLE_RUN and (warmup or stair or factor):
            continue
        if name == "one_cycle" and min_lr == 0:
            continue
        yield {
            "steps_per_epoch": spe,
            "warmup_epochs": warmup,
            "warmup_factor": factor,
            "lr_epoch_stair": stair,
            "num_cycles": cycles,
            "cycle_decay": cycle_decay,
            "decay_epochs": decay_epochs,
            "min_lr": min_lr,
            "milestones": milestones,
        }


def _both(mindcv_scheduler, name, num_epochs=NUM_EPOCHS, decay_rate=0.5, **case):
    reference = mindcv_scheduler(scheduler=name, lr=LR, num_epochs=num_epochs, decay_rate=decay_rate, **case)
    case["multi_step_decay_milestones"] = case.pop("milestones")
    ours = create_lr_schedule(name, LR, num_epochs=num_epochs, decay_rate=decay_rate, **case)
    return ours, reference


@pytest.mark.parametrize("name", MINDCV_NAMES)
def test_equals_mindcv_over_grid(name, mindcv_scheduler, caplog):
    caplog.set_level(logging.ERROR)  # both sides warn about decay_epochs longer than the run
    count = 0
    for case in _grid(name):
        ours, reference = _both(mindcv_scheduler, name, **case)
        _assert_same(ours, reference, f"{name} {case}")
        assert len(ours) == case["steps_per_epoch"] * NUM_EPOCHS
        count += 1
    assert count >= 24


@pytest.mark.parametrize("name", ["step_decay", "multi_step_decay", "exponential_decay", "polynomial_decay"])
def test_min_lr_is_no_floor(name, mindcv_scheduler):
    case = {"steps_per_epoch": 3, "warmup_epochs": 0, "decay_epochs": 2, "min_lr": 0.1, "milestones": [1, 1, 4]}
    ours, reference = _both(mindcv_scheduler, name, **case)
    _assert_same(ours, reference, name)
    assert min(ours) < 0.1


@pytest.mark.parametrize("name", WHOLE_RUN)
def test_whole_run_schedules_on_short_runs(name, mindcv_scheduler):
    # Runs of 1..35 steps: one_cycle's rise ends before step 0 on runs of <= 3 steps.
    for spe, num_epochs, cycles in itertools.product((1, 2, 3, 7), (1, 2, 5), (1, 2, 3)):
        if name == "cyclic" and spe * num_epochs < 2 * cycles:
            continue  # mindcv divides by zero there; ours raises (test_cyclic_needs_two_steps_per_cycle)
        case = {"steps_per_epoch": spe, "warmup_epochs": 0, "num_cycles": cycles, "min_lr": 1e-4, "milestones": []}
        ours, reference = _both(mindcv_scheduler, name, num_epochs=num_epochs, **case)
        _assert_same(ours, reference, f"{name} {spe} steps x {num_epochs} epochs, {cycles} cycles")


def test_polynomial_decay_is_mindcvs_not_the_toolkit_polynomial(mindcv_scheduler):
    args = {"steps_per_epoch": 5, "warmup_epochs": 3, "decay_epochs": 20, "min_lr": 1e-6, "milestones": []}
    ours, reference = _both(mindcv_scheduler, "polynomial_decay", num_epochs=30, decay_rate=0.9, **args)
    _assert_same(ours, reference, "polynomial_decay")
    toolkit = create_lr_schedule("polynomial", LR, 5, 30, min_lr=1e-6, warmup_epochs=3, decay_epochs=20, power=0.9)
    assert np.max(np.abs(np.array(toolkit) - ours)) > 0.04  # mid-run the two curves differ


def test_recipe_keys_reach_the_schedule(mindcv_scheduler):
    cfg = SimpleNamespace(
        scheduler="warmup_cosine_decay",
        lr=LR,
        epoch_size=12,
        min_lr=1e-5,
        warmup_epochs=2.0,
        warmup_factor=0.01,
        decay_epochs=4.0,
        decay_rate=0.5,
        multi_step_decay_milestones=[3, 6],
        lr_epoch_stair=False,
        num_cycles=2,
        cycle_decay=0.5,
        poly_power=2.0,
    )
    ours = create_lr_schedule(steps_per_epoch=3, **schedule_kwargs(cfg))
    reference = mindcv_scheduler(
        3, "cosine_decay", LR, 1e-5, 2, 0.01, 4, 0.5, [3, 6], 12, num_cycles=2, cycle_decay=0.5
    )
    _assert_same(ours, reference, "recipe")


def test_every_mindcv_name_is_accepted():
    assert set(MINDCV_NAMES) <= set(SCHEDULER_CHOICES)
    assert set(list_schedulers()) <= set(SCHEDULER_CHOICES)
    assert "polynomial" in list_schedulers()


# ----------------------------------------------------------------- fractional epochs (mindcv fails there)


def test_step_decay_every_2_4_epochs():
    # mindcv's step_lr: lr * gamma ** floor(epoch / step_size); with fractional step_size the decay
    # falls on whole steps: every round(2.4 * 5) = 12 steps after warm-up.
    s = create_lr_schedule("step_decay", 0.1, steps_per_epoch=5, num_epochs=8, decay_epochs=2.4, decay_rate=0.97)
    expected = [0.1 * 0.97 ** (j // 12) for j in range(40)]
    assert np.max(np.abs(np.array(s) - expected)) <= 1e-12
    assert s[11] == s[0] and s[12] < s[11] and s[24] < s[23]


def test_fractional_warmup_then_cosine():
    # warm-up 1.5 epochs of 4 steps = 6 steps (mindcv's linear_refined_lr: start + i / W * (lr - start));
    # then mindcv's cosine_decay_refined_lr: min_lr + (lr - min_lr) * (1 + cos(pi * j / D)) / 2 with
    # D = round(2.5 * 4) = 10 steps, min_lr afterwards.
    lr, min_lr, factor = 0.4, 0.01, 0.1
    s = create_lr_schedule(
        "cosine_decay", lr, 4, 5, min_lr=min_lr, warmup_epochs=1.5, warmup_factor=factor, decay_epochs=2.5
    )
    start = lr * factor
    expected = [start + i / 6 * (lr - start) for i in range(6)]
    expected += [min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * j / 10)) for j in range(10)]
    expected += [min_lr] * 4
    assert np.max(np.abs(np.array(s) - expected)) <= 1e-12


def test_fractional_warmup_then_exponential_and_polynomial_decay():
    # After W = round(0.5 * 4) = 2 warm-up steps: mindcv's exponential_refined_lr lr * rate ** (j / spe)
    # and polynomial_refined_lr lr * (1 - j / M) ** rate over the M = 10 remaining steps.
    expo = create_lr_schedule("exponential_decay", 1.0, 4, 3, warmup_epochs=0.5, decay_rate=0.5)
    poly = create_lr_schedule("polynomial_decay", 1.0, 4, 3, warmup_epochs=0.5, decay_rate=0.5)
    assert expo[:2] == pytest.approx([0.0, 0.5]) and poly[:2] == pytest.approx([0.0, 0.5])
    assert np.max(np.abs(np.array(expo[2:]) - [0.5 ** (j / 4) for j in range(10)])) <= 1e-12
    assert np.max(np.abs(np.array(poly[2:]) - [(1 - j / 10) ** 0.5 for j in range(10)])) <= 1e-12


def test_fractional_milestones_and_epoch_stair():
    # Milestone 1.5 epochs of 4 steps: the decay lands on step 6 (mindcv counts whole epochs only).
    s = create_lr_schedule("multi_step_decay", 1.0, 4, 3, decay_rate=0.1, multi_step_decay_milestones=[1.5])
    assert s == pytest.approx([1.0] * 6 + [0.1] * 6)
    # The stair holds each epoch at its first step's value, also across a fractional warm-up end.
    stair = create_lr_schedule("constant", 1.0, 4, 3, warmup_epochs=1.5, lr_epoch_stair=True)
    assert stair == pytest.approx([0.0] * 4 + [4 / 6] * 4 + [1.0] * 4)


def test_one_cycle_with_zero_min_lr_ends_at_zero():
    # mindcv's one_cycle_lr (div_factor 25, pct_start 0.3, cos): rise over U = 0.3 * n - 1 steps from lr / 25
    # to lr, then fall to the final LR (here 0, where mindcv divides by min_lr) at step n - 1.
    n = 20
    top = 0.3 * n - 1

    def cos_between(a, b, p):
        return b + (a - b) * (1 + math.cos(math.pi * p)) / 2

    expected = [
        cos_between(LR / 25, LR, i / top) if i <= top else cos_between(LR, 0.0, (i - top) / (n - 1 - top))
        for i in range(n)
    ]
    s = create_lr_schedule("one_cycle", LR, 4, 5, min_lr=0.0)
    assert np.max(np.abs(np.array(s) - expected)) <= 1e-12
    assert s[-1] == pytest.approx(0.0, abs=1e-15) and max(s) == pytest.approx(LR)


# ----------------------------------------------------------------- the toolkit's own polynomial


def test_toolkit_polynomial_golden_values():
    s = create_lr_schedule("polynomial", lr=1.0, steps_per_epoch=10, num_epochs=5, min_lr=0.1, power=2.0)
    assert s[0] == pytest.approx(1.0)
    assert s[25] == pytest.approx(0.1 + 0.9 * 0.25)  # (1 - 1/2)^2
    assert s[49] == pytest.approx(0.1 + 0.9 * (1 / 50) ** 2)
    short = create_lr_schedule("polynomial", 1.0, 10, 5, min_lr=0.1, decay_epochs=2, power=2.0)
    assert short[20:] == [0.1] * 30  # min_lr after decay_epochs


def test_exponential_decay_golden_values():
    s = create_lr_schedule("exponential_decay", lr=1.0, steps_per_epoch=2, num_epochs=3, decay_rate=0.5, min_lr=0.3)
    assert s == pytest.approx([1.0, 0.5**0.5, 0.5, 0.5**1.5, 0.25, 0.5**2.5])  # per step, no floor at min_lr


@pytest.mark.parametrize("scheduler", sorted(set(list_schedulers()) - set(WHOLE_RUN)))
def test_every_scheduler_reaches_lr_at_warmup_end(scheduler):
    s = create_lr_schedule(scheduler, lr=0.3, steps_per_epoch=7, num_epochs=9, warmup_epochs=3, decay_epochs=2)
    assert len(s) == 63
    assert s[0] == 0.0
    assert s[20] == pytest.approx(0.3 * 20 / 21)
    assert s[21] == pytest.approx(0.3)
    assert all(0.0 <= v <= 0.3 + 1e-12 for v in s)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("name", WHOLE_RUN)
def test_whole_run_schedules_reject_warmup_and_stair(name):
    with pytest.raises(ValueError, match=r"warmup_epochs=3, lr_epoch_stair=False: set warmup_epochs: 0"):
        create_lr_schedule(name, 0.1, 5, 10, min_lr=1e-6, warmup_epochs=3)
    with pytest.raises(ValueError, match=r"warmup_epochs=0, lr_epoch_stair=True"):
        create_lr_schedule(name, 0.1, 5, 10, min_lr=1e-6, lr_epoch_stair=True)


def test_cyclic_needs_two_steps_per_cycle():
    with pytest.raises(ValueError, match=r"cyclic needs at least 2 \* num_cycles = 6 steps, got .* = 4"):
        create_lr_schedule("cyclic", 0.1, 2, 2, num_cycles=3)


def test_unknown_scheduler_lists_every_accepted_name():
    with pytest.raises(ValueError) as err:
        create_lr_schedule("one_cycl", 0.1, 5, 10)
    text = str(err.value)
    assert "'one_cycl'" in text and "did you mean 'one_cycle'" in text
    for name in MINDCV_NAMES + ("polynomial",):
        assert name in text


def test_negative_milestone_is_rejected():
    with pytest.raises(ValueError, match=r"multi_step_decay_milestones must be epochs >= 0, got \[-1, 3\]"):
        create_lr_schedule("multi_step_decay", 0.1, 5, 10, multi_step_decay_milestones=[-1, 3])
