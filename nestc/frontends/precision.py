"""Train half- and double-precision models in float32, and write them back in their own precision.

Edge models are often stored in float16, and some exporters write float64. Training in float16 loses
the small updates that retraining after a pruning step consists of, and float64 only costs time; the
torch form of a model therefore always computes in float32. A model whose floating tensors are all of
one other type is widened to float32 on import (:func:`widen_to_float32`), which records the stored
type in the model's metadata; :func:`stored_precision` narrows an emitted model back, so that the file
a user gets has the interface (input and output types) and roughly the size of the file they gave.

A model that mixes float32 with another floating type (float32 inputs with float16 or float64 inside)
is left as it is: which tensors would go back to which type is not recoverable from a float32
network, and torch computes each op in the types its inputs have, as onnxruntime does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nestc.metadata import drop_metadata, metadata_value, set_metadata

PRECISION_KEY = "nestc.stored_float_type"
"""Metadata entry of a widened model: the floating element type its file used (an int, as text)."""

WIDENED_TYPES = (TensorProto.FLOAT16, TensorProto.DOUBLE)
_FLOAT_TYPES = (TensorProto.FLOAT, *WIDENED_TYPES, TensorProto.BFLOAT16)
_TYPE_ATTRS = ("to", "dtype")  # Cast's target; RandomNormal, EyeLike, ... output types


def widen_to_float32(model: onnx.ModelProto) -> None:
    """Convert a model stored wholly in float16 or float64 to float32 in place; other models (float32,
    or mixed) are left as they are."""
    found = set(_float_types(model))
    if len(found) != 1 or not found <= set(WIDENED_TYPES):
        return
    stored = found.pop()
    _convert(model, stored, TensorProto.FLOAT)
    set_metadata(model, PRECISION_KEY, str(stored))


def stored_type(model: onnx.ModelProto, elem_type: int) -> int:
    """The element type that :func:`stored_precision` writes a float tensor of ``elem_type`` in."""
    stored = metadata_value(model, PRECISION_KEY)
    return int(stored) if stored is not None and elem_type == TensorProto.FLOAT else elem_type


def stored_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in the floating type its source file used (the model itself when that was
    float32), without the metadata entry that recorded it."""
    stored = metadata_value(model, PRECISION_KEY)
    if stored is None:
        return model
    narrowed = onnx.ModelProto()
    narrowed.CopyFrom(model)
    drop_metadata(narrowed, PRECISION_KEY)
    _convert(narrowed, TensorProto.FLOAT, int(stored))
    return narrowed


def computes_in_half(model: onnx.ModelProto) -> bool:
    """True when any tensor of ``model`` is float16 or bfloat16: a file stored in half precision, or a
    float32 model that casts to half inside. Such a model is only as exact as half precision, in torch
    and onnxruntime alike, which round and accumulate differently."""
    return any(elem in (TensorProto.FLOAT16, TensorProto.BFLOAT16) for elem in _float_types(model))


def _float_types(model: onnx.ModelProto) -> Iterator[int]:
    """Every floating element type the model declares or creates (with repeats)."""
    return (elem for elem, _set in _typed_places(model) if elem in _FLOAT_TYPES)


def _convert(model: onnx.ModelProto, source: int, target: int) -> None:
    """Replace floating element type ``source`` by ``target`` everywhere in the graph."""
    for elem, set_type in list(_typed_places(model)):
        if elem == source:
            set_type(target)


def _typed_places(model: onnx.ModelProto) -> Iterator[tuple[int, Callable[[int], None]]]:
    """Each place that states an element type (graph values, initializers, ``to``/``dtype`` attributes,
    tensor attributes), with the function that changes it; one walk for reading and for converting."""
    graph = model.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        tensor_type = value.type.tensor_type
        yield tensor_type.elem_type, partial(setattr, tensor_type, "elem_type")
    for tensor in (*graph.initializer, *(s.values for s in graph.sparse_initializer)):
        yield tensor.data_type, partial(_cast_in_place, tensor)
    for node in graph.node:
        for attr in node.attribute:
            if attr.name in _TYPE_ATTRS and attr.type == onnx.AttributeProto.INT:
                yield attr.i, partial(setattr, attr, "i")
            elif attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t.data_type, partial(_cast_in_place, attr.t)


def _cast_in_place(tensor: onnx.TensorProto, target: int) -> None:
    tensor.CopyFrom(_cast_tensor(tensor, target))


def _cast_tensor(tensor: onnx.TensorProto, target: int) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor).astype(helper.tensor_dtype_to_np_dtype(target))
    return numpy_helper.from_array(np.ascontiguousarray(array), tensor.name)
