"""Trainer.fit / evaluate / predict_logits on CPU with real (tiny) training runs."""

from __future__ import annotations

import io
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from nestc.errors import DataError, OptionError, TrainingDiverged
from nestc.training import TrainConfig, Trainer
from nestc.training.synthetic import mlp, separable_problem


def _trainer(**overrides) -> Trainer:
    options = {"epochs": 4, "batch_size": 32, "lr": 0.05, "device": "cpu", "quiet": True} | overrides
    return Trainer(TrainConfig(**options))


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_mlp_learns_a_separable_problem():
    x, y = separable_problem(samples=512)
    model = mlp()
    trainer = _trainer()
    loss_before, _ = trainer.evaluate(model, x, y)
    result = trainer.fit(model, x, y)
    loss, accuracy = trainer.evaluate(model, x, y)
    assert accuracy > 0.95
    assert loss < loss_before / 4
    assert result.train_accuracy is not None and result.train_accuracy > 0.9
    assert result.epochs_run == 4 and result.rolled_back == 0 and result.samples_per_second > 0


def test_adam_constant_schedule_with_warmup_and_clipping_learns_too():
    x, y = separable_problem(samples=512)
    model = mlp()
    trainer = _trainer(optimizer="adam", lr=0.01, schedule="constant", warmup_epochs=1, grad_clip=1.0,
                       label_smoothing=0.1)
    trainer.fit(model, x, y)
    assert trainer.evaluate(model, x, y)[1] > 0.95


def test_distillation_on_unlabeled_data_makes_the_student_match_the_teacher():
    x, y = separable_problem(samples=512)
    teacher = mlp(seed=1)
    _trainer().fit(teacher, x, y)  # the "original model": trained on labels the student never sees
    trainer = _trainer(epochs=8, distill_weight=1.0)
    teacher_logits = trainer.predict_logits(teacher, x)
    teacher_classes = teacher_logits.argmax(1).numpy()
    student = mlp(seed=2)
    agreement_before = trainer.evaluate(student, x, teacher_classes)[1]
    kl_before = _kl(teacher_logits, trainer.predict_logits(student, x))
    result = trainer.fit(student, x, None, teacher_logits=teacher_logits)
    agreement = trainer.evaluate(student, x, teacher_classes)[1]
    assert result.train_accuracy is None
    assert agreement > 0.9 and agreement > agreement_before + 0.2
    assert _kl(teacher_logits, trainer.predict_logits(student, x)) < 0.1 * kl_before


