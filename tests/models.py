"""Shared test fixtures: a small zoo of torch models, their ONNX exports, and dead-unit planting.

Every zoo model declares its channel spaces in ``SPACES``: for each resizable space, the parameters
that hold its units as ``(parameter, axis, block, role)``. ``role`` is ``"producer"`` (writes the
unit: weight rows and biases), ``"consumer"`` (reads it: weight columns of the next layer) or
``"bn"`` (batch-norm scale and shift: zeroed with the producers so the unit outputs exactly zero) or
``"follow"`` (depthwise filters that follow the unit). ``block`` is how many
positions one unit spans along the axis (a Flatten after a 4x4 feature map gives 16).

:func:`plant_dead` zeroes a unit's producers (and BN scale and shift), making it constant zero, or its
consumers, making it unused, and returns how many parameters removing the units must delete, from
the declaration. Tests check that number against one written out by hand, so the declaration itself
is verified too.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Ref:
    """One parameter axis that holds a space's units: unit ``u`` sits at positions
    ``(u + shift) * block ...`` of ``axis`` when that is inside the axis (a Concat shifts a branch's
    units, a Split keeps a range of them)."""

    param: str
    axis: int
    block: int = 1
    role: str = "producer"
    shift: int = 0

    def positions(self, tensor: torch.Tensor, unit: int) -> tuple[int, int] | None:
        """``(start, length)`` along ``axis`` of ``unit``, or ``None`` when this member does not hold it."""
        start = (unit + self.shift) * self.block
        return (start, self.block) if 0 <= start < tensor.shape[self.axis] else None


def _p(param: str, axis: int = 0, block: int = 1) -> Ref:
    return Ref(param, axis, block, "producer")


def _c(param: str, axis: int = 1, block: int = 1, shift: int = 0) -> Ref:
    return Ref(param, axis, block, "consumer", shift)


def _bn(param: str) -> Ref:
    return Ref(param, 0, 1, "bn")


def _f(param: str, axis: int = 0, block: int = 1) -> Ref:
    return Ref(param, axis, block, "follow")


class Zoo(nn.Module):
    """Base of zoo models: ``INPUT`` is the per-sample input shape, ``SPACES`` the resizable spaces."""

    INPUT: tuple[int, ...] = ()
    SPACES: dict[str, list[Ref]] = {}  # noqa: RUF012

    def sample(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """Seeded standard-normal input of ``batch`` samples."""
        return torch.randn((batch, *self.INPUT), generator=torch.Generator().manual_seed(seed))


class MLP(Zoo):
    """784-300-100-10, flat input."""

    INPUT = (784,)
    SPACES = {  # noqa: RUF012
        "fc1": [_p("fc1.weight"), _p("fc1.bias"), _c("fc2.weight")],
        "fc2": [_p("fc2.weight"), _p("fc2.bias"), _c("fc3.weight")],
    }

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(Zoo):
    """conv-pool-conv-pool-flatten-fc-fc-fc on 1x28x28; the flatten turns each of 16 channels into 25 columns."""

    INPUT = (1, 28, 28)
    SPACES = {  # noqa: RUF012
        "conv1": [_p("conv1.weight"), _p("conv1.bias"), _c("conv2.weight")],
        "conv2": [_p("conv2.weight"), _p("conv2.bias"), _c("fc1.weight", 1, 25)],
        "fc1": [_p("fc1.weight"), _p("fc1.bias"), _c("fc2.weight")],
        "fc2": [_p("fc2.weight"), _p("fc2.bias"), _c("fc3.weight")],
    }

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class ViewNet(Zoo):
    """``x.view(x.size(0), -1)``: the legacy exporter computes the Reshape target at run time."""

    INPUT = (3, 12, 12)
    SPACES = {  # noqa: RUF012
        "conv": [_p("conv.weight"), _p("conv.bias"), _c("fc1.weight", 1, 36)],
        "fc1": [_p("fc1.weight"), _p("fc1.bias"), _c("fc2.weight")],
    }

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8 * 36, 32), nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class ConvBN(Zoo):
    """Conv-BN-ReLU twice (convs without bias), global average pool, Linear."""

    INPUT = (3, 16, 16)
    SPACES = {  # noqa: RUF012
        "c1": [_p("conv1.weight"), _bn("bn1.weight"), _bn("bn1.bias"), _c("conv2.weight")],
        "c2": [_p("conv2.weight"), _bn("bn2.weight"), _bn("bn2.bias"), _c("fc.weight")],
    }

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Residual(Zoo):
    """Stem conv-BN, two blocks conv-BN-ReLU-conv-BN with identity skip Adds, GAP, Linear.

    The skip Adds tie the stem's, both blocks' second convs' and the classifier's channels into one
    space ("trunk"); each block's inner width is a space of its own.
    """

    INPUT = (3, 8, 8)
    WIDTH = 8
    SPACES = {  # noqa: RUF012
        "trunk": [_p("stem.weight"), _bn("stem_bn.weight"), _bn("stem_bn.bias"),
                  _p("b1_conv2.weight"), _bn("b1_bn2.weight"), _bn("b1_bn2.bias"),
                  _p("b2_conv2.weight"), _bn("b2_bn2.weight"), _bn("b2_bn2.bias"),
                  _c("b1_conv1.weight"), _c("b2_conv1.weight"), _c("fc.weight")],
        "b1": [_p("b1_conv1.weight"), _bn("b1_bn1.weight"), _bn("b1_bn1.bias"), _c("b1_conv2.weight")],
        "b2": [_p("b2_conv1.weight"), _bn("b2_bn1.weight"), _bn("b2_bn1.bias"), _c("b2_conv2.weight")],
    }

    def __init__(self) -> None:
        super().__init__()
        w = self.WIDTH
        self.stem, self.stem_bn = nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        for b in ("b1", "b2"):
            setattr(self, f"{b}_conv1", nn.Conv2d(w, w, 3, padding=1, bias=False))
            setattr(self, f"{b}_bn1", nn.BatchNorm2d(w))
            setattr(self, f"{b}_conv2", nn.Conv2d(w, w, 3, padding=1, bias=False))
            setattr(self, f"{b}_bn2", nn.BatchNorm2d(w))
        self.fc = nn.Linear(w, 10)

    def _block(self, x: torch.Tensor, b: str) -> torch.Tensor:
        y = F.relu(getattr(self, f"{b}_bn1")(getattr(self, f"{b}_conv1")(x)))
        return F.relu(getattr(self, f"{b}_bn2")(getattr(self, f"{b}_conv2")(y)) + x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self._block(self._block(x, "b1"), "b2")
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DepthwiseConcat(Zoo):
    """Stem conv; branch A = 1x1 conv; branch B = 3x3 depthwise + 1x1 conv; concat; 1x1 conv; GAP; Linear.

    The depthwise conv shares the stem's space (its ``group`` follows the stem's width); the concat
    holds branch A's channels then branch B's, so the merging conv's columns split into two segments.
    """

    INPUT = (3, 10, 10)
    SPACES = {  # noqa: RUF012
        "stem": [_p("stem.weight"), _p("stem.bias"), _f("dw.weight"), _f("dw.bias"),
                 _c("branch_a.weight"), _c("pw.weight")],
        "a": [_p("branch_a.weight"), _p("branch_a.bias"), _c("merge.weight")],
        "b": [_p("pw.weight"), _p("pw.bias"), _c("merge.weight", shift=6)],
        "merge": [_p("merge.weight"), _p("merge.bias"), _c("fc.weight")],
    }

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.branch_a = nn.Conv2d(12, 6, 1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.pw = nn.Conv2d(12, 10, 1)
        self.merge = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        a = F.relu(self.branch_a(x))
        b = F.relu(self.pw(F.relu(self.dw(x))))
        y = F.relu(self.merge(torch.cat([a, b], dim=1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class SplitNet(Zoo):
    """A conv whose 16 channels are split 6/10 (``torch.split``) into two convs, then concatenated."""

    INPUT = (3, 8, 8)
    SPACES = {  # noqa: RUF012
        "conv": [_p("conv.weight"), _p("conv.bias"), _c("left.weight"), _c("right.weight", shift=-6)],
        "left": [_p("left.weight"), _p("left.bias"), _c("fc.weight")],
        "right": [_p("right.weight"), _p("right.bias"), _c("fc.weight", shift=8)],
    }

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.left, self.right = nn.Conv2d(6, 8, 1), nn.Conv2d(10, 8, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(F.relu(self.conv(x)), [6, 10], dim=1)
        y = torch.cat([F.relu(self.left(a)), F.relu(self.right(b))], dim=1)
        return self.fc(y.mean(dim=(2, 3)))


class ChunkNet(Zoo):
    """``x.chunk(2, dim=1)`` (equal halves): each half's width is written into the graph."""

    INPUT = (3, 8, 8)
    SPACES = {  # noqa: RUF012
        "conv": [_p("conv.weight"), _p("conv.bias"), _c("left.weight"), _c("right.weight", shift=-6)],
    }

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.left, self.right = nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = F.relu(self.conv(x)).chunk(2, dim=1)
        y = torch.cat([self.left(a), self.right(b)], dim=1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(y), 1), 1))


