"""User data: .npz files, image folders, unknown names and the ``limit`` option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nestc.data import NAMES, load_dataset
from nestc.errors import DataError, OptionError


def _npz(path: Path, **arrays: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    base = {
        "x_train": rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
        "y_train": np.arange(40) % 4,
        "x_test": rng.integers(0, 256, (12, 8, 8), dtype=np.uint8),
        "y_test": np.arange(12) % 4,
    }
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return str(path)


def test_npz_with_labels(tmp_path: Path) -> None:
    ds = load_dataset(_npz(tmp_path / "d.npz"))
    assert ds.x_train.shape == (40, 1, 8, 8) and ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0
    assert ds.num_classes == 4 and ds.y_test.dtype == np.int64
    assert ds.mean == pytest.approx((float(ds.x_train.mean()),), rel=1e-5)
    assert ds.std == pytest.approx((float(ds.x_train.std()),), rel=1e-4)


def test_npz_without_labels(tmp_path: Path) -> None:
    ds = load_dataset(_npz(tmp_path / "d.npz", y_train=None, y_test=None), limit=10)
    assert ds.y_train is None and ds.y_test is None and ds.num_classes is None
    assert len(ds.x_train) == 10


def test_npz_float_tabular_data_keeps_its_scale(tmp_path: Path) -> None:
    x = np.linspace(-5, 5, 60, dtype=np.float64).reshape(20, 3)
    ds = load_dataset(_npz(tmp_path / "t.npz", x_train=x, y_train=np.zeros(20, int), x_test=x[:4], y_test=None))
    assert ds.x_train.shape == (20, 3) and ds.x_train.min() == -5.0 and len(ds.mean) == 3


def test_npz_channels_last_is_transposed(tmp_path: Path) -> None:
    x = np.zeros((40, 8, 8, 3), np.uint8)
    x[..., 2] = 255
    ds = load_dataset(_npz(tmp_path / "d.npz", x_train=x, x_test=x[:12]))
    assert ds.x_train.shape == (40, 3, 8, 8) and ds.x_train[:, 2].min() == 1.0 and ds.x_train[:, :2].max() == 0.0


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"x_train": np.full((40, 4), np.nan, np.float32)}, r"\[x_train\]: the data holds NaN or Inf"),
        ({"x_test": np.full((12, 8, 8), np.inf)}, r"\[x_test\]: the data holds NaN or Inf"),
        ({"y_train": -(np.arange(40) % 4)}, r"\[y_train\]: labels must be non-negative"),
        ({"y_test": np.arange(12) / 2}, r"\[y_test\]: labels must be whole numbers"),
        ({"y_train": np.array(["a"] * 40)}, r"\[y_train\]: labels have dtype <U1"),
        ({"y_train": np.arange(39)}, r"expected 40 labels"),
        ({"x_test": np.zeros((0, 8, 8), np.uint8), "y_test": np.zeros(0, int)}, r"\[x_test\]: the test split is empty"),
        ({"x_test": np.zeros((12, 9, 9), np.uint8)}, r"test samples have shape \(1, 9, 9\)"),
        ({"x_train": None}, "missing key.* x_train"),
        ({"x_test": np.array(5)}, r"\[x_test\]: samples must be .*got shape \(\)"),
        ({"y_train": np.full(40, 2**63 + 5, np.uint64)}, r"label 9223372036854775813 is too large for a class index"),
    ],
    ids=["nan", "inf", "negative", "fractional", "strings", "count", "empty", "shape", "missing", "scalar",
         "huge-uint64"],
)
def test_bad_npz_content_names_the_file(tmp_path: Path, arrays: dict, problem: str) -> None:
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=problem) as err:
        load_dataset(path)
    assert path in str(err.value)


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = _npz(tmp_path / "obj.npz", y_train=np.array([{"a": 1}] * 40, dtype=object))
    with pytest.raises(DataError, match=r"not a readable \.npz file.*allow_pickle"):
        load_dataset(path)


def test_missing_npz_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such \.npz file"):
        load_dataset(str(tmp_path / "absent.npz"))
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    assert "unknown data set 'imagenet'" in str(err.value)
    assert all(name in str(err.value) for name in NAMES)


def test_limit_is_stratified_and_validated(tmp_path: Path) -> None:
    y = np.repeat(np.arange(4), 10)  # class-sorted: a first-N cut would only see class 0
    ds = load_dataset(_npz(tmp_path / "d.npz", y_train=y), limit=8)
    assert np.bincount(ds.y_train).tolist() == [2, 2, 2, 2] and len(ds.x_test) == 12
    assert load_dataset(_npz(tmp_path / "d.npz", y_train=y), limit=8).y_train.tolist() == ds.y_train.tolist()
    with pytest.raises(OptionError, match="limit must be at least 1"):
        load_dataset("embedded", limit=0)


def _image(path: Path, colour: tuple[int, ...] | int, size: tuple[int, int] = (6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L" if isinstance(colour, int) else "RGB", size, colour).save(path)


def test_image_folder_with_train_and_val(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _image(tmp_path / split / "cat" / f"{i}.png", (255, 0, 0))
            _image(tmp_path / split / "dog" / f"{i}.JPG", (0, 0, 255), size=(12, 8))
    ds = load_dataset(str(tmp_path))
    assert ds.x_train.shape == (6, 3, 4, 6) and ds.x_test.shape == (4, 3, 4, 6)  # resized to the first image
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1] and ds.num_classes == 2
    assert ds.x_train[0, 0].min() == 1.0 and ds.x_train[-1, 2].min() > 0.9 and ds.x_train[-1, 0].max() < 0.1


def test_image_folder_without_splits_is_split_80_20_per_class(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(10):
            _image(tmp_path / cls / f"{i:02}.png", 10 * i)
    ds = load_dataset(str(tmp_path))
    assert ds.x_train.shape == (16, 1, 4, 6) and ds.x_test.shape == (4, 1, 4, 6)
    assert np.bincount(ds.y_test).tolist() == [2, 2]
    assert np.array_equal(load_dataset(str(tmp_path)).x_test, ds.x_test)  # same split every time


def test_sixteen_bit_grey_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    """16-bit PNGs (medical and microscope images) keep their contrast: 1,000 and 60,000 out of 65,535
    become 4 and 233 out of 255 (Pillow's own conversion clips both to 255)."""
    for cls, value in (("dark", 1000), ("bright", 60000)):
        for i in range(5):
            path = tmp_path / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 6), value, np.uint16)).save(path)
            assert Image.open(path).mode.startswith("I"), "the file really is 16-bit"
    ds = load_dataset(str(tmp_path))
    pixels = np.concatenate([ds.x_train, ds.x_test])
    labels = np.concatenate([ds.y_train, ds.y_test])
    bright = 0  # classes are numbered in sorted folder order: bright, dark
    assert np.allclose(pixels[labels == bright], 233 / 255) and np.allclose(pixels[labels != bright], 4 / 255)



