"""The live steps of one isolated local sandbox: each in a pid namespace of its own.

A :class:`.groups.StepGroups` as :class:`.groups.ProcessGroups` is, so :class:`.local.LocalSandbox` runs
either. What this module guarantees: nothing a step starts survives it. The step runs
under bubblewrap with :data:`.isolation.INIT` as the namespace's pid 1; when the step's
shell ends, pid 1 exits and the kernel kills every process left in the namespace
(background jobs, ``setsid`` and double-forked daemons alike), so no process scan or
environment marker is needed. Stopping a step keeps the local sandbox's rules: SIGTERM to
every process of the step, the kill grace, then SIGKILL (of pid 1: the whole namespace).

Exit codes are the step shell's own (negative: the signal that killed it), read from the
status pipe pid 1 writes, since bubblewrap reports ``128+n`` for a signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from .base import SandboxError
from .environment import command_environment
from .groups import StepGroups
from .isolation import IsolationPlan, bwrap_command
from .processes import LiveGroup, start_leader

log = logging.getLogger(__name__)


@dataclass
class _NamespaceGroup(LiveGroup):
    """A step under bubblewrap: ``proc`` is bwrap; ``status_fd`` the status pipe's read end."""

    status_fd: int = -1
    killed: bool = False
    status: int | None = None


class NamespaceGroups(StepGroups):
    """The namespaced steps one sandbox started and has not seen end yet."""

    def __init__(
        self,
        *,
        sandbox_id: str,
        directory: Path,
        base_env: Mapping[str, str],
        bash: str,
        kill_grace: float,
        bwrap: str,
        perl: str,
        plan: IsolationPlan,
        network: bool,
    ) -> None:
        super().__init__(sandbox_id=sandbox_id, kill_grace=kill_grace)
        self.dir = directory
        self._base_env = dict(base_env)
        self._bash = bash
        self._bwrap = bwrap
        self._perl = perl
        self._plan = plan
        self._network = network

    def spawn(self, command: str, env: Mapping[str, str] | None, *, kind: str) -> LiveGroup:
        """Start ``command`` with bash in ``work/`` inside a new set of namespaces; bwrap
        leads the step's process group."""
        self._check_open()
        full_env = command_environment(command, self._base_env, env)
        script = self._plan.limits.shell_prefix() + "set -eo pipefail\n" + command
        read, write = os.pipe()
        os.set_blocking(read, False)
        argv = bwrap_command(
            self._bwrap,
            self._perl,
            self._plan,
            self.dir,
            write,
            [self._bash, "--noprofile", "--norc", "-c", script],
            network=self._network,
        )
        try:
            proc, create_time = start_leader(argv, full_env, pass_fds=(write,))
        except SandboxError:
            os.close(read)
            raise
        finally:
            os.close(write)
        group = _NamespaceGroup(proc=proc, create_time=create_time, kind=kind, status_fd=read)
        return self._listed(group)

    def exit_code(self, group: LiveGroup) -> int | None:
        """The step shell's status: its exit code, or minus the signal that killed it.

        When pid 1 could not report it (it was SIGKILLed with the namespace), the signal
        this sandbox sent is the cause: ``-SIGKILL``; otherwise bubblewrap's code."""
        assert isinstance(group, _NamespaceGroup)
        if group.proc.returncode is None:
            return None
        _collect(group)
        status = group.status
        if status is not None and status >= 0:
            if os.WIFSIGNALED(status):
                return -os.WTERMSIG(status)
            if os.WIFEXITED(status):
                return os.WEXITSTATUS(status)
        if group.killed:
            return -signal.SIGKILL
        code = group.proc.returncode
        return -(code - 128) if 128 < code < 128 + 65 else code

    def kill(self, group: LiveGroup) -> None:
        """Synchronous SIGKILL of the whole namespace (for cancellation paths)."""
        self._send(group, signal.SIGKILL)
        with contextlib.suppress(OSError):
            group.proc.poll()

    def unlist(self, group: LiveGroup, *, keep: bool = False) -> None:
        """As for any group, once the step's status is read (it is on a pipe)."""
        assert isinstance(group, _NamespaceGroup)
        if group.proc.returncode is not None:
            _collect(group)
        super().unlist(group, keep=keep)

    def _is_gone(self, group: LiveGroup) -> bool:
        """The namespace dies with bwrap's child, pid 1: nothing can outlive it."""
        return group.proc.poll() is not None

    def _send(self, group: LiveGroup, sig: int) -> None:
        """To the namespace's pid 1 (it passes SIGTERM on to all; SIGKILL ends the
        namespace). Before pid 1 exists, SIGKILL goes to bwrap, which then takes it along
        (``--die-with-parent``)."""
        assert isinstance(group, _NamespaceGroup)
        if group.proc.returncode is not None:
            return
        if sig == signal.SIGKILL:
            group.killed = True
        init = _init_pid(group.proc.pid)
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, sig)
        elif sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                group.proc.kill()


def _collect(group: _NamespaceGroup) -> None:
    """Read the status pid 1 wrote (if any) and close the pipe; once, after the exit."""
    if group.status_fd < 0:
        return
    with contextlib.suppress(OSError):
        text = os.read(group.status_fd, 64).decode(errors="replace").strip()
        if text.lstrip("-").isdigit():
            group.status = int(text)
    os.close(group.status_fd)
    group.status_fd = -1


def _init_pid(bwrap_pid: int) -> int | None:
    """bwrap's child: the namespace's pid 1, as the host sees it."""
    try:
        with open(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children") as f:
            kids = f.read().split()
    except OSError:
        try:
            kids = [str(c.pid) for c in psutil.Process(bwrap_pid).children()]
        except psutil.Error:
            return None
    return int(kids[0]) if kids else None


__all__ = ["NamespaceGroups"]
