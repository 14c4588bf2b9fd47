"""Optimizers and learning-rate schedules by name (utils/training/optim.py): the paper's schedules
as torch schedulers, replayed from the run's position so that a resumed run follows the lr of
the run that never stopped bitwise, from checkpoints written before and after the change."""

import bisect
import math
import warnings

import pytest
import torch
from torch.optim import lr_scheduler

from utils.training.optim import SCHEDULES, LearningRateSchedule, Optimization, ScheduleKind, build_optimizer

RELATIVE = 4e-15
"""How far a chained torch scheduler may drift from the closed form the project used before: a
few units in the last place of a float64 (measured: at most 1.6e-15)."""


def sgd(lr, parameters=None):
    parameters = parameters if parameters is not None else [torch.nn.Parameter(torch.zeros(2))]
    return build_optimizer("sgd", parameters, lr=lr, momentum=0.9, weight_decay=1e-4)


def detection_closed_form(base, steps_per_epoch, milestones, warmup, epoch, step):
    """MMDetection v1's 1x as the project wrote it before: the decay, times v1's linear warm-up factor."""
    lr = base * 0.1 ** bisect.bisect_right(milestones, epoch)
    iteration = epoch * steps_per_epoch + step
    if iteration < warmup:
        lr *= 1.0 - (1.0 - iteration / warmup) * (1.0 - 1.0 / 3.0)
    return lr


