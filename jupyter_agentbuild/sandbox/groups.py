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
from collections.abc import Mapping
from pathlib import Path

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
    start_leader,
)

log = logging.getLogger(__name__)


class StepGroups:
    """How a local sandbox starts its steps and makes sure they end: plain process groups
    (:class:`ProcessGroups`), or one set of Linux namespaces per step (:mod:`.namespaces`).

    What both share is here: the list of live groups (what :meth:`pgids` records for a
    later reaper), and the way a group is stopped (SIGTERM, the grace, SIGKILL; never
    hangs). Subclasses say how a group starts, is signalled and counts as gone."""

    def __init__(self, *, sandbox_id: str, kill_grace: float) -> None:
        self.sandbox_id = sandbox_id
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
        """Start ``command`` with bash in ``work/`` as the leader of a new group."""
        raise NotImplementedError

    def exit_code(self, group: LiveGroup) -> int | None:
        """The step's status (negative: the signal that killed it); None while it runs."""
        raise NotImplementedError

    def kill(self, group: LiveGroup) -> None:
        """Synchronous SIGKILL of everything in ``group`` (for cancellation paths)."""
        raise NotImplementedError

    def _send(self, group: LiveGroup, sig: int) -> None:
        raise NotImplementedError

    def _is_gone(self, group: LiveGroup) -> bool:
        raise NotImplementedError

    async def _find_escapees(self, group: LiveGroup) -> None:
        """Note the processes of ``group`` that left it (none where they cannot)."""

    def _listed(self, group: LiveGroup) -> LiveGroup:
        """Follow a group just started: its exit is awaited, it is listed."""
        group.exit_task = asyncio.create_task(wait_exit(group.proc))
        self._groups[group.pgid] = group
        return group

    def _check_open(self) -> None:
        if self.closed:
            raise SandboxError("the sandbox is closed")

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
                await self._find_escapees(group)
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

    def unlist(self, group: LiveGroup, *, keep: bool = False) -> None:
        """Stopping is over: wake whoever waits for it (a cancel); drop the group from
        :meth:`pgids` unless something of it survived (``keep``: a later close/reap tries
        again)."""
        if not keep:
            self._groups.pop(group.pgid, None)
        group.gone_event.set()

    async def _wait_gone(self, group: LiveGroup, seconds: float) -> bool:
        """Poll :meth:`_is_gone` for up to ``seconds``; whether the group went."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._is_gone(group):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return True


class ProcessGroups(StepGroups):
    """The process groups one sandbox started and has not seen end yet: the kill logic
    (signals, escapees, pid reuse) for plain processes lives here."""

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
        super().__init__(sandbox_id=sandbox_id, kill_grace=kill_grace)
        self.build_id = build_id
        self.dir = directory
        self.work = directory / "work"
        self._base_env = dict(base_env)
        self._bash = bash

    def spawn(self, command: str, env: Mapping[str, str] | None, *, kind: str) -> LiveGroup:
        self._check_open()
        argv = [self._bash, "--noprofile", "--norc", "-c", "set -eo pipefail\n" + command]
        full_env = command_environment(command, self._base_env, env)
        proc, create_time = start_leader(argv, full_env, cwd=self.work)
        return self._listed(LiveGroup(proc=proc, create_time=create_time, kind=kind))

    def exit_code(self, group: LiveGroup) -> int | None:
        """The leader's status (negative: the signal that killed it); None while it runs."""
        return group.proc.returncode

    async def _find_escapees(self, group: LiveGroup) -> None:
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


__all__ = ["ProcessGroups", "StepGroups"]
