"""Bad data: each case fails with one line naming the file (or data name) and the reason, exit 2, no output.

Every case runs ``nestc compress`` on a valid LeNet-300-100 seed with data written here in the
official formats (IDX, CIFAR binary and python batches, ``.npz``). Data lookup is confined to the
test's folders (``XDG_CACHE_HOME`` points into it, ``NESTC_DATA`` is unset). The CIFAR and ``.npz``
pickle cases carry a payload that would create a marker file if it were ever unpickled.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import errors_helpers as h
import numpy as np
import pytest
from errors_helpers import Run, assert_clean_failure, nestc_env, run_cli, run_cli_many

from nestc import api
from nestc.data import locate
from nestc.data.catalog import CATALOG
from nestc.errors import DataError

MARKER = "PAYLOAD_RAN"

#: Named data sets used for "not found" cases; they must not be installed system-wide.
ABSENT = "kmnist"


@dataclass(frozen=True)
class Case:
    """One bad data set: ``write(folder)`` creates it and returns the --data/--data-dir arguments."""

    id: str
    write: Callable[[Path], list[str]]
    mentions: tuple[str, ...]


def _npz(name: str, **kwargs) -> Callable[[Path], list[str]]:
    return lambda folder: ["--data", str(h.image_npz(folder / name, **kwargs))]


def _arrays(name: str, make: Callable[[], dict[str, np.ndarray]]) -> Callable[[Path], list[str]]:
    return lambda folder: ["--data", str(h.write_npz(folder / name, **make()))]


def _images(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28)).astype(np.float32)


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % 10


def _with_nan() -> dict[str, np.ndarray]:
    x = _images()
    x[3, 4, 5] = np.nan
    return {"x_train": x, "y_train": _labels(40), "x_test": _images(10, 1), "y_test": _labels(10)}


def _with_inf() -> dict[str, np.ndarray]:
    x_test = _images(10, 1)
    x_test[0, 0, 0] = np.inf
    return {"x_train": _images(), "y_train": _labels(40), "x_test": x_test, "y_test": _labels(10)}


def _nan_labels() -> dict[str, np.ndarray]:
    y = _labels(40).astype(np.float32)
    y[7] = np.nan
    return {"x_train": _images(), "y_train": y, "x_test": _images(10, 1), "y_test": _labels(10)}


def _empty(split: str) -> Callable[[], dict[str, np.ndarray]]:
    def make() -> dict[str, np.ndarray]:
        arrays = {"x_train": _images(), "y_train": _labels(40), "x_test": _images(10, 1), "y_test": _labels(10)}
        arrays[f"x_{split}"], arrays[f"y_{split}"] = np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
        return arrays
    return make


def _objects(folder: Path) -> list[str]:
    payload = np.empty(2, dtype=object)
    payload[0] = h.Payload(f"touch {folder / MARKER}")
    path = folder / "objects.npz"
    np.savez(path, x_train=payload, x_test=payload)
    return ["--data", str(path)]


def _mnist(edit: Callable[[Path], None], name: str = "mnist", **kwargs) -> Callable[[Path], list[str]]:
    """An MNIST-layout folder under ``folder/root``, changed by ``edit``."""
    def write(folder: Path) -> list[str]:
        files = h.write_mnist(folder / "root" / name, **kwargs)
        edit(files)
        return ["--data", name, "--data-dir", str(folder / "root")]
    return write


def _truncate_gzip(files: Path) -> None:
    path = files / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])


def _truncate_idx(files: Path) -> None:
    path = files / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))


def _bad_magic(files: Path) -> None:
    (files / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x50\x4b\x03\x04" + bytes(64)))


def _fewer_labels(files: Path) -> None:
    (files / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(h.idx_bytes(np.zeros(30, np.uint8))))


def _cifar_truncated(folder: Path) -> list[str]:
    files = h.write_cifar10_binary(folder / "root" / "cifar-10-batches-bin")
    batch = files / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:5000])
    return ["--data", "cifar10", "--data-dir", str(folder / "root")]


def _cifar_payload(folder: Path) -> list[str]:
    h.write_cifar10_python(folder / "root" / "cifar-10-batches-py", poisoned="data_batch_2", marker=folder / MARKER)
    return ["--data", "cifar10", "--data-dir", str(folder / "root")]


def _not_found(folder: Path) -> list[str]:
    (folder / "empty").mkdir()
    return ["--data", ABSENT, "--data-dir", str(folder / "empty")]


def _corrupt_npz(folder: Path) -> list[str]:
    (folder / "corrupt.npz").write_bytes(np.random.default_rng(0).bytes(3000))
    return ["--data", str(folder / "corrupt.npz")]


def _truncated_npz(folder: Path) -> list[str]:
    path = h.image_npz(folder / "truncated.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["--data", str(path)]


CASES = [
    Case("unknown data name", lambda folder: ["--data", "imagenet-42"], ("unknown data set 'imagenet-42'", "mnist")),
    Case("empty --data", lambda folder: ["--data", ""], ("--data ''", "give a data set name")),
    Case("named data set not found", _not_found, (f"'{ABSENT}' not found", "empty", "--download", "--data-dir")),
    Case("named data set missing a file", _mnist(lambda f: (f / "t10k-labels-idx1-ubyte.gz").unlink(), name=ABSENT),
         (f"{ABSENT}: data set '{ABSENT}' is incomplete", "missing t10k-labels-idx1-ubyte[.gz]")),
    Case("missing .npz file", lambda folder: ["--data", str(folder / "absent.npz")], ("absent.npz: no such .npz",)),
    Case("corrupt gzip", _mnist(_truncate_gzip), ("train-images-idx3-ubyte.gz: cannot be read",)),
    Case("truncated IDX", _mnist(_truncate_idx), ("train-images-idx3-ubyte.gz: truncated",)),
    Case("not an IDX file", _mnist(_bad_magic), ("t10k-labels-idx1-ubyte.gz: not an IDX file",)),
    Case("truncated CIFAR batch", _cifar_truncated, ("data_batch_3.bin", "not a whole number of 3073-byte")),
    Case("corrupt .npz", _corrupt_npz, ("corrupt.npz: not a readable .npz",)),
    Case("truncated .npz", _truncated_npz, ("truncated.npz: not a readable .npz",)),
    Case("npz missing a key", _arrays("nokey.npz", lambda: {"x_test": _images()}), ("nokey.npz", "x_train")),
    Case("wrong sample shape", _npz("rgb.npz", shape=(3, 32, 32)), ("rgb.npz", "(3, 32, 32)", "seed.onnx input",
                                                                   "`nestc seed lenet-300-100 --input-shape 3,32,32 "
                                                                   "--classes 10`")),
    Case("labels and images disagree", _mnist(_fewer_labels), ("30 labels", "40 images")),
    Case("labels out of range (.npz)", _npz("labels.npz", classes=15),
         ("labels.npz", "labels up to 14", "seed.onnx output", "10 classes", "--input-shape 1,28,28 --classes 15")),
    Case("labels out of range (IDX)", _mnist(lambda f: None, classes=12),
         ("train-labels-idx1-ubyte.gz: label 11 is out of range for 10 classes",)),
    Case("NaN in samples", _arrays("nan.npz", _with_nan), ("nan.npz [x_train]", "NaN or Inf")),
    Case("Inf in samples", _arrays("inf.npz", _with_inf), ("inf.npz [x_test]", "NaN or Inf")),
    Case("NaN in labels", _arrays("nanlabels.npz", _nan_labels), ("nanlabels.npz [y_train]", "whole numbers")),
    Case("empty test split", _arrays("notest.npz", _empty("test")), ("notest.npz [x_test]", "test split is empty")),
    Case("empty training split", _arrays("notrain.npz", _empty("train")),
         ("notrain.npz [x_train]", "training split is empty")),
    Case("CIFAR batch with a pickle payload", _cifar_payload, ("data_batch_2: refused", "system")),
    Case(".npz with pickled objects", _objects, ("objects.npz: not a readable .npz", "allow_pickle=False")),
    Case("no labels for an untrained seed",
         _arrays("nolabels.npz", lambda: {"x_train": _images(), "x_test": _images(10, 1)}),
         ("nolabels.npz", "no labels in its training and test splits", "seed.onnx is a seed", "untrained")),
    Case("no training labels for an untrained seed",
         _arrays("testlabels.npz", lambda: {"x_train": _images(), "x_test": _images(40, 1), "y_test": _labels(40)}),
         ("testlabels.npz", "no labels in its training split", "seed.onnx is untrained", "labelled test split")),
]


@dataclass
class Outcome:
    run: Run
    out: Path
    folder: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The seed model and an environment whose data lookup sees only the test's folders."""
    base = tmp_path_factory.mktemp("bad_data")
    model = base / "seed.onnx"
    api.seed("lenet-300-100", model, width_ratio=0.1, density=0.3)
    env = nestc_env()
    env["XDG_CACHE_HOME"] = str(base / "xdg")
    return model, env


