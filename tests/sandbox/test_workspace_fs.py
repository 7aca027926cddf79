"""Listing and reading a local workspace for artifacts: confined, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jupyter_agentbuild.sandbox.base import SandboxError, WorkspaceEntry
from jupyter_agentbuild.sandbox.workspace_fs import list_entries, read_chunks, walk


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "dist" / "sub").mkdir(parents=True)
    (root / "dist" / "a.txt").write_text("a")
    (root / "dist" / "sub" / "b.txt").write_text("bb")
    (root / "skip").mkdir()
    (root / "skip" / "c").write_text("c")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    os.symlink(tmp_path / "outside", root / "dist" / "linkdir")
    os.symlink("/etc/passwd", root / "dist" / "passwd")
    os.mkfifo(root / "dist" / "fifo")
    return root


def test_walk_reports_links_and_never_enters_them(workspace: Path) -> None:
    entries = list(walk(workspace, prune=lambda d: d == "skip"))
    assert entries == [
        WorkspaceEntry("dist", "dir"),
        WorkspaceEntry("dist/a.txt", "file", 1),
        WorkspaceEntry("dist/fifo", "other"),
        WorkspaceEntry("dist/linkdir", "symlink", 0, str(workspace.parent / "outside")),
        WorkspaceEntry("dist/passwd", "symlink", 0, "/etc/passwd"),
        WorkspaceEntry("dist/sub", "dir"),
        WorkspaceEntry("dist/sub/b.txt", "file", 2),
        WorkspaceEntry("skip", "dir"),  # reported, not entered
    ]


async def _read(root: Path, path: str, chunk: int = 1 << 20) -> bytes:
    return b"".join([c async for c in read_chunks(root, path, chunk)])


async def test_reads_in_chunks_and_lists_asynchronously(workspace: Path) -> None:
    (workspace / "dist" / "big").write_bytes(bytes(range(256)) * 1000)
    pieces = [c async for c in read_chunks(workspace, "dist/big", 1000)]
    assert b"".join(pieces) == bytes(range(256)) * 1000
    assert max(len(p) for p in pieces) == 1000
    assert await _read(workspace, "dist/sub/b.txt") == b"bb"
    listed = [e.path async for e in list_entries(workspace)]
    assert listed == [e.path for e in walk(workspace)]


@pytest.mark.parametrize(
    "path",
    [
        "dist/passwd",  # a link to a file outside
        "dist/linkdir/secret",  # through a link to a directory outside
        "../outside/secret",
        "dist/../../outside/secret",
        "/etc/passwd",
        "dist//a.txt",
        "./dist/a.txt",
        "dist/fifo",  # not a regular file (and opening it never blocks)
        "dist",
        "missing",
        "",
    ],
)
async def test_reading_is_confined(workspace: Path, path: str) -> None:
    with pytest.raises(SandboxError):
        await _read(workspace, path)
