"""The Python API; every CLI command is a thin wrapper around one function here.

Example::

    import nestc
    stats = nestc.inspect("model.onnx")
    result = nestc.compact("model.onnx", "model.compact.onnx")
    report = nestc.validate("model.onnx", "model.compact.onnx")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnx

from nestc import runtime
from nestc.errors import NUMBER, ModelError, OptionError, about, require
from nestc.fileio import atomic_write_bytes, check_output_path, check_outputs, run_identity
from nestc.frontends import load_model
from nestc.frontends.files import model_files
from nestc.frontends.onnx_loader import graph_inputs
from nestc.frontends.precision import stored_precision
from nestc.input_record import inherit_record
from nestc.ir.classifier import ClassifierView, class_scores
from nestc.ir.emit import SPARSE_FORMATS, emit_model
from nestc.ir.network import PIXEL_INPUT_TYPES, Network
from nestc.passes.compact import CompactResult
from nestc.passes.compact import compact as compact_network
from nestc.stats import ModelStats, model_stats
from nestc.training.config import TrainConfig

PathLike = str | os.PathLike


def load_network(path: PathLike) -> Network:
    """Import ``path`` (checked, normalised) as a trainable :class:`Network`."""
    return Network(load_model(path))


def load_runnable(path: PathLike) -> onnx.ModelProto:
    """:func:`load_model`, and refuse a model onnxruntime cannot load, before any work is done on it.

    ``onnx.checker`` lets some invalid attributes through (a Conv ``pads`` of the wrong length);
    nestc would carry them into its output, which onnxruntime would then refuse.
    """
    model = load_model(path)
    runtime.session(model, str(path))
    return model


def inspect(path: PathLike) -> ModelStats:
    """Per-layer parameters, non-zeros and MACs of the model at ``path``."""
    with about(path):
        return model_stats(load_network(path))


def save_network(net: Network, output: PathLike, sparse_format: str = "dense") -> onnx.ModelProto:
    """Emit ``net``, check it, and write it atomically to ``output``."""
    model = stored_precision(emit_model(net, sparse_format))
    onnx.checker.check_model(model)
    atomic_write_bytes(output, model.SerializeToString())
    return model


@dataclass
class CompactReport:
    """What ``compact`` did, with statistics before and after."""

    before: ModelStats
    after: ModelStats
    result: CompactResult
    """Units removed (``removed``) and widths left (``widths``) per channel space."""


def compact(model: PathLike, output: PathLike, round_to: int = 1, sparse_format: str = "dense") -> CompactReport:
    """Remove every provably dead neuron and channel of ``model`` and write the result to ``output``."""
    require(round_to, (int,), "--round-to", "an integer >= 1")
    if round_to < 1:
        raise OptionError(f"--round-to {round_to}: must be at least 1")
    if sparse_format not in SPARSE_FORMATS:
        raise OptionError(f"--sparse-format {sparse_format}: use one of {', '.join(SPARSE_FORMATS)}")
    check_output_path(output, *model_files(model))
    with about(model):
        net = Network(load_runnable(model))
        before = model_stats(net)
        result = compact_network(net, round_to=round_to)
        save_network(net, output, sparse_format)
    return CompactReport(before, model_stats(net), result)


@dataclass
class OutputDiff:
    """Agreement of one output between two models."""

    name: str
    max_abs: float
    """Largest absolute difference (inf when the shapes differ, or integer outputs are not equal)."""
    max_rel: float
    """Largest difference relative to the original's value."""
    within: bool
    """Every element within ``atol + rtol * |original|``."""


@dataclass
class ValidationReport:
    """Per-output differences and, with labelled data, both models' accuracy."""

    outputs: list[OutputDiff]
    samples: int
    """Inputs both models ran on."""
    accuracy_original: float | None = None
    """Top-1 accuracy on ``data``'s labels; None without labelled data or a single class-score output."""
    accuracy_candidate: float | None = None

    @property
    def ok(self) -> bool:
        """True when every output is within tolerance."""
        return all(o.within for o in self.outputs)


