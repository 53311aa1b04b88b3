"""Resize: nearest, linear and cubic interpolation along any axes, as ONNX defines it (opset 11 and later).

Every mode is separable: the output is the input resized along each axis in turn. So each resized axis gets
its sampling plan computed once, in float64, from the spec's coordinate transform and the mode's coefficients
(:func:`axis_plan`, cached by geometry): linear and cubic become an ``[out, in]`` weight matrix that torch
applies with ``tensordot`` (differentiable, on any device), nearest a list of input indices that torch
gathers (exact for any element type, infinities included). ``tf_crop_and_resize`` positions outside the
input take ``extrapolation_value``.

The coordinate rules follow the spec text of ``coordinate_transformation_mode`` with its two numerical
conventions that onnx's reference and onnxruntime share: ``align_corners`` and ``tf_crop_and_resize`` divide
by the fractional output width ``scale * length`` (which differs from the integer width only for scales
that do not give a whole number of positions), and a neighbourhood is the ``n`` input positions nearest to
the source coordinate, lower ones first on ties, clamped to the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from nestc.ir.ops.elementwise import required
from nestc.ir.registry import Node, OpHandler, register

MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


@dataclass(frozen=True)
class Interpolation:
    """The attributes of one Resize node that shape every axis's plan."""

    mode: str
    coordinates: str
    nearest: str
    cubic_a: float
    exclude_outside: bool
    antialias: bool

    @classmethod
    def of(cls, node: Node) -> Interpolation:
        """The node's attributes with the spec's defaults; a value the spec does not define is an error."""
        found = cls(node.attr("mode", "nearest"), node.attr("coordinate_transformation_mode", "half_pixel"),
                    node.attr("nearest_mode", "round_prefer_floor"), float(node.attr("cubic_coeff_a", -0.75)),
                    bool(node.attr("exclude_outside", 0)), bool(node.attr("antialias", 0)))
        for value, accepted in ((found.mode, MODES), (found.coordinates, COORDINATE_MODES),
                                (found.nearest, NEAREST_MODES)):
            if value not in accepted:
                raise ValueError(f"'{value}' is not a Resize mode ONNX defines; accepted: {', '.join(accepted)}")
        if found.antialias and found.mode == "nearest":
            raise ValueError("antialias applies to the linear and cubic modes only, not to nearest")
        return found

    def coefficients(self, ratio: float, scale: float) -> np.ndarray:
        """Weights of the neighbourhood of a source coordinate ``ratio`` past its lower neighbour (1 for a
        whole coordinate): its length is the neighbourhood's size."""
        if self.mode == "nearest":
            if ratio == 1.0:
                return np.array([0.0, 1.0])
            upper = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False,
                     "ceil": True}[self.nearest]
            return np.array([0.0, 1.0]) if upper else np.array([1.0, 0.0])
        support = 1.0 if self.mode == "linear" else 2.0  # the kernel's half width at scale 1
        stretch = min(scale, 1.0) if self.antialias else 1.0  # antialiasing widens the kernel when shrinking
        start = int(np.floor(-support / stretch) + 1)
        distances = np.abs((np.arange(start, 1 - start + 1) - ratio) * stretch)
        weights = _triangle(distances) if self.mode == "linear" else _keys_cubic(distances, self.cubic_a)
        return weights / weights.sum() if self.antialias else weights


def _triangle(distances: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - distances, 0.0, 1.0)


