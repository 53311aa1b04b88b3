"""Bringing a data set and a model together: layout, normalisation and label range checked once."""

from __future__ import annotations

import os

import numpy as np
import torch

from nestc.data import Dataset, fit_to_input, load_dataset
from nestc.errors import DataError
from nestc.ir.classifier import ClassifierView


def data_for_model(view: ClassifierView, spec: str, data_dir: str | os.PathLike | None = None,
                   download: bool = False, mean: list[float] | None = None, std: list[float] | None = None,
                   limit: int | None = None, label: str = "model") -> Dataset:
    """Load ``spec`` shaped for ``view``'s input, and check its labels fit the model's classes."""
    net = view.net
    value = next(v for v in net.template.graph.input if v.name == net.input_names[0])
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    dataset = fit_to_input(load_dataset(spec, data_dir=data_dir, download=download, limit=limit),
                           ["N", *dims[1:]], mean, std, model_label=label)
    classes = output_classes(view, dataset.x_test[:2])
    for split, labels in (("train", dataset.y_train), ("test", dataset.y_test)):
        if labels is not None and len(labels) and int(labels.max()) >= classes:
            raise DataError(f"data '{spec}' has labels up to {int(labels.max())} in its {split} split, but "
                            f"{label} output '{view.output}' has {classes} classes")
    return dataset


def output_classes(view: ClassifierView, sample: np.ndarray) -> int:
    """Width of the logits the view produces."""
    was_training = view.training
    view.eval()
    with torch.no_grad():
        logits = view(torch.from_numpy(np.ascontiguousarray(sample)).to(view.net.device))
    view.train(was_training)
    return int(logits.shape[-1])


def split_validation(x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Hold out ``fraction`` of the training split (seeded) for decisions; returns train and val parts."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, round(fraction * len(x)))
    if n_val >= len(x):
        raise DataError(f"the training split has {len(x)} samples: too few to hold out a validation part")
    val, train = order[:n_val], order[n_val:]
    return x[train], None if y is None else y[train], x[val], None if y is None else y[val]