def validate(original: PathLike, candidate: PathLike, data: PathLike | None = None, atol: float = 1e-5,
             rtol: float = 1e-4, samples: int = 64, data_dir: PathLike | None = None,
             seed: int = 0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             download: bool = False) -> ValidationReport:
    """Run both models in onnxruntime on the same inputs and compare every output.

    ``mean``/``std``: the input normalisation for ``data`` (else recorded or chosen, as ``evaluate``).
    ``download``: fetch a named data set that is not on disk, as the other commands that read data do.
    """
    require(atol, NUMBER, "--atol", "a number >= 0")
    require(rtol, NUMBER, "--rtol", "a number >= 0")
    require(samples, (int,), "--samples", "an integer >= 1")
    require(seed, (int,), "seed", "an integer >= 0")
    if not (atol >= 0 and rtol >= 0):  # NaN too: every comparison with it fails
        raise OptionError(f"--atol {atol} / --rtol {rtol}: must be non-negative numbers")
    if samples < 1:
        raise OptionError(f"--samples {samples}: must be at least 1")
    if seed < 0:
        raise OptionError(f"seed {seed}: must be at least 0")
    from nestc.model_data import check_normalisation

    mean, std = check_normalisation(mean, std)
    if data is None and mean is not None:
        raise OptionError("--mean/--std: they describe --data's inputs, and without --data validate feeds random "
                          "inputs; give --data too, or leave them out")
    models = [load_model(original), load_model(candidate)]
    sessions = [runtime.session(onnx.load(str(p)).SerializeToString(), str(p), exact=True)
                for p in (original, candidate)]
    _check_same_inputs(sessions, str(original), str(candidate))
    _check_feedable(sessions[0], str(original))
    inherit_record(models[0], models[1])  # a user's export compared with nestc's output of it: same inputs
    view = _classifier_view(models[0], str(original))
    x, y = _validation_inputs(models[0], view, data, samples, data_dir, download, seed, mean, std, str(original))
    outs = [runtime.run_batched(s, x) for s in sessions]
    if len(outs[0]) != len(outs[1]):
        raise OptionError(f"{candidate}: has {len(outs[1])} outputs, {original} has {len(outs[0])}")
    diffs = []
    for meta, a, b in zip(sessions[0].get_outputs(), outs[0], outs[1], strict=True):
        diffs.append(_compare(meta.name, a, b, atol, rtol))
    report = ValidationReport(diffs, len(x))
    if y is not None and view is not None:  # without a single class-score output the comparison above stands
        index = view.net.output_names.index(view.output)
        report.accuracy_original = float((class_scores(outs[0][index]).argmax(1) == y).mean())
        report.accuracy_candidate = float((class_scores(outs[1][index]).argmax(1) == y).mean())
    return report


def _classifier_view(model: onnx.ModelProto, label: str) -> ClassifierView | None:
    """The model as a classifier, or None when it has no single class-score output."""
    try:
        return ClassifierView(Network(model), None, label)
    except ModelError:
        return None


def _check_same_inputs(sessions: list, original: str, candidate: str) -> None:
    """Refuse two models that cannot take the same inputs: comparing them means nothing, and
    onnxruntime would only say so in a stack trace."""
    wanted, given = (session.get_inputs() for session in sessions)
    if len(wanted) != len(given):
        raise ModelError(f"{candidate}: takes {len(given)} inputs, {original} takes {len(wanted)}; "
                         "the two models cannot be compared")
    for a, b in zip(wanted, given, strict=True):
        clash = len(a.shape) != len(b.shape) or any(
            isinstance(m, int) and isinstance(n, int) and m != n for m, n in zip(a.shape, b.shape, strict=True))
        if a.type != b.type or clash:
            raise ModelError(f"{candidate}: input '{b.name}' is {b.type} {b.shape}, but {original}'s input '{a.name}' "
                             f"is {a.type} {a.shape}; the two models cannot be compared")