@pytest.fixture(scope="module")
def outcomes(setup: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once through the CLI, all in one interpreter (see ``run_cli_many``)."""
    model, env = setup
    base = tmp_path_factory.mktemp("data_cases")
    argvs, results = [], {}
    for index, case in enumerate(CASES):
        folder = base / f"case{index}"
        folder.mkdir()
        out = folder / "out.onnx"
        argvs.append(["compress", model, "-o", out, "--device", "cpu", "--quiet", "--max-epochs", "1",
                      *case.write(folder)])
        results[case.id] = Outcome(Run(-1, "", ""), out, folder)
    for case, run in zip(CASES, run_cli_many(argvs, env=env), strict=True):
        results[case.id].run = run
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_data_is_one_line_exit_2_and_no_output(case: Case, outcomes: dict[str, Outcome]) -> None:
    system = [locate.Root(root, named=False) for root in locate.SYSTEM_ROOTS]
    if case.id.startswith("named data set") and locate.locate(CATALOG[ABSENT], system):
        pytest.skip(f"{ABSENT} is installed system-wide here")
    outcome = outcomes[case.id]
    assert_clean_failure(outcome.run, *case.mentions, outputs=(outcome.out, Path(f"{outcome.out}.ckpt")))
    assert not (outcome.folder / MARKER).exists(), "a pickle payload in a data file was executed"


@pytest.mark.parametrize("classifier", [True, False], ids=["classifier", "other model"])
def test_validate_blames_the_original_model_for_data_that_do_not_fit(setup: tuple[Path, dict[str, str]],
                                                                    tmp_path: Path, classifier: bool) -> None:
    """validate names the model file, as eval and compress do (it said "model", or the input's name)."""
    model = setup[0] if classifier else h.save(h.labels_output(), tmp_path / "labels.onnx")
    data = h.image_npz(tmp_path / "rgb.npz", shape=(3, 32, 32))
    with pytest.raises(DataError, match=re.escape(f"{model} input expects [N, ")):
        api.validate(model, model, data=str(data))


def test_console_entry_point_refuses_the_pickle_payload(setup: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """The same refusal through ``python -m nestc`` in its own process."""
    model, env = setup
    out = tmp_path / "out.onnx"
    run = run_cli("compress", model, "-o", out, "--device", "cpu", "--quiet", *_cifar_payload(tmp_path), env=env)
    assert_clean_failure(run, "data_batch_2: refused", outputs=(out,))
    assert not (tmp_path / MARKER).exists()
