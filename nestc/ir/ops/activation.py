"""Point-wise activations and unary math (Abs, Exp, Erf, Round, ...), and the (log-)softmax family."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from nestc.ir.ops.elementwise import align_devices, optional, required
from nestc.ir.registry import Node, OpHandler, register


@register
class Relu(OpHandler):
    op_type = "Relu"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [torch.relu(required(inputs, 0))]


@register
class LeakyRelu(OpHandler):
    op_type = "LeakyRelu"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.leaky_relu(required(inputs, 0), node.attr("alpha", 0.01))]


@register
class PRelu(OpHandler):
    op_type = "PRelu"
    weight_inputs = (1,)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        # ``F.prelu`` wants a per-channel slope; ONNX allows any slope that broadcasts to X.
        x, slope = align_devices(required(inputs, 0), required(inputs, 1))
        return [torch.where(x < 0, x * slope, x)]


@register
class Sigmoid(OpHandler):
    op_type = "Sigmoid"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [torch.sigmoid(required(inputs, 0))]


@register
class Tanh(OpHandler):
    op_type = "Tanh"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [torch.tanh(required(inputs, 0))]


@register
class Clip(OpHandler):
    """Clip; bounds are attributes before opset 11 and optional inputs from opset 11."""

    op_type = "Clip"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        if "min" in node.attrs or "max" in node.attrs:
            low, high = node.attr("min"), node.attr("max")
        else:
            low, high = optional(inputs, 1), optional(inputs, 2)
            low, high = (None if t is None else t.to(x.device) for t in (low, high))
        if low is None and high is None:
            return [x]
        return [torch.clamp(x, low, high)]


@register
class HardSigmoid(OpHandler):
    op_type = "HardSigmoid"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        return [torch.clamp(x * node.attr("alpha", 0.2) + node.attr("beta", 0.5), 0.0, 1.0)]


@register
class HardSwish(OpHandler):
    op_type = "HardSwish"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.hardswish(required(inputs, 0))]


@register
class Gelu(OpHandler):
    op_type = "Gelu"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        approximate = node.attr("approximate", "none")
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate={approximate!r} is not supported; accepted: 'none', 'tanh'")
        return [F.gelu(required(inputs, 0), approximate=approximate)]


@register
class Elu(OpHandler):
    op_type = "Elu"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.elu(required(inputs, 0), node.attr("alpha", 1.0))]


@register
class Softmax(OpHandler):
    """Softmax over one axis (opset >= 13 semantics; the frontend upgrades older models)."""

    op_type = "Softmax"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.softmax(required(inputs, 0), dim=node.attr("axis", -1))]


@register
class LogSoftmax(OpHandler):
    """LogSoftmax over one axis (opset >= 13 semantics, like :class:`Softmax`)."""

    op_type = "LogSoftmax"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.log_softmax(required(inputs, 0), dim=node.attr("axis", -1))]



class _Unary(OpHandler):
    """An attribute-free point-wise op: the output is ``fn`` of the input, element by element."""

    fn: ClassVar[staticmethod[[torch.Tensor], torch.Tensor]]

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [type(self).fn(required(inputs, 0))]


def _abs(x: torch.Tensor) -> torch.Tensor:
    return x.abs() if x.is_signed() else x  # torch has no abs kernel for wide unsigned types


def _sign(x: torch.Tensor) -> torch.Tensor:
    return x.sign() if x.is_signed() else (x != 0).to(x.dtype)


@register
class Abs(_Unary):
    op_type = "Abs"
    fn = staticmethod(_abs)


@register
class Neg(_Unary):
    op_type = "Neg"
    fn = staticmethod(torch.neg)


@register
class Exp(_Unary):
    op_type = "Exp"
    fn = staticmethod(torch.exp)


@register
class Log(_Unary):
    op_type = "Log"
    fn = staticmethod(torch.log)


@register
class Sqrt(_Unary):
    op_type = "Sqrt"
    fn = staticmethod(torch.sqrt)


@register
class Reciprocal(_Unary):
    op_type = "Reciprocal"
    fn = staticmethod(torch.reciprocal)


@register
class Erf(_Unary):
    op_type = "Erf"
    fn = staticmethod(torch.erf)


@register
class Softplus(_Unary):
    op_type = "Softplus"
    fn = staticmethod(F.softplus)


@register
class Softsign(_Unary):
    op_type = "Softsign"
    fn = staticmethod(F.softsign)


@register
class Mish(_Unary):
    op_type = "Mish"
    fn = staticmethod(F.mish)


@register
class Floor(_Unary):
    op_type = "Floor"
    fn = staticmethod(torch.floor)


@register
class Ceil(_Unary):
    op_type = "Ceil"
    fn = staticmethod(torch.ceil)


@register
class Round(_Unary):
    """Round half to even, like ONNX (and ``torch.round``)."""

    op_type = "Round"
    fn = staticmethod(torch.round)


@register
class Sign(_Unary):
    op_type = "Sign"
    fn = staticmethod(_sign)


@register
class Selu(OpHandler):
    op_type = "Selu"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        alpha = node.attr("alpha", 1.67326319217681884765625)
        gamma = node.attr("gamma", 1.05070102214813232421875)
        return [gamma * torch.where(x > 0, x, alpha * torch.expm1(x))]


@register
class Celu(OpHandler):
    op_type = "Celu"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.celu(required(inputs, 0), node.attr("alpha", 1.0))]


@register
class ThresholdedRelu(OpHandler):
    """x where x > alpha, else 0."""

    op_type = "ThresholdedRelu"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.threshold(required(inputs, 0), node.attr("alpha", 1.0), 0.0)]
