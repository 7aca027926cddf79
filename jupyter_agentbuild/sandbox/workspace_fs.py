"""Listing and reading a local workspace for artifact collection, confined to it.

Nothing here follows a symlink: the walk reports links (with their text) instead of
entering them, and :func:`read_chunks` opens every path component relative to the
previous one with ``O_NOFOLLOW``, so neither a link nor a link in a parent directory
can lead outside the workspace, whatever a step left behind.

The blocking work runs in worker threads, batched so that a workspace of many small
files costs few thread hops: one per ``_BATCH`` entries of the walk, one per chunk read
(a small file is opened, read and closed in a single hop).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

from .base import FileKind, SandboxError, WorkspaceEntry

_BATCH = 1000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _sorted_listing(directory: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as listing:
            return iter(sorted(listing, key=lambda e: e.name))
    except OSError:
        return iter(())  # unreadable or vanished: nothing to report inside it


def walk(
    root: Path, prune: Callable[[str], bool] | None = None
) -> Generator[WorkspaceEntry, None, None]:
    """Pre-order, names sorted (a directory, then its contents); never follows links."""
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", _sorted_listing(str(root)))]
    while stack:
        prefix, listing = stack[-1]
        entry = next(listing, None)
        if entry is None:
            stack.pop()
            continue
        rel = prefix + entry.name
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            try:
                target: str | None = os.readlink(entry.path)
            except OSError:
                target = None
            yield WorkspaceEntry(rel, FileKind.SYMLINK, 0, target)
        elif stat.S_ISDIR(mode):
            yield WorkspaceEntry(rel, FileKind.DIR)
            if prune is None or not prune(rel):
                stack.append((rel + "/", _sorted_listing(entry.path)))
        elif stat.S_ISREG(mode):
            yield WorkspaceEntry(rel, FileKind.FILE, info.st_size)
        else:
            yield WorkspaceEntry(rel, FileKind.OTHER)


async def list_entries(
    root: Path, prune: Callable[[str], bool] | None = None
) -> AsyncIterator[WorkspaceEntry]:
    """:func:`walk` in a worker thread, handed over in batches."""
    entries = walk(root, prune)

    def batch() -> list[WorkspaceEntry]:
        out: list[WorkspaceEntry] = []
        for entry in entries:
            out.append(entry)
            if len(out) >= _BATCH:
                break
        return out

    try:
        while True:
            items = await asyncio.to_thread(batch)
            for item in items:
                yield item
            if len(items) < _BATCH:
                return
    finally:
        entries.close()


def _components(path: str) -> list[str]:
    if not isinstance(path, str) or not path or "\x00" in path or path.startswith("/"):
        raise SandboxError(f"not a relative workspace path: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SandboxError(f"not a clean relative workspace path: {path!r}")
    return parts


def open_confined(root: Path, path: str) -> int:
    """A read-only fd of the regular file ``root/path``; no component may be a symlink."""
    parts = _components(path)
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise SandboxError(f"the workspace cannot be opened: {exc.strerror}") from None
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise SandboxError(f"{path}: {exc.strerror} (symlinks are not followed)") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise SandboxError(f"{path}: not a regular file")
    os.set_blocking(file_fd, True)
    return file_fd


async def read_chunks(root: Path, path: str, chunk_size: int) -> AsyncIterator[bytes]:
    """The file's bytes in chunks of at most ``chunk_size``; one thread hop per chunk."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    fd = -1

    def first() -> tuple[int, bytes]:
        handle = open_confined(root, path)
        try:
            return handle, os.read(handle, chunk_size)
        except BaseException:
            os.close(handle)
            raise

    try:
        fd, chunk = await asyncio.to_thread(first)
        while chunk:
            yield chunk
            if len(chunk) < chunk_size:  # a short read of a regular file: its end
                return
            chunk = await asyncio.to_thread(os.read, fd, chunk_size)
    finally:
        if fd >= 0:
            os.close(fd)
