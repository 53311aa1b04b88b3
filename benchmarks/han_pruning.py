"""Iterative magnitude pruning on a fixed schedule, as Han et al. (2015) describe it.

The NeST paper's "pruning only" figures are Han et al.'s: every layer loses its smallest weights on
a schedule fixed in advance, the network is retrained, and this repeats; there is no step that is
undone, no global ranking across layers and no removal of neurons. This module is that baseline,
written against nestc's IR and trainer so that it trains with exactly the same optimiser, learning
rate schedule, batch size and data as the nestc rows of the table.

Each round removes ``fraction`` of every layer's remaining weights (smallest |w| first; Han et al.'s
threshold of a quality parameter times the layer's standard deviation removes the same share from
every layer of near-normal weights) and retrains for ``retrain_epochs``. The result is the sparsest
round whose accuracy on the decision data is within the budget. Rounds go on while epochs remain, so
one round that dips just below the budget does not end the method early; they stop once
``GIVE_UP_ROUNDS`` rounds in a row are more than ``give_up`` points below it, where further pruning
cannot come back. (Until the LeNet tables of 2026-11-30 one such round ended it: a residual network
retrained at 0.05 dips by more than that after its first 10 % round and recovers in the next, so
Han et al. stopped at the dense model.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch

from nestc.api import load_network, save_network
from nestc.ir.classifier import trainable_view
from nestc.ir.network import Network
from nestc.model_data import data_for_model
from nestc.passes.base import ensure_masks, layers
from nestc.passes.batch_norms import fold_batch_norms, insert_batch_norms, statistics_sample
from nestc.passes.prune_connections import mask_smallest
from nestc.training import TrainConfig, Trainer

GIVE_UP_ROUNDS = 3
"""Rounds in a row more than ``give_up`` points below the budget that end the method."""
ROUND_FRACTION = 0.1
"""Share of every layer's remaining weights a round prunes: 10 % rounds fill a 40-epoch budget of
one-epoch retrainings; 20 % rounds stopped after about 20 and ended 1.5-3x less sparse."""


@dataclass
class HanResult:
    """The chosen round: accuracy on the decision data, epochs spent and the rounds' history."""

    accuracy: float
    reference: float
    epochs: float
    met_budget: bool
    history: list[tuple[int, float]]  # (active connections, accuracy) after each round


def prune_each_layer(net: Network, fraction: float) -> None:
    """Mask ``fraction`` of every layer's active weights, smallest magnitude first."""
    for layer in layers(net):
        active = net.mask(layer.weight) > 0
        count = int(fraction * int(active.sum()))
        if count > 0:
            mask_smallest(net, layer.weight, net.tensor(layer.weight).detach().abs(), active, count)


def han_pruning(model: str, output: str, data: str, train_config: TrainConfig, max_acc_drop: float,
                max_epochs: float, fraction: float = ROUND_FRACTION, retrain_epochs: float = 1.0,
                give_up: float = 1.0, limit: int | None = None, batch_norm: bool = False) -> HanResult:
    """Prune ``model`` round by round and write the sparsest round within ``max_acc_drop`` points.

    Decisions use the test split, as ``nestc compress`` does by default (``validation="test"``), so the
    two rows are judged on the same data; ``limit`` takes the same share of the training split.
    ``batch_norm``: train every Conv without a BatchNormalization with one, folded back into the written file,
    as ``nestc compress`` does when its learning-rate check chose to (``NestConfig.batch_norm``): pass what
    compress reported (``batch_norms_inserted``) and pruning alone gets the same training.
    """
    view = trainable_view(load_network(model), label=model)
    dataset = data_for_model(view, data, limit=limit, label=model)
    if batch_norm:
        view.net, _ = insert_batch_norms(view.net, statistics_sample(dataset.x_train))
    trainer = Trainer(train_config)
    view.to(trainer.device)
    ensure_masks(view.net)

    def on_device(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), device=trainer.device)

    x_train, y_train = on_device(dataset.x_train), on_device(dataset.y_train)
    x_val, y_val = on_device(dataset.x_test), on_device(dataset.y_test)
    reference = float(trainer.evaluate(view, x_val, y_val)[1])
    budget = reference - max_acc_drop / 100
    best, best_accuracy, epochs, history, far_below = copy.deepcopy(view.net), reference, 0.0, [], 0
    while epochs + retrain_epochs <= max_epochs + 1e-9 and far_below < GIVE_UP_ROUNDS:
        prune_each_layer(view.net, fraction)
        round_config = replace(train_config, seed=train_config.seed + len(history) + 1)
        Trainer(round_config).fit(view, x_train, y_train, epochs=retrain_epochs)
        epochs += retrain_epochs
        accuracy = float(trainer.evaluate(view, x_val, y_val)[1])
        history.append((sum(int(view.net.mask(layer.weight).sum()) for layer in layers(view.net)), accuracy))
        if accuracy >= budget:
            best, best_accuracy = copy.deepcopy(view.net), accuracy
        far_below = far_below + 1 if accuracy < budget - give_up / 100 else 0
    save_network(fold_batch_norms(best), output)
    return HanResult(best_accuracy, reference, epochs, best_accuracy >= budget, history)
