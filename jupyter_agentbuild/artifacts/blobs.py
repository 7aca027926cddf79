"""Where artifact bytes live: a small interface, and a local-directory implementation.

The manifest (paths, sizes, digests) is in the database; the bytes are blobs named by
``(build_id, key)``, where ``key`` is chosen by the collector (never a workspace path,
so no file name a build makes can turn into a path of the store). The interface is
blocking on purpose: it is the shape of fsspec's ``AbstractFileSystem`` (``open``,
``rm(recursive=True)``, ``ls``), so an object-store implementation is a thin wrapper
around ``fsspec.filesystem(...)``. Callers run it in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Protocol

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class BlobMissing(Exception):
    """The blob does not exist (or is not a plain file of the store)."""


class ArtifactStore(Protocol):
    """Blobs grouped by build. Every method blocks: call it from a worker thread."""

    def open_write(self, build_id: str, key: str) -> BinaryIO:
        """A new (truncated) blob open for writing; it exists once the file is closed."""
        ...

    def open_read(self, build_id: str, key: str) -> BinaryIO:
        """The blob, open for reading and seekable. Raises :class:`BlobMissing`."""
        ...

    def remove(self, build_id: str, key: str) -> None:
        """Remove one blob (no error when it does not exist)."""
        ...

    def remove_build(self, build_id: str) -> None:
        """Remove every blob of the build (no error when there is none)."""
        ...

    def build_ids(self) -> list[str]:
        """The builds that have blobs here (for the orphan sweep)."""
        ...


def _check(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"invalid {what} for the artifact store: {name!r}")
    return name


class LocalArtifactStore:
    """``{root}/{build_id}/{key}`` files. Reads never follow a symlink."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def _dir(self, build_id: str) -> Path:
        return self.root / _check(build_id, "build id")

    def open_write(self, build_id: str, key: str) -> BinaryIO:
        directory = self._dir(build_id)
        # private: only the server's user reads artifacts (the API checks the owner)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(directory / _check(key, "key"), flags, 0o600)
        return os.fdopen(fd, "wb")

    def open_read(self, build_id: str, key: str) -> BinaryIO:
        directory = self._dir(build_id)
        _check(key, "key")
        try:  # neither the build's directory nor the blob may be a symlink
            dir_fd = os.open(directory, _DIR_FLAGS)
        except OSError as exc:
            raise BlobMissing(f"{build_id}/{key}: {exc.strerror}") from None
        try:
            fd = os.open(key, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise BlobMissing(f"{build_id}/{key}: {exc.strerror}") from None
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BlobMissing(f"{build_id}/{key}: not a file")
        return os.fdopen(fd, "rb")

    def remove(self, build_id: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._dir(build_id) / _check(key, "key")).unlink()

    def remove_build(self, build_id: str) -> None:
        directory = self._dir(build_id)
        if directory.is_symlink():
            directory.unlink()
        else:
            shutil.rmtree(directory, ignore_errors=True)

    def build_ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _NAME.match(n))
