"""Download official archives with their MD5 checked, and unpack tarballs safely.

A download goes to a hidden temporary file next to its destination and is renamed into place
only after the checksum matches, so an interrupted or tampered download never leaves a file that
a later run would trust. Tar members are checked before anything is written: absolute paths,
``..`` and links are refused, since an archive is untrusted input.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from nestc.data.catalog import Named
from nestc.errors import DataError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _open_url(url: str) -> BinaryIO:
    """The only network access in nestc.data (tests replace it)."""
    return urllib.request.urlopen(url, timeout=60)  # URLs come from the catalog or the caller


def download_named(entry: Named, target: Path, handed: Iterable[Path] = ()) -> Path:
    """Fetch and unpack ``entry``'s files into ``target/<name>/`` and return that folder.

    ``handed``: archives already on disk (:func:`nestc.data.locate.packed_archives`). One with a resource's
    name and checksum is unpacked from where it lies and kept, as torchvision does with ``download=True``:
    a machine without network that was handed the archive gets the data set, and the file is the user's.
    """
    folder = target / entry.name
    folder.mkdir(parents=True, exist_ok=True)
    copies = list(handed)
    try:
        for res in entry.resources:
            handed_copy = next((path for path in copies if path.name == res.filename and _verified(path, res.md5)),
                               None)
            path = handed_copy or fetch(res.urls, folder / res.filename, res.md5)
            if res.extract:
                extract_tar(path, folder)
                if handed_copy is None:
                    path.unlink()
    except DataError:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if nothing was fetched: verified files are kept for the next try
        raise
    return folder


def _verified(path: Path, md5: str) -> bool:
    """Whether ``path`` is a file with MD5 ``md5`` (a file with another checksum is logged)."""
    if not path.is_file():
        return False
    if file_md5(path) == md5:
        return True
    log.warning("%s: MD5 differs from the official archive's (%s); not used", path, md5)
    return False


def fetch(urls: tuple[str, ...], dest: Path, md5: str) -> Path:
    """``dest`` with MD5 ``md5``, downloaded from the first URL that delivers it if not already there."""
    if _verified(dest, md5):
        return dest
    reasons = []
    for url in urls:
        log.info("downloading %s", url)
        try:
            _fetch_one(url, dest, md5)
            return dest
        except _FetchFailed as exc:
            reasons.append(str(exc))
    raise DataError(
        f"could not download {dest.name} ({'; '.join(reasons)}); on a machine without network, "
        "put the official files in a folder and pass --data-dir"
    )


class _FetchFailed(Exception):
    """One URL did not deliver the expected file (network error or checksum mismatch)."""


def _fetch_one(url: str, dest: Path, md5: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, _open_url(url) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise _FetchFailed(f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5}); discarded")
        os.replace(tmp, dest)
    except OSError as exc:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
        raise _FetchFailed(f"{url}: {' '.join(str(exc).split())}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_tar(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` after checking every member stays inside it.

    Members are unpacked into a temporary folder in ``dest`` first and moved into place only when
    all succeeded, so a corrupt archive leaves no half-extracted data set behind.
    """
    try:
        with tarfile.open(archive, "r:*") as tar, tempfile.TemporaryDirectory(dir=dest, prefix=".extract-") as tmp:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: the checks above are the whole defence
                tar.extractall(tmp, members=members)  # members checked by _check_member
            for item in Path(tmp).iterdir():
                final = dest / item.name
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                elif final.exists() or final.is_symlink():
                    final.unlink()
                os.replace(item, final)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{archive}: cannot be extracted ({' '.join(str(exc).split())})") from exc


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that could write outside the target or are not plain files and folders."""
    parts = Path(member.name).parts
    if Path(member.name).is_absolute() or ".." in parts:
        raise DataError(f"{archive}: refused: member '{member.name}' would be written outside the target folder")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refused: member '{member.name}' is a link or device, which data never needs")
