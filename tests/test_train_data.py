"""Batch bookkeeping: permutation sharding, fit plans, data placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nestc.errors import DataError, OptionError
from nestc.training.data import FitPlan, epoch_seed, place, shard_order


@given(n=st.integers(1, 300), world=st.integers(1, 5), local_batch=st.integers(1, 17), seed=st.integers(0, 2**31))
def test_ranks_together_draw_the_single_process_batches(n, world, local_batch, seed):
    if n < world:
        return
    full = shard_order(n, seed, 0, 1)
    shards = [shard_order(n, seed, r, world) for r in range(world)]
    usable = n - n % world
    assert {len(s) for s in shards} == {usable // world}  # same number of steps everywhere
    assert sorted(torch.cat(shards).tolist()) == sorted(full[:usable].tolist())
    for k in range(0, usable // world, local_batch):
        step = torch.cat([s[k:k + local_batch] for s in shards])
        assert sorted(step.tolist()) == sorted(full[k * world:min((k + local_batch) * world, usable)].tolist())


def test_epoch_seeds_differ_by_epoch_and_fit():
    seeds = {epoch_seed(0, fit, epoch) for fit in range(5) for epoch in range(5)}
    assert len(seeds) == 25
    assert epoch_seed(3, 1, 2) == epoch_seed(3, 1, 2)


@pytest.mark.parametrize(("samples", "batch", "world", "epochs", "per_epoch", "total", "n_epochs"), [
    (256, 32, 1, 3, 8, 24, 3),
    (250, 32, 1, 1, 8, 8, 1),          # last batch partial
    (100, 10, 1, 0.1, 10, 1, 1),       # 0.1 * 10 must stay one step
    (100, 10, 1, 2.25, 10, 23, 3),
    (101, 32, 2, 1, 4, 4, 1),          # 50 per rank, 16 per rank and step
])
def test_fit_plan(samples, batch, world, epochs, per_epoch, total, n_epochs):
    plan = FitPlan.make(samples, batch, world, epochs)
    assert (plan.steps_per_epoch, plan.total_steps, plan.epochs) == (per_epoch, total, n_epochs)
    assert sum(plan.steps_in(e) for e in range(plan.epochs)) == total


def test_fit_plan_rejects_impossible_sharing():
    with pytest.raises(OptionError, match="batch_size"):
        FitPlan.make(100, 1, 2, 1)
    with pytest.raises(DataError):
        FitPlan.make(1, 2, 2, 1)


def test_place_converts_and_checks():
    data = place(np.ones((6, 2), dtype=np.float64), np.arange(6, dtype=np.int32), None, torch.device("cpu"))
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64 and data.resident
    xb, yb, tb = data.take(torch.tensor([4, 1]))
    assert yb.tolist() == [4, 1] and tb is None and xb.shape == (2, 2)
    with pytest.raises(DataError, match="NaN"):
        place(np.array([[np.nan]]), None, None, torch.device("cpu"))
    with pytest.raises(DataError, match="class indices"):
        place(np.ones((2, 1)), np.array([0.0, 1.0]), None, torch.device("cpu"))
    with pytest.raises(DataError, match=">= 0"):
        place(np.ones((2, 1)), np.array([0, -1]), None, torch.device("cpu"))