def _kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float = 2.0) -> float:
    log_t, log_s = torch.log_softmax(teacher / temperature, 1), torch.log_softmax(student / temperature, 1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean().item()


def test_unlabeled_data_without_teacher_is_an_option_error():
    x, _ = separable_problem(samples=64)
    with pytest.raises(OptionError, match="unlabeled data needs distillation from the original model"):
        _trainer().fit(mlp(), x, None)


def test_mismatched_data_are_data_errors():
    x, y = separable_problem(samples=64)
    with pytest.raises(DataError, match="labels"):
        _trainer().fit(mlp(), x, y[:10])
    with pytest.raises(DataError, match="teacher_logits"):
        _trainer(distill_weight=0.5).fit(mlp(), x, y, teacher_logits=torch.zeros(10, 4))
    with pytest.raises(DataError, match="empty"):
        _trainer().fit(mlp(), x[:0], y[:0])


def test_same_seed_is_bit_identical_and_another_seed_is_not():
    x, y = separable_problem(samples=256)
    a, b, c = mlp(), mlp(), mlp()
    _trainer(epochs=2).fit(a, x, y)
    _trainer(epochs=2).fit(b, x, y)
    _trainer(epochs=2, seed=1).fit(c, x, y)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_fit_leaves_the_callers_random_stream_alone():
    x, y = separable_problem(samples=64)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _trainer(epochs=1).fit(mlp(), x, y)
    assert torch.equal(torch.rand(3), expected)


def test_fractional_epochs_run_the_right_number_of_steps():
    x, y = separable_problem(samples=256)  # 8 steps per epoch at batch 32
    calls = []
    result = _trainer().fit(mlp(), x, y, epochs=0.5, on_batch=lambda m: calls.append(m))
    assert len(calls) == 4 and result.epochs_run == 0.5
    calls.clear()
    _trainer().fit(mlp(), x, y, epochs=1.1, on_batch=lambda m: calls.append(m))
    assert len(calls) == 9


def test_on_batch_gets_the_model_after_each_step_and_can_enforce_masks():
    x, y = separable_problem(samples=256)
    model = mlp()
    mask = (torch.rand_like(model[0].weight) > 0.5).float()

    def apply_mask(m: nn.Module) -> None:
        assert m is model
        with torch.no_grad():
            m[0].weight.mul_(mask)

    _trainer(epochs=2).fit(model, x, y, on_batch=apply_mask)
    assert torch.all(model[0].weight[mask == 0] == 0)
    assert torch.any(model[0].weight[mask == 1] != 0)


def test_replaced_parameters_are_trained_by_the_next_fit():
    x, y = separable_problem(samples=256)
    model = mlp()
    trainer = _trainer(epochs=1)
    trainer.fit(model, x, y)
    old = model[2].weight
    model[0] = nn.Linear(16, 48)  # "grow" the hidden layer: new Parameter objects
    model[2] = nn.Linear(48, 4)
    before = _params(model)
    old_value = old.detach().clone()
    trainer.fit(model, x, y)
    assert all(not torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert torch.equal(old, old_value)
    assert trainer.evaluate(model, x, y)[1] > 0.9


class _NaNAt(nn.Module):
    """Wraps a model and poisons its output on the chosen forward calls (training mode only)."""

    def __init__(self, inner: nn.Module, poisoned: set[int] | None = None) -> None:
        super().__init__()
        self.inner, self.poisoned, self.calls = inner, poisoned, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.poisoned is None or self.calls in self.poisoned:
                return out * float("nan")
        return out


def test_nan_loss_rolls_back_and_training_recovers():
    x, y = separable_problem(samples=256)
    model = _NaNAt(mlp(), poisoned={1})
    trainer = _trainer(epochs=3)
    result = trainer.fit(model, x, y)
    assert result.rolled_back == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(result.train_loss)
    assert trainer.evaluate(model, x, y)[1] > 0.95


def test_persistent_nan_raises_and_leaves_the_last_good_weights():
    x, y = separable_problem(samples=256)
    model = _NaNAt(mlp(), poisoned={1})
    trainer = _trainer(epochs=1)
    trainer.fit(model, x, y)  # recovers: a good state to fall back to
    good = _params(model)
    model.poisoned = None  # from now on every forward is NaN
    with pytest.raises(TrainingDiverged, match="diverged") as info:
        trainer.fit(model, x, y)
    assert "\n" not in str(info.value)
    assert all(torch.equal(p, q) for p, q in zip(good, model.parameters()))


def test_a_step_that_leaves_outputs_overflowing_counts_as_diverged():
    """One step at lr 1e30 leaves finite weights near 1e30 and a finite loss (computed before the step),
    but every output after it is NaN: that fit diverged (it passed as trained, and compress failed later)."""
    x, y = separable_problem(samples=32)
    model = mlp()
    good = _params(model)
    with pytest.raises(TrainingDiverged, match="the loss or the outputs became NaN or Inf"):
        _trainer(lr=1e30, epochs=1).fit(model, x, y)
    assert all(torch.equal(p, q) for p, q in zip(good, model.parameters()))


def test_evaluate_on_a_hand_made_case_and_mode_restoration():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 1, 1, 1, 1])  # predictions 0, 1, 0, 1, 0: three right
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.5))
    model.train()
    model[0].eval()  # a submodule frozen on purpose must stay so
    loss, accuracy = _trainer().evaluate(model, logits, labels, batch_size=2)
    expected = -torch.log_softmax(logits, 1)[torch.arange(5), torch.from_numpy(labels)].mean()
    assert accuracy == pytest.approx(0.6)
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert model.training and model[1].training and not model[0].training


def test_predict_logits_is_float32_cpu_and_in_order():
    x = np.arange(30, dtype=np.float64).reshape(10, 3)
    out = _trainer().predict_logits(nn.Identity(), x, batch_size=4)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.equal(out, torch.from_numpy(x).float())


def test_rollback_retries_the_epoch_from_its_start_at_half_the_learning_rate():
    x, y = separable_problem(samples=256)  # 8 steps per epoch
    start = _params(mlp())

    def first_step_update(poisoned: set[int]) -> torch.Tensor:
        model = _NaNAt(mlp(), poisoned)
        after: list[list[torch.Tensor]] = []
        _trainer(epochs=1, schedule="constant").fit(model, x, y, on_batch=lambda m: after.append(_params(m)))
        first_good = after[8] if poisoned else after[0]  # the retry's first step follows 8 poisoned ones
        return torch.cat([(p - q).flatten() for p, q in zip(first_good, start)])

    clean, retried = first_step_update(set()), first_step_update({1})
    assert torch.allclose(retried, 0.5 * clean, rtol=1e-4, atol=1e-7)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_terminal_and_not_quiet(monkeypatch, quiet):
    x, y = separable_problem(samples=256)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _trainer(epochs=1, quiet=quiet).fit(mlp(), x, y)
    shown = terminal.getvalue()
    assert ("loss=" in shown and "samples/s=" in shown and "acc=" in shown) != quiet
