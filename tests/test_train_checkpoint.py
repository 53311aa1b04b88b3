"""Checkpoints: atomic files, and resume ending bit-identical to an uninterrupted fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nestc.errors import OptionError
from nestc.training import TrainConfig, Trainer
from nestc.training.synthetic import mlp, separable_problem


def _trainer(**overrides) -> Trainer:
    options = {"epochs": 3, "batch_size": 32, "lr": 0.05, "device": "cpu", "quiet": True} | overrides
    return Trainer(TrainConfig(**options))


class _Crash:
    """on_batch callback that simulates Ctrl-C after ``after`` optimizer steps."""

    def __init__(self, after: int) -> None:
        self.after, self.steps = after, 0

    def __call__(self, model: nn.Module) -> None:
        self.steps += 1
        if self.steps == self.after:
            raise KeyboardInterrupt


class _DropoutMLP(nn.Sequential):
    """Dropout draws from the global generator, so resume must restore RNG state to match."""

    def __init__(self) -> None:
        base = mlp(sizes=(16, 32, 4))
        super().__init__(base[0], base[1], nn.Dropout(0.2), base[2])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_after_interrupt_is_bit_identical(tmp_path, optimizer):
    x, y = separable_problem(samples=256)  # 8 steps per epoch
    reference = _DropoutMLP()
    _trainer(optimizer=optimizer).fit(reference, x, y, checkpoint=tmp_path / "ref.pt")

    path = tmp_path / "run.pt"
    model = _DropoutMLP()
    with pytest.raises(KeyboardInterrupt):
        _trainer(optimizer=optimizer).fit(model, x, y, checkpoint=path, on_batch=_Crash(after=12))  # mid epoch 2
    assert path.exists()
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))

    result = _trainer(optimizer=optimizer).fit(model, x, y, checkpoint=path, resume=True)
    assert result.epochs_run == 3
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(p, q), name


def test_resume_without_a_file_starts_fresh_and_later_fits_line_up(tmp_path):
    x, y = separable_problem(samples=128)
    a, b = mlp(), mlp()
    first, second = _trainer(), _trainer()
    first.fit(a, x, y, checkpoint=tmp_path / "a.pt", resume=True)
    second.fit(b, x, y)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    first.fit(a, x, y, epochs=1)
    second.fit(b, x, y, epochs=1)  # the second fit of each trainer draws the same batches
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_checkpoint_is_written_atomically_and_holds_only_data(tmp_path):
    x, y = separable_problem(samples=128)
    path = tmp_path / "sub" / "fit.pt"
    _trainer().fit(mlp(), x, y, epochs=0.5, checkpoint=path)
    assert [p.name for p in path.parent.iterdir()] == ["fit.pt"]  # no temporary files left
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 1 and payload["schedule"]["step"] == 2
    assert isinstance(payload["rng"]["cpu"], torch.Tensor)


def test_resume_rejects_a_checkpoint_from_another_fit(tmp_path):
    x, y = separable_problem(samples=128)
    path = tmp_path / "fit.pt"
    _trainer().fit(mlp(), x, y, checkpoint=path)
    with pytest.raises(OptionError, match=r"fit\.pt: written by a different fit"):
        _trainer(batch_size=16).fit(mlp(), x, y, checkpoint=path, resume=True)
    with pytest.raises(OptionError, match=r"fit\.pt: does not fit this model \(.*size mismatch.*\[8, 16\]") as err:
        _trainer().fit(mlp(sizes=(16, 8, 4)), x, y, checkpoint=path, resume=True)
    assert "\n" not in str(err.value)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(OptionError, match="cannot read checkpoint"):
        _trainer().fit(mlp(), x, y, checkpoint=path, resume=True)
