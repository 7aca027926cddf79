"""Filling a sandbox dir (the workspace copy, the inline files) and removing it again.

Nothing here lets a symlink or an inline path reach outside the workspace or ``work/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from .base import SandboxError
from .paths import inside

log = logging.getLogger(__name__)


def fill_work(
    work: Path,
    workspace: Path | None,
    files: Mapping[str, str],
    *,
    skip_dirs: Iterable[str] = (),
    label: str = "",
) -> None:
    """Fill an empty ``work`` dir the one way every sandbox does: the workspace copy
    (links out of it skipped, and logged), the inline files, then the workspace's own
    directory modes and times. A copy failure is a :class:`SandboxError` naming the
    path inside the workspace."""
    if workspace is not None:
        try:
            skipped = _copy_workspace(workspace, work, skip_dirs)
        except OSError as exc:
            where = (
                os.path.relpath(exc.filename, os.path.realpath(workspace))
                if isinstance(exc.filename, str)
                else ""
            )
            raise SandboxError(f"cannot copy the workspace ({where}): {exc.strerror}") from None
        if skipped:
            log.info(
                "sandbox %s: skipped %d symlink(s)/special file(s) pointing outside the "
                "workspace: %s",
                label,
                len(skipped),
                ", ".join(skipped[:10]),
            )
    _write_files(work, files)
    if workspace is not None:
        _copy_dir_stats(workspace, work)


def _copy_workspace(src: Path, dst: Path, skip_dirs: Iterable[str] = ()) -> list[str]:
    """Copy ``src`` into the existing dir ``dst``; return what was skipped.

    Like ``shutil.copytree(symlinks=True)`` except that:

    - a symlink whose target (fully resolved) lies inside ``src`` is recreated as a
      *relative* link to the same place in the copy (so it never points back into the
      original workspace);
    - a symlink that resolves outside ``src`` (``/etc/passwd``, ``..``) is **skipped**:
      copying it, even as a link, would let a step or the artifact collector read or write
      outside the sandbox through it;
    - only regular files, directories and symlinks are copied (no FIFOs, sockets, devices);
    - files are opened with ``O_NOFOLLOW``, so swapping one for a symlink mid-copy fails;
    - directories in ``skip_dirs`` (real paths) are left out: the sandboxes' own root may
      lie inside the workspace (workspace ``.`` = the home directory), and copying it
      into itself would never end.
    """
    root = os.path.realpath(src)
    skip = {os.path.realpath(d) for d in skip_dirs}
    if not os.path.isdir(root):
        raise SandboxError("the workspace is not a directory")
    skipped: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as entries:
            items = list(entries)
        for entry in items:
            name = os.path.join(rel, entry.name)
            target = os.path.join(dst, name)
            if entry.is_symlink():
                resolved = os.path.realpath(entry.path)
                if inside(resolved, root):
                    here = os.path.join(root, rel)
                    os.symlink(os.path.relpath(resolved, here), target)
                else:
                    skipped.append(name)
            elif entry.is_dir(follow_symlinks=False):
                if os.path.join(root, name) in skip:
                    skipped.append(name)
                    continue
                os.mkdir(target)
                stack.append(name)
            elif entry.is_file(follow_symlinks=False):
                _copy_file(entry.path, target)
            else:
                skipped.append(name)
    return skipped


def _copy_dir_stats(src: Path, dst: Path) -> None:
    """Give the copied directories their modes and times, deepest first (done last, so
    a read-only directory could still be filled)."""
    root = os.path.realpath(src)
    found = []
    for here, dirs, _files in os.walk(dst):
        for name in dirs:
            if not os.path.islink(os.path.join(here, name)):
                found.append(os.path.relpath(os.path.join(here, name), dst))
    found.sort(key=lambda p: p.count(os.sep), reverse=True)
    for rel in found:
        source = os.path.join(root, rel)
        with contextlib.suppress(OSError):
            if os.path.isdir(source) and not os.path.islink(source):
                shutil.copystat(source, os.path.join(dst, rel), follow_symlinks=False)


def _copy_file(src: str, dst: str) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                offset = 0
                while offset < info.st_size:
                    sent = os.sendfile(out, fd, offset, min(info.st_size - offset, 1 << 30))
                    if sent == 0:
                        break
                    offset += sent
            except (AttributeError, OSError):  # no file-to-file sendfile here: plain copy
                os.lseek(fd, 0, os.SEEK_SET)
                os.lseek(out, 0, os.SEEK_SET)
                os.ftruncate(out, 0)
                while chunk := os.read(fd, 1 << 20):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
            os.fchmod(out, stat.S_IMODE(info.st_mode))
            os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _write_files(work: Path, files: Mapping[str, str]) -> None:
    """Write inline files under ``work``; refuse any path that would land outside it."""
    root = os.path.realpath(work)
    for rel, text in files.items():
        if not isinstance(rel, str) or not isinstance(text, str):
            raise SandboxError("inline files must map a path to text")
        parts = rel.split("/")
        if (
            not rel
            or rel.startswith("/")
            or "\x00" in rel
            or ".." in parts
            or all(p in ("", ".") for p in parts)
        ):
            raise SandboxError(f"inline file path {rel!r} must stay inside the workspace")
        full = os.path.realpath(os.path.join(root, rel))
        if full == root or not inside(full, root):
            raise SandboxError(f"inline file path {rel!r} must stay inside the workspace")
        parent = os.path.dirname(full)
        try:
            os.makedirs(parent, exist_ok=True)
            if not inside(os.path.realpath(parent), root):  # paranoia: a link raced in
                raise SandboxError(f"inline file path {rel!r} must stay inside the workspace")
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8", "surrogatepass"))
        except OSError as exc:
            raise SandboxError(f"cannot write inline file {rel!r}: {exc.strerror}") from None


def delete_tree(path: Path) -> None:
    """Remove a sandbox dir, including directories a step made read-only."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for here, dirs, _files in os.walk(path):
            for name in dirs:  # top-down: made accessible before os.walk enters them
                full = os.path.join(here, name)
                if not os.path.islink(full):
                    with contextlib.suppress(OSError):
                        os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        log.warning("sandbox: could not remove all of %s", path)
