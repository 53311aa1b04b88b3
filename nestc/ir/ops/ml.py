"""ai.onnx.ml ops that skl2onnx emits around neural networks (MLPClassifier / MLPRegressor).

Besides the default-domain ops (Cast, MatMul, Add, activations, Softmax, ArgMax, Sub, Concat,
Reshape, Identity), an skl2onnx MLP graph uses ZipMap and ArrayFeatureExtractor (classifier
labels and probabilities), Binarizer (multi-label classifiers) and Scaler (a StandardScaler or
MinMaxScaler in front of the network in a pipeline).
"""

from __future__ import annotations

import torch

from nestc.ir.ops.elementwise import required
from nestc.ir.registry import Node, OpHandler, register

ML = ("ai.onnx.ml",)


@register
class ZipMap(OpHandler):
    """ZipMap, run as the identity on the probability tensor.

    ONNX's output is a sequence of ``{label: probability}`` maps, which cannot be a torch tensor;
    nestc trains on the probabilities, so the torch forward returns its input unchanged and the
    exported model keeps the ZipMap node.
    """

    op_type = "ZipMap"
    domains = ML

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [required(inputs, 0)]


@register
class ArrayFeatureExtractor(OpHandler):
    """Select entries of the last axis; a 1-D input gives a ``1 x k`` result (as onnxruntime does)."""

    op_type = "ArrayFeatureExtractor"
    domains = ML

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x, indices = required(inputs, 0), required(inputs, 1)
        picked = x.index_select(-1, indices.reshape(-1).to(device=x.device, dtype=torch.int64))
        return [picked.reshape(1, -1) if x.dim() == 1 else picked]


@register
class Binarizer(OpHandler):
    """1 where the input exceeds ``threshold``, else 0, in the input's dtype (not differentiable)."""

    op_type = "Binarizer"
    domains = ML

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        return [(x > node.attr("threshold", 0.0)).to(x.dtype)]


@register
class Scaler(OpHandler):
    """``(x - offset) * scale`` per feature (last axis); one value applies to every feature. Its constants are
    attributes: preprocessing of the pipeline, not weights, so nestc neither trains nor resizes them."""

    op_type = "Scaler"
    domains = ML

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0).float()
        offset = torch.tensor(node.attr("offset", [0.0]), dtype=torch.float32, device=x.device)
        scale = torch.tensor(node.attr("scale", [1.0]), dtype=torch.float32, device=x.device)
        return [(x - offset) * scale]
