"""The workspace in the VM as the artifact collector reads it: a walk by ``find`` and
reads that never go through a symlink."""

from __future__ import annotations

import logging
import shlex
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath
from typing import Any

from ...swallow import swallowed
from ..base import FileKind, SandboxError, WorkspaceEntry
from .common import WORK_DIR, redacted
from .scripts import LIST_DIR, parse_listing

log = logging.getLogger(__name__)

_KINDS = {"f": FileKind.FILE, "d": FileKind.DIR, "l": FileKind.SYMLINK}


class WorkspaceFiles:
    """The Protocol's ``list_files`` and ``read_file`` for :class:`~.sandbox.E2BSandbox`."""

    def __init__(self, sdk: Any) -> None:
        self.sdk = sdk
        self._checked_dirs: set[str] = set()  # workspace dirs known not to be links

    async def list_files(
        self, *, prune: Callable[[str], bool] | None = None
    ) -> AsyncIterator[WorkspaceEntry]:
        """Walk ``/home/user/work`` in the VM, directory by directory, sorted, never
        following symlinks. ``find`` in the VM reports each entry as stored: a link's own
        text (envd would give its resolved target), dangling links and fifos (which the
        SDK's ``files.list`` drops), names that are not UTF-8 (as the local walk does)."""
        pending = [""]
        while pending:
            rel = pending.pop(0)
            try:
                result = await self.sdk.commands.run(
                    f"bash -c {shlex.quote(LIST_DIR)} list {shlex.quote(rel or '.')}",
                    cwd=WORK_DIR,
                    timeout=600,
                )
                listed = parse_listing(result.stdout or "")
            except Exception as exc:
                raise SandboxError(
                    f"cannot list {rel or 'the workspace'}: {redacted(exc)}"
                ) from None
            subdirs = []
            for kind, size, raw_name, raw_target in sorted(listed, key=lambda e: e[2]):
                name = raw_name.decode("utf-8", "surrogateescape")
                path = f"{rel}/{name}" if rel else name
                entry_kind = _KINDS.get(kind, FileKind.OTHER)
                if entry_kind == FileKind.SYMLINK:
                    target = raw_target.decode("utf-8", "surrogateescape")
                    yield WorkspaceEntry(path, FileKind.SYMLINK, target=target)
                elif entry_kind == FileKind.DIR:
                    yield WorkspaceEntry(path, FileKind.DIR)
                    if prune is None or not prune(path):
                        subdirs.append(path)
                else:
                    yield WorkspaceEntry(path, entry_kind, size=size if kind == "f" else 0)
            pending[0:0] = subdirs

    async def read_file(self, path: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """A regular file of the workspace, streamed; never through a symlink (E2B's read
        would follow one). Each directory on the way is checked once per sandbox."""
        parts = PurePosixPath(path).parts
        if not path or path.startswith("/") or ".." in parts or "\x00" in path:
            raise SandboxError(f"not a workspace path: {path!r}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        current = WORK_DIR
        for index, part in enumerate(parts):
            current = f"{current}/{part}"
            last = index == len(parts) - 1
            if not last and current in self._checked_dirs:
                continue
            try:
                info = await self.sdk.files.get_info(current)
            except Exception as exc:
                raise SandboxError(f"cannot read {path}: {redacted(exc)}") from None
            if info.symlink_target:
                raise SandboxError(f"{path} goes through a symlink")
            if not last:
                self._checked_dirs.add(current)
        try:
            stream = await self.sdk.files.read(current, format="stream")
        except Exception as exc:
            raise SandboxError(f"cannot read {path}: {redacted(exc)}") from None
        buffer = bytearray()
        try:
            async for piece in stream:
                buffer += piece
                while len(buffer) >= chunk_size:
                    yield bytes(buffer[:chunk_size])
                    del buffer[:chunk_size]
            if buffer:
                yield bytes(buffer)
        finally:  # also when the reader stops early: the SDK has no GC safety net
            close = getattr(stream, "aclose", None)
            if close is not None:
                with swallowed(log, "closing an E2B file stream", describe=redacted):
                    await close()
