"""A pickle loader for CIFAR's python batches that can build numpy arrays and nothing else.

Unpickling runs whatever callables the file names, so a data file off the internet could run
``os.system``. The official batches only hold dicts, lists, bytes/str, ints and one uint8 array;
the array is the only thing that needs globals (``_reconstruct``, ``ndarray``, ``dtype``; ``_frombuffer``
in protocol 5), and batches re-pickled by Python 3 at protocol 2 store bytes through
``_codecs.encode``. Those are the whole allow-list: any other global is refused before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from nestc.errors import DataError

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's _reconstruct, without importing a private module
_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]  # numpy's _frombuffer: protocol-5 pickles build arrays with it


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What ``_codecs.encode`` does in a protocol-2 pickle written by Python 3 (its way of storing
    ``bytes``), limited to that use: no other codec runs."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}: only latin1 text is accepted")
    return text.encode("latin1")


#: (module, name) pairs a data file may load; numpy 1 pickles say ``numpy.core``, numpy 2 ``numpy._core``.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that is not in :data:`ALLOWED_GLOBALS`."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only hands out :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def load_restricted(path: Path) -> object:
    """Unpickle ``path`` (latin1 for Python 2 strings, as the official batches need).

    A refused global is a DataError saying what the file tried to load; any other failure is a
    DataError too, because the bytes are untrusted input, not nestc's own state.
    """
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DataError(
            f"{path}: refused: the file tries to load {exc.qualified}, which a data batch never needs "
            "(only numpy arrays, dicts, lists, strings and numbers are allowed)"
        ) from None
    except Exception as exc:  # any parse failure of untrusted bytes is the file's fault
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