@pytest.mark.parametrize("base, step_size, gamma, epochs", [(0.1, 30, 0.1, 100), (0.045, 1, 0.98, 400), (0.005, 2, 0.5, 7)])
def test_the_papers_imagenet_schedules_are_the_step_decay_they_were(base, step_size, gamma, epochs):
    schedule = LearningRateSchedule(sgd(base), "step", step_size=step_size, gamma=gamma)
    for epoch in range(epochs):
        schedule.advance(epoch, step=3)  # once an epoch, whatever the step
        assert schedule.lr == pytest.approx(base * gamma ** (epoch // step_size), rel=RELATIVE, abs=0)
    schedule = LearningRateSchedule(sgd(base), "step", step_size=step_size, gamma=gamma)
    schedule.advance(0)
    assert schedule.lr == base


@pytest.mark.parametrize("steps_per_epoch, warmup", [(30, 50), (7, 500), (100, 0)])
def test_the_1x_schedule_warms_up_per_step_and_decays_after_epochs_8_and_11(steps_per_epoch, warmup):
    """The warm-up and the decay multiply where they overlap (a warm-up longer than eight epochs)."""
    schedule = LearningRateSchedule(sgd(0.02), "warmup_multistep", steps_per_epoch, milestones=[8, 11], warmup_steps=warmup)
    for epoch in range(12):
        for step in range(steps_per_epoch):
            schedule.advance(epoch, step)
            expected = detection_closed_form(0.02, steps_per_epoch, [8, 11], warmup, epoch, step)
            assert schedule.lr == pytest.approx(expected, rel=RELATIVE, abs=0), (epoch, step)
    if warmup:
        fresh = LearningRateSchedule(sgd(0.02), "warmup_multistep", steps_per_epoch, milestones=[8, 11], warmup_steps=warmup)
        fresh.advance(0, 0)
        assert fresh.lr == pytest.approx(0.02 / 3, rel=RELATIVE, abs=0)


def train(optimization, weights, positions):
    """Step ``optimization`` over ``weights`` at each (epoch, step) of ``positions``; the lr of each step."""
    lrs = []
    for epoch, step in positions:
        optimization.advance(epoch, step)
        lrs.append(optimization.lr)
        loss = (weights * torch.arange(1.0, 4.0)).square().sum() * (1 + epoch + step)
        optimization.step(loss)
    return lrs


@pytest.mark.parametrize("written_before_torch_schedules", [False, True])
def test_a_run_resumed_from_its_optimizer_state_follows_the_uninterrupted_lr_and_weights_bitwise(written_before_torch_schedules):
    """Resumed inside the warm-up of a schedule whose warm-up outlasts an epoch: the replay from the
    base lr gives the lr the uninterrupted run had at every later step, and so the same weights.
    A checkpoint written before the schedules were torch's holds the old closed form's lr and no
    ``initial_lr``; it resumes alike."""
    steps_per_epoch, positions = 4, [(epoch, step) for epoch in range(3) for step in range(4)]

    def optimization(weights):
        optimizer = sgd(0.01, [weights])
        return Optimization(optimizer, LearningRateSchedule(optimizer, "warmup_multistep", steps_per_epoch, milestones=[1, 2],
                                                            warmup_steps=6))

    straight_weights = torch.nn.Parameter(torch.ones(3))
    straight = optimization(straight_weights)
    straight_lrs = train(straight, straight_weights, positions)

    stopped_weights = torch.nn.Parameter(torch.ones(3))
    stopped = optimization(stopped_weights)
    train(stopped, stopped_weights, positions[:5])  # stopped after epoch 1, step 0, in the warm-up
    checkpoint = {**stopped.state(), "epoch": 1, "step": 1}
    if written_before_torch_schedules:
        for group in checkpoint["optimizer"]["param_groups"]:
            del group["initial_lr"]
            group["lr"] = detection_closed_form(0.01, steps_per_epoch, [1, 2], 6, 1, 0)

    resumed_weights = torch.nn.Parameter(stopped_weights.detach().clone())
    resumed = optimization(resumed_weights)
    resumed.resume(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the replay's steps before any optimizer step are on purpose: no warning
        resumed_lrs = train(resumed, resumed_weights, positions[5:])
    assert resumed_lrs == straight_lrs[5:]
    assert torch.equal(resumed_weights, straight_weights)


def test_a_run_resumed_with_other_schedule_flags_follows_them_from_where_it_stands():
    """main.py's --lr, --lr-step and --lr-gamma given anew on --resume apply from the resumed epoch on."""
    first_optimizer = sgd(0.01)
    first = Optimization(first_optimizer, LearningRateSchedule(first_optimizer, "step", step_size=30, gamma=0.1))
    for epoch in range(3):
        first.advance(epoch)
    optimizer = sgd(0.005)
    resumed = Optimization(optimizer, LearningRateSchedule(optimizer, "step", step_size=2, gamma=0.5))
    resumed.resume({"optimizer": first.optimizer.state_dict()})
    resumed.advance(3)
    assert resumed.lr == 0.0025
    resumed.advance(4)
    assert resumed.lr == 0.00125


def test_a_schedule_added_by_name_resumes_from_the_new_base_lr(monkeypatch):
    """A schedule is an entry in SCHEDULES; one that reads torch's base lrs (cosine restarting
    after its minimum at epoch 4) takes the lr given on resume, not the stopped run's
    ``initial_lr`` that the optimizer state holds."""
    monkeypatch.setitem(SCHEDULES, "cosine", ScheduleKind(lr_scheduler.CosineAnnealingLR))
    first_optimizer = sgd(0.1)
    first = Optimization(first_optimizer, LearningRateSchedule(first_optimizer, "cosine", T_max=4))
    for epoch in range(3):
        first.advance(epoch)
    optimizer = sgd(0.05)
    resumed = Optimization(optimizer, LearningRateSchedule(optimizer, "cosine", T_max=4))
    resumed.resume({"optimizer": first.optimizer.state_dict()})
    resumed.advance(5)
    assert resumed.lr == pytest.approx(0.05 * (1 - math.cos(math.pi / 4)) / 2, rel=1e-12)


def test_positions_skipped_by_unreadable_batches_leave_the_lr_where_stepping_through_them_would():
    stepped = LearningRateSchedule(sgd(0.01), "warmup_multistep", 10, milestones=[1], warmup_steps=8)
    jumped = LearningRateSchedule(sgd(0.01), "warmup_multistep", 10, milestones=[1], warmup_steps=8)
    for step in range(10):
        stepped.advance(0, step)
    jumped.advance(0, 0)
    jumped.advance(0, 9)
    assert jumped.lr == stepped.lr
    jumped.advance(1, 2)
    for step in range(3):
        stepped.advance(1, step)
    assert jumped.lr == stepped.lr


def test_the_step_clips_the_gradients_norm_before_the_update():
    weights = torch.nn.Parameter(torch.zeros(4))
    optimizer = build_optimizer("sgd", [weights], lr=1.0)
    optimization = Optimization(optimizer, LearningRateSchedule(optimizer, "step", step_size=1, gamma=1.0), clip_grad_norm=0.5)
    optimization.advance(0)
    optimization.step((weights - torch.tensor([30.0, 40.0, 0.0, 0.0])).square().sum())  # gradient (-60, -80, 0, 0), norm 100
    assert torch.allclose(weights.detach(), torch.tensor([0.3, 0.4, 0.0, 0.0]))