@pytest.mark.parametrize(("dark", "bright", "expected"), [(0.2, 0.8, (51, 204)), (20.0, 300.0, (20, 255))],
                         ids=["unit-scale", "pixel-scale"])
def test_float_tiffs_keep_their_scale(tmp_path: Path, dark: float, bright: float, expected: tuple[int, int]) -> None:
    """32-bit float TIFFs (scientific images) in [0, 1] are scaled to 0..255 (Pillow's conversion truncates
    them to 0 and 1, a black image); float values beyond 1 are pixel values, clipped at 255."""
    for cls, value in (("bright", bright), ("dark", dark)):
        for i in range(5):
            path = tmp_path / cls / f"{i}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 6), value, np.float32)).save(path)
            assert Image.open(path).mode == "F", "the file really is float"
    ds = load_dataset(str(tmp_path))
    pixels = np.concatenate([ds.x_train, ds.x_test])
    labels = np.concatenate([ds.y_train, ds.y_test])
    assert np.allclose(pixels[labels == 0], expected[1] / 255) and np.allclose(pixels[labels == 1], expected[0] / 255)


def test_image_folder_errors(tmp_path: Path) -> None:
    _image(tmp_path / "train" / "a" / "0.png", 0)
    _image(tmp_path / "test" / "b" / "0.png", 0)
    with pytest.raises(DataError, match=r"class folder.* b are not among the training classes"):
        load_dataset(str(tmp_path))
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "train" / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"train/b/0\.png: not a readable image"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(str(tmp_path / "train" / "a"))


