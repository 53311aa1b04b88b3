"""Atomic file output: a crash or Ctrl-C never leaves a half-written model or report behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nestc.errors import PATH, OptionError, OutputError, require, shown


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
    atomic_write_files({path: data})


def atomic_write_files(files: dict[str | os.PathLike, bytes]) -> None:
    """Write several files so that either all of them are replaced or none is.

    Every file is first written whole to a temporary file beside its target (the step that fails on a
    full disk or a vanished folder); only then are they renamed into place, one after the other. A
    failure while writing leaves every old file as it was. A path that is a symbolic link is written
    through it, as ``open(path, "w")`` would: the link stays and its target gets the new bytes (the
    folder :func:`check_output_path` checked is the target's).
    """
    staged: list[tuple[str, Path, Path]] = []
    try:
        for path, data in files.items():
            target = _write_target(path)
            try:
                staged.append((os.fspath(path), _stage(target, data), target))
            except OSError as exc:
                raise OutputError(f"{os.fspath(path)}: cannot write ({exc.strerror or exc})") from exc
        while staged:
            name, tmp, target = staged[0]
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise OutputError(f"{name}: cannot write ({exc.strerror or exc})") from exc
            staged.pop(0)
    finally:
        for _, tmp, _ in staged:
            if os.path.lexists(tmp):
                os.unlink(tmp)


def _write_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or the file a symbolic link there points to."""
    target = Path(path)
    try:
        return Path(os.path.realpath(target)) if target.is_symlink() else target
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"{shown(target)}: cannot write ({os_reason(exc)})") from exc


def _stage(target: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``target``, flushed to disk, with the usual permissions."""
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _same_file(src: Path, out: Path) -> bool:
    """Whether ``out`` names the file ``src``, by another spelling or link. An input whose name cannot even be
    looked up (too long, a link loop) is no file an output can replace; reading it says what is wrong."""
    try:
        src_resolved = src.resolve()
        src_exists = src.exists()
    except (OSError, RuntimeError):
        return False
    return src_resolved == out.resolve() or (src_exists and out.exists() and os.path.samefile(src, out))


def _tmp_prefix(target: Path) -> str:
    """The start of a temporary file's name beside ``target``: short enough that a name near the file
    system's limit (255 bytes) still leaves room for the random part."""
    return f".{target.name[:64]}."


def os_reason(exc: BaseException) -> str:
    """Why an OS call failed, in a few words (a symlink loop is a RuntimeError before Python 3.13)."""
    if isinstance(exc, RuntimeError):
        return "symbolic link loop"
    return getattr(exc, "strerror", None) or str(exc)


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def special_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a folder ("a FIFO", ...), else None.

    Such a file would make a reader wait forever (a FIFO) or, as an output, be replaced by a regular file
    (``-o /dev/null`` run as root left a 90 kB file in place of the device).
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None)


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
    try:
        return _check_output_path(output, inputs, option)
    except (OSError, RuntimeError) as exc:  # a name too long, a symbolic link loop
        raise OptionError(f"{option} {shown(output)}: cannot be written ({os_reason(exc)})") from exc


def _check_output_path(output: str | os.PathLike, inputs: Sequence[str | os.PathLike], option: str) -> Path:
    if os.fspath(output) == "-":  # the usual "standard output" spelling: it used to write a file named "-"
        raise OptionError(f"{option} -: nestc writes files atomically and cannot write to standard output; "
                          "give a file path (./- for a file named '-')")
    out = Path(output)
    for source in inputs:
        src = Path(source)
        if _same_file(src, out):
            named = "" if str(src) == str(out) else f" {src}"
            raise OptionError(f"{option} {out}: output path equals the input file{named}; choose another name")
    folder = out.resolve().parent
    if out.is_dir():
        raise OptionError(f"{option} {out}: is a directory, expected a file path")
    kind = special_file(out)
    if kind is not None:
        raise OptionError(f"{option} {out}: is {kind}, not a regular file; nestc would replace it with one")
    if os.fspath(output).endswith(("/", os.sep)):  # Path() drops the slash: "-o out/" wrote a file named "out"
        raise OptionError(f"{option} {os.fspath(output)}: names a folder (trailing slash), expected a file path")
    if not folder.is_dir():
        raise OptionError(f"{option} {out}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=_tmp_prefix(out.resolve()), suffix=".tmp", dir=folder)
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
        try:
            resolved = Path(path).resolve()
        except (OSError, RuntimeError) as exc:
            raise OptionError(f"{option} {shown(path)}: cannot be written ({os_reason(exc)})") from exc
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
