"""Atomic file output: a crash or Ctrl-C never leaves a half-written model or report behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nestc.errors import PATH, OptionError, OutputError, require


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    The rename is atomic on POSIX, so readers see either the old file or the complete new one. The
    file gets the permissions a plain ``open(path, "w")`` would give (``mkstemp`` makes it private),
    and a failing write (disk full, read-only folder) is an :class:`OutputError` naming ``path``.
    """
    target = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM for the block: a group of files written in it is written whole or not at all.

    Meant for the last few milliseconds of a command, when everything is computed and only renames are
    left; a signal then is moot, as the command ends at once anyway. Python can only set handlers in the
    main thread; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike, option: str = "-o") -> Path:
    """Refuse an output that would overwrite an input or cannot be written, before any work starts.

    Writability is probed by creating (and removing) a temporary file in the folder: permission bits
    alone say nothing for root or for read-only mounts.
    """
    require(output, PATH, option, "a file path")
    out = Path(output)
    for source in inputs:
        src = Path(source)
        if src.resolve() == out.resolve() or (src.exists() and out.exists() and os.path.samefile(src, out)):
            named = "" if str(src) == str(out) else f" {src}"
            raise OptionError(f"{option} {out}: output path equals the input file{named}; choose another name")
    folder = out.resolve().parent
    if out.is_dir():
        raise OptionError(f"{option} {out}: is a directory, expected a file path")
    if os.fspath(output).endswith(("/", os.sep)):  # Path() drops the slash: "-o out/" wrote a file named "out"
        raise OptionError(f"{option} {os.fspath(output)}: names a folder (trailing slash), expected a file path")
    if not folder.is_dir():
        raise OptionError(f"{option} {out}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OptionError(f"{option} {out}: folder {folder} is not writable ({exc.strerror or exc})") from exc
    return out


def check_outputs(outputs: dict[str, str | os.PathLike | None], *inputs: str | os.PathLike) -> None:
    """Check every output of one command before any work: each one writable and none of ``inputs``
    (:func:`check_output_path`), and no two on one path (:func:`check_distinct_outputs`)."""
    for option, path in outputs.items():
        if path is not None:
            check_output_path(path, *inputs, option=option)
    check_distinct_outputs(outputs)


def check_distinct_outputs(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse two outputs of one command on the same path: the later write would replace the earlier
    (``-o m.onnx --report m.onnx`` left a JSON report where the model should be)."""
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            raise OptionError(f"{option} {path}: same path as {seen[resolved]}; choose another name")
        seen[resolved] = option


def run_identity(model: str | os.PathLike, data: str | os.PathLike, limit: int | None, output_name: str | None,
                 seed: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> str:
    """What a checkpoint must have been written for to be resumed: a digest of the model's bytes, the data
    (and its normalisation, as checked tuples), ``limit``, ``output_name`` and the seed.

    Weights and counters saved for another model, data set or seed would load without complaint whenever
    the shapes agree. Other options may change on a resume (a longer ``--max-epochs``, say).
    """
    digest = hashlib.sha256()
    with open(model, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    given = [] if mean is None else [mean, std]  # absent when not given: older checkpoints stay resumable
    digest.update(json.dumps([os.fspath(data), limit, output_name, seed, *given]).encode())
    return digest.hexdigest()
