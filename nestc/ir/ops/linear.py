"""Dense products: Gemm, MatMul and Einsum."""

from __future__ import annotations

import math

import torch

from nestc.ir.ops.elementwise import align_devices, optional, required
from nestc.ir.registry import Node, OpHandler, register


def _product_macs(out_shape: tuple[int, ...] | None, inner: int | None) -> int:
    """MACs of a product: every output cell costs ``inner`` MACs.

    Its first axis is not always the samples (``Flatten(axis=3)`` before a Gemm makes one row per
    position of one sample, a MatMul with the weight first puts the samples in columns), so no axis is
    dropped; :func:`nestc.stats.model_stats` passes the shapes of a single sample.
    """
    if out_shape is None or inner is None:
        return 0
    return math.prod(out_shape) * inner


@register
class Gemm(OpHandler):
    op_type = "Gemm"
    weight_inputs = (1, 2)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        a, b = align_devices(required(inputs, 0), required(inputs, 1))
        c = optional(inputs, 2)
        if node.attr("transA", 0):
            a = a.t()
        if node.attr("transB", 0):
            b = b.t()
        y = a @ b
        alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
        if alpha != 1.0:
            y = y * alpha
        if c is not None:
            c = c.to(y.device)
            y = y + (c if beta == 1.0 else c * beta)
        return [y]

    def macs(self, node: Node, in_shapes: list[tuple[int, ...] | None], out_shapes: list[tuple[int, ...] | None],
             weights: list[torch.Tensor | None]) -> int:
        a = in_shapes[0]
        inner = None if a is None else a[0] if node.attr("transA", 0) else a[1]
        return _product_macs(out_shapes[0], inner)


@register
class MatMul(OpHandler):
    op_type = "MatMul"
    weight_inputs = (0, 1)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        a, b = align_devices(required(inputs, 0), required(inputs, 1))
        return [torch.matmul(a, b)]

    def macs(self, node: Node, in_shapes: list[tuple[int, ...] | None], out_shapes: list[tuple[int, ...] | None],
             weights: list[torch.Tensor | None]) -> int:
        a = in_shapes[0]
        return _product_macs(out_shapes[0], None if a is None else a[-1])


@register
class Einsum(OpHandler):
    """Einsum in numpy's notation (torch's is the same). Not a layer: its operands are not trained, and its
    cost, whatever the equation contracts, is not counted."""

    op_type = "Einsum"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        operands = align_devices(*[t for t in inputs if t is not None])
        return [torch.einsum(node.attr("equation"), *operands)]
