"""What the runner keeps for one build, and what it hands to the work after the steps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .buildlog import BuildLog
from .sandbox.base import Sandbox
from .spec import BuildSpec
from .store.repository import BuildRow, Store

#: A stop reason, not a status: a graceful stop leaves the build running in its sandbox
#: for the next server (resume.py), which ends it.
DETACHED = "detached"


@dataclass
class AfterSteps:
    """What a :class:`BuildHook` sees once the steps have ended (successfully or not).

    Hooks run in registration order, before the sandbox is destroyed and before the
    terminal status, so whatever they emit (``artifacts_ready``, ``preview_ready``)
    precedes the terminal status entry. A hook that wants the sandbox to outlive the
    build (a preview) calls :meth:`keep_sandbox` and becomes responsible for it.
    """

    build_id: str
    owner: str
    spec: BuildSpec
    sandbox: Sandbox
    build_log: BuildLog
    store: Store
    succeeded: bool
    sandbox_kept: bool = False
    #: Set when the build is asked to stop (cancel, timeout, server shutdown): a hook that
    #: waits for something (a preview getting ready) gives up when it is set.
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def keep_sandbox(self) -> None:
        self.sandbox_kept = True


class BuildHook(Protocol):
    """Work that follows the steps of a build (artifact collection, previews)."""

    async def after_steps(self, ctx: AfterSteps) -> None: ...


@dataclass
class BuildJob:
    """What the runner keeps in memory for one build it runs."""

    row: BuildRow
    spec: BuildSpec
    workspace: Path | None
    build_log: BuildLog
    task: asyncio.Task[None] | None = None
    sandbox: Sandbox | None = None
    stop_reason: str | None = None  # cancelled | timed_out | interrupted | DETACHED
    stop_message: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    step_started: bool = False
    sandbox_kept: bool = False
    last_exit_code: int | None = None
    #: True while its steps run: a graceful stop may then leave it to the next server.
    detachable: bool = False
    #: The ``sandbox_state`` last written: unchanged state is not written again.
    recorded_state: Any = None
    #: Stops the build at its timeout (cancelled when the build ends).
    deadline: asyncio.TimerHandle | None = None

    def check_stopped(self, exit_code: int | None = None) -> None:
        """Raise :class:`BuildStopped` once a stop was asked for (keeping the exit code
        of the step that was running, if any)."""
        if self.stop_reason is not None:
            if exit_code is not None:
                self.last_exit_code = exit_code
            raise BuildStopped(self.stop_message or self.stop_reason)


class BuildStopped(Exception):
    """Raised inside a build task when cancel, timeout or shutdown stops it."""


__all__ = ["DETACHED", "AfterSteps", "BuildHook", "BuildJob", "BuildStopped"]
