"""Where named data sets are searched for, in order, and the error when they are nowhere.

Roots: the ``data_dir`` argument, ``$NESTC_DATA`` (``os.pathsep``-separated), ``./data`` (the
``root="data"`` of torchvision's tutorials, so a download made for a training script next to the model
is found), the user cache (``$XDG_CACHE_HOME/nestc`` or ``~/.cache/nestc``, where downloads go) and the
system folders that Debian's ``dataset-*`` packages fill. Under each root the data set's bases (``mnist/``,
``MNIST/raw/`` ...) are tried, so torchvision and Debian layouts are found without configuration.
Files lying directly in a root, or in its ``raw/`` (a ``data_dir`` naming torchvision's ``MNIST/``), are
taken only from the roots a user named (``data_dir``, ``$NESTC_DATA``): MNIST, Fashion-MNIST and KMNIST
share their file names, so MNIST files at the top of ``./data`` would otherwise be read as Fashion-MNIST
without a word.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from nestc.data.catalog import Layout, Named
from nestc.errors import DataError

#: System-wide folders searched last (Debian installs ``/usr/share/datasets/fashion-mnist``).
SYSTEM_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))


def cache_dir() -> Path:
    """The user cache that ``download=True`` fills when no ``data_dir`` is given."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nestc"


class Root(NamedTuple):
    """A folder to search; ``named``: the user pointed at it, so files lying directly in it count."""

    path: Path
    named: bool

    def __str__(self) -> str:
        return str(self.path)


def search_roots(data_dir: str | os.PathLike | None) -> list[Root]:
    """The roots to search, in order, without duplicates."""
    named = [Path(data_dir).expanduser()] if data_dir is not None else []
    named += [Path(p).expanduser() for p in os.environ.get("NESTC_DATA", "").split(os.pathsep) if p]
    implicit = [Path.cwd() / "data", cache_dir(), *SYSTEM_ROOTS]
    roots = [Root(path, True) for path in dict.fromkeys(named)]
    return roots + [Root(path, False) for path in dict.fromkeys(implicit) if path not in named]


#: Bases that say nothing of which data set their files are (torchvision's ``MNIST/raw`` seen from inside
#: ``MNIST/``): searched only in roots the user named, like files lying directly in a root.
NAMED_ONLY_BASES = ("", "raw")


def _candidates(entry: Named, roots: list[Root]) -> Iterator[tuple[Path, Layout]]:
    """Every folder that may hold ``entry`` in one of its layouts, in search order."""
    for root in roots:
        for base in entry.bases:
            for layout in entry.layouts:
                for folder in layout.folders:
                    if folder or root.named or base not in NAMED_ONLY_BASES:
                        yield root.path / base / folder, layout


def locate(entry: Named, roots: list[Root]) -> tuple[Path, Layout] | None:
    """The first folder (and its layout) that holds ``entry``, or None."""
    return next(((folder, layout) for folder, layout in _candidates(entry, roots) if layout.holds(folder)), None)


def incomplete(entry: Named, roots: list[Root]) -> DataError | None:
    """The error for a folder that holds some but not all files of a layout (a partial copy), or None.

    Without it a half-copied data set would be reported as "not found", hiding the missing file.
    """
    for candidate, layout in _candidates(entry, roots):
        missing = [name for name in layout.files if not _has(candidate, name, layout.gzip_ok)]
        if len(missing) < len(layout.files):
            suffix = "[.gz]" if layout.gzip_ok else ""
            return DataError(f"{candidate}: data set '{entry.name}' is incomplete: missing "
                             f"{', '.join(name + suffix for name in missing)}")
    return None


def _has(folder: Path, name: str, gzip_ok: bool) -> bool:
    return (folder / name).is_file() or (gzip_ok and (folder / f"{name}.gz").is_file())


def packed_archives(entry: Named, roots: list[Root]) -> Iterator[Path]:
    """The official archives of ``entry`` lying, still packed, in a root or one of its bases."""
    for root in roots:
        for base in dict.fromkeys(("", *entry.bases)):
            for name in entry.archives:
                if (root.path / base / name).is_file():
                    yield root.path / base / name


def not_found(entry: Named, roots: list[Root]) -> DataError:
    """The one-line error naming what was looked for, where, and how to get it."""
    wanted = " or ".join(layout.describe() for layout in entry.layouts)
    subfolders = ", ".join(f"{base}/" for base in entry.bases if base not in NAMED_ONLY_BASES)
    if any(root.named for root in roots) and "raw" in entry.bases:  # looked for only where the user pointed
        subfolders += ", and raw/ of --data-dir or $NESTC_DATA"
    loose = [root.path for root in roots if not root.named
             and any("" in layout.folders and layout.holds(root.path) for layout in entry.layouts)]
    unread = (f"; the files lying directly in {loose[0]} are not read unless named: pass --data-dir {loose[0]}"
              if loose else "")
    packed = next(packed_archives(entry, roots), None)
    if packed is not None:  # unpacked only when told to download, as torchvision does (the archive it downloads)
        downloadable = any(res.filename == packed.name for res in entry.resources)
        unread += (f"; {packed} is its official archive, still packed: unpack it where it is "
                   f"(tar -xzf {packed} -C {packed.parent})"
                   + (", or pass --download to check and unpack it" if downloadable else ""))
    return DataError(
        f"data set '{entry.name}' not found: looked for {wanted} in {', '.join(map(str, roots))} "
        f"(and their subfolders {subfolders}){unread}; get it with --download (needs network){entry.hint}, "
        "or pass --data-dir (or set NESTC_DATA) to the folder that holds it"
    )
