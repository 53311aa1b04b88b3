"""CIFAR-10/100 in the binary and python forms, and the restricted unpickler's refusals."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_formats import isolate, py2_pickle, write_cifar, write_mnist

from nestc.data import load_dataset
from nestc.data.download import extract_tar
from nestc.data.safe_pickle import load_restricted
from nestc.errors import DataError

FOLDERS = {
    ("cifar10", "binary"): "cifar-10-batches-bin",
    ("cifar10", "python"): "cifar-10-batches-py",
    ("cifar100", "binary"): "cifar-100-binary",
    ("cifar100", "python"): "cifar-100-python",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.mark.parametrize(
    ("name", "fmt", "py2"),
    [
        ("cifar10", "binary", False),
        ("cifar10", "python", True),
        ("cifar10", "python", False),
        ("cifar100", "binary", False),
        ("cifar100", "python", True),
        ("cifar100", "python", False),
    ],
)
def test_official_layouts_load(tmp_path: Path, name: str, fmt: str, py2: bool) -> None:
    classes = 10 if name == "cifar10" else 100
    arrays = write_cifar(tmp_path / FOLDERS[name, fmt], fmt, classes, py2=py2)
    ds = load_dataset(name, data_dir=tmp_path)
    n_train = 20 if name == "cifar10" else 4
    assert ds.x_train.shape == (n_train, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.num_classes == classes
    np.testing.assert_allclose(ds.x_train.reshape(n_train, -1), arrays["x_train"] / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])  # CIFAR-100: the fine labels
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])


def test_planes_are_red_green_blue(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(folder, "binary", 10, per_file=1)
    record = bytearray((folder / "test_batch.bin").read_bytes())
    record[1:] = bytes([10] * 1024 + [20] * 1024 + [30] * 1024)
    (folder / "test_batch.bin").write_bytes(bytes(record))
    x = load_dataset("cifar10", data_dir=tmp_path).x_test[0]
    assert [round(float(x[c].mean()) * 255) for c in range(3)] == [10, 20, 30]


def test_torchvision_root_and_name_subfolder(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py", "python", 10)
    assert load_dataset("cifar10", data_dir=tmp_path).mean == (0.4914, 0.4822, 0.4465)
    write_cifar(tmp_path / "direct", "binary", 100)  # --data-dir pointing at the batch folder itself
    assert load_dataset("cifar100", data_dir=tmp_path / "direct").std == (0.2673, 0.2564, 0.2762)


def test_binary_is_preferred_over_pickles(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-bin", "binary", 10)
    py = tmp_path / "cifar-10-batches-py"
    write_cifar(py, "python", 10)
    (py / "data_batch_1").write_bytes(b"not a pickle")
    assert len(load_dataset("cifar10", data_dir=tmp_path).x_train) == 20


def test_missing_cifar_names_both_forms(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-100-binary/ or cifar-100-python/") as err:
        load_dataset("cifar100", data_dir=tmp_path)
    assert str(tmp_path) in str(err.value) and "--data-dir" in str(err.value)


def test_truncated_binary_batch_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(folder, "binary", 10)
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="not a whole number of 3073-byte CIFAR records") as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_out_of_range_label_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(folder, "binary", 10)
    path = folder / "data_batch_4.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 42
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="label 42 is out of range for 10 classes") as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("images", "labels", "problem"), [
    (0, [], "holds no images"),
    (2, [3, -5], "label -5 is out of range"),
], ids=["empty", "negative-label"])
def test_bad_python_batch_is_named(tmp_path: Path, images: int, labels: list[int], problem: str) -> None:
    """A batch after the first is at fault: the error names that file, not the split's first."""
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, "python", 10, py2=False)
    path = folder / "data_batch_4"
    with open(path, "wb") as handle:
        pickle.dump({"data": np.zeros((images, 3072), np.uint8), "labels": labels}, handle)
    with pytest.raises(DataError, match=problem) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("protocol", [2, 5])
def test_batches_repickled_by_python_3_load(tmp_path: Path, protocol: int) -> None:
    """``pickle.dump(batch, f, protocol=2)`` stores bytes through ``_codecs.encode``; protocol 5 builds
    arrays with numpy's ``_frombuffer``. Both are ordinary ways to re-save a batch."""
    folder = tmp_path / "cifar-10-batches-py"
    arrays = write_cifar(folder, "python", 10, py2=False)
    path = folder / "data_batch_3"
    with open(path, "rb") as handle:
        batch = pickle.load(handle)
    batch[b"batch_label"] = b"training batch 3 of 5"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    loaded = load_dataset("cifar10", data_dir=tmp_path)
    assert np.array_equal(loaded.y_train, arrays["y_train"]) and np.array_equal(
        np.rint(loaded.x_train.reshape(len(loaded.x_train), -1) * 255), arrays["x_train"])


