"""Downloads: checksum verification, no partial files, safe tar extraction, one-line failures."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from test_data_formats import isolate, write_cifar, write_mnist

from nestc.data import download, load_dataset
from nestc.data.catalog import CATALOG, Resource
from nestc.errors import DataError


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate(monkeypatch, tmp_path)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _offline(url: str) -> None:
    raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")


def test_fetch_verifies_and_renames_into_place(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out" / "file.bin"
    dest.parent.mkdir()
    assert download.fetch((src.as_uri(),), dest, _md5(src)) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"tampered")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=r"checksum mismatch .* expected 0123456789abcdef0123456789abcdef"):
        download.fetch((src.as_uri(),), out / "file.bin", "0123456789abcdef0123456789abcdef")
    assert list(out.iterdir()) == []


def test_next_mirror_is_tried_after_a_failure(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"good")
    dest = tmp_path / "file.bin"
    download.fetch(((tmp_path / "absent").as_uri(), src.as_uri()), dest, _md5(src))
    assert dest.read_bytes() == b"good"


def test_without_network_the_error_is_one_line(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "_open_url", _offline)
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte\.gz") as err:
        load_dataset("mnist", download=True)
    assert "\n" not in str(err.value) and "--data-dir" in str(err.value)
    assert not (cache / "mnist").exists()


def serve(monkeypatch: pytest.MonkeyPatch, name: str, files: list[Path]) -> None:
    """Point the catalog entry ``name`` at local ``file://`` copies with their real checksums."""
    resources = tuple(Resource(p.name, _md5(p), (p.as_uri(),), extract=p.name.endswith(".tar.gz")) for p in files)
    monkeypatch.setitem(CATALOG, name, dataclasses.replace(CATALOG[name], resources=resources))


def test_download_mnist_into_the_user_cache(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist(tmp_path / "server", n_train=25)
    serve(monkeypatch, "mnist", sorted((tmp_path / "server").iterdir()))
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist")
    ds = load_dataset("mnist", download=True)
    assert len(ds.x_train) == 25
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(
        p.name for p in (tmp_path / "server").iterdir()
    )
    monkeypatch.setattr(download, "_open_url", _offline)  # found now: no second download
    assert len(load_dataset("mnist", download=True).x_train) == 25


def _tarball(path: Path, folder: Path, arcname: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return path


def test_download_cifar_archive_into_data_dir(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path / "build", "python", 10)
    serve(
        monkeypatch,
        "cifar10",
        [_tarball(tmp_path / "cifar-10-python.tar.gz", tmp_path / "build", "cifar-10-batches-py")],
    )
    ds = load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    assert ds.x_train.shape == (20, 3, 32, 32)
    assert sorted(p.name for p in (tmp_path / "data" / "cifar10").iterdir()) == ["cifar-10-batches-py"]
    assert not cache.exists()



@pytest.mark.parametrize("named", [True, False], ids=["data-dir", "working-dir-data"])
def test_download_unpacks_a_handed_archive_offline(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   named: bool) -> None:
    write_cifar(tmp_path / "build", "python", 10)
    data = tmp_path / "data"  # the working folder's ./data, searched with or without --data-dir
    data.mkdir()
    archive = _tarball(data / "cifar-10-python.tar.gz", tmp_path / "build", "cifar-10-batches-py")
    serve(monkeypatch, "cifar10", [archive])
    monkeypatch.setattr(download, "_open_url", _offline)
    data_dir = data if named else None
    with pytest.raises(DataError, match=r"still packed.*or pass --download"):
        load_dataset("cifar10", data_dir=data_dir)
    ds = load_dataset("cifar10", data_dir=data_dir, download=True)
    assert ds.x_train.shape == (20, 3, 32, 32)
    assert archive.is_file(), "the user's archive is kept"
    assert ((data if named else cache) / "cifar10" / "cifar-10-batches-py").is_dir()


def test_the_binary_archive_is_not_offered_to_download(cache: Path, tmp_path: Path) -> None:
    """``--download`` fetches CIFAR's python archive; the binary one lying there must be unpacked by hand."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-binary.tar.gz").write_bytes(b"not checked")
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz is its official archive, still packed") as err:
        load_dataset("cifar10", data_dir=data)
    assert "pass --download to check" not in str(err.value)


def test_a_handed_archive_with_another_checksum_is_not_used(cache: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path / "build", "python", 10)
    data = tmp_path / "data"
    data.mkdir()
    archive = _tarball(data / "cifar-10-python.tar.gz", tmp_path / "build", "cifar-10-batches-py")
    resource = Resource(archive.name, "0123456789abcdef0123456789abcdef", (archive.as_uri(),), extract=True)
    monkeypatch.setitem(CATALOG, "cifar10", dataclasses.replace(CATALOG["cifar10"], resources=(resource,)))
    monkeypatch.setattr(download, "_open_url", _offline)
    with pytest.raises(DataError, match=r"could not download cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", data_dir=data, download=True)
    assert not (data / "cifar10" / "cifar-10-batches-py").exists()


def _evil_tar(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"x") if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "problem"),
    [
        ("../escape.txt", tarfile.REGTYPE, "outside the target"),
        ("/tmp/absolute.txt", tarfile.REGTYPE, "outside the target"),
        ("cifar/../../escape.txt", tarfile.REGTYPE, "outside the target"),
        ("link", tarfile.SYMTYPE, "is a link or device"),
        ("dev", tarfile.CHRTYPE, "is a link or device"),
    ],
)
def test_unsafe_archive_members_are_refused(tmp_path: Path, name: str, kind: bytes, problem: str) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.size, member.linkname = kind, 1 if kind == tarfile.REGTYPE else 0, "/etc/passwd"
    dest = tmp_path / "dest" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(DataError, match=problem):
        download.extract_tar(_evil_tar(tmp_path / "evil.tar.gz", member), dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "dest" / "escape.txt").exists()


def test_corrupt_archive_is_a_data_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=r"broken\.tar\.gz: cannot be extracted"):
        download.extract_tar(archive, tmp_path)
