"""The named data sets: where their files live, how to read them, where to download them.

Folder layouts follow the official archives and torchvision (``MNIST/raw``, ``FashionMNIST/raw``,
``cifar-10-batches-py`` ...), so a download made for torchvision is found as it is. URLs and MD5
checksums are the ones torchvision lists; for CIFAR these are the python-pickle archives, which
:mod:`nestc.data.safe_pickle` reads without running code from the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from nestc.data import cifar
from nestc.data.dataset import Split
from nestc.data.idx import MNIST_FILES, find_idx, read_mnist_folder


@dataclass(frozen=True)
class Layout:
    """One on-disk form of a data set: the ``files`` that must all be in one of ``folders``.

    ``folders`` are relative to a search base; ``""`` is the base itself (a ``--data-dir`` that
    points straight at the files). ``gzip_ok`` accepts ``name.gz`` for ``name`` (IDX files).
    """

    folders: tuple[str, ...]
    files: tuple[str, ...]
    read: Callable[[Path], tuple[Split, Split]]
    gzip_ok: bool = False

    def holds(self, folder: Path) -> bool:
        """Whether ``folder`` has every file of this layout."""
        if self.gzip_ok:
            return all(find_idx(folder, name) is not None for name in self.files)
        return all((folder / name).is_file() for name in self.files)

    def describe(self) -> str:
        """What the error for a missing data set says it looked for."""
        if self.folders[0]:
            return f"{self.folders[0]}/"
        return ", ".join(f"{name}[.gz]" if self.gzip_ok else name for name in self.files)


@dataclass(frozen=True)
class Resource:
    """One file to download (first URL that works), its MD5, and whether it is a tar archive."""

    filename: str
    md5: str
    urls: tuple[str, ...]
    extract: bool = False


@dataclass(frozen=True)
class Named:
    """A named data set: search bases under each root, layouts in preference order, downloads."""

    name: str
    bases: tuple[str, ...]
    layouts: tuple[Layout, ...]
    resources: tuple[Resource, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hint: str = ""
    archives: tuple[str, ...] = ()
    """File names of the official archives that unpack into the layouts (named when found still packed)."""


def _mnist_like(
    name: str,
    torchvision: str,
    mirrors: tuple[str, ...],
    md5s: tuple[str, ...],
    mean: float,
    std: float,
    hint: str = "",
) -> Named:
    files = tuple(f for pair in MNIST_FILES.values() for f in pair)
    layout = Layout(("",), files, read_mnist_folder, gzip_ok=True)
    resources = tuple(
        Resource(f"{f}.gz", md5, tuple(f"{m}{f}.gz" for m in mirrors)) for f, md5 in zip(files, md5s, strict=True)
    )
    bases = ("", "raw", name, f"{torchvision}/raw", f"{name}/raw")  # "raw": --data-dir points at MNIST/
    return Named(name, bases, (layout,), resources, 10, (mean,), (std,), hint)


def _cifar(
    name: str,
    binary: tuple[str, tuple, tuple, Callable],
    python: tuple[str, tuple, tuple, Callable],
    url: str,
    md5: str,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Named:
    layouts = tuple(
        Layout(
            (folder, ""),
            train + test,
            partial(cifar.read_cifar_folder, train=train, test=test, read=read, num_classes=num_classes),
        )
        for folder, train, test, read in (binary, python)
    )
    archive = url.rsplit("/", 1)[1]
    resources = (Resource(archive, md5, (url,), extract=True),)
    archives = (archive.replace("-python.", "-binary."), archive)
    return Named(name, ("", name), layouts, resources, num_classes, mean, std, archives=archives)


_MNIST_MD5 = (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
)
_FASHION_MD5 = (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
)
_KMNIST_MD5 = (
    "bdb82020997e1d708af4cf47b453dcf7",
    "e144d726b3acfaa3e44228e80efcd344",
    "5c965bf0a639b31b8f53240b1b52f4d7",
    "7320c461ea6c1c855c0b718fb2a4b134",
)

#: Every named data set, by the name ``load_dataset`` accepts.
CATALOG: dict[str, Named] = {
    entry.name: entry
    for entry in (
        _mnist_like(
            "mnist",
            "MNIST",
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            _MNIST_MD5,
            0.1307,
            0.3081,
        ),
        _mnist_like(
            "fashion-mnist",
            "FashionMNIST",
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            _FASHION_MD5,
            0.2860,
            0.3530,
            hint=", or `apt-get install dataset-fashion-mnist` (Debian/Ubuntu)",
        ),
        _mnist_like(
            "kmnist", "KMNIST", ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",), _KMNIST_MD5, 0.1918, 0.3483
        ),
        _cifar(
            "cifar10",
            ("cifar-10-batches-bin", *cifar.CIFAR10_BIN, cifar.read_cifar10_binary),
            ("cifar-10-batches-py", *cifar.CIFAR10_PY, cifar.read_cifar10_python),
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
        ),
        _cifar(
            "cifar100",
            ("cifar-100-binary", *cifar.CIFAR100_BIN, cifar.read_cifar100_binary),
            ("cifar-100-python", *cifar.CIFAR100_PY, cifar.read_cifar100_python),
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
        ),
    )
}
