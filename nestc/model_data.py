"""Bringing a data set and a model together: layout, normalisation and label range checked once.

A model exported elsewhere was trained on inputs normalised in a way its file does not record:
torchvision's ``ToTensor`` alone ([0, 1]), ``Normalize(0.5, 0.5)`` ([-1, 1]), the data set's own
statistics, ImageNet's. Feeding it another one costs accuracy silently, and retraining under it
would change what the emitted model expects. So unless ``mean``/``std`` are given, the
normalisation is the one recorded in a file nestc wrote (:mod:`nestc.input_record`), else the
candidate (those above, the statistics of the files actually read, or the raw [0, 255] pixels) that
fits the model best on a sample of the test split: among the candidates it classifies about as well
under as under the best one, the one with the lowest cross-entropy (a random seed is equally bad under
all of them and keeps the first). Images of another size than the model's input are fitted the same
way: centred padding or resizing (``nestc.data.fit.SPATIAL_FITS``), padding (resizing when the images
are larger) where the model cannot tell them apart.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import onnx
import torch

from nestc.data import Dataset, fit_to_input, load_dataset
from nestc.data.dataset import channel_stats
from nestc.data.fit import SPATIAL_FITS, default_spatial_fit, spatial_target
from nestc.errors import DataError, OptionError, about
from nestc.input_record import KEY, recorded_input
from nestc.ir.classifier import ClassifierView
from nestc.ir.network import Network
from nestc.metadata import metadata_value
from nestc.training.data import place
from nestc.training.inference import eval_batch_size, evaluate


def data_for_model(view: ClassifierView, spec: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                   download: bool = False, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   limit: int | None = None, label: str = "model") -> Dataset:
    """Load ``spec`` shaped for ``view``'s input, and check its labels fit the model's classes.

    ``label`` names the model (its file) in errors, those of running it on the data included.
    """
    mean, std = check_normalisation(mean, std)
    net = view.net
    value = next(v for v in net.template.graph.input if v.name == net.input_names[0])
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if net.pixel_inputs and mean is not None:
        raise OptionError(f"--mean/--std: {label} input '{value.name}' takes uint8 pixels, which nestc feeds as the "
                          "stored 0..255 values (the model scales them itself); leave both out")
    raw = load_dataset(spec, data_dir=data_dir, download=download, limit=limit, input_shape=["N", *dims[1:]])
    with about(label):  # checking labels and choosing the normalisation run the model, which knows no file
        try:
            _check_labels(view, raw, ["N", *dims[1:]], spec, label)
        except DataError as exc:
            raise DataError(f"{exc}{_seed_hint(net, raw)}") from exc
        spatial = None
        if mean is None and std is None:
            norms = [pixel_normalisation(raw, f"{label} input '{value.name}'")] if net.pixel_inputs else None
            recorded = recorded_input(net.template, raw.x_test.shape[1])
            spatial, mean, std = recorded or choose_input_fit(view, raw, ["N", *dims[1:]], label, norms)
        return fit_to_input(raw, ["N", *dims[1:]], mean, std, model_label=label, spatial=spatial,
                            pixels=bool(net.pixel_inputs))


def pixel_normalisation(raw: Dataset, label: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` that gives back ``raw``'s pixel values 0..255, for a model that takes uint8 pixels
    (``label`` names its input): images are read at nestc's [0, 1] scale (std 1/255); data stored at a larger
    scale (a ``.npz`` of float pixel values) are taken as they are (std 1). Values outside 0..255 at that
    scale are no pixels, and are refused rather than saturated."""
    low = float(min(raw.x_train.min(initial=0.0), raw.x_test.min(initial=0.0)))
    high = float(max(raw.x_train.max(initial=0.0), raw.x_test.max(initial=0.0)))
    scale = 255.0 if high <= 1.0 else 1.0
    if low < 0 or high * scale > 255:
        raise DataError(f"data '{raw.name}' holds values from {low:g} to {high:g}; {label} takes uint8 pixels, "
                        "0..255 (or images at the [0, 1] scale nestc reads them at)")
    channels = raw.x_test.shape[1]
    return (0.0,) * channels, (1.0 / scale,) * channels


def _seed_hint(net: Network, raw: Dataset) -> str:
    """For a model ``nestc seed`` built, the command that builds the same seed for these data: seeds are
    made for MNIST-sized grey images and 10 classes unless told otherwise, which CIFAR data are not."""
    arch = seed_architecture(net.template)
    if arch is None or raw.x_test.ndim != 4:
        return ""
    shape = ",".join(str(size) for size in raw.x_test.shape[1:])
    labels = [y for y in (raw.y_train, raw.y_test) if y is not None and len(y)]
    classes = f" --classes {max(int(y.max()) for y in labels) + 1}" if labels else ""
    return (f"; `nestc seed {arch} --input-shape {shape}{classes}` (with your other seed options) builds the seed "
            "for these data")


