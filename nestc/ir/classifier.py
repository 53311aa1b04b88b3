"""The network seen as a classifier: one float (or uint8 pixel) input in, one logits tensor out.

Exported classifiers often end in Softmax (scikit-learn's converters add ZipMap on top). Training
on probabilities is numerically poor, so when the chosen output is a (Log)Softmax of something, the
view returns that something, the logits, and the emitted graph is untouched. Fully convolutional
classifiers (SqueezeNet, models converted from Caffe) end in a global pool and give ``[N, classes, 1,
1]``; the view and every reader of the output's values take it as ``[N, classes]``
(:func:`class_scores`).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from nestc.errors import ModelError
from nestc.ir.network import PIXEL_INPUT_TYPES, Network, declared_shape

_TRANSPARENT = frozenset({"Identity", "ZipMap", "Cast"})
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})
_NORMALISERS = frozenset({"Softmax", "LogSoftmax"})


def choose_output(net: Network, requested: str | None = None, label: str = "model") -> str:
    """The graph output nestc trains on: ``requested`` (if it can hold class scores), else the float output of
    class scores (``[N, classes]``, or with further axes of size 1).

    Several such outputs are fine when they are views of one logits tensor (``logits`` and
    ``softmax(logits)``); independent heads (auxiliary classifiers) make the choice the user's.
    """
    outputs = net.template.graph.output
    if requested is not None:
        if requested not in net.output_names:
            raise ModelError(f"{label}: no output named '{requested}'; outputs are {', '.join(net.output_names)}")
        value = next(v for v in outputs if v.name == requested)
        if not (_scores(value) or value.type.HasField("sequence_type")):  # nothing to take an argmax over
            raise ModelError(f"{label}: output '{requested}' is {_describe(value)}, not class scores [N, classes]; "
                             f"outputs are {', '.join(net.output_names)}")
        return requested
    scores = [value.name for value in outputs if _scores(value)]
    if len({logits_tensor(net, name) for name in scores}) > 1:
        raise ModelError(f"{label}: {len(scores)} outputs could be class scores ({', '.join(scores)}); "
                         "choose the one to train on with --output-name")
    if scores:
        return scores[0]
    for value in outputs:
        if value.type.HasField("sequence_type"):
            return value.name
    raise ModelError(f"{label}: no output of shape [N, classes] to train on; outputs are "
                     f"{', '.join(net.output_names)} (choose one with --output-name)")


def _scores(value: onnx.ValueInfoProto) -> bool:
    """Whether a graph output can hold class scores: a float tensor ``[N, classes]``, or one whose axes after
    the batch are all declared 1 but the classes' (``[N, classes, 1, 1]``, ``[N, 1, classes]``)."""
    tensor = value.type.tensor_type
    dims = list(tensor.shape.dim)[1:]
    return (tensor.elem_type in _FLOAT_TYPES and len(dims) >= 1
            and sum(not (d.HasField("dim_value") and d.dim_value == 1) for d in dims) <= 1)


def class_scores(scores: np.ndarray) -> np.ndarray:
    """An output's values as ``[N, classes]`` (axes of size 1 after the batch dropped)."""
    return scores.reshape(len(scores), -1)


def _describe(value: onnx.ValueInfoProto) -> str:
    """``int64 [N]``: a graph output's declared type and shape, for messages."""
    if not value.type.HasField("tensor_type"):
        return value.type.WhichOneof("value")  # map_type, optional_type ...
    tensor = value.type.tensor_type
    return f"{onnx.TensorProto.DataType.Name(tensor.elem_type).lower()} {declared_shape(tensor.shape)}"


def choose_input(net: Network, label: str = "model") -> str:
    """The single graph input data is fed to: float, or uint8 pixels; several inputs, or an input of another
    type (token ids, booleans), are errors."""
    if len(net.input_names) != 1:
        raise ModelError(f"{label}: model has {len(net.input_names)} inputs ({', '.join(net.input_names)}); "
                         "nestc feeds one data tensor")
    value = next(v for v in net.template.graph.input if v.name == net.input_names[0])
    elem_type = value.type.tensor_type.elem_type
    if elem_type not in _FLOAT_TYPES and elem_type not in PIXEL_INPUT_TYPES:
        raise ModelError(f"{label}: input '{value.name}' is {onnx.TensorProto.DataType.Name(elem_type).lower()}; "
                         "nestc feeds float data or uint8 pixels")
    return value.name


def logits_tensor(net: Network, output: str) -> str:
    """The tensor holding logits for ``output``: the input of a trailing (Log)Softmax, else ``output``."""
    return _trace_scores(net, output)[0]


def score_normaliser(net: Network, output: str) -> str | None:
    """``"Softmax"`` or ``"LogSoftmax"`` when ``output`` is one applied to logits, else ``None`` (raw logits).

    Whoever turns scores into a loss needs this: probabilities, log-probabilities and logits each
    take a different formula.
    """
    return _trace_scores(net, output)[1]


def _trace_scores(net: Network, output: str) -> tuple[str, str | None]:
    name = output
    while name in net.producer:
        node = net.nodes[net.producer[name]]
        if node.op_type in _NORMALISERS:
            return node.inputs[0], node.op_type
        if node.op_type not in _TRANSPARENT:
            return name, None
        name = node.inputs[0]
    return name, None


class ClassifierView(nn.Module):
    """``forward(x) -> logits`` over a :class:`Network`, for the trainer and the passes."""

    def __init__(self, net: Network, output: str | None = None, label: str = "model") -> None:
        super().__init__()
        self.net = net
        self.label = label
        choose_input(net, label)
        self.output = choose_output(net, output, label)
        self.logits_name = logits_tensor(net, self.output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, classes]`` for a batch ``x``.

        Raises:
            ModelError: the output does not have one row per sample (a graph that slices or reshapes the batch
                axis to a fixed size): its rows cannot be scored against the samples' labels.
        """
        logits = self.net(x, until=self.logits_name)[0]
        if logits.shape[0] != x.shape[0]:
            raise ModelError(f"{self.label}: output '{self.output}' has {logits.shape[0]} rows for a batch of "
                             f"{x.shape[0]} inputs; nestc needs one row of class scores per sample")
        return logits.flatten(1)


def trainable_view(net: Network, output: str | None = None, label: str = "model") -> ClassifierView:
    """A :class:`ClassifierView` for training; a model without float weights, or with NaN or Inf among
    them, is an error (the first would train nothing, the second trains into NaN everywhere, and
    compress then failed with "onnxruntime output differs from the trained network by nan")."""
    if not net.trainable_names():
        raise ModelError(f"{label}: has no float weights to train")
    broken = [name for name in net.trainable_names() if not bool(torch.isfinite(net.tensor(name)).all())]
    if broken:
        raise ModelError(f"{label}: weight(s) {', '.join(broken)} hold NaN or Inf values; nestc cannot train them")
    return ClassifierView(net, output, label)
