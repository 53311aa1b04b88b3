"""MNIST-style data sets: IDX files found in every supported layout, and refused when corrupt."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from test_data_formats import FASHION, MNIST_NAMES, idx_bytes, isolate, write_mnist

from nestc.data import load_dataset
from nestc.errors import DataError


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate(monkeypatch, tmp_path)


@pytest.mark.parametrize(
    ("name", "sub", "gz"),
    [
        ("mnist", "", True),
        ("mnist", "mnist", False),
        ("mnist", "MNIST/raw", False),
        ("fashion-mnist", "FashionMNIST/raw", True),
        ("kmnist", "KMNIST/raw", True),
        ("kmnist", "kmnist/raw", False),
    ],
)
def test_idx_layouts_are_found_via_data_dir(cache: Path, tmp_path: Path, name: str, sub: str, gz: bool) -> None:
    arrays = write_mnist(tmp_path / "root" / sub, gz=gz)
    ds = load_dataset(name, data_dir=tmp_path / "root")
    assert ds.name == name and ds.num_classes == 10
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train[:, 0], arrays["x_train"] / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])


def test_idx_files_spelt_with_a_dot_are_found(cache: Path, tmp_path: Path) -> None:
    """The copies of MNIST shared on Kaggle name the files ``train-images.idx3-ubyte``: they are the same IDX files."""
    folder = tmp_path / "root" / "MNIST" / "raw"
    arrays = write_mnist(folder, gz=False)
    for path in folder.iterdir():
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    assert sorted(p.name for p in folder.iterdir())[0] == "t10k-images.idx3-ubyte"
    ds = load_dataset("mnist", data_dir=tmp_path / "root")
    np.testing.assert_allclose(ds.x_train[:, 0], arrays["x_train"] / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])


def test_default_normalisation_per_name(cache: Path, tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw")
    write_mnist(tmp_path / "KMNIST" / "raw")
    assert load_dataset("mnist", data_dir=tmp_path).mean == (0.1307,)
    assert load_dataset("kmnist", data_dir=tmp_path).std == (0.3483,)


def test_nestc_data_env_and_user_cache_are_searched(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "env" / "MNIST" / "raw", n_train=12)
    monkeypatch.setenv("NESTC_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist").x_train) == 12
    write_mnist(cache / "fashion-mnist", n_train=14)
    assert len(load_dataset("FASHION_MNIST").x_train) == 14


def test_data_dir_wins_over_nestc_data(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path / "env" / "mnist", n_train=12)
    write_mnist(tmp_path / "mine" / "mnist", n_train=16)
    monkeypatch.setenv("NESTC_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", data_dir=tmp_path / "mine").x_train) == 16


def test_missing_data_set_names_the_searched_folders(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NESTC_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path / "given")
    msg = str(err.value)
    for folder in (tmp_path / "given", tmp_path / "env", cache):
        assert str(folder) in msg
    assert "MNIST/raw/" in msg and "train-images-idx3-ubyte[.gz]" in msg and "--download" in msg
    assert "\n" not in msg


def test_missing_fashion_mnist_suggests_the_debian_package(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_torchvision_root_in_the_working_directory_is_found(cache: Path, tmp_path: Path) -> None:
    """``torchvision.datasets.MNIST(root="data", download=True)`` next to the model: found as it is."""
    write_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=13)
    assert len(load_dataset("mnist").x_train) == 13


def test_data_dir_may_name_the_torchvision_data_set_folder(cache: Path, tmp_path: Path) -> None:
    """``--data-dir datasets/MNIST`` (the folder torchvision made, holding ``raw/``) finds the files; an
    unnamed ``./data/raw`` could be any of the MNIST-like sets and is not read."""
    write_mnist(tmp_path / "datasets" / "MNIST" / "raw", n_train=19)
    assert len(load_dataset("mnist", data_dir=tmp_path / "datasets" / "MNIST").x_train) == 19
    write_mnist(tmp_path / "data" / "raw", n_train=7)
    with pytest.raises(DataError, match="'kmnist' not found") as caught:
        load_dataset("kmnist")
    # the message listed raw/ among every root's subfolders, where it is looked for only under a named root
    subfolders = str(caught.value).split("their subfolders ")[1].split(")")[0]
    assert "raw/" in subfolders and not any(part == "raw/" for part in subfolders.split(", ")), subfolders


def test_flat_files_count_only_in_a_folder_the_user_named(cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """MNIST, Fashion-MNIST and KMNIST share file names: four IDX files at the top of ./data could be any
    of them, so they are read only from --data-dir or $NESTC_DATA, where the user said what they are."""
    write_mnist(tmp_path / "data", n_train=17)
    with pytest.raises(DataError, match=r"not found.*files lying directly in .*data are not read unless named"):
        load_dataset("fashion-mnist")
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path / "data").x_train) == 17
    monkeypatch.setenv("NESTC_DATA", str(tmp_path / "data"))
    assert len(load_dataset("kmnist").x_train) == 17


def test_system_folders_are_searched_last(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nestc.data import locate

    write_mnist(tmp_path / "system" / "fashion-mnist", n_train=11)
    monkeypatch.setattr(locate, "SYSTEM_ROOTS", (tmp_path / "system",))
    assert len(load_dataset("fashion-mnist").x_train) == 11


def _corrupt(folder: Path, name: str, data: bytes) -> Path:
    write_mnist(folder, gz=False)
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x00\x08\x03\x00\x00\x00\x1e", "truncated IDX header"),
        (idx_bytes(np.zeros((30, 28, 28), np.uint8))[:-5], "truncated"),
        (idx_bytes(np.zeros((30, 28, 28), np.uint8)) + b"x", "too long"),
        (b"PK\x03\x04" + bytes(100), "not an IDX file"),
        (idx_bytes(np.zeros(30, np.uint8)), "1 dimensions; expected 3"),
        (gzip.compress(idx_bytes(np.zeros((30, 28, 28), np.uint8)))[:-20], "cannot be read"),
        (b"", "not an IDX file"),
    ],
    ids=["short-header", "truncated", "trailing", "zip", "labels-as-images", "truncated-gzip", "empty"],
)
def test_corrupt_idx_files_are_named(cache: Path, tmp_path: Path, data: bytes, problem: str) -> None:
    path = _corrupt(tmp_path / "mnist", MNIST_NAMES["train"][0], data)
    with pytest.raises(DataError, match=problem) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_image_and_label_counts_must_agree(cache: Path, tmp_path: Path) -> None:
    path = _corrupt(tmp_path, MNIST_NAMES["test"][1], idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(DataError, match=r"holds 9 labels but .* holds 10 images") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_labels_beyond_the_class_count_are_refused(cache: Path, tmp_path: Path) -> None:
    path = _corrupt(tmp_path, MNIST_NAMES["test"][1], idx_bytes(np.full(10, 12, np.uint8)))
    with pytest.raises(DataError, match="label 12 is out of range for 10 classes") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NESTC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert abs(float(ds.x_train.mean()) - 0.2860) < 1e-3
