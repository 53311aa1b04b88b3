"""ONNX's backend node tests, run through :class:`nestc.ir.Network` for every op nestc claims.

The cases come from ``onnx/backend/test/data/node`` when the installed onnx ships that folder; wheels
that do not ship it still carry the generator (``onnx.backend.test.case.node``) that writes it, so the
same cases (names, models, reference outputs) are produced in memory instead.

A case is claimed when every node of its model has a registered handler for its domain. Claimed
cases nestc deliberately does not run are listed in :data:`UNSUPPORTED_VARIANTS` with the reason:
those in :data:`RAISES` must fail with a clear error, those in :data:`NOT_RUN` cannot be fed to a
torch network at all.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from nestc.errors import ModelError
from nestc.ir import Network, handler_for

NODE_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/node")


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    inputs: list[object]
    outputs: list[object]


def _read_value(path: str) -> object:
    """A TensorProto; sequence/optional files (cases in NOT_RUN) may come back as junk, never used."""
    proto = onnx.TensorProto()
    with open(path, "rb") as f:
        try:
            proto.ParseFromString(f.read())
        except DecodeError:
            return None
    return proto


def _numbered(folder: str, prefix: str) -> list[str]:
    paths = glob.glob(os.path.join(folder, f"{prefix}_*.pb"))
    return sorted(paths, key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))


def _load_cases() -> list[Case]:
    if os.path.isdir(NODE_DIR):
        cases = []
        for name in sorted(os.listdir(NODE_DIR)):
            folder = os.path.join(NODE_DIR, name)
            data = os.path.join(folder, "test_data_set_0")
            cases.append(Case(name, onnx.load(os.path.join(folder, "model.onnx")),
                              [_read_value(p) for p in _numbered(data, "input")],
                              [_read_value(p) for p in _numbered(data, "output")]))
        return cases
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # the generator overflows casts on purpose
        warnings.simplefilter("ignore")
        generated = collect_testcases()
    return [Case(c.name, c.model, list(c.data_sets[0][0]), list(c.data_sets[0][1])) for c in generated]


def _claimed(model: onnx.ModelProto) -> bool:
    for node in model.graph.node:
        handler = handler_for(node.op_type)
        if handler is None or node.domain not in handler.domains:
            return False
    return True


CASES = {c.name: c for c in _load_cases() if _claimed(c.model)}

RAISES: dict[str, str] = {
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool's Indices output is not supported",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool's Indices output is not supported",
    "test_div_uint64": "torch has no uint64 division kernel (uint64 Add/Sub/Mul wrap exactly via int64)",
}
NOT_RUN: dict[str, str] = {
    "test_identity_opt": "optional values are not tensors; nestc graphs carry tensors only",
    "test_identity_sequence": "sequence values are not tensors; nestc graphs carry tensors only",
    "test_equal_string": "string tensors have no torch dtype",
    "test_equal_string_broadcast": "string tensors have no torch dtype",
    **{name: "random dropout mask cannot reproduce numpy's generator; see test_random_dropout_is_inverted_dropout"
       for name in ("test_training_dropout", "test_training_dropout_default", "test_training_dropout_mask",
                    "test_training_dropout_default_mask")},
}

# Dtypes with no torch counterpart. Cast(Like) cases are named ``..._<FROM>_to_<TO>[_expanded]``: an
# exotic source (or CastLike's exotic target example) cannot be fed to torch at all; a plain Cast to
# an exotic type must be refused by the Cast handler.
NO_TORCH_DTYPES = ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1",
                   "INT4", "UINT4", "INT2", "UINT2")
_CAST_NAME = re.compile(r"^test_cast(like)?_(?:no_saturate_|e8m0_)?([A-Z0-9]+)_to_([A-Z0-9]+)(?:_expanded)?$")
for _name in CASES:
    _match = _CAST_NAME.match(_name)
    if _match is None:
        continue
    _like, _src, _dst = _match.groups()
    if _src in NO_TORCH_DTYPES or (_like and _dst in NO_TORCH_DTYPES):
        NOT_RUN[_name] = f"{_src if _src in NO_TORCH_DTYPES else _dst} inputs have no torch dtype"
    elif _dst in NO_TORCH_DTYPES:
        RAISES[_name] = f"Cast to {_dst} is not supported (no torch dtype)"

UNSUPPORTED_VARIANTS: dict[str, str] = {**RAISES, **NOT_RUN}

LOOSER_ATOL = {
    # The reference output is typed in with four decimals (0.1511 for 1.3595 / 9 = 0.151055...).
    "test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-4,
}


def _to_torch(value: object) -> torch.Tensor:
    array = numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)
    if array.dtype.name == "bfloat16":  # numpy has no bfloat16; ml_dtypes' bits are torch's
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def _run(case: Case) -> tuple[torch.Tensor, ...]:
    net = Network(case.model)
    net.train("training" in case.name)  # e.g. test_batchnorm_*_training_mode use batch statistics
    with torch.no_grad():
        return net(*[_to_torch(v) for v in case.inputs])


def _check(name: str, got: torch.Tensor, value: object) -> None:
    want = _to_torch(value)
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if want.is_floating_point():
        atol = LOOSER_ATOL.get(name, 1e-5)
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=1e-5, atol=atol)
    else:
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("name", sorted(n for n in CASES if n not in UNSUPPORTED_VARIANTS))
def test_node(name: str) -> None:
    case = CASES[name]
    outputs = _run(case)
    assert len(outputs) == len(case.outputs)
    for got, value in zip(outputs, case.outputs):
        _check(name, got, value)


@pytest.mark.parametrize("name", sorted(RAISES))
def test_unsupported_variant_raises(name: str) -> None:
    with pytest.raises((ModelError, ValueError)):
        _run(CASES[name])


@pytest.mark.parametrize("name", sorted(n for n in NOT_RUN if n.startswith("test_training_dropout")))
def test_random_dropout_is_inverted_dropout(name: str) -> None:
    """Each output is either dropped (0) or scaled by ``1 / (1 - ratio)``; the mask says which."""
    case = CASES[name]
    x = _to_torch(case.inputs[0])
    ratio = float(_to_torch(case.inputs[1])) if len(case.inputs) > 1 else 0.5
    outputs = _run(case)
    kept = outputs[0] != 0
    torch.testing.assert_close(outputs[0][kept], x[kept] / (1 - ratio))
    if len(outputs) > 1:
        assert torch.equal(outputs[1], kept)


def test_cases_were_found() -> None:
    """Guards against an empty parametrization (e.g. a registry that failed to load)."""
    assert len(CASES) > 300
    assert not set(UNSUPPORTED_VARIANTS) - set(CASES)
