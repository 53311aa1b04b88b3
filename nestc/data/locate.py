"""Where named data sets are searched for, in order, and the error when they are nowhere.

Roots: the ``data_dir`` argument, ``$NESTC_DATA`` (``os.pathsep``-separated), ``./data`` (the
``root="data"`` of torchvision's tutorials, so a download made for a training script next to the model
is found), the user cache (``$XDG_CACHE_HOME/nestc`` or ``~/.cache/nestc``, where downloads go) and the
system folders that Debian's ``dataset-*`` packages fill. Under each root the data set's bases (``mnist/``,
``MNIST/raw/`` ...) are tried, so torchvision and Debian layouts are found without configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

from nestc.data.catalog import Layout, Named
from nestc.errors import DataError

#: System-wide folders searched last (Debian installs ``/usr/share/datasets/fashion-mnist``).
SYSTEM_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))


def cache_dir() -> Path:
    """The user cache that ``download=True`` fills when no ``data_dir`` is given."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nestc"


def search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """The roots to search, in order, without duplicates."""
    roots = [Path(data_dir).expanduser()] if data_dir is not None else []
    roots += [Path(p).expanduser() for p in os.environ.get("NESTC_DATA", "").split(os.pathsep) if p]
    roots += [Path.cwd() / "data", cache_dir(), *SYSTEM_ROOTS]
    return list(dict.fromkeys(roots))


def locate(entry: Named, roots: list[Path]) -> tuple[Path, Layout] | None:
    """The first folder (and its layout) that holds ``entry``, or None."""
    for root in roots:
        for base in entry.bases:
            for layout in entry.layouts:
                for folder in layout.folders:
                    candidate = root / base / folder
                    if layout.holds(candidate):
                        return candidate, layout
    return None


def incomplete(entry: Named, roots: list[Path]) -> DataError | None:
    """The error for a folder that holds some but not all files of a layout (a partial copy), or None.

    Without it a half-copied data set would be reported as "not found", hiding the missing file.
    """
    for root in roots:
        for base in entry.bases:
            for layout in entry.layouts:
                for folder in layout.folders:
                    candidate = root / base / folder
                    missing = [name for name in layout.files if not _has(candidate, name, layout.gzip_ok)]
                    if len(missing) < len(layout.files):
                        suffix = "[.gz]" if layout.gzip_ok else ""
                        return DataError(f"{candidate}: data set '{entry.name}' is incomplete: missing "
                                         f"{', '.join(name + suffix for name in missing)}")
    return None


def _has(folder: Path, name: str, gzip_ok: bool) -> bool:
    return (folder / name).is_file() or (gzip_ok and (folder / f"{name}.gz").is_file())


def not_found(entry: Named, roots: list[Path]) -> DataError:
    """The one-line error naming what was looked for, where, and how to get it."""
    wanted = " or ".join(layout.describe() for layout in entry.layouts)
    subfolders = ", ".join(f"{base}/" for base in entry.bases if base)
    return DataError(
        f"data set '{entry.name}' not found: looked for {wanted} in {', '.join(map(str, roots))} "
        f"(and their subfolders {subfolders}); get it with --download (needs network){entry.hint}, "
        "or pass --data-dir (or set NESTC_DATA) to the folder that holds it"
    )
