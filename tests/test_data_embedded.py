"""The embedded Fashion-MNIST subset: loads offline, covers every class, and can be rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_data_formats import FASHION, write_mnist

from nestc.data import load_dataset
from nestc.data.embedded import build_embedded_subset, embedded_path


def test_embedded_default_loads_with_every_class() -> None:
    ds = load_dataset()
    assert ds.name == "embedded" and ds.num_classes == 10
    assert ds.x_train.shape == (2000, 1, 28, 28) and ds.x_test.shape == (500, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [200] * 10 and np.bincount(ds.y_test).tolist() == [50] * 10
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)
    assert 0.25 < float(ds.x_train.mean()) < 0.32  # real Fashion-MNIST pixels, not noise (noise: ~0.5)


def test_embedded_file_is_small_and_licensed() -> None:
    path = embedded_path()
    assert path.stat().st_size < 1_200_000
    licence = (path.parent / "LICENSE-fashion-mnist.txt").read_text()
    assert "Copyright (c) 2017 Zalando SE" in licence and "Permission is hereby granted" in licence


def test_build_embedded_subset_is_stratified_and_reproducible(tmp_path: Path) -> None:
    write_mnist(tmp_path / "src", n_train=100, n_test=50)
    first = build_embedded_subset(tmp_path / "src", tmp_path / "a.npz", n_train=20, n_test=10, seed=3)
    second = build_embedded_subset(tmp_path / "src", tmp_path / "b.npz", n_train=20, n_test=10, seed=3)
    assert first.read_bytes() == second.read_bytes()
    with np.load(first) as npz:
        assert npz["x_train"].shape == (20, 28, 28) and npz["x_train"].dtype == np.uint8
        assert np.bincount(npz["y_train"]).tolist() == [2] * 10 and np.bincount(npz["y_test"]).tolist() == [1] * 10
    ds = load_dataset(str(first))
    assert ds.x_test.shape == (10, 1, 28, 28)


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_shipped_subset_is_rebuilt_bit_for_bit_from_the_official_files(tmp_path: Path) -> None:
    rebuilt = build_embedded_subset(FASHION, tmp_path / "subset.npz")
    assert rebuilt.read_bytes() == embedded_path().read_bytes()
