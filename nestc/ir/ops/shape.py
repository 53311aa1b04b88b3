"""Shape and data-movement ops, plus Constant, Cast, CastLike and Dropout.

Integer tensors that steer shapes (shapes, axes, starts/ends, pads) live on the CPU and are read
with ``tolist()``; float data is never read back to the host.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from nestc.ir.ops.conv import torch_pads
from nestc.ir.ops.elementwise import align_devices, optional, required
from nestc.ir.registry import Node, OpHandler, register

ONNX_TO_TORCH: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.UINT16: torch.uint16,
    onnx.TensorProto.UINT32: torch.uint32,
    onnx.TensorProto.UINT64: torch.uint64,
    onnx.TensorProto.BOOL: torch.bool,
}


def ints_from(node: Node, inputs: list[torch.Tensor | None], index: int, attr: str) -> list[int] | None:
    """An integer list given as input ``index`` (newer opsets) or as attribute ``attr`` (older ones).

    Returns ``None`` when neither is present.
    """
    tensor = optional(inputs, index)
    if tensor is not None:
        return [int(v) for v in tensor.reshape(-1).tolist()]
    value = node.attr(attr)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


@register
class Flatten(OpHandler):
    op_type = "Flatten"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axis = node.attr("axis", 1)
        axis = axis + x.dim() if axis < 0 else axis
        return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@register
class Reshape(OpHandler):
    op_type = "Reshape"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        shape = ints_from(node, inputs, 1, "shape") or []
        if not node.attr("allowzero", 0):  # 0 copies the input's size at that position
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return [x.reshape(shape)]


@register
class Transpose(OpHandler):
    op_type = "Transpose"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        return [x.permute(node.attr("perm", list(range(x.dim() - 1, -1, -1))))]


@register
class Concat(OpHandler):
    op_type = "Concat"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [torch.cat(align_devices(*[t for t in inputs if t is not None]), dim=node.attr("axis"))]


@register
class Split(OpHandler):
    """Split; sizes from the ``split`` input (opset 13+) or attribute, else equal parts.

    Equal parts follow opset 18's ``num_outputs`` rule: every part has ``ceil(size / parts)`` cells
    but the last, which is smaller when the size does not divide.
    """

    op_type = "Split"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axis = node.attr("axis", 0)
        sizes = ints_from(node, inputs, 1, "split")
        if sizes is None:
            parts = node.attr("num_outputs", len(node.outputs))
            sizes = math.ceil(x.shape[axis] / parts)
        return list(torch.split(x, sizes, dim=axis))


@register
class Slice(OpHandler):
    """Slice with ONNX clamping; negative steps slice the flipped axis."""

    op_type = "Slice"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        starts = ints_from(node, inputs, 1, "starts") or []
        ends = ints_from(node, inputs, 2, "ends") or []
        axes = ints_from(node, inputs, 3, "axes") or list(range(len(starts)))
        steps = ints_from(node, inputs, 4, "steps") or [1] * len(starts)
        index: list[slice] = [slice(None)] * x.dim()
        flips = []
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step == 0:
                raise ValueError("steps=0 is not supported; accepted: any non-zero step")
            size = x.shape[axis]
            start, end = (v + size if v < 0 else v for v in (start, end))
            if step > 0:
                index[axis] = slice(min(max(start, 0), size), min(max(end, 0), size), step)
            else:  # indices start, start+step, ... > end are size-1-i in the flipped axis
                start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
                index[axis] = slice(size - 1 - start, size - 1 - end, -step)
                flips.append(axis % x.dim())
        if flips:
            x = x.flip(flips)
        return [x[tuple(index)]]


@register
class Squeeze(OpHandler):
    op_type = "Squeeze"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axes = ints_from(node, inputs, 1, "axes")
        return [x.squeeze() if axes is None else x.squeeze(tuple(axes))]


@register
class Unsqueeze(OpHandler):
    op_type = "Unsqueeze"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        axes = ints_from(node, inputs, 1, "axes") or []
        rank = x.dim() + len(axes)  # negative axes count from the end of the output
        for axis in sorted(a % rank for a in axes):
            x = x.unsqueeze(axis)
        return [x]


@register
class Identity(OpHandler):
    op_type = "Identity"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [required(inputs, 0)]


@register
class Dropout(OpHandler):
    """Dropout: the identity at inference, inverted dropout with ``ratio`` in training.

    The network's mode decides, not the ``training_mode`` input. ``ratio`` may be a tensor; it is
    compared on the device rather than read back. The optional mask output is ``True`` where kept.
    """

    op_type = "Dropout"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        ratio = optional(inputs, 1)
        ratio = node.attr("ratio", 0.5) if ratio is None else ratio
        if not training:
            return [x, torch.ones_like(x, dtype=torch.bool)][: len(node.outputs)]
        keep = torch.rand_like(x) >= ratio
        return [x * keep / (1 - ratio), keep][: len(node.outputs)]


@register
class Pad(OpHandler):
    """Pad in constant, reflect, edge or wrap mode; pads may be negative (cropping)."""

    op_type = "Pad"
    modes = ("constant", "reflect", "edge", "wrap")

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        pads = ints_from(node, inputs, 1, "pads") or []
        axes = [a % x.dim() for a in ints_from(node, inputs, 3, "axes") or range(x.dim())]
        begins, ends = [0] * x.dim(), [0] * x.dim()
        for i, axis in enumerate(axes):
            begins[axis], ends[axis] = pads[i], pads[i + len(axes)]
        mode = node.attr("mode", "constant")
        if mode not in self.modes:
            raise ValueError(f"mode={mode!r} is not supported; accepted: {', '.join(self.modes)}")
        if mode != "constant":
            return [self._index_pad(x, begins, ends, mode)]
        value = optional(inputs, 2)
        value = node.attr("value", 0) if value is None else value
        padding = torch_pads(begins, ends)
        if not isinstance(value, torch.Tensor):
            return [F.pad(x, padding, value=value)]
        # A tensor fill value is not read back to the host: select it outside the original cells.
        inside = F.pad(torch.ones_like(x, dtype=torch.bool), padding)
        return [torch.where(inside, F.pad(x, padding), value.to(device=x.device, dtype=x.dtype))]

    @staticmethod
    def _index_pad(x: torch.Tensor, begins: list[int], ends: list[int], mode: str) -> torch.Tensor:
        """Reflect/edge/wrap padding as a gather per axis, for any rank and any axes."""
        for axis, (b, e) in enumerate(zip(begins, ends)):
            if b == 0 and e == 0:
                continue
            size = x.shape[axis]
            pos = torch.arange(-b, size + e)
            if mode == "edge":
                pos = pos.clamp(0, size - 1)
            elif mode == "wrap":
                pos = pos.remainder(size)
            elif size == 1:
                pos = torch.zeros_like(pos)
            else:
                pos = pos.remainder(2 * size - 2)
                pos = torch.where(pos >= size, 2 * size - 2 - pos, pos)
            x = x.index_select(axis, pos.to(x.device))
        return x


@register
class Constant(OpHandler):
    """Constant; the tensor is built on the CPU (callers move it where float data lives)."""

    op_type = "Constant"
    kinds = ("value", "value_float", "value_floats", "value_int", "value_ints", "sparse_value")

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        kind = next((k for k in node.attrs if k.startswith(("value", "sparse_value"))), None)
        if kind not in self.kinds:
            raise ValueError(f"Constant attribute {kind!r} is not supported; accepted: {', '.join(self.kinds)}")
        value = node.attrs[kind]
        if kind == "sparse_value":
            value = _dense(value)
        elif kind.startswith("value_float"):
            value = np.asarray(value, dtype=np.float32)
        elif kind.startswith("value_int"):
            value = np.asarray(value, dtype=np.int64)
        if value.dtype.kind not in "biuf":
            raise ValueError(f"Constant of dtype {value.dtype} is not supported; accepted: numeric and bool")
        return [torch.from_numpy(np.array(value, copy=True))]


def _dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """Densify a sparse constant (linear or coordinate indices)."""
    values = onnx.numpy_helper.to_array(sparse.values)
    indices = onnx.numpy_helper.to_array(sparse.indices)
    dense = np.zeros(math.prod(sparse.dims), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), tuple(sparse.dims))
    dense[indices] = values
    return dense.reshape(tuple(sparse.dims))


@register
class Shape(OpHandler):
    """Shape as a CPU int64 tensor; ``start``/``end`` clamp like Python slicing, as ONNX says."""

    op_type = "Shape"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        dims = list(required(inputs, 0).shape)[node.attr("start", 0):node.attr("end")]
        return [torch.tensor(dims, dtype=torch.int64)]


@register
class Gather(OpHandler):
    op_type = "Gather"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x, indices = required(inputs, 0), required(inputs, 1)
        axis = node.attr("axis", 0) % x.dim()
        flat = indices.reshape(-1).to(device=x.device, dtype=torch.int64)
        flat = torch.where(flat < 0, flat + x.shape[axis], flat)
        picked = x.index_select(axis, flat)
        return [picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1:]))]  # () for a scalar


@register
class Tile(OpHandler):
    """Repeat the input ``repeats[i]`` times along each axis i."""

    op_type = "Tile"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [required(inputs, 0).repeat(*[int(v) for v in required(inputs, 1).reshape(-1).tolist()])]


@register
class DepthToSpace(OpHandler):
    """Move blocks of ``blocksize`` x ``blocksize`` channels into space (torch's PixelShuffle is mode CRD;
    DCR, the default, takes the block index before the channel)."""

    op_type = "DepthToSpace"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        b = int(node.attr("blocksize"))
        n, c, h, w = x.shape
        if node.attr("mode", "DCR") == "CRD":
            y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        else:
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return [y.reshape(n, c // (b * b), h * b, w * b)]


@register
class SpaceToDepth(OpHandler):
    """Move ``blocksize`` x ``blocksize`` blocks of positions into channels: the block index before the
    channel (DCR, the default, which DepthToSpace's DCR undoes) or after it (CRD)."""

    op_type = "SpaceToDepth"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        b = int(node.attr("blocksize"))
        n, c, h, w = x.shape
        blocks = x.reshape(n, c, h // b, b, w // b, b)
        y = blocks.permute(0, 1, 3, 5, 2, 4) if node.attr("mode", "DCR") == "CRD" else blocks.permute(0, 3, 5, 1, 2, 4)
        return [y.reshape(n, c * b * b, h // b, w // b)]


@register
class ConstantOfShape(OpHandler):
    """A tensor of the given shape filled with ``value`` (one element; float 0 when absent). The legacy
    exporter writes ``expand(n, -1, -1)`` with it; the shape usually comes from ``Shape`` at run time."""

    op_type = "ConstantOfShape"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        shape = [int(v) for v in required(inputs, 0).reshape(-1).tolist()]
        value = node.attr("value")
        fill = torch.from_numpy(np.array(value, copy=True)).reshape(-1) if value is not None else torch.zeros(1)
        return [torch.full(shape, fill[0].item(), dtype=fill.dtype)]


@register
class Expand(OpHandler):
    """Broadcast to a shape, numpy style in both directions (a 1 in the shape keeps the input's size)."""

    op_type = "Expand"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        shape = ints_from(node, inputs, 1, "shape") or []
        return [x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))]


@register
class CastLike(OpHandler):
    """Cast to the element type of the second input (only its type is read)."""

    op_type = "CastLike"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [required(inputs, 0).to(required(inputs, 1).dtype)]


@register
class Cast(OpHandler):
    op_type = "Cast"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        to = node.attr("to")
        if to not in ONNX_TO_TORCH:
            accepted = ", ".join(onnx.TensorProto.DataType.Name(t) for t in ONNX_TO_TORCH)
            raise ValueError(f"to={onnx.TensorProto.DataType.Name(to)} is not supported; accepted: {accepted}")
        return [required(inputs, 0).to(ONNX_TO_TORCH[to])]