def test_codecs_encode_is_limited_to_latin1_text(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x06\x00\x00\x00base64q\x02\x86q\x03Rq\x04.")
    with pytest.raises(DataError, match="only latin1 text"):
        load_restricted(path)


class _Payload:
    """Runs ``touch <marker>`` through os.system when unpickled by a plain ``pickle.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("py2", [True, False], ids=["py2-pickle", "py3-pickle"])
def test_malicious_batch_is_refused_without_running(tmp_path: Path, py2: bool) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, "python", 10)
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3], b"x": _Payload(marker)}
    (folder / "data_batch_2").write_bytes(py2_pickle(evil) if py2 else pickle.dumps(evil))
    with pytest.raises(DataError, match=r"refused: the file tries to load (posix|nt|os)\.system") as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(folder / "data_batch_2") in str(err.value)
    assert not marker.exists()
    pickle.loads((folder / "data_batch_2").read_bytes())  # the same bytes do run code when trusted
    assert marker.exists()


@pytest.mark.parametrize(
    "target", [("builtins", "eval"), ("numpy", "load"), ("numpy", "frombuffer"), ("codecs", "encode")]
)
def test_only_the_numpy_array_globals_are_allowed(tmp_path: Path, target: tuple[str, str]) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + f"{target[0]}\n{target[1]}\n".encode() + b"q\x00.")
    with pytest.raises(DataError, match=f"tries to load {target[0]}.{target[1]}"):
        load_restricted(path)


def test_batch_that_is_not_a_dict_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, "python", 10)
    (folder / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a pickled dict, found list"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_batch_with_wrong_image_width_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    write_cifar(folder, "python", 100)
    (folder / "train").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \(N, 3072\)"):
        load_dataset("cifar100", data_dir=tmp_path)


@pytest.mark.parametrize("given", ["cifar-10-batches-py", "."], ids=["data set folder", "torchvision root"])
def test_official_folder_given_as_a_path_names_the_option_to_use(tmp_path: Path, given: str) -> None:
    """``--data data/cifar-10-batches-py`` was read as an image folder and failed with "no class subfolders"."""
    write_cifar(tmp_path / "root" / "cifar-10-batches-py", "python", 10)
    folder = str(tmp_path / "root" / given)
    with pytest.raises(DataError, match=f"official files of cifar10.*--data cifar10 --data-dir {folder}$"):
        load_dataset(folder)
    assert load_dataset("cifar10", data_dir=folder).x_train.shape == (20, 3, 32, 32)


def test_mnist_format_folder_given_as_a_path_asks_which_data_set(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw")
    with pytest.raises(DataError, match=r"MNIST-format files \(mnist, fashion-mnist or kmnist"):
        load_dataset(str(tmp_path / "MNIST" / "raw"))
    with pytest.raises(DataError, match=r"official files of mnist.*--data mnist --data-dir"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("spelling", ["CIFAR-10", "cifar_10", "Cifar10"])
def test_names_are_accepted_as_torchvision_and_the_archives_spell_them(tmp_path: Path, spelling: str) -> None:
    """``--data cifar-10`` (the archive's name) or ``FashionMNIST`` (torchvision's class) was an unknown data set."""
    write_cifar(tmp_path / "root" / "cifar-10-batches-bin", "binary", 10)
    assert load_dataset(spelling, data_dir=tmp_path / "root").name == "cifar10"
    write_mnist(tmp_path / "root" / "FashionMNIST" / "raw")
    assert load_dataset("FashionMNIST", data_dir=tmp_path / "root").name == "fashion-mnist"


def test_a_folder_named_like_a_data_set_stays_an_image_folder(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / "cifar-10" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / "cifar-10" / cls / f"{i}.png")
    assert load_dataset("cifar-10").num_classes == 2  # the working directory is tmp_path


def test_a_packed_official_archive_is_named_in_the_not_found_error(tmp_path: Path) -> None:
    """A manual download is the archive itself; "not found" alone left the user guessing why it was not read."""
    write_cifar(tmp_path / "unpacked" / "cifar-10-batches-py", "python", 10)
    (tmp_path / "root").mkdir()
    with tarfile.open(tmp_path / "root" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "unpacked" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = tmp_path / "root" / "cifar-10-python.tar.gz"
    with pytest.raises(DataError, match=f"{archive} is its official archive, still packed: unpack it"):
        load_dataset("cifar10", data_dir=tmp_path / "root")
    extract_tar(archive, tmp_path / "root")  # unpacked where it is, it is found
    assert load_dataset("cifar10", data_dir=tmp_path / "root").x_train.shape == (20, 3, 32, 32)
