"""Typed errors: every failure a user can cause is a :class:`NestcError`.

The CLI turns a ``NestcError`` into one line on stderr and its ``exit_code``; anything else is a bug
in nestc and keeps its traceback. Messages name the file, node or option at fault and, where it
helps, what would be accepted instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class NestcError(Exception):
    """Base class of errors caused by user input (exit code 2)."""

    exit_code: int = 2


class ModelError(NestcError):
    """The model file cannot be read, checked or represented."""


class UnsupportedOpError(ModelError):
    """The model holds operators nestc has no handler for; lists every offending node at once."""


class DataError(NestcError):
    """A data set is missing, corrupt, or does not fit the model."""


class OptionError(NestcError):
    """A command-line option or API argument has a value that cannot work."""


class PassError(NestcError):
    """A pass could not keep its guarantees (wrapped with the pass name)."""

    exit_code = 1


class TrainingDiverged(NestcError):
    """Training produced a non-finite loss that rollback could not repair."""

    exit_code = 1


class OutputError(OptionError):
    """An output file cannot be written (missing or read-only folder, disk full)."""


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def first_line(exc: BaseException) -> str:
    """An exception's text as one short line (or its type name).

    Library errors can span pages, but their first line alone is often cut mid-sentence (onnx's
    checker puts the node on the next lines), so the text is flattened and shortened instead.
    """
    return one_line(str(exc)) or type(exc).__name__


def shown(path: str | os.PathLike, limit: int = 80) -> str:
    """``path`` for a message, its middle cut when longer than ``limit`` characters: the error line is cut at
    300, which dropped the reason after a name too long for the file system."""
    name = os.fspath(path)
    return name if len(name) <= limit else f"{name[:limit // 2]}...{name[-(limit // 2):]}"


@contextmanager
def about(path: str | os.PathLike) -> Iterator[None]:
    """Name ``path`` in model errors raised inside that do not already name it.

    The IR executes graphs without knowing which file they came from ("while executing node 'fc1'
    ..."); the user needs the file too. The error keeps its type and exit code.
    """
    try:
        yield
    except ModelError as exc:
        if str(path) not in str(exc) and shown(path) not in str(exc):
            exc.args = (f"{path}: {exc}",)
        raise


NUMBER = (int, float)
PATH = (str, os.PathLike)


def require(value: object, kinds: tuple[type, ...], option: str, accepted: str) -> None:
    """Refuse ``value`` by ``option``'s name unless it is one of ``kinds`` (a bool is no number).

    The Python API takes what the command line would have converted: without this, ``batch_size="8"``
    fails in a comparison deep inside and ``inspect(None)`` in ``pathlib``.
    """
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise OptionError(f"{option} {value!r}: must be {accepted}")
