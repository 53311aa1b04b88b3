"""TrainConfig validation and the resolution of its "auto" values."""

from __future__ import annotations

import pytest
import torch

from nestc.errors import OptionError
from nestc.training import TrainConfig, Trainer
from nestc.training.config import resolve_amp, resolve_device
from nestc.training.objective import Objective


def test_defaults_are_valid():
    TrainConfig().validate()
    TrainConfig(epochs=0.25, optimizer="adam", schedule="constant", amp="off", grad_clip=1.0).validate()


@pytest.mark.parametrize(("option", "value"), [
    ("epochs", 0), ("epochs", -1), ("epochs", float("nan")), ("epochs", "3"),
    ("batch_size", 0), ("batch_size", 2.5), ("batch_size", True),
    ("lr", 0.0), ("lr", float("inf")),
    ("optimizer", "rmsprop"), ("schedule", "step"), ("amp", "fp16"),
    ("weight_decay", -1e-4), ("warmup_epochs", -1),
    ("label_smoothing", 1.0), ("distill_weight", 1.5), ("distill_temperature", 0),
    ("device", "tpu"), ("device", "cuda:x"), ("seed", -1), ("quiet", "yes"), ("grad_clip", 0.0),
])
def test_nonsense_is_rejected_naming_the_option(option, value):
    """Refused where the config is made, and, set on a config made valid, by ``validate`` and the trainer."""
    with pytest.raises(OptionError, match=option):
        TrainConfig(**{option: value})
    config = TrainConfig()
    setattr(config, option, value)
    with pytest.raises(OptionError, match=option):
        config.validate()
    with pytest.raises(OptionError):
        Trainer(config)


def test_fit_rejects_bad_epoch_override():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(OptionError, match="epochs"):
        Trainer(TrainConfig(device="cpu", quiet=True)).fit(torch.nn.Linear(2, 2), x, y, epochs=0)


def test_auto_resolves_to_cpu_without_amp_when_no_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    trainer = Trainer(TrainConfig(device="auto", amp="auto"))
    assert trainer.device == torch.device("cpu")
    assert trainer.amp is False
    with pytest.raises(OptionError, match="CUDA"):
        resolve_device("cuda", 0)


def test_amp_modes_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is False
    assert resolve_amp("auto", cpu) is False
    assert resolve_amp("bf16", cpu) is True


@pytest.mark.parametrize(("weight", "labels", "teacher", "message"), [
    (0.0, False, False, "unlabeled data needs distillation from the original model"),
    (0.5, False, True, "distill_weight=1"),
    (0.5, True, False, "teacher_logits"),
])
def test_objective_needs_the_data_its_terms_use(weight, labels, teacher, message):
    with pytest.raises(OptionError, match=message):
        Objective.for_data(TrainConfig(distill_weight=weight), labels, teacher)


def test_cli_training_defaults_are_the_api_defaults() -> None:
    """`nestc train`/`compress` and `nestc.train`/`compress` train alike unless told otherwise, so the
    benchmark tables (made through the API) hold for the CLI."""
    from nestc import cli

    defaults = TrainConfig()
    for command in (cli.train, cli.compress):
        options = {p.name: p.default for p in command.params}
        assert options["weight_decay"] == defaults.weight_decay, command.name
        assert options["lr"] == defaults.lr and options["batch_size"] == defaults.batch_size, command.name
        assert options["optimizer"] == defaults.optimizer, command.name