def _check_feedable(session, label: str) -> None:
    """Refuse a model validate cannot feed: it feeds one float or uint8 pixel tensor (random, or ``data``'s test
    split), and onnxruntime would refuse anything else in a stack trace."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{label}: takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); validate "
                         "feeds one data tensor")
    if inputs[0].type not in runtime.FEEDS:
        raise ModelError(f"{label}: input '{inputs[0].name}' is {inputs[0].type}; validate feeds float data or "
                         "uint8 pixels")


def _compare(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> OutputDiff:
    if a.shape != b.shape:
        return OutputDiff(name, float("inf"), float("inf"), False)
    if a.dtype.kind not in "fc":
        equal = bool(np.array_equal(a, b))
        return OutputDiff(name, 0.0 if equal else float("inf"), 0.0 if equal else float("inf"), equal)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    max_abs = float(diff.max(initial=0.0))
    max_rel = float((diff / np.maximum(np.abs(a64), np.finfo(np.float32).tiny)).max(initial=0.0))
    return OutputDiff(name, max_abs, max_rel, bool(np.all(diff <= atol + rtol * np.abs(a64))))


def _validation_inputs(model: onnx.ModelProto, view: ClassifierView | None, data: PathLike | None, samples: int,
                       data_dir: PathLike | None, download: bool, seed: int, mean: Sequence[float] | None,
                       std: Sequence[float] | None, label: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Random inputs without ``data``; else its test split, prepared as ``evaluate`` prepares it for a
    classifier (given, recorded or chosen normalisation and image fit), with the given or the data set's
    own statistics for other models. Data that do not fit are blamed on ``label`` (the original's file)."""
    value = graph_inputs(model)[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    pixels = value.type.tensor_type.elem_type in PIXEL_INPUT_TYPES
    if data is None:
        shape = [samples] + [d or 1 for d in dims[1:]]
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, shape) if pixels else rng.standard_normal(shape)
        return x.astype(np.float32), None
    from nestc.data import fit_to_input, load_dataset
    from nestc.model_data import data_for_model

    if view is not None:
        dataset = data_for_model(view, data, data_dir, download, mean, std, label=label)
    else:  # validate checked mean and std already
        from nestc.model_data import pixel_normalisation

        shape = ["N", *dims[1:]]
        raw = load_dataset(data, data_dir=data_dir, download=download, input_shape=shape)
        if pixels and mean is None:
            mean, std = pixel_normalisation(raw, f"{label} input '{value.name}'")
        dataset = fit_to_input(raw, shape, mean, std, model_label=label, pixels=pixels)
    x = dataset.x_test[:samples]
    y = None if dataset.y_test is None else dataset.y_test[:samples]
    return x, y


def seed(arch: str, output: PathLike, width_ratio: float = 1.0, density: float = 1.0, classes: int = 10,
         seed_value: int = 0, input_shape: Sequence[int] | None = None) -> ModelStats:
    """Write seed architecture ``arch`` (see :mod:`nestc.seeds`) to ``output``; returns its statistics.

    ``input_shape``: channels, height and width of the images it will take (default: the architecture's own).
    """
    from nestc.seeds import build_seed

    check_output_path(output)
    model = build_seed(arch, width_ratio, density, classes, seed_value, input_shape)
    atomic_write_bytes(output, model.SerializeToString())
    return model_stats(Network(model))


@dataclass
class EvalReport:
    """Accuracy and loss measured by onnxruntime, with its latency per batch."""

    samples: int
    """Test-split samples measured."""
    accuracy: float | None
    """Top-1 accuracy, 0 to 1; None (as ``loss``) for data without labels."""
    loss: float | None
    """Mean cross-entropy."""
    latency_ms_per_batch: float
    """Median milliseconds per onnxruntime run of a batch of ``batch_size``."""
    batch_size: int
    input_normalisation: dict[str, list[float]]
    """The ``mean``/``std`` the inputs were prepared with (given, recorded or chosen)."""
    input_fit: str | None
    """How images of another size were fitted to the model's input (None: same size)."""


