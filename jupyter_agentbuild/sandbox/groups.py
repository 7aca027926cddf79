"""The live process groups of one local sandbox: starting them and making sure they end.

What this module guarantees: nothing a step starts survives it. Each step (and the preview process)
runs in its own session / process group; when its main process exits (or on timeout /
cancel) the group is killed, as are descendants that left the group (``setsid``) and
processes carrying the build's environment marker. A group something of which survived stays
listed (:meth:`ProcessGroups.pgids`), so a later close, or the reaping of a dead server's
leftovers, tries again.

Escape hatch not covered: a process that both clears its environment and double-forks out
of the group before it is seen can survive (only cgroups would close that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import psutil

from .base import SandboxError
from .environment import command_environment
from .pipes import wait_exit
from .processes import (
    KILL_WAIT,
    POLL_INTERVAL,
    LiveGroup,
    escapees,
    group_members,
    is_alive,
    signal_group,
    signal_pid,
)

log = logging.getLogger(__name__)


class StepGroups(Protocol):
    """How a local sandbox starts its steps and makes sure they end (plain process
    groups here; one set of Linux namespaces per step in :mod:`.namespaces`)."""

    closed: bool

    def pgids(self) -> list[list[float]]: ...
    def listed(self, kind: str | None = None) -> list[LiveGroup]: ...
    def spawn(self, command: str, env: Mapping[str, str] | None, *, kind: str) -> LiveGroup: ...
    def exit_code(self, group: LiveGroup) -> int | None: ...
    async def stop(self, group: LiveGroup) -> None: ...
    def kill(self, group: LiveGroup) -> None: ...
    def unlist(self, group: LiveGroup, *, keep: bool = False) -> None: ...


class ProcessGroups:
    """The process groups one sandbox started and has not seen end yet.

    Kept apart from the sandbox so that the kill logic (signals, escapees, pid reuse) lives
    in one place and the sandbox only decides *when* a group must go.
    """

    def __init__(
        self,
        *,
        sandbox_id: str,
        build_id: str,
        directory: Path,
        base_env: Mapping[str, str],
        bash: str,
        kill_grace: float,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.build_id = build_id
        self.dir = directory
        self.work = directory / "work"
        self._base_env = dict(base_env)
        self._bash = bash
        self._kill_grace = kill_grace
        self._groups: dict[int, LiveGroup] = {}
        #: Set once the sandbox closes: no group may start afterwards.
        self.closed = False

    def pgids(self) -> list[list[float]]:
        """``[[pgid, leader_create_time], ...]``: what a new server needs to reap them."""
        return [[g.pgid, g.create_time] for g in self._groups.values()]

    def listed(self, kind: str | None = None) -> list[LiveGroup]:
        """The groups still listed (a copy), only those of ``kind`` if given."""
        return [g for g in self._groups.values() if kind is None or g.kind == kind]

    def spawn(self, command: str, env: Mapping[str, str] | None, *, kind: str) -> LiveGroup:
        """Start ``command`` with bash in ``work/`` as the leader of a new process group."""
        if self.closed:
            raise SandboxError("the sandbox is closed")
        full_env = command_environment(command, self._base_env, env)
        try:
            proc = subprocess.Popen(
                [self._bash, "--noprofile", "--norc", "-c", "set -eo pipefail\n" + command],
                cwd=self.work,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the step: {exc.strerror or exc}") from None
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:  # exited and reaped by someone else already
            create_time = 0.0
        group = LiveGroup(proc=proc, create_time=create_time, kind=kind)
        group.exit_task = asyncio.create_task(wait_exit(proc))
        self._groups[group.pgid] = group
        return group

    def exit_code(self, group: LiveGroup) -> int | None:
        """The leader's status (negative: the signal that killed it); None while it runs."""
        return group.proc.returncode

    async def stop(self, group: LiveGroup) -> None:
        """Make sure nothing of ``group`` is left: SIGTERM, grace, SIGKILL; never hangs.

        Used for every way a step ends: after a normal exit it only finds leftovers
        (background jobs, ``setsid`` children) and usually returns at once.
        """
        if group.gone_event.is_set() and self._is_gone(group):
            return
        loop = asyncio.get_running_loop()
        sig = signal.SIGTERM
        deadline = loop.time() + self._kill_grace
        try:
            while True:
                # Look again every round: a child may leave the group (setsid) between a
                # scan and the signal; the step is over only when a scan finds nothing.
                group.escaped.update(
                    await asyncio.to_thread(
                        escapees,
                        group.pgid,
                        build_id=self.build_id,
                        directory=str(self.dir),
                        since=group.create_time,
                        exclude_pgids=self._other_pgids(group),
                    )
                )
                if self._is_gone(group):
                    return
                if loop.time() >= deadline:
                    if sig == signal.SIGKILL:
                        log.warning(
                            "sandbox %s: process group %s did not die", self.sandbox_id, group.pgid
                        )
                        return
                    sig, deadline = signal.SIGKILL, loop.time() + KILL_WAIT
                self._send(group, sig)
                await self._wait_gone(group, deadline - loop.time())
        finally:
            self.unlist(group, keep=not self._is_gone(group))

    def kill(self, group: LiveGroup) -> None:
        """Synchronous SIGKILL of everything in ``group`` (for cancellation paths)."""
        if group.proc.returncode is None and group.create_time:
            with contextlib.suppress(psutil.Error):
                leader = psutil.Process(group.pgid)
                for child in leader.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
        self._send(group, signal.SIGKILL)
        with contextlib.suppress(OSError):
            group.proc.poll()

    def unlist(self, group: LiveGroup, *, keep: bool = False) -> None:
        """Termination is over: wake whoever waits for it (a cancel); drop the group from
        :meth:`pgids` unless something of it survived (``keep``: a later close/reap tries
        again)."""
        if not keep:
            self._groups.pop(group.pgid, None)
        group.gone_event.set()

    def _other_pgids(self, group: LiveGroup) -> list[int]:
        """The sandbox's other groups: their members are not ``group``'s escapees."""
        return [pgid for pgid in self._groups if pgid != group.pgid]

    def _send(self, group: LiveGroup, sig: int) -> None:
        """Signal the leader, the group and the escapees (those still the same process)."""
        if group.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                group.proc.send_signal(sig)
        signal_group(group.pgid, sig)
        for pid, ctime in group.escaped.items():
            signal_pid(pid, ctime, sig)

    def _is_gone(self, group: LiveGroup) -> bool:
        """Leader reaped, no member left in the group, no escapee alive."""
        if group.proc.poll() is None:
            return False
        if group_members(group.pgid):
            return False
        return not any(is_alive(pid, ct) for pid, ct in group.escaped.items())

    async def _wait_gone(self, group: LiveGroup, seconds: float) -> bool:
        """Poll :meth:`_is_gone` for up to ``seconds``; whether the group went."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._is_gone(group):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return True


__all__ = ["ProcessGroups", "StepGroups"]