def _keys_cubic(distances: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient ``a`` (-0.75 as in PyTorch, -0.5 in TensorFlow)."""
    d = distances
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


@dataclass(frozen=True)
class AxisPlan:
    """How one axis is resampled: a weight matrix ``[out, in]`` (linear, cubic) or source indices ``[out]``
    (nearest), and which output positions are extrapolated (``tf_crop_and_resize``), if any."""

    weights: np.ndarray | None
    indices: np.ndarray | None
    extrapolated: np.ndarray | None


@lru_cache(maxsize=256)
def axis_plan(how: Interpolation, length: int, out: int, scale: float, roi: tuple[float, float]) -> AxisPlan:
    """The plan for resampling an axis of ``length`` positions to ``out`` at ``scale`` (``roi``: the crop, in
    units of the axis, that ``tf_crop_and_resize`` takes)."""
    x = _source_coordinates(how.coordinates, np.arange(out, dtype=np.float64), length, out, scale, roi)
    extrapolated = (x < 0) | (x > length - 1) if how.coordinates == "tf_crop_and_resize" else None
    lower = np.floor(x)
    whole = x == lower
    ratios = np.where(whole, 1.0, x - lower)
    coefficients = np.stack([how.coefficients(float(r), scale) for r in ratios]) if out else np.zeros((0, 2))
    n = coefficients.shape[1]
    first = lower.astype(np.int64) - n // 2 + np.where(whole, 0, 1)  # the n nearest positions, lower first
    neighbours = first[:, None] + np.arange(n)[None, :]
    if how.exclude_outside:
        coefficients = np.where((neighbours < 0) | (neighbours >= length), 0.0, coefficients)
        totals = coefficients.sum(axis=1, keepdims=True)
        coefficients = coefficients / np.where(totals == 0, 1.0, totals)
    neighbours = np.clip(neighbours, 0, length - 1)
    if how.mode == "nearest":
        return AxisPlan(None, neighbours[np.arange(out), coefficients.argmax(axis=1)], extrapolated)
    weights = np.zeros((out, length))
    np.add.at(weights, (np.repeat(np.arange(out), n), neighbours.ravel()), coefficients.ravel())
    return AxisPlan(weights, None, extrapolated)


def _source_coordinates(mode: str, y: np.ndarray, length: int, out: int, scale: float,
                        roi: tuple[float, float]) -> np.ndarray:
    """``coordinate_transformation_mode``: the input coordinate each output position ``y`` samples."""
    width = scale * length  # the fractional output width
    if mode == "align_corners":
        return np.zeros_like(y) if width == 1 else y * (length - 1) / (width - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if width == 1:
            return np.full_like(y, (end - start) * (length - 1) / 2 + start * (length - 1))
        return y * (end - start) * (length - 1) / (width - 1) + start * (length - 1)
    if mode == "pytorch_half_pixel" and width == 1:
        return np.full_like(y, -0.5)
    offset = length / 2 * (1 - out / width) if mode == "half_pixel_symmetric" else 0.0
    return offset + (y + 0.5) / scale - 0.5


def output_geometry(shape: tuple[int, ...], axes: list[int], scales: list[float] | None, sizes: list[int] | None,
                    policy: str) -> tuple[list[int], list[float]]:
    """Output extent and scale of every axis of an input of ``shape`` (axes outside ``axes`` keep both)."""
    out, scale = list(shape), [1.0] * len(shape)
    if sizes is None:
        for axis, factor in zip(axes, scales or [], strict=True):
            out[axis], scale[axis] = int(factor * shape[axis]), float(factor)
        return out, scale
    ratios = [size / shape[axis] for axis, size in zip(axes, sizes, strict=True)]
    if policy == "stretch":
        for axis, size, ratio in zip(axes, sizes, ratios, strict=True):
            out[axis], scale[axis] = int(size), ratio
        return out, scale
    common = min(ratios) if policy == "not_larger" else max(ratios)
    for axis in axes:
        out[axis], scale[axis] = int(common * shape[axis] + 0.5), common
    return out, scale


@register
class Resize(OpHandler):
    op_type = "Resize"

    def forward(self, node: Node, inputs: list[torch.Tensor | None], training: bool) -> list[torch.Tensor]:
        x = required(inputs, 0)
        how = Interpolation.of(node)
        rank = x.dim()
        axes = [int(a) % rank for a in node.attr("axes", list(range(rank)))]
        roi = inputs[1] if len(inputs) > 1 and inputs[1] is not None and inputs[1].numel() else None
        scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
        sizes = inputs[3] if len(inputs) > 3 and inputs[3] is not None and inputs[3].numel() else None
        if (scales is None) == (sizes is None):
            raise ValueError("give exactly one of the scales and sizes inputs")
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        if policy not in ASPECT_POLICIES:
            raise ValueError(f"keep_aspect_ratio_policy '{policy}' is not defined; accepted: "
                             f"{', '.join(ASPECT_POLICIES)}")
        if how.mode != "nearest" and not x.is_floating_point():
            raise ValueError(f"{how.mode} interpolation of {x.dtype} values is not supported; accepted: float inputs")
        out, scale = output_geometry(tuple(x.shape), axes, None if scales is None else scales.tolist(),
                                     None if sizes is None else [int(v) for v in sizes.tolist()], policy)
        crop = [0.0] * len(axes) + [1.0] * len(axes) if roi is None else [float(v) for v in roi.tolist()]
        y = x
        outside = None
        for k, axis in enumerate(axes):
            if out[axis] == x.shape[axis] and scale[axis] == 1.0 and (crop[k], crop[k + len(axes)]) == (0.0, 1.0):
                continue  # spec: an axis at scale 1 over its whole extent is left as it is
            plan = axis_plan(how, int(x.shape[axis]), out[axis], scale[axis], (crop[k], crop[k + len(axes)]))
            y = _apply(y, axis, plan)
            if plan.extrapolated is not None:
                mask = torch.from_numpy(plan.extrapolated).to(y.device).reshape(
                    [-1 if a == axis else 1 for a in range(rank)])
                outside = mask if outside is None else outside | mask
        if outside is not None:
            y = torch.where(outside, torch.tensor(float(node.attr("extrapolation_value", 0.0)), dtype=y.dtype,
                                                  device=y.device), y)
        return [y]


def _apply(x: torch.Tensor, axis: int, plan: AxisPlan) -> torch.Tensor:
    if plan.indices is not None:
        return x.index_select(axis, torch.from_numpy(plan.indices).to(x.device))
    weights = torch.from_numpy(plan.weights).to(device=x.device, dtype=x.dtype)
    return torch.movedim(torch.tensordot(weights, x, dims=([1], [axis])), 0, axis)