def evaluate(model: PathLike, data: PathLike = "embedded", data_dir: PathLike | None = None, download: bool = False,
             batch_size: int = 256, output_name: str | None = None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> EvalReport:
    """Top-1 accuracy, cross-entropy and latency of ``model`` on the test split, all by onnxruntime.

    ``mean``/``std``: the input normalisation (per channel, on the [0, 1] pixel scale); by default the one
    recorded in a file nestc wrote, else, of the candidates the model classifies within a point as well under
    as under the best one, the one with the lowest loss (:mod:`nestc.model_data`).
    """
    from nestc.ir.classifier import score_normaliser
    from nestc.model_data import data_for_model

    require(batch_size, (int,), "--batch-size", "an integer >= 1")
    if batch_size < 1:
        raise OptionError(f"--batch-size {batch_size}: must be at least 1")
    normalised = load_model(model)
    with about(model):
        view = ClassifierView(Network(normalised), output_name, str(model))
    dataset = data_for_model(view, data, data_dir, download, mean, std, label=str(model))
    sess = runtime.session(stored_precision(normalised), str(model))
    names = [o.name for o in sess.get_outputs()]
    outputs = runtime.run_batched(sess, dataset.x_test, batch_size)
    scores = class_scores(outputs[names.index(view.output)])
    accuracy = loss = None
    if dataset.y_test is not None:
        accuracy = float((scores.argmax(1) == dataset.y_test).mean())
        log_probs = {"Softmax": lambda s: np.log(np.clip(s, 1e-12, None)), "LogSoftmax": lambda s: s,
                     None: _log_softmax}[score_normaliser(view.net, view.output)](scores)
        loss = float(-log_probs[np.arange(len(scores)), dataset.y_test].mean())
    latency = runtime.latency_ms(sess, dataset.x_test[:batch_size], repeats=10)
    return EvalReport(len(dataset.x_test), accuracy, loss, latency, min(batch_size, len(dataset.x_test)),
                      {"mean": list(dataset.mean), "std": list(dataset.std)}, dataset.input_fit or None)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def _epoch_logger(log: Callable[[str], None]) -> Callable[[int, int, float, float | None], None]:
    """One line per finished epoch, in the shape of compress's step lines."""
    def line(done: int, epochs: int, loss: float, accuracy: float | None) -> None:
        shown = "" if accuracy is None else f", train accuracy {accuracy:.2%}"
        log(f"[epoch {done}/{epochs}] loss {loss:.4f}{shown}")
    return line


class TrainResult(NamedTuple):
    """Test accuracy of ``train``'s input and output, measured by onnxruntime on the files.

    A named tuple, so ``before, after = nestc.train(...)`` works as well as ``result.accuracy_after``.
    """

    accuracy_before: float | None
    """Of ``model``: None when the test split has no labels."""
    accuracy_after: float | None
    """Of the written ``output``: None as for ``accuracy_before``, and on every torchrun rank but the first
    (which writes the file)."""


def train(model: PathLike, output: PathLike, data: PathLike = "embedded", config: TrainConfig | None = None,
          data_dir: PathLike | None = None, download: bool = False, output_name: str | None = None,
          checkpoint: PathLike | None = None, resume: bool = False, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train every weight of ``model`` on ``data`` and write it to ``output``.

    ``config``: the training options (default ``TrainConfig()``).
    ``mean``/``std``: the input normalisation to train under (see :func:`evaluate`); the output records it.
    ``log``: receives a line after every epoch (loss and training accuracy), as ``compress``'s after every step;
    by default nothing is printed (a progress bar is drawn on stderr when it is a terminal, unless
    ``config.quiet``).
    """
    from nestc.data.load import data_files
    from nestc.input_record import record_input
    from nestc.ir.classifier import trainable_view
    from nestc.model_data import check_normalisation, data_for_model
    from nestc.training import Trainer

    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise OptionError(f"config must be a nestc.TrainConfig, got {type(config).__name__}")
    config.validate()
    require(resume, (bool,), "--resume", "True or False")  # resume="no" is true, and would resume
    if resume and checkpoint is None:  # said before any work, and in the command line's words
        raise OptionError("--resume needs --checkpoint, the file to resume from")
    mean, std = check_normalisation(mean, std)
    check_outputs({"-o": output, "--checkpoint": checkpoint}, *model_files(model), *data_files(data))
    # before any loading: it refuses a device this machine lacks, and joins torchrun's process group with
    # the backend its device needs (nccl cannot reduce the CPU tensors of --device cpu)
    trainer = Trainer(config)
    with about(model):
        net = Network(load_runnable(model))
        view = trainable_view(net, output_name, str(model))
    dataset = data_for_model(view, data, data_dir, download, mean, std, label=str(model))
    if dataset.y_train is None:
        raise OptionError(f"data '{data}' has no labels; `nestc train` needs labels (compress can distil)")
    identity = run_identity(model, data, None, output_name, config.seed, mean, std)
    trainer.fit(view, dataset.x_train, dataset.y_train, checkpoint=checkpoint, resume=resume,  # type: ignore[arg-type]
                identity=identity, on_epoch=None if log is None else _epoch_logger(log))
    record_input(net.template, dataset)
    if trainer.dist.is_main:
        save_network(net, output)
    before = evaluate(model, data, data_dir, output_name=output_name, mean=mean, std=std).accuracy
    after = evaluate(output, data, data_dir, output_name=output_name).accuracy if trainer.dist.is_main else None
    return TrainResult(before, after)