class SliceNet(Zoo):
    """Channel slices ``x[:, :6]`` and ``x[:, -4:]`` (a negative start, an open end) read by two convs."""

    INPUT = (3, 6, 6)
    SPACES = {  # noqa: RUF012
        "conv": [_p("conv.weight"), _p("conv.bias"), _c("head.weight"), _c("tail.weight", shift=-6)],
    }

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, padding=1)
        self.head, self.tail = nn.Conv2d(6, 4, 1), nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        y = torch.cat([self.head(x[:, :6]), self.tail(x[:, -4:])], dim=1)
        return self.fc(F.relu(y).mean(dim=(2, 3)))


class TokenMLP(Zoo):
    """A transpose-based layout: Conv1d features [N, C, L] -> permute to [N, L, C] -> Linear (MatMul)
    on the last axis -> mean over L -> Linear."""

    INPUT = (4, 6)
    SPACES = {  # noqa: RUF012
        "conv": [_p("conv.weight"), _p("conv.bias"), _c("fc1.weight")],
        "fc1": [_p("fc1.weight"), _p("fc1.bias"), _c("fc2.weight")],
    }

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).permute(0, 2, 1)
        return self.fc2(F.relu(self.fc1(h)).mean(dim=1))


ZOO: dict[str, type[Zoo]] = {cls.__name__: cls for cls in
                             (MLP, LeNet5, ViewNet, ConvBN, Residual, DepthwiseConcat, SplitNet, ChunkNet, SliceNet,
                              TokenMLP)}


