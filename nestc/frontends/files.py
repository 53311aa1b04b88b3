"""Reading model bytes safely: clear errors for bad files, external data confined to the model's folder."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from nestc.errors import PATH, ModelError, first_line, require, shown
from nestc.fileio import os_reason, special_file


def read_model_file(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse ``path`` as an ONNX model and load its external data, refusing anything unsafe.

    External data may only come from files inside the model's own folder: a ``location`` that is
    absolute or climbs out with ``..`` (``../../etc/passwd``) is refused before anything is read.
    """
    file = Path(path)
    model = _parse(file)
    _load_external_data(model, file)
    return model


def model_files(path: str | os.PathLike) -> list[Path]:
    """``path`` and the external data files it names: the files a command's outputs must not replace.

    ``-o weights.bin`` beside a model whose tensors live in ``weights.bin`` would otherwise overwrite
    them. A file that does not parse names no external data (loading it then says what is wrong).
    """
    require(path, PATH, "model", "a file path")
    file = Path(path)
    try:
        model = _parse(file)
    except ModelError:
        return [file]
    base = file.resolve().parent
    locations = {_location(tensor) for tensor in _all_tensors(model.graph)
                 if external_data_helper.uses_external_data(tensor)}
    return [file, *(base / location for location in sorted(locations) if location)]


def model_bytes(files: Iterable[Path]) -> int:
    """Bytes a model takes on disk: its :func:`model_files`, the file and the external data it names.

    A report's "before" size is the file as the user has it: the loaded model serialised again (its
    external data inline, its shape arithmetic folded, its batch freed) is another number.
    """
    return sum(file.stat().st_size for file in files)


def _parse(file: Path) -> onnx.ModelProto:
    """The model proto in ``file``, its external data not loaded."""
    try:
        info = file.stat()
    except FileNotFoundError:
        raise ModelError(f"{file}: no such file") from None
    except (OSError, RuntimeError) as exc:  # a name too long, a symbolic link loop, a folder not readable
        raise ModelError(f"{shown(file)}: cannot read ({os_reason(exc)})") from exc
    if file.is_dir():
        raise ModelError(f"{file}: is a directory, expected an .onnx file")
    kind = special_file(file)
    if kind is not None:  # reading a FIFO waits for a writer; it was reported as "file is empty"
        raise ModelError(f"{file}: is {kind}, not a regular file; save the model to a file")
    if info.st_size == 0:
        raise ModelError(f"{file}: file is empty")
    try:
        model = onnx.load_model(str(file), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        packed = _packed(file)
        if packed is not None:  # "Wire format was corrupt" said nothing of the archive around the model
            raise ModelError(f"{file}: not an ONNX model but a {packed} file; unpack the .onnx inside it") from exc
        raise ModelError(f"{file}: not an ONNX model ({first_line(exc) or 'protobuf parse failed'})") from exc
    except OSError as exc:
        raise ModelError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    if not model.HasField("graph") or not model.opset_import or model.ir_version <= 0:
        raise ModelError(f"{file}: not an ONNX model (no graph, opset or IR version)")
    return model


_ARCHIVES = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
             (b"\x28\xb5\x2f\xfd", "zstd"))


def _packed(file: Path) -> str | None:
    """The archive format ``file`` starts with (a model saved as ``model.onnx.gz``, say), or None."""
    try:
        with open(file, "rb") as handle:
            start = handle.read(8)
    except OSError:
        return None
    return next((name for magic, name in _ARCHIVES if start.startswith(magic)), None)


def _location(tensor: onnx.TensorProto) -> str:
    """The ``location`` entry of a tensor stored as external data ("" when it has none)."""
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


def _load_external_data(model: onnx.ModelProto, file: Path) -> None:
    base = file.resolve().parent
    for tensor in _all_tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = _location(tensor)
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(base):
            raise ModelError(f"{file}: external data of tensor '{tensor.name}' points outside the model's "
                             f"folder ('{location}'); only files beside the model are read")
        if not target.is_file():
            raise ModelError(f"{file}: external data file '{location}' of tensor '{tensor.name}' is missing")
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{file}: cannot load external data ({first_line(exc)})") from exc


def _all_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            tensors.extend([attr.t] if attr.HasField("t") else list(attr.tensors))
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                tensors.extend(_all_tensors(sub))
    return tensors
