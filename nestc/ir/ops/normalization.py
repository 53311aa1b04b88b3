"""BatchNormalization, with ONNX's running-statistics semantics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nestc.ir.ops.elementwise import optional, required
from nestc.ir.registry import Node, OpHandler, register


@register
class BatchNormalization(OpHandler):
    """BatchNormalization over axis 1 of ``N x C x ...`` inputs.

    In eval mode it normalizes with the running statistics (inputs 3 and 4). In training mode it
    normalizes with the batch statistics and updates the running tensors *in place*, which are the
    network's buffers, as ONNX defines it: ``running = running * momentum + batch * (1 - momentum)``.
    The update uses the biased batch variance like the ONNX reference; ``F.batch_norm`` would fold
    in the unbiased one, so the update is done here rather than by torch. A node exported with
    ``training_mode=1`` normalizes with batch statistics in eval mode too, because that is what it
    computes in onnxruntime; only training updates the buffers. Running mean/var outputs are
    returned when the node declares them.
    """

    op_type = "BatchNormalization"
    weight_inputs = (1, 2)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x, scale, bias = required(inputs, 0), optional(inputs, 1), optional(inputs, 2)
        mean, var = required(inputs, 3), required(inputs, 4)
        eps = node.attr("epsilon", 1e-5)
        if not training and not node.attr("training_mode", 0):
            return [F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps), mean, var][: len(node.outputs)]
        y = F.batch_norm(x, None, None, scale, bias, training=True, eps=eps)
        momentum = node.attr("momentum", 0.9)
        with torch.no_grad():
            dims = [d for d in range(x.dim()) if d != 1]
            batch_var, batch_mean = torch.var_mean(x.detach(), dim=dims, correction=0)
            new_mean = mean * momentum + batch_mean.to(mean.dtype) * (1 - momentum)
            new_var = var * momentum + batch_var.to(var.dtype) * (1 - momentum)
            if training:
                mean.copy_(new_mean)
                var.copy_(new_var)
        return [y, new_mean, new_var][: len(node.outputs)]