PLANTS: dict[str, tuple] = {
    "MLP": (("fc1", (3, 7), "fanin"), ("fc2", (5,), "fanout")),
    "LeNet5": (("conv1", (2,), "fanin"), ("conv2", (4, 9), "fanin"), ("fc1", (10,), "fanout")),
    "ViewNet": (("conv", (1, 5), "fanin"),),
    "ConvBN": (("c1", (2,), "fanin"), ("c2", (3,), "fanout")),
    "Residual": (("trunk", (1,), "fanin"), ("b1", (2, 4), "fanin")),
    "DepthwiseConcat": (("stem", (4,), "fanin"), ("a", (1,), "fanin"), ("b", (3, 8), "fanout")),
    "SplitNet": (("conv", (2, 9), "fanin"), ("right", (1,), "fanout")),
    "ChunkNet": (("conv", (2, 7, 8), "fanin"),),
    "SliceNet": (("conv", (1, 5, 7), "fanin"), ("conv", (9,), "fanout")),
    "TokenMLP": (("conv", (2,), "fanin"), ("fc1", (4,), "fanin", 0.2)),
}
"""The standard dead units of each zoo model (:func:`plant_dead` arguments). The frontend tests load
the same exports the compaction tests shrink, so each is exported once per run."""


def build(name: str, seed: int = 0, fresh_bn: bool = False) -> Zoo:
    """A zoo model (deterministic per ``seed``) in eval mode.

    BatchNorm scales, shifts and statistics are randomised so that folding and BN handling are
    actually exercised; ``fresh_bn`` keeps torch's initial values instead (all scales one, all shifts
    zero: equal tensors, which torch's legacy exporter stores once and shares through Identity nodes).
    """
    torch.manual_seed(seed)
    module = ZOO[name]()
    if fresh_bn:
        return module.eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                n = sub.num_features
                sub.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                sub.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                sub.weight.copy_(0.5 + torch.rand(n, generator=generator))
                sub.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return module.eval()


def param_count(module: nn.Module) -> int:
    """What ``nestc inspect`` must report as ``params``."""
    return sum(p.numel() for p in module.parameters())


def removal_count(module: Zoo, removed: dict[str, Iterable[int]], fused_bn: bool = False) -> int:
    """Parameters deleted when ``removed`` units of several spaces go at once (shared entries, such as
    the weight linking two removed units of adjacent layers, are counted once).

    ``fused_bn``: the export folded each BatchNormalization into its convolution (every exporter
    does, unless told to keep BN), so a unit's BN scale and shift became one conv bias entry.
    """
    params = dict(module.named_parameters())
    gone = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in params.items()}
    for space, units in removed.items():
        for ref in module.SPACES[space]:
            for unit in units:
                where = ref.positions(params[ref.param], unit)
                if where is not None:
                    gone[ref.param].narrow(ref.axis, *where).fill_(True)
    count = int(sum(int(g.sum()) for g in gone.values()))
    if fused_bn:  # a folded BN leaves one bias entry per unit where it had a scale and a shift
        count -= sum(int(gone[r.param].sum()) for space in removed for r in module.SPACES[space]
                     if r.role == "bn" and r.param.endswith(".bias"))
    return count


