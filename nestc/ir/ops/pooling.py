"""Pooling: MaxPool, AveragePool and their global forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nestc.ir.ops.conv import pads_for_auto_pad, same_totals, spatial_fn, torch_pads
from nestc.ir.ops.elementwise import lowest, required
from nestc.ir.registry import Node, OpHandler, register


class _Window:
    """Window geometry of one pooling node applied to one input.

    ``ends`` are the declared end paddings; ``exact_ends`` make the last window end exactly at the
    padded edge under ONNX's output-size rule (``ceil_mode`` may add cells, and a window may not
    start in the end padding), so the general path can pool a padded tensor with torch's defaults.
    """

    def __init__(self, node: Node, x: torch.Tensor) -> None:
        self.kernel = list(node.attr("kernel_shape"))
        n = len(self.kernel)
        self.strides = list(node.attr("strides", [1] * n))
        self.dilations = list(node.attr("dilations", [1] * n))
        self.ceil_mode = bool(node.attr("ceil_mode", 0))
        sizes = x.shape[2:]
        pads = pads_for_auto_pad(node, same_totals(sizes, self.kernel, self.strides, self.dilations))
        self.begins, self.ends = pads[:n], pads[n:]
        self.exact_ends = []
        for size, k, s, d, b, e in zip(sizes, self.kernel, self.strides, self.dilations, self.begins, self.ends):
            span = size + b + e - (k - 1) * d - 1
            out = (-(-span // s) if self.ceil_mode else span // s) + 1
            if self.ceil_mode and (out - 1) * s >= size + b:
                out -= 1
            self.exact_ends.append((out - 1) * s + (k - 1) * d + 1 - size - b)

    def torch_native(self) -> bool:
        """True when torch's own padding reproduces ONNX's (symmetric, at most half the kernel)."""
        return self.begins == self.ends and all(p <= k // 2 for p, k in zip(self.begins, self.kernel))


@register
class MaxPool(OpHandler):
    op_type = "MaxPool"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        if len(node.outputs) > 1 and node.outputs[1]:
            raise ValueError("the Indices output of MaxPool is not supported; accepted: the Y output only")
        x = required(inputs, 0)
        w = _Window(node, x)
        pool = spatial_fn("max_pool", len(w.kernel))
        if w.torch_native():
            return [pool(x, w.kernel, w.strides, w.begins, w.dilations, w.ceil_mode)]
        x = F.pad(x, torch_pads(w.begins, w.exact_ends), value=lowest(x.dtype))
        return [pool(x, w.kernel, w.strides, 0, w.dilations)]


@register
class AveragePool(OpHandler):
    op_type = "AveragePool"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        w = _Window(node, x)
        n = len(w.kernel)
        include_pad = bool(node.attr("count_include_pad", 0))
        if w.torch_native() and all(d == 1 for d in w.dilations):
            return [spatial_fn("avg_pool", n)(x, w.kernel, w.strides, w.begins, w.ceil_mode, include_pad)]
        # General case (dilations, asymmetric pads): window sums and window counts as convolutions.
        conv = spatial_fn("conv", n)
        channels = x.shape[1]
        ones = x.new_ones((channels, 1, *w.kernel))
        sums = conv(F.pad(x, torch_pads(w.begins, w.exact_ends)), ones, None, w.strides, 0, w.dilations, channels)
        valid = x.new_ones((1, 1, *x.shape[2:]))
        if include_pad:  # declared padding counts, cells added for ceil_mode do not
            valid = F.pad(valid, torch_pads(w.begins, w.ends), value=1.0)
            valid = F.pad(valid, torch_pads([0] * n, [exact - e for exact, e in zip(w.exact_ends, w.ends)]))
        else:
            valid = F.pad(valid, torch_pads(w.begins, w.exact_ends))
        counts = conv(valid, ones[:1], None, w.strides, 0, w.dilations)
        return [sums / counts]


@register
class GlobalAveragePool(OpHandler):
    op_type = "GlobalAveragePool"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        return [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)]


@register
class GlobalMaxPool(OpHandler):
    op_type = "GlobalMaxPool"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        return [x.amax(dim=tuple(range(2, x.dim())), keepdim=True)]
