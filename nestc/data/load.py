"""``load_dataset``: turn a data spec (a name or a path) into a :class:`Dataset`.

Named data sets are looked up on disk first (see :mod:`nestc.data.locate`) and downloaded only
when asked; paths are ``.npz`` or ``.csv`` files or image folders. Every reader returns raw splits and
:func:`nestc.data.dataset.assemble` does the checks, so all sources behave the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nestc.data.catalog import CATALOG
from nestc.data.dataset import Dataset, assemble
from nestc.data.download import download_named
from nestc.data.embedded import embedded_path
from nestc.data.locate import Root, cache_dir, incomplete, locate, not_found, packed_archives, search_roots
from nestc.data.npz import read_npz
from nestc.data.table import read_csv, test_file_beside
from nestc.errors import PATH, DataError, OptionError, require, shown
from nestc.fileio import os_reason, special_file

#: Fashion-MNIST's default normalisation, also used for the embedded subset of it.
_FASHION = CATALOG["fashion-mnist"]

_FILE_READERS = {".npz": read_npz, ".csv": read_csv}
"""Data files by suffix, and their readers."""

#: The names ``load_dataset`` accepts, for help texts and error messages.
NAMES: tuple[str, ...] = ("embedded", *CATALOG)


def load_dataset(
    spec: str | os.PathLike = "embedded",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    limit: int | None = None,
    input_shape: Sequence[int | str | None] | None = None,
) -> Dataset:
    """Load a named data set, an ``.npz`` file or an image folder.

    Args:
        spec: one of :data:`NAMES` (case-insensitive, ``_`` for ``-`` accepted), a path to a
            ``.npz`` or ``.csv`` file, or a path to an image folder.
        data_dir: searched first for named data sets; also where ``download`` puts them
            (default: the user cache, ``$XDG_CACHE_HOME/nestc`` or ``~/.cache/nestc``).
        download: fetch a named data set that is not found (official URLs, MD5 verified).
        limit: keep at most this many training samples, class-stratified with a fixed seed
            (first ``limit`` when unlabelled); the test split is kept whole.
        input_shape: the model's input shape (batch first); an image folder's images of different
            sizes are resized straight to its height and width as they are read.

    Raises:
        DataError: unknown name, data set not found, or a corrupt / unusable file (named).
        OptionError: ``limit`` below 1, or an argument of the wrong type.
    """
    require(spec, PATH, "--data", "a data set name or path")
    if data_dir is not None:
        require(data_dir, PATH, "--data-dir", "a folder path")
    require(download, (bool,), "--download", "True or False")  # download="no" is true, and would fetch
    if limit is not None:
        require(limit, (int,), "--limit", "an integer")
    if limit is not None and limit < 1:
        raise OptionError(f"limit must be at least 1; got {limit}")
    spec = os.fspath(spec)
    _check_lookup(spec, "--data")
    if data_dir is not None:
        _check_lookup(data_dir, "--data-dir")
    if not spec.strip():  # Path("") is the current folder, which would be read as an image folder
        raise OptionError(f"--data {spec!r}: give a data set name ({', '.join(NAMES)}), a .npz or .csv file or an "
                          "image folder")
    key = _key(spec)
    if key == "embedded":
        train, test = read_npz(embedded_path())
        return assemble("embedded", train, test, limit=limit, num_classes=10, mean=_FASHION.mean, std=_FASHION.std)
    if key in CATALOG:
        return _load_named(key, data_dir, download, limit)
    path = Path(spec).expanduser()
    if path.suffix.lower() in _FILE_READERS:
        suffix = path.suffix.lower()
        kind = special_file(path)
        if kind is not None:  # reading a FIFO waits for a writer; it was reported as "no such .npz file"
            raise DataError(f"{path}: is {kind}, not a regular file; save the data to a {suffix} file")
        if not path.is_file():
            raise DataError(f"{path}: no such {suffix} file")
        return assemble(spec, *_FILE_READERS[suffix](path), limit=limit)
    if path.is_dir():
        _refuse_official_layout(spec, path)
        from nestc.data.folder import read_image_folder  # Pillow is only needed for folders

        return assemble(spec, *read_image_folder(path, input_shape), limit=limit)
    raise DataError(f"unknown data set '{spec}': accepted names are {', '.join(NAMES)}, or a path to a .npz or .csv "
                    "file or an image folder")


def _refuse_official_layout(spec: str, folder: Path) -> None:
    """A folder given as ``--data`` that holds a named data set's official files (``--data
    data/cifar-10-batches-py``, or torchvision's ``root``) is no image folder; reading it as one failed with
    "no class subfolders", which sent the user looking for images that were never meant to be there."""
    found = [name for name, entry in CATALOG.items() if locate(entry, [Root(folder, named=True)]) is not None]
    if not found:
        return
    if len(found) > 1 and set(found) <= {"mnist", "fashion-mnist", "kmnist"}:  # they share their file names
        what = "MNIST-format files (mnist, fashion-mnist or kmnist: say which)"
        name = "mnist (or fashion-mnist, kmnist)"
    else:
        what, name = f"the official files of {' and '.join(found)}", found[0]
    raise DataError(f"--data {spec}: the folder holds {what}, not one image folder per class; name the data set "
                    f"and the folder: --data {name} --data-dir {spec}")


def data_files(spec: str | os.PathLike) -> list[Path]:
    """The files ``spec`` names as data, which no output of the same command may replace: a ``.npz``, or a
    ``.csv`` and the test file beside it.

    Named data sets and image folders are read from folders, and an output path is never a folder.
    """
    require(spec, PATH, "--data", "a data set name or path")
    _check_lookup(spec, "--data")
    path = Path(os.fspath(spec)).expanduser()
    if _key(os.fspath(spec)) in NAMES or path.suffix.lower() not in _FILE_READERS:
        return []
    beside = test_file_beside(path) if path.suffix.lower() == ".csv" else None
    return [path] if beside is None else [path, beside]


#: The names without separators: torchvision's classes and the archives spell them so (FashionMNIST, CIFAR-10).
_SQUASHED = {name.replace("-", ""): name for name in NAMES}


def _check_lookup(path: str | os.PathLike, option: str) -> None:
    """Refuse a path the system cannot even look up (a name too long, a symbolic link loop) by ``option``'s
    name; every later check of it (``exists()``, ``is_file()``) raised the OSError with a traceback."""
    try:
        os.stat(Path(os.fspath(path)).expanduser())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        pass  # absent: the data set's own lookup says what it looked for
    except OSError as exc:
        raise DataError(f"{option} {shown(path)}: cannot read ({os_reason(exc)})") from exc


def _key(spec: str) -> str:
    """A data set name as the catalog spells it (case, ``_`` for ``-`` forgiven, and ``-`` where a spelling
    of it has one or none: ``FashionMNIST``, ``cifar-10``), unless a file or folder of that name exists
    (an image folder called ``cifar-10`` stays one)."""
    key = spec.strip().lower().replace("_", "-")
    if key in NAMES or Path(spec).expanduser().exists():
        return key
    return _SQUASHED.get(key.replace("-", ""), key)


def _load_named(name: str, data_dir: str | os.PathLike | None, download: bool, limit: int | None) -> Dataset:
    entry = CATALOG[name]
    roots = search_roots(data_dir)
    found = locate(entry, roots)
    if found is None and download:
        target = Path(data_dir).expanduser() if data_dir is not None else cache_dir()
        download_named(entry, target, packed_archives(entry, [*roots, Root(target, named=True)]))
        found = locate(entry, [Root(target, named=True)])
    if found is None:
        raise incomplete(entry, roots) or not_found(entry, roots)
    folder, layout = found
    train, test = layout.read(folder)
    return assemble(name, train, test, limit=limit, num_classes=entry.num_classes, mean=entry.mean, std=entry.std)