def test_hidden_files_and_folders_in_class_folders_are_skipped(tmp_path: Path) -> None:
    """A folder copied from a Mac holds ``._0.png`` beside ``0.png`` (resource forks, not images) and a
    Jupyter one ``.ipynb_checkpoints``; one of them made the whole folder unreadable."""
    for cls in ("a", "b"):
        for i in range(5):
            _image(tmp_path / cls / f"{i}.png", 40 * i)
        (tmp_path / cls / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
        _image(tmp_path / cls / ".ipynb_checkpoints" / "0-checkpoint.png", 255)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    ds = load_dataset(str(tmp_path))
    assert len(ds.x_train) + len(ds.x_test) == 10 and ds.num_classes == 2


@pytest.mark.parametrize("form", ["column", "one-hot-float", "one-hot-uint8"])
def test_npz_labels_as_a_column_or_one_hot_are_class_indices(tmp_path: Path, form: str) -> None:
    """``np.savez(x_train=..., y_train=...)`` straight from Keras: ``cifar10.load_data()`` gives (N, 1) labels,
    ``to_categorical`` one-hot rows; both were refused as "expected N labels"."""
    y_train, y_test = np.arange(40) % 4, np.arange(12) % 4
    encode = {"column": lambda y: y.astype(np.uint8)[:, None],
              "one-hot-float": lambda y: np.eye(4, dtype=np.float32)[y],
              "one-hot-uint8": lambda y: np.eye(4, dtype=np.uint8)[y]}[form]
    ds = load_dataset(_npz(tmp_path / "k.npz", y_train=encode(y_train), y_test=encode(y_test)))
    assert ds.y_train.tolist() == y_train.tolist() and ds.y_test.tolist() == y_test.tolist() and ds.num_classes == 4


def test_npz_soft_labels_are_refused_naming_the_file(tmp_path: Path) -> None:
    soft = np.full((40, 4), 0.25, np.float32)
    path = _npz(tmp_path / "soft.npz", y_train=soft)
    with pytest.raises(DataError, match=r"soft\.npz \[y_train\]: labels of shape \(40, 4\) must be one-hot rows"):
        load_dataset(path)


def test_image_folder_of_mixed_sizes_is_read_at_the_models_size(tmp_path: Path) -> None:
    """One large photo sorted first set the size every image was held at: 240 ImageNet-sized JPEGs with a
    3000x4000 one first asked for 27 GiB. Mixed sizes are read at the model's size, else the most common."""
    for cls in ("a", "b"):
        for i in range(5):
            _image(tmp_path / cls / f"{i}.png", (200, 40 * i, 0), size=(400, 300) if (cls, i) == ("a", 0) else (8, 6))
    assert load_dataset(str(tmp_path)).x_train.shape[1:] == (3, 6, 8)  # most common, not the first
    for shape in (["N", 3, 32, 24], ["N", 32, 24, 3]):  # channels first or last
        ds = load_dataset(str(tmp_path), input_shape=shape)
        assert ds.x_train.shape[1:] == (3, 32, 24) and ds.x_test.shape[1:] == (3, 32, 24)
    assert load_dataset(str(tmp_path), input_shape=["N", 1, 32, 24]).x_train.shape[1:] == (3, 6, 8), "not its images"


def test_image_folder_of_one_size_keeps_it_for_the_model_to_fit(tmp_path: Path) -> None:
    """Images of one size stay as they are: padding them (28x28 digits for a 32x32 LeNet-5) or resizing
    them is chosen later, for the model."""
    for cls in ("a", "b"):
        for i in range(5):
            _image(tmp_path / cls / f"{i}.png", 50 * i, size=(28, 28))
    assert load_dataset(str(tmp_path), input_shape=["N", 1, 32, 32]).x_train.shape[1:] == (1, 28, 28)


def test_grey_image_folder_is_read_as_rgb_for_a_colour_model(tmp_path: Path) -> None:
    """torchvision's ImageFolder reads every image as RGB, so a colour model trained on grey photos through it
    saw three equal channels: nestc reads them so for such a model (it refused them as one-channel data)."""
    for cls in ("a", "b"):
        for i in range(5):
            _image(tmp_path / cls / f"{i}.png", 50 * i, size=(8, 6))
    assert load_dataset(str(tmp_path)).x_train.shape[1:] == (1, 6, 8)
    assert load_dataset(str(tmp_path), input_shape=["N", 1, 6, 8]).x_train.shape[1:] == (1, 6, 8)
    for shape in (["N", 3, 6, 8], ["N", 6, 8, 3], ["N", 3, "H", "W"]):
        ds = load_dataset(str(tmp_path), input_shape=shape)
        assert ds.x_train.shape[1:] == (3, 6, 8), shape
        assert np.array_equal(ds.x_train[:, 0], ds.x_train[:, 2]) and ds.x_train.max() > 0


def _csv(path: Path, rows: np.ndarray, header: list[str] | None) -> Path:
    lines = ([",".join(header)] if header else []) + [",".join(f"{v:g}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_pairs_as_kaggle_shares_fashion_mnist(tmp_path: Path) -> None:
    """``fashion-mnist_train.csv`` and ``fashion-mnist_test.csv``: a label column, then 784 pixel columns."""
    raw = load_dataset("embedded", limit=40)
    header = ["label", *(f"pixel{i}" for i in range(1, 785))]
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test[:30], raw.y_test[:30])):
        rows = np.column_stack([y, np.rint(x.reshape(len(x), -1) * 255)])
        _csv(tmp_path / f"fashion-mnist_{split}.csv", rows, header)
    ds = load_dataset(str(tmp_path / "fashion-mnist_train.csv"))
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_test.shape == (30, 1, 28, 28)
    np.testing.assert_allclose(ds.x_train, raw.x_train, atol=1e-6)
    assert ds.y_test.tolist() == raw.y_test[:30].tolist() and ds.num_classes == 10


def test_csv_without_a_labelled_test_file_holds_out_a_fifth(tmp_path: Path) -> None:
    """Kaggle's Digit Recognizer: ``train.csv`` with labels, ``test.csv`` without (other columns); the test
    split is held out of the training file instead. A file without header has its labels first."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (50, 64))
    labels = np.arange(50) % 5
    _csv(tmp_path / "train.csv", np.column_stack([labels, pixels]), ["label", *(f"pixel{i}" for i in range(64))])
    _csv(tmp_path / "test.csv", pixels[:10], [f"pixel{i}" for i in range(64)])
    ds = load_dataset(str(tmp_path / "train.csv"))
    assert ds.x_train.shape == (40, 1, 8, 8) and ds.x_test.shape == (10, 1, 8, 8)
    assert np.bincount(ds.y_test).tolist() == [2] * 5
    bare = load_dataset(str(_csv(tmp_path / "digits.csv", np.column_stack([labels, pixels]), None)))
    assert np.array_equal(bare.x_test, ds.x_test) and np.array_equal(bare.y_train, ds.y_train)


def test_csv_of_features_keeps_their_scale_and_finds_the_label_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((30, 5)) * 10
    labels = np.arange(30) % 3
    header = ["a", "b", "Target", "c", "d", "e"]
    _csv(tmp_path / "t.csv", np.column_stack([features[:, :2], labels, features[:, 2:]]), header)
    ds = load_dataset(str(tmp_path / "t.csv"))
    assert ds.x_train.shape == (24, 5) and ds.x_train.dtype == np.float32
    assert np.abs(ds.x_train).max() > 5, "features are not pixels: no [0, 1] scaling"
    assert ds.num_classes == 3
    # pandas' to_csv writes its row index first, unnamed: no feature
    _csv(tmp_path / "indexed.csv", np.column_stack([np.arange(30), features[:, :2], labels, features[:, 2:]]),
         ["", *header])
    indexed = load_dataset(str(tmp_path / "indexed.csv"))
    assert np.array_equal(indexed.x_train, ds.x_train) and np.array_equal(indexed.y_test, ds.y_test)


@pytest.mark.parametrize(("content", "problem"), [("label,a\n1,2\n3\n", "not a table of numbers"),
                                                  ("label,a\n0.5,2\n1,3\n", "must be class indices"),
                                                  ("label\n1\n2\n", "needs a label column and at least one")])
def test_bad_csv_files_are_named(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=problem) as caught:
        load_dataset(str(path))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("labels", ["indices", "one-hot", "none"])
def test_npz_without_a_test_split_holds_out_a_fifth_of_each_class(tmp_path: Path, labels: str) -> None:
    """An .npz with only x_train (and y_train) failed with "missing key x_test"; it is split as an image
    folder without test/ is: 20 % of each class, the same samples every time."""
    y = np.arange(40) % 4
    y_train = {"indices": y, "one-hot": np.eye(4, dtype=np.uint8)[y], "none": None}[labels]
    path = _npz(tmp_path / "train_only.npz", y_train=y_train, x_test=None, y_test=None)
    ds = load_dataset(path)
    assert len(ds.x_train) == 32 and len(ds.x_test) == 8 and ds.x_test.shape[1:] == (1, 8, 8)
    if labels != "none":
        assert np.bincount(ds.y_test).tolist() == [2, 2, 2, 2] and np.bincount(ds.y_train).tolist() == [8] * 4
    assert np.array_equal(load_dataset(path).x_test, ds.x_test)
    with np.load(path) as npz:  # the two splits are the file's samples, each once
        every = np.sort(np.concatenate([ds.x_train, ds.x_test]).reshape(40, -1), axis=0)
        assert np.array_equal(every, np.sort(npz["x_train"].reshape(40, -1) / np.float32(255), axis=0))


def test_npz_without_a_test_split_checks_the_label_count(tmp_path: Path) -> None:
    path = _npz(tmp_path / "short.npz", y_train=np.arange(39) % 4, x_test=None, y_test=None)
    with pytest.raises(DataError, match=r"short\.npz \[y_train\]: expected 40 labels"):
        load_dataset(path)
    with pytest.raises(DataError, match=r"missing key\(s\) x_test"):  # test labels without test samples
        load_dataset(_npz(tmp_path / "half.npz", x_test=None))
