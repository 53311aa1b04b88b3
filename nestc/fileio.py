"""Atomic file output: a crash or Ctrl-C never leaves a half-written model or report behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nestc.errors import OptionError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    The rename is atomic on POSIX, so readers see either the old file or the complete new one.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike, option: str = "-o") -> Path:
    """Refuse an output that would overwrite an input or cannot be written, before any work starts."""
    out = Path(output)
    for source in inputs:
        src = Path(source)
        if src.resolve() == out.resolve() or (src.exists() and out.exists() and os.path.samefile(src, out)):
            raise OptionError(f"{option} {out}: output path equals the input file; choose another name")
    folder = out.resolve().parent
    if out.is_dir():
        raise OptionError(f"{option} {out}: is a directory, expected a file path")
    if not folder.is_dir():
        raise OptionError(f"{option} {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OptionError(f"{option} {out}: folder {folder} is not writable")
    return out
