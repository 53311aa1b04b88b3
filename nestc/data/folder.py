"""An image folder in torchvision's ``ImageFolder`` layout: one subfolder per class.

``root/train/`` with ``root/test/`` (or ``root/val/``) give the splits; otherwise each class's
files are split 80/20 with a fixed seed, so the same folder always gives the same split. Classes
are the sorted subfolder names of the training folder (their index is the label), as in
torchvision.

Hidden files and folders (a name starting with ``.``) are skipped, as the class folders themselves are:
macOS leaves a ``._name.jpg`` beside every image copied from its disks (metadata, not an image) and
Jupyter a ``.ipynb_checkpoints`` folder of duplicates.

Images are read with Pillow. If any image has colour, all are read as RGB, else as greyscale; for a model
that takes three channels, greyscale images are read as RGB too, as torchvision's ``ImageFolder`` loader
reads every image (a model trained on a folder of grey images through it saw three equal channels).
Images may differ in size, as real photo folders do, and a model needs one: each is resized (bilinear) as
it is read, to the model's height and width when the caller knows them (``input_shape``), else to the most
common size (the smallest of equally common ones). Holding every image at the size of one of them first
took a 3000x4000 photo among 240 ImageNet-sized ones to 27 GiB, and a folder of 500x375 photos for a
32x32 model to 140 times the memory it needed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from nestc.data.dataset import Split
from nestc.data.fit import Dim, model_image_size
from nestc.data.subset import held_out
from nestc.errors import DataError

#: File suffixes read as images (torchvision's list).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def read_image_folder(root: Path, input_shape: Sequence[Dim] | None = None) -> tuple[Split, Split]:
    """The training and test splits of an image folder (see the module docstring for the rules).

    ``input_shape``: the model's input (batch first, channels first or last); images of different sizes
    are resized to its height and width.
    """
    if (root / "train").is_dir():
        test_folder = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
        if test_folder is None:
            raise DataError(f"{root}: has train/ but neither test/ nor val/")
        classes = _scan(root / "train")
        train, test = _items(classes), _items(_scan(test_folder), list(classes), test_folder)
    else:
        train, test = _split(_items(_scan(root)))
    if not test:
        raise DataError(f"{root}: the test split is empty (too few images per class for an 80/20 split)")
    mode, size = _common_format(train + test, input_shape)
    return _read(train, mode, size, root), _read(test, mode, size, root)


def _scan(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files (searched recursively, as torchvision does; hidden ones skipped)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _hidden(p.name))
    if not classes:
        raise DataError(f"{folder}: no class subfolders (expected {folder}/<class>/<image>)")
    found = {
        c: sorted(p for p in (folder / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(_hidden(part) for part in p.relative_to(folder / c).parts) and p.is_file())
        for c in classes
    }
    empty = [c for c, files in found.items() if not files]
    if empty:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in class folder(s) {', '.join(empty)}")
    return found


def _hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (``.DS_Store``, ``._photo.jpg``, ``.ipynb_checkpoints``)."""
    return name.startswith(".")


def _items(
    found: dict[str, list[Path]], classes: list[str] | None = None, folder: Path | None = None
) -> list[tuple[Path, int]]:
    """(file, label) pairs; labels index ``classes`` (default: the folder's own sorted classes)."""
    classes = classes or list(found)
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise DataError(f"{folder}: class folder(s) {', '.join(unknown)} are not among the training classes")
    return [(path, classes.index(c)) for c, files in found.items() for path in files]


def _split(items: list[tuple[Path, int]]) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """80/20 per class with a fixed seed; order within each split stays sorted."""
    held = held_out(np.array([label for _, label in items]))
    return ([it for it, test in zip(items, held, strict=True) if not test],
            [it for it, test in zip(items, held, strict=True) if test])


def _common_format(items: list[tuple[Path, int]], input_shape: Sequence[Dim] | None
                   ) -> tuple[str, tuple[int, int]]:
    """("L" or "RGB", Pillow's (width, height) every image is read at), reading only the image headers."""
    modes: set[str] = set()
    sizes: Counter[tuple[int, int]] = Counter()
    for path, _ in items:
        with _image(path) as img:
            modes.add(img.mode)
            sizes[img.size] += 1
    mode = "L" if modes <= _GREY_MODES and not _takes_colour(input_shape) else "RGB"
    if len(sizes) == 1:  # one size: kept, so the model's padding or resizing can be chosen for it
        return mode, next(iter(sizes))
    wanted = None if input_shape is None else model_image_size(len(mode), tuple(input_shape))
    if wanted is not None:
        return mode, (wanted[1], wanted[0])
    return mode, min(sizes, key=lambda size: (-sizes[size], size[0] * size[1]))


def _takes_colour(input_shape: Sequence[Dim] | None) -> bool:
    """Whether a model input (batch first) takes three-channel images, channels first or last, and not one."""
    if input_shape is None or len(input_shape) != 4:
        return False
    channels = {input_shape[1], input_shape[3]}
    return 3 in channels and 1 not in channels


def _read(items: list[tuple[Path, int]], mode: str, size: tuple[int, int], root: Path) -> Split:
    """uint8 (N, C, H, W) pixels and int64 labels of ``items``."""
    pixels = []
    for path, _ in items:
        with _image(path) as img:
            pic = _eight_bit(img).convert(mode)
            if pic.size != size:
                pic = pic.resize(size, Image.Resampling.BILINEAR)
            pixels.append(np.asarray(pic, dtype=np.uint8))
    x = np.stack(pixels)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return Split(np.ascontiguousarray(x), np.array([label for _, label in items], dtype=np.int64), str(root))


WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I")
"""Pillow's modes for 16-bit (and 32-bit integer) grey images. ``convert`` clips them at 255 instead of
scaling them: 16-bit PNGs of pixel values 1,000 and 60,000 both became white."""


def _eight_bit(img: Image.Image) -> Image.Image:
    """``img`` with 16-bit grey values scaled to 8 bits (0..65535 -> 0..255), float grey values in [0, 1]
    scaled to 0..255 (``convert`` truncates them to 0 and 1: a black image), other float values clipped to
    0..255; other images as they are.

    A float image whose values all lie in [0, 1] is taken as the [0, 1] scale that float image writers use
    (scikit-image, tifffile); one with larger values as pixel values.
    """
    if img.mode not in (*WIDE_GREY_MODES, "F"):
        return img
    wide = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        scale = 255.0 if wide.size and wide.min() >= 0.0 and wide.max() <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0
    return Image.fromarray(np.clip(np.rint(wide * scale), 0, 255).astype(np.uint8), mode="L")


@contextmanager
def _image(path: Path) -> Iterator[Image.Image]:
    """Open an image; any decoding failure, here or in the ``with`` body, names the file."""
    try:
        with Image.open(path) as img:
            yield img
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({' '.join(str(exc).split())})") from exc
