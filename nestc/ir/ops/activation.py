"""Point-wise activations and the (log-)softmax family."""

from __future__ import annotations

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
