"""Channels-last graphs as tf2onnx writes them: NHWC input, a Transpose to NCHW for the convolutions and
one back before a Flatten, so every spatial position of the flattened axis holds all channels.

The channel analysis follows such a Flatten (one segment per position), so the last convolution's
feature maps can be removed or grown like those of an NCHW graph, and the Dense kernel's rows and the
Reshape target follow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import load_benchmark
from onnx import numpy_helper

from nestc import api, runtime
from nestc.channels.analysis import analyse_channels
from nestc.data import fit_to_input, load_dataset
from nestc.frontends import load_model
from nestc.ir.classifier import ClassifierView
from nestc.ir.emit import emit_model
from nestc.ir.network import Network
from nestc.passes.base import Probe, ensure_masks
from nestc.passes.grow_feature_maps import grow_feature_maps


@pytest.fixture
def channels_last(tmp_path: Path) -> Path:
    path = tmp_path / "tf_lenet5.onnx"
    load_benchmark("exporters").tf2onnx_lenet5(path)
    return path


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


def _ort(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    return runtime.run(runtime.session(onnx.load(model) if isinstance(model, str) else model), [x])[0]


def test_the_last_conv_space_is_tracked_through_the_channels_last_flatten(channels_last: Path) -> None:
    net = Network(load_model(channels_last))
    analysis = analyse_channels(net, torch.zeros(2, 28, 28, 1))
    conv2 = next(s for s in analysis.resizable_spaces() if analysis.table.spaces[s].origin == net.nodes[4].name)
    layout = analysis.layouts[("flat", 1)]
    assert len(layout) == 25 and all(analysis.table.find(seg.space) == conv2 and seg.block == 1 and
                                      (seg.start, seg.stop) == (0, 16) for seg in layout)


def test_compact_removes_dead_maps_from_the_dense_rows_they_feed(channels_last: Path, tmp_path: Path) -> None:
    model = onnx.load(str(channels_last))
    weights = _initializers(model)
    dead = [3, 7, 12]
    weights["conv2/kernel"][dead] = 0
    weights["conv2/bias"][dead] = -1.0  # ReLU(-1) = 0: the maps are dead, whatever their Dense rows hold
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    onnx.save(model, str(tmp_path / "planted.onnx"))
    report = api.compact(tmp_path / "planted.onnx", tmp_path / "small.onnx")
    small = onnx.load(str(tmp_path / "small.onnx"))
    after = _initializers(small)
    assert after["conv2/kernel"].shape == (13, 6, 5, 5)
    assert after["dense/kernel"].shape == (25 * 13, 120)
    assert after["flatten/shape"].tolist() == [-1, 25 * 13]
    kept = [c for c in range(16) if c not in dead]
    rows = np.array([p * 16 + c for p in range(25) for c in kept])
    np.testing.assert_array_equal(after["dense/kernel"], weights["dense/kernel"][rows])
    assert report.before.params - report.after.params == 3 * (150 + 1) + 3 * 25 * 120
    x = np.random.default_rng(0).standard_normal((5, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(_ort(small, x), _ort(str(tmp_path / "planted.onnx"), x), rtol=1e-5, atol=1e-6)


def test_feature_maps_grow_through_the_channels_last_flatten(channels_last: Path) -> None:
    data = fit_to_input(load_dataset("embedded"), ["N", 28, 28, 1])
    x, y = torch.from_numpy(data.x_train[:256]), torch.from_numpy(data.y_train[:256])
    net = Network(load_model(channels_last))
    ensure_masks(net)
    assert grow_feature_maps(Probe(ClassifierView(net), x, y), count=2, candidates=2).modified
    assert tuple(net.tensor("conv2/kernel").shape) == (18, 8, 5, 5)
    assert tuple(net.tensor("dense/kernel").shape) == (25 * 18, 120)
    emitted = emit_model(net)
    onnx.checker.check_model(emitted)
    with torch.no_grad():
        expected = net(x[:7])[0].numpy()
    np.testing.assert_allclose(_ort(emitted, x[:7].numpy()), expected, rtol=1e-4, atol=1e-5)