def seed_architecture(model: onnx.ModelProto) -> str | None:
    """The architecture of a file ``nestc seed`` wrote (trained since or not), None for any other file."""
    from nestc.seeds.archs import ARCHITECTURES

    arch = model.graph.name
    return arch if model.producer_name == "nestc" and arch in ARCHITECTURES else None


def untrained_seed(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is a seed as ``nestc seed`` wrote it, random weights: ``train`` and ``compress``
    record the inputs they trained on in what they write (``compact`` keeps its input's record or none)."""
    return seed_architecture(model) is not None and metadata_value(model, KEY) is None


def _check_labels(view: ClassifierView, raw: Dataset, input_shape: list, spec: str | os.PathLike, label: str) -> None:
    """Refuse labels the model has no class score for, before any candidate input is scored by its loss."""
    sample = fit_to_input(replace(raw, x_train=raw.x_train[:2], x_test=raw.x_test[:2]), input_shape,
                          model_label=label, pixels=bool(view.net.pixel_inputs))
    classes = output_classes(view, sample.x_test)
    for split, labels in (("train", raw.y_train), ("test", raw.y_test)):
        if labels is not None and len(labels) and int(labels.max()) >= classes:
            raise DataError(f"data '{spec}' has labels up to {int(labels.max())} in its {split} split, but "
                            f"{label} output '{view.output}' has {classes} classes")


def check_normalisation(mean: Sequence[float] | None, std: Sequence[float] | None
                        ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``mean``/``std`` as tuples of floats, both or neither: a user's normalisation replaces nestc's
    choice as a whole (half of one and half of the data set's statistics would match no training)."""
    if (mean is None) != (std is None):
        raise OptionError("--mean and --std go together: give both (on the [0, 1] pixel scale) or neither")
    if mean is None or std is None:
        return None, None
    values = {}
    for option, given in (("--mean", mean), ("--std", std)):
        try:
            numbers = tuple(float(v) for v in (given if isinstance(given, Sequence) else [given]))
        except (TypeError, ValueError):
            numbers = ()
        if not numbers or not all(math.isfinite(v) for v in numbers):
            raise OptionError(f"{option} {given!r}: give finite numbers, one or one per channel")
        values[option] = numbers
    if min(values["--std"]) <= 0:
        raise OptionError(f"--std {','.join(f'{v:g}' for v in values['--std'])}: every value must be positive")
    return values["--mean"], values["--std"]


PROBE_SAMPLES = 2000
"""Test samples on which candidate normalisations are compared."""
AS_ACCURATE = 0.01
"""Least probe accuracy within which a candidate counts as fitting the model as well as the most accurate one
(:func:`accuracy_window` widens it to the probe's sampling noise). Among those the lowest cross-entropy
decides: the loss the model was trained to minimise shows a wrong shift or scale of its inputs even where
its top-1 predictions barely change (a LeNet-5 trained on [-1, 1] inputs classified Fashion-MNIST within
0.6 points as well under MNIST's statistics and under raw pixels, at 0.55 cross-entropy against 0.59 and 17),
while a model a few points less accurate under its own normalisation than under another is not seen."""
STATS_TOLERANCE = 0.005
"""Per-channel difference below which the files' own statistics count as the data set's published ones."""
STATS_SAMPLES = 10_000
"""Most training samples (evenly spaced) the files' own statistics are computed on: enough for three
decimals, and CIFAR-10's whole training split took 3.8 s and 1.4 GB of float64 temporaries."""


def normalisation_candidates(raw: Dataset) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """Per-channel ``(mean, std)`` pairs in common use for ``raw``; the data set's own come first.

    The statistics of the training images actually read follow where they differ from the data set's
    published ones: files in an official layout may hold a subset or other images (a model trained on
    them was normalised with what its author computed, not with MNIST's constants). Images at nestc's
    [0, 1] pixel scale also get ``std`` 1/255, which gives back the stored [0, 255] values: a model
    trained on raw pixels (``torch.from_numpy(images).float()``, or one that divides by 255 inside its
    graph) sees nothing but near-zero inputs under every other candidate.
    """
    channels = raw.x_test.shape[1]
    found = [(raw.mean, raw.std)]
    own = channel_stats(raw.x_train[::max(1, len(raw.x_train) // STATS_SAMPLES)])
    if not np.allclose(np.array(own), np.broadcast_to(np.array([raw.mean, raw.std]), (2, channels)),
                       rtol=0, atol=STATS_TOLERANCE):
        found.append(own)
    found.append(((0.0,), (1.0,)))
    if raw.x_test.ndim == 4:
        found.append(((0.5,), (0.5,)))
        if channels == 3:
            found.append(((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
        if float(raw.x_test.max(initial=0.0)) <= 1.0:
            found.append(((0.0,), (1.0 / 255,)))
    unique: list[tuple[tuple[float, ...], tuple[float, ...]]] = []
    for mean, std in found:
        pair = (tuple(float(v) for v in np.broadcast_to(mean, channels)),
                tuple(float(v) for v in np.broadcast_to(std, channels)))
        if pair not in unique:
            unique.append(pair)
    return unique


def choose_input_fit(view: ClassifierView, raw: Dataset, input_shape: list, label: str = "model",
                     norms: list[tuple[tuple[float, ...], tuple[float, ...]]] | None = None
                     ) -> tuple[str | None, tuple[float, ...], tuple[float, ...]]:
    """The ``(spatial fit, mean, std)`` under which ``view`` is most accurate on a test sample (see module doc).

    The spatial fit is None when the images already have the model's size. ``norms``: the normalisations to
    choose among (default :func:`normalisation_candidates`; a model that takes pixels has one).
    """
    size = spatial_target(raw.x_test.shape[1:], tuple(input_shape))
    fits: list[str | None] = [None]
    if size is not None:
        first = default_spatial_fit(raw.x_test.shape[1:], size)
        fits = [first, *(fit for fit in SPATIAL_FITS if fit != first)]
    norms = normalisation_candidates(raw) if norms is None else norms
    if normalises_inside(view.net):
        norms.sort(key=lambda pair: pair != ((0.0,) * len(pair[0]), (1.0,) * len(pair[0])))  # stable: [0, 1] first
    candidates = [(fit, mean, std) for fit in fits for mean, std in norms]
    if raw.y_test is None or not len(raw.y_test) or len(candidates) == 1:
        return candidates[0]
    keep = np.random.default_rng(0).permutation(len(raw.x_test))[:PROBE_SAMPLES]
    probe = replace(raw, x_train=raw.x_train[:1], y_train=None, x_test=raw.x_test[keep], y_test=raw.y_test[keep])
    scores = [_loss_and_accuracy(view, fit_to_input(probe, input_shape, mean, std, model_label=label, spatial=fit,
                                                    pixels=bool(view.net.pixel_inputs)))
              for fit, mean, std in candidates]
    best = max(accuracy for _, accuracy in scores)
    if not is_trained(best, max(int(raw.y_test.max()) + 1, 2)):
        return candidates[0]  # a seed is equally bad under every candidate
    window = accuracy_window(best, len(keep))
    contenders = [index for index, (_, accuracy) in enumerate(scores) if accuracy >= best - window]
    return candidates[min(contenders, key=lambda index: scores[index][0])]  # equal losses: the earlier one


def accuracy_window(best: float, samples: int) -> float:
    """How far below the best probe accuracy a candidate still counts as as accurate: :data:`AS_ACCURATE`, or
    two standard errors of an accuracy measured on ``samples`` images where that is more.

    A ReLU network with small biases classifies almost alike under any input scale, so on a small test split
    a wrong scale can score a few images better by chance: a tf2onnx export of a Keras net trained on [0, 1]
    pixels classified the embedded split's 500 test images at 71.6 % under raw 0..255 pixels and 70.2 % under
    its own scale, at a cross-entropy of 91.5 against 0.80. Two standard errors there are 4 points; on 2,000
    images of a 90 % model, 1.3.
    """
    return max(AS_ACCURATE, 2.0 * math.sqrt(best * (1.0 - best) / max(samples, 1)))


_LAYOUT_OPS = frozenset({"Identity", "Cast", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_SCALING_OPS = frozenset({"Sub", "Div", "Mul", "Add"})


def normalises_inside(net: Network) -> bool:
    """Whether the first input reaches, through layout ops only, arithmetic with a constant (``x - mean``,
    ``x / 255``): such a model scales its inputs itself, so it was fed them unnormalised, and the data set's
    statistics would normalise twice."""
    constants = {o for n in net.nodes if n.op_type == "Constant" for o in n.outputs}
    tensor = net.input_names[0]
    while True:
        readers = net.readers(tensor)
        if len(readers) != 1:
            return False
        node = readers[0]
        if node.op_type in _LAYOUT_OPS and node.inputs[0] == tensor:
            tensor = node.outputs[0]
            continue
        return node.op_type in _SCALING_OPS and any(net.has_tensor(i) or i in constants
                                                    for i in node.inputs if i != tensor)


def is_trained(accuracy: float, classes: int) -> bool:
    """Whether a classifier this accurate has learnt something: above twice chance, and above halfway from
    chance to perfect where twice chance is out of reach (two classes: 75 %, three: 67 %)."""
    return accuracy > min(2.0 / classes, (1.0 + 1.0 / classes) / 2)


def _loss_and_accuracy(view: ClassifierView, dataset: Dataset) -> tuple[float, float]:
    """Mean cross-entropy (infinite when not finite, so it never wins) and top-1 accuracy on the test split."""
    data = place(dataset.x_test, dataset.y_test, None, view.net.device)
    loss, accuracy = evaluate(view, data, batch_size=eval_batch_size(data.device), amp=False)
    return (loss if math.isfinite(loss) else math.inf), accuracy


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