def plant_dead(module: Zoo, space: str, units: Iterable[int], how: str = "fanin", bias: float = 0.0) -> int:
    """Make ``units`` of ``space`` removable and return how many parameters their removal deletes.

    Args:
        how: ``"fanin"`` zeroes every producer (weight rows, biases) and BN scale and shift, so the
            unit outputs a constant (depthwise filters that follow it are left alone: their bias makes
            another constant that compaction must fold); ``"fanout"`` zeroes every consumer column, so nothing reads it.
        bias: with ``"fanin"``, the value given to biases (and BN shifts) instead of zero (a unit with a
            non-zero constant output, which compaction must fold into the next layer's bias).
    """
    units = sorted(set(units))
    params = dict(module.named_parameters())
    zeroed = ("consumer",) if how == "fanout" else ("producer", "bn")
    with torch.no_grad():
        for ref in module.SPACES[space]:
            if ref.role not in zeroed:
                continue
            tensor = params[ref.param]
            value = bias if (how == "fanin" and ref.param.endswith(".bias")) else 0.0
            for unit in units:
                where = ref.positions(tensor, unit)
                if where is not None:
                    tensor.narrow(ref.axis, *where).fill_(value)
    return removal_count(module, {space: units})


def export(module: nn.Module, path: str | os.PathLike, exporter: str = "dynamo", keep_bn: bool = False,
           opset: int | None = None, input_shape: tuple[int, ...] | None = None) -> str:
    """Export ``module`` to ONNX at ``path``.

    ``dynamo`` exports with a static batch of 1 and the weights in an external ``.data`` file (what
    ``torch.onnx.export(dynamo=True)`` gives by default); ``legacy`` (TorchScript) exports with a
    dynamic batch axis. Both use torch's default opset unless ``opset`` is given. ``keep_bn`` keeps
    BatchNormalization nodes (``TrainingMode.PRESERVE``, no constant folding) so nestc sees them.
    """
    shape = input_shape or module.INPUT  # type: ignore[attr-defined]
    x = torch.randn(1, *shape)
    path = str(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            kwargs = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False} if keep_bn else {}
            if opset:
                kwargs["opset_version"] = opset
            torch.onnx.export(module, (x,), path, dynamo=True, verbose=False, **kwargs)  # weights in path.data
        elif exporter == "legacy":
            kwargs = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False} if keep_bn else {}
            torch.onnx.export(module, (x,), path, dynamo=False, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              opset_version=opset, **kwargs)
        else:
            raise ValueError(f"unknown exporter {exporter}")
    return path


@dataclass
class Exported:
    """A (planted) model, its ONNX file and what compaction must delete from it."""

    module: nn.Module
    path: str
    expected_drop: int = 0
    static_batch: bool = False


def ort_run(model: str | os.PathLike | onnx.ModelProto, x: np.ndarray, static_batch: bool = False) -> np.ndarray:
    """First output of ``model`` in onnxruntime on ``x``; ``static_batch`` feeds one sample at a time
    (a dynamo export fixes the batch at 1)."""
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    if static_batch:
        return np.concatenate([sess.run(None, {name: x[i: i + 1]})[0] for i in range(len(x))])
    return sess.run(None, {name: x})[0]


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """float32 agreement: ``rtol`` relative, plus ``atol`` scaled by the output's magnitude (sums of
    hundreds of products round differently when a folded bias moved or a zero column went)."""
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


def train_mlp_elsewhere(x_train: np.ndarray, y_train: np.ndarray, path: str | os.PathLike,
                        inside: tuple[float, float] | None = None) -> None:
    """A small MLP trained in plain PyTorch on exactly ``x_train`` (as a user's own pipeline prepared it) and
    exported by torch's legacy exporter; ``inside``: ``(mean, std)`` the model's graph applies to its inputs
    itself. A uint8 ``x_train`` makes a model that takes uint8 pixels, which its graph casts to float first."""
    torch.manual_seed(0)
    features = int(np.prod(x_train.shape[1:]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 10))
    if inside is not None:
        mean, std = inside

        class Normalise(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return ((x.float() if x.dtype == torch.uint8 else x) - mean) / std

        model = nn.Sequential(Normalise(), model)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(8):
        for start in range(0, len(x), 100):
            optimiser.zero_grad()
            F.cross_entropy(model(x[start:start + 100]), y[start:start + 100]).backward()
            optimiser.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (x[:1],), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
