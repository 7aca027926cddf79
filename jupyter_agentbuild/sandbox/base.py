"""The sandbox Protocol: the only layer that knows about processes or E2B.

The runner drives a build through these calls and nothing else, so every
provider (local processes, E2B) behaves the same from the runner's point of view.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

#: ``await on_output(stream, lines, continued)``: ``stream`` is a
#: :class:`~jupyter_agentbuild.vocabulary.Stream`; ``lines`` are complete lines without
#: their newline, decoded as UTF-8 with replacement; ``continued`` is true when the *last* line is a piece of a longer
#: line (split at ``max_line_bytes``) whose rest follows in the next call.
#: The sandbox awaits it: a slow consumer slows the reader (back-pressure).
OutputSink = Callable[[str, list[str], bool], Awaitable[None]]


async def discard_output(stream: str, lines: list[str], continued: bool) -> None:
    """The :data:`OutputSink` for output nobody reads (a preview process without one)."""
    return None


@dataclass(frozen=True)
class StepResult:
    """How one step ended: ``exit_code`` (negative: killed by that signal)."""

    exit_code: int
    timed_out: bool = False
    cancelled: bool = False


class SandboxError(Exception):
    """The sandbox could not be created or used (not a failing step)."""


class PreviewFailed(SandboxError):
    """The preview process (:meth:`Sandbox.start_preview_process`) exited or was not ready in time.

    ``exit_code`` is the process's exit status when it exited, else None."""

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class FileKind(StrEnum):
    """What a workspace entry is (:attr:`WorkspaceEntry.kind`)."""

    FILE = "file"  # a regular file
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"  # fifo, socket, device


@dataclass(frozen=True)
class WorkspaceEntry:
    """One entry of a sandbox's workspace, as :meth:`Sandbox.list_files` reports it.

    ``path`` is relative to the workspace root, ``/``-separated, without ``.`` or ``..``
    segments. ``kind`` is a :class:`FileKind`. ``size`` is in bytes for files, else 0;
    ``target`` is a symlink's text as stored (never followed).
    """

    path: str
    kind: FileKind
    size: int = 0
    target: str | None = None


class Sandbox(Protocol):
    """One build's isolated place to run steps."""

    #: Provider-specific id, written to ``Build.sandbox_id`` once the sandbox exists.
    id: str

    def state(self) -> dict[str, Any]:
        """JSON-able facts a later process needs to reap leftovers (e.g. process groups)."""
        ...

    async def run_step(
        self,
        command: str,
        *,
        step: int,
        timeout: float | None,  # noqa: ASYNC109
        on_output: OutputSink,
        env: Mapping[str, str] | None = None,
    ) -> StepResult:
        """Run ``command`` in bash (``set -eo pipefail``) in the workspace; return when it and
        everything it started are gone and all output has been passed to ``on_output``."""
        ...

    async def cancel(self) -> None:
        """Stop the running step (SIGTERM, then SIGKILL after a grace period)."""
        ...

    async def close(self) -> None:
        """Kill anything still running; the files stay (artifacts are collected later)."""
        ...

    async def destroy(self) -> None:
        """Kill everything and remove the sandbox's files."""
        ...

    # ---- the port primitive: the only way a preview reaches the proxy

    async def start_preview_process(
        self,
        command: str,
        *,
        port: int | None = None,
        ready_timeout: float = 60.0,
        ready_path: str | None = None,
        on_output: OutputSink | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Start ``command`` as a long-running background process (a preview web server)
        with ``$PORT`` set (``port``, or a free one), wait until the port accepts
        connections and, with ``ready_path``, until an HTTP GET of that path answers
        below 500, all within ``ready_timeout``; return the proxy target (the only address
        the proxy will ever connect to): ``http://127.0.0.1:{port}`` for local sandboxes,
        an https URL for cloud ones. Output goes to ``on_output`` (with back-pressure).
        Raises :class:`PreviewFailed` when the process exits or is not ready in time."""
        ...

    def preview_headers(self) -> dict[str, str]:
        """Headers the proxy must send to the preview process's target (a cloud sandbox's traffic
        token, so its public URL answers nobody else); secret, never shown or logged."""
        ...

    async def stop_preview_process(self) -> None:
        """Stop the preview process and everything it started (no-op if none runs)."""
        ...

    def preview_running(self) -> bool:
        """Is the service started by :meth:`start_preview_process` still running?"""
        ...

    async def wait_preview_process(self) -> int | None:
        """Wait until the preview process exits; its exit status (None when none was started)."""
        ...

    # ---- workspace files (artifact collection)

    def list_files(
        self, *, prune: Callable[[str], bool] | None = None
    ) -> AsyncIterator[WorkspaceEntry]:
        """Walk the workspace (the steps' working directory) without following symlinks:
        every entry, a directory before its contents, names in sorted order. A directory
        for which ``prune(path)`` is true is reported but not entered."""
        ...

    def read_file(self, path: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The bytes of the regular file at ``path`` (relative to the workspace), in chunks
        of at most ``chunk_size``. Raises :class:`SandboxError` for a path that is absolute,
        has ``..``, goes through a symlink, or is not a regular file: never anything
        outside the workspace."""
        ...


@dataclass(frozen=True)
class ProviderStatus:
    """What a provider can do on this server, as found at start-up (the info endpoint
    shows it; builds for an unavailable provider are refused before anything runs)."""

    available: bool
    #: Are builds kept from the server's files, processes and secrets?
    isolated: bool
    #: Why not available, or what kind of isolation (for people, not programs).
    detail: str = ""
    #: Can it run a build with ``"network": false``?
    network_off: bool = False


class CheckedProvider(Protocol):
    """A provider that finds out at start-up whether it works here (optional)."""

    async def check(self) -> ProviderStatus: ...


class SandboxProvider(Protocol):
    """Creates sandboxes and cleans up after processes that died."""

    name: str

    async def create(
        self,
        build_id: str,
        *,
        workspace: Path | None,
        files: Mapping[str, str],
        env: Mapping[str, str],
        network: bool = True,
    ) -> Sandbox:
        """Make a sandbox holding a copy of ``workspace`` (already confined by the caller)
        plus the inline ``files``; ``env`` is added to every step's environment.
        ``network=False``: no network at all (a provider that cannot do it raises
        :class:`SandboxError`; :meth:`CheckedProvider.check` says whether it can)."""
        ...

    async def reap(self, sandbox_id: str, state: Mapping[str, Any]) -> bool:
        """Kill what a dead server left running for this sandbox (from :meth:`Sandbox.state`).

        False when that cannot be done from this process (a local sandbox on another
        host): the caller keeps ``state`` recorded, for a server there to reap it."""
        ...

    async def remove(self, sandbox_id: str, state: Mapping[str, Any]) -> bool:
        """:meth:`reap`, then delete the sandbox's files (its build is gone for good)."""
        ...
