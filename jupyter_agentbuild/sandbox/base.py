"""The sandbox Protocol: the only layer that knows about processes or E2B.

The runner drives a build through these calls and nothing else, so every
provider (local processes, E2B) behaves the same from the runner's point of view.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: ``await on_output(stream, lines, continued)``: ``stream`` is "stdout" or "stderr";
#: ``lines`` are complete lines without their newline, decoded as UTF-8 with
#: replacement; ``continued`` is true when the *last* line is a piece of a longer
#: line (split at ``max_line_bytes``) whose rest follows in the next call.
#: The sandbox awaits it: a slow consumer slows the reader (back-pressure).
OutputSink = Callable[[str, list[str], bool], Awaitable[None]]


@dataclass(frozen=True)
class StepResult:
    """How one step ended: ``exit_code`` (negative: killed by that signal)."""

    exit_code: int
    timed_out: bool = False
    cancelled: bool = False


class SandboxError(Exception):
    """The sandbox could not be created or used (not a failing step)."""


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
    ) -> Sandbox:
        """Make a sandbox holding a copy of ``workspace`` (already confined by the caller)
        plus the inline ``files``; ``env`` is added to every step's environment."""
        ...

    async def reap(self, sandbox_id: str, state: Mapping[str, Any]) -> None:
        """Kill what a dead server left running for this sandbox (from :meth:`Sandbox.state`)."""
        ...
