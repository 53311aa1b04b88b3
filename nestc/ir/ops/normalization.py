"""Normalisations: BatchNormalization (with ONNX's running-statistics semantics), InstanceNormalization,
LayerNormalization, GroupNormalization and LRN."""

from __future__ import annotations

import math

import onnx
import torch
import torch.nn.functional as F

from nestc.ir.ops.elementwise import optional, required
from nestc.ir.ops.shape import ONNX_TO_TORCH
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
        if not training and not uses_batch_statistics(node):
            return [F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps), mean, var][: len(node.outputs)]
        y = _batch_statistics_norm(x, scale, bias, eps)
        momentum = node.attr("momentum", 0.9)
        with torch.no_grad():
            dims = [d for d in range(x.dim()) if d != 1]
            # in float32 even under bf16 autocast: the running statistics outlive the batch they come from
            batch_var, batch_mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
            new_mean = mean * momentum + batch_mean.to(mean.dtype) * (1 - momentum)
            new_var = var * momentum + batch_var.to(var.dtype) * (1 - momentum)
            if training:
                mean.copy_(new_mean)
                var.copy_(new_var)
        return [y, new_mean, new_var][: len(node.outputs)]


def _batch_statistics_norm(x: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None,
                           eps: float) -> torch.Tensor:
    """``x`` normalised with its own batch's statistics, then scaled and shifted.

    ``F.batch_norm`` refuses a batch with one value per channel (one sample of ``[N, C]`` features, which
    inspecting a model runs); ONNX defines it, with a batch variance of zero: every value becomes its
    channel's shift, as onnxruntime computes it.
    """
    if x.numel() != x.shape[1]:
        return F.batch_norm(x, None, None, scale, bias, training=True, eps=eps)
    y = (x - x) / math.sqrt(eps)  # each value is its channel's batch mean, and the batch variance is zero
    per_channel = (1, -1, *[1] * (x.dim() - 2))
    if scale is not None:
        y = y * scale.reshape(per_channel)
    return y if bias is None else y + bias.reshape(per_channel)


def uses_batch_statistics(node: Node) -> bool:
    """Whether the node normalises with batch statistics at inference too, as onnxruntime runs it.

    Opset 14 says so with ``training_mode=1``; opsets 9-13 have no such attribute and mean it by
    declaring the running-statistics outputs (a legacy ``torch.onnx.export`` with
    ``TrainingMode.TRAINING`` writes five). Opset 14 and later allow those outputs only in training
    mode, so declaring them means batch statistics in every opset.
    """
    return bool(node.attr("training_mode", 0)) or len([o for o in node.outputs if o]) > 1


@register
class InstanceNormalization(OpHandler):
    """Normalise each channel of each sample over its spatial axes (biased variance), then scale and shift."""

    op_type = "InstanceNormalization"
    weight_inputs = (1, 2)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        return [F.instance_norm(required(inputs, 0), weight=required(inputs, 1), bias=required(inputs, 2),
                                eps=node.attr("epsilon", 1e-5))]


def _stash_type(node: Node) -> torch.dtype:
    """The floating type a Layer- or GroupNormalization computes its statistics in (``stash_type``)."""
    stash = ONNX_TO_TORCH.get(node.attr("stash_type", onnx.TensorProto.FLOAT))
    if stash is None or not stash.is_floating_point:
        raise ValueError(f"stash_type={node.attr('stash_type')} is not supported; accepted: a floating type")
    return stash


@register
class LayerNormalization(OpHandler):
    """Normalise over the axes from ``axis`` on, then scale and shift (both broadcast).

    Statistics are computed in the ``stash_type`` (float32 by default, whatever the input's type); the
    optional Mean and InvStdDev outputs are in that type and keep the normalised axes with size 1.
    """

    op_type = "LayerNormalization"
    weight_inputs = (1, 2)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x, scale, bias = required(inputs, 0), required(inputs, 1), optional(inputs, 2)
        stash = _stash_type(node)
        axis = node.attr("axis", -1) % x.dim()
        wide = x.to(stash)
        var, mean = torch.var_mean(wide, dim=tuple(range(axis, x.dim())), correction=0, keepdim=True)
        inv_std = torch.sqrt(var + node.attr("epsilon", 1e-5)).reciprocal()
        y = ((wide - mean) * inv_std).to(x.dtype) * scale
        return [y if bias is None else y + bias, mean, inv_std][: len(node.outputs)]


@register
class GroupNormalization(OpHandler):
    """Normalise each of ``num_groups`` groups of channels over its channels and positions, then scale and
    shift per channel (opset 21; opset 18's per-group scale and shift are spread over each group's channels).

    Statistics are computed in the ``stash_type`` (float32 by default), as in LayerNormalization.
    """

    op_type = "GroupNormalization"
    weight_inputs = (1, 2)

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x, scale, bias = required(inputs, 0), required(inputs, 1), required(inputs, 2)
        groups = int(node.attr("num_groups"))
        stash = _stash_type(node)
        channels = x.shape[1]
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into num_groups={groups} equal groups")
        if scale.numel() == groups != channels:  # opset 18: one scale and shift per group
            scale, bias = scale.repeat_interleave(channels // groups), bias.repeat_interleave(channels // groups)
        wide = x.to(stash).reshape(x.shape[0], groups, -1)
        var, mean = torch.var_mean(wide, dim=2, correction=0, keepdim=True)
        y = ((wide - mean) * torch.rsqrt(var + node.attr("epsilon", 1e-5))).reshape(x.shape).to(x.dtype)
        shape = [1, channels] + [1] * (x.dim() - 2)
        return [y * scale.reshape(shape) + bias.reshape(shape)]


@register
class LRN(OpHandler):
    """Local response normalisation across channels: ``x / (bias + alpha / size * sum(x^2)) ^ beta``.

    The sum runs over channels ``c - floor((size - 1) / 2)`` to ``c + ceil((size - 1) / 2)``, clipped to the
    existing ones (torch's ``local_response_norm`` centres even windows the other way).
    """

    op_type = "LRN"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        size = node.attr("size")
        alpha, beta, bias = node.attr("alpha", 1e-4), node.attr("beta", 0.75), node.attr("bias", 1.0)
        squares = (x * x).reshape(x.shape[0], 1, x.shape[1], math.prod(x.shape[2:]))
        squares = F.pad(squares, (0, 0, (size - 1) // 2, size // 2))
        mean = F.avg_pool2d(squares, (size, 1), stride=1).reshape(x.shape)  # zeros count: sum / size
        return [x / (bias + alpha * mean) ** beta]
