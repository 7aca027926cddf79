"""The local process sandbox: a directory per build and a process group per step.

Layout: ``{workspace_root}/{build_id}/`` is the sandbox dir (the steps' ``HOME``) and its
``work/`` the steps' working directory, holding a copy of the workspace and the inline files.

Isolation is by convention, not by the kernel: steps run as the server's user. What this
module guarantees is hygiene:

- a step sees only an allow-list of the server's environment variables (never its secrets);
- the workspace copy never brings in what a symlink outside the workspace points at, and the
  inline files cannot be written outside ``work/``;
- nothing a step starts survives it: each step runs in its own session / process group; when
  its main process exits (or on timeout / cancel) the group is killed, as are descendants
  that left the group (``setsid``) and processes carrying the build's environment marker;
- a server that died (``kill -9``) leaves a :meth:`LocalSandbox.state` behind from which a
  new server process kills the leftovers (:meth:`LocalSandboxProvider.reap`), guarded
  against pid reuse.

Escape hatch not covered: a process that both clears its environment and double-forks out
of the group before it is seen can survive (only cgroups would close that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from . import workspace_fs
from .base import OutputSink, SandboxError, ServiceFailed, StepResult, WorkspaceEntry
from .lines import LineSplitter

log = logging.getLogger(__name__)

DEFAULT_ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ")

#: Server variables that never reach a step, even when listed in ``env_passthrough``.
_SECRET_ENV = re.compile(r"^(JUPYTER_TOKEN|JPY_.*|JUPYTERHUB_.*|AGENTBUILD_.*|E2B_API_KEY)$")
#: The marker every step process inherits; :meth:`LocalSandboxProvider.reap` looks for it.
MARKER_ENV = "AGENTBUILD_BUILD_ID"

_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 65536
#: After a step's processes are gone, a pipe still open (held by a process we could not
#: kill) is waited on for at most this long between reads...
_DRAIN_IDLE = 1.0
#: ...and read for at most this many more bytes (legitimate leftovers are what fits in
#: the pipe buffer, at most ``/proc/sys/fs/pipe-max-size``, 1 MiB by default).
_DRAIN_MAX_BYTES = 4 * 1024 * 1024
#: How long to wait for processes to vanish after SIGKILL before giving up (never hang).
_KILL_WAIT = 5.0
_POLL = 0.02


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# --------------------------------------------------------------------------- processes


@dataclass
class _Group:
    """One process group we started: a step or a service."""

    proc: subprocess.Popen[bytes]
    create_time: float  # the leader's, from psutil (0.0 if it could not be read)
    kind: str  # "step" or "service"
    escaped: dict[int, float] = field(default_factory=dict)  # pid -> create_time
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    gone_event: asyncio.Event = field(default_factory=asyncio.Event)
    exit_task: asyncio.Task[int] | None = None

    @property
    def pgid(self) -> int:
        return self.proc.pid


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        members.append(pid)
    return members


def _alive(pid: int, create_time: float) -> bool:
    """Is the process that had ``create_time`` still running (and not a zombie)?"""
    try:
        proc = psutil.Process(pid)
        same: bool = abs(proc.create_time() - create_time) < 0.01
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_pid(pid: int, create_time: float, sig: int) -> None:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) < 0.01:
            proc.send_signal(sig)
    except psutil.Error:
        pass


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _escapees(
    pgid: int,
    *,
    build_id: str,
    directory: str,
    since: float,
    exclude_pgids: Iterable[int] = (),
) -> dict[int, float]:
    """Processes that belong to group ``pgid``'s step but are no longer in the group.

    Descendants of the group's live members that are in another group (``setsid``,
    ``setpgid``), and processes created since ``since`` (the leader's psutil create
    time: same clock) that carry this build's :data:`MARKER_ENV` (this catches the
    ``setsid`` children of a leader that already exited).
    """
    excluded = {pgid, *exclude_pgids}
    me = os.getpid()
    children: dict[int, list[int]] = {}
    created: dict[int, float] = {}
    roots: list[int] = []
    others: list[int] = []
    for proc in psutil.process_iter(["ppid", "create_time"]):
        pid = proc.pid
        ppid = proc.info["ppid"]
        ctime = proc.info["create_time"]
        if ppid is None or ctime is None:
            continue
        children.setdefault(ppid, []).append(pid)
        created[pid] = ctime
        with contextlib.suppress(OSError):
            group = os.getpgid(pid)
            if group == pgid:
                roots.append(pid)
            elif group in excluded:
                others.append(pid)
    found: dict[int, float] = {}
    for pid in _descendants(roots, children):
        with contextlib.suppress(OSError):
            if os.getpgid(pid) not in excluded:
                found[pid] = created[pid]
    # the sandbox's other groups (a service, a concurrent step) and their offspring
    protected = set(others) | _descendants(others, children)
    for pid, ctime in created.items():
        if ctime < since - 0.05 or pid in found or pid in protected or pid == me:
            continue
        try:
            proc = psutil.Process(pid)
            if not _marked(proc, build_id, directory) or os.getpgid(pid) in excluded:
                continue
        except (OSError, psutil.Error):
            continue
        found[pid] = ctime
    return found


def _marked(proc: psutil.Process, build_id: str, directory: str) -> bool:
    """Does ``proc`` carry this sandbox's marker: the build id in its environment, and
    ``HOME`` = the sandbox dir or a cwd inside it (two servers could share an id)?"""
    try:
        env = proc.environ()
        if env.get(MARKER_ENV) != build_id:
            return False
        if env.get("HOME") == directory:
            return True
        return _inside(os.path.normpath(proc.cwd()), directory)
    except (OSError, psutil.Error):
        return False


def _descendants(roots: Iterable[int], children: Mapping[int, list[int]]) -> set[int]:
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


# --------------------------------------------------------------------------- pipes


class _Drain:
    """Switches the pipe readers to bounded reading once the processes are gone."""

    def __init__(self) -> None:
        self.active = False
        self._waiters: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        self.active = True
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    @contextlib.contextmanager
    def watch(self, fut: asyncio.Future[None]) -> Iterator[None]:
        self._waiters.add(fut)
        try:
            yield
        finally:
            self._waiters.discard(fut)


class _PipeReader:
    """Non-blocking reads of one pipe: wait for data only when there is none."""

    def __init__(self, fd: int, drain: _Drain) -> None:
        self.fd = fd
        self.drain = drain
        self.after_drain = 0
        os.set_blocking(fd, False)

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = os.read(self.fd, _CHUNK)
            except BlockingIOError:
                pass
            except OSError:
                return b""
            else:
                if self.drain.active:
                    self.after_drain += len(data)
                    if self.after_drain > _DRAIN_MAX_BYTES:
                        log.warning("sandbox: output still coming after the step ended; cut")
                        return b""
                return data
            fut: asyncio.Future[None] = loop.create_future()

            def ready(fut: asyncio.Future[None] = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(self.fd, ready)
            try:
                with self.drain.watch(fut):
                    if not self.drain.active:
                        await fut  # woken by data, EOF, or the drain starting
                    else:
                        try:
                            await asyncio.wait_for(fut, _DRAIN_IDLE)
                        except TimeoutError:
                            log.warning("sandbox: a pipe stayed open after the step ended")
                            return b""
            finally:
                loop.remove_reader(self.fd)


async def _wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit (pidfd where available, else polling) and reap it."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll
        while True:
            code = proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
    try:
        while proc.poll() is None:
            fut: asyncio.Future[None] = loop.create_future()

            def ready(fut: asyncio.Future[None] = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(pidfd, ready)
            try:
                await fut
            finally:
                loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return proc.returncode


# --------------------------------------------------------------------------- files


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
                if _inside(resolved, root):
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
        if full == root or not _inside(full, root):
            raise SandboxError(f"inline file path {rel!r} must stay inside the workspace")
        parent = os.path.dirname(full)
        try:
            os.makedirs(parent, exist_ok=True)
            if not _inside(os.path.realpath(parent), root):  # paranoia: a link raced in
                raise SandboxError(f"inline file path {rel!r} must stay inside the workspace")
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8", "surrogatepass"))
        except OSError as exc:
            raise SandboxError(f"cannot write inline file {rel!r}: {exc.strerror}") from None


def _check_env(env: Mapping[str, str], what: str) -> None:
    for key, value in env.items():
        if (
            not isinstance(key, str)
            or not key
            or "=" in key
            or "\x00" in key
            or not isinstance(value, str)
            or "\x00" in value
        ):
            raise SandboxError(f"{what}: invalid environment variable {key!r}")


# --------------------------------------------------------------------------- sandbox


class LocalSandbox:
    """One build's directory and the process groups of its steps (and its service)."""

    def __init__(
        self,
        *,
        build_id: str,
        directory: Path,
        base_env: Mapping[str, str],
        bash: str,
        max_line_bytes: int,
        kill_grace: float,
    ) -> None:
        self.id = f"local-{build_id}"
        self.build_id = build_id
        self.dir = directory
        self.work = directory / "work"
        self._base_env = dict(base_env)
        self._bash = bash
        self._max_line_bytes = max_line_bytes
        self._kill_grace = kill_grace
        self._groups: dict[int, _Group] = {}
        self._service: _Group | None = None
        self._service_tasks: list[asyncio.Task[None]] = []
        self._service_drain = _Drain()
        self._service_url: str | None = None
        self._closed = False

    # ---- Protocol

    def state(self) -> dict[str, Any]:
        """``{"pgids": [[pgid, leader_create_time], ...], "dir", "host", "build_id"}``.

        Already useful right after creation: :meth:`LocalSandboxProvider.reap` also finds
        leftovers by the build's environment marker, so storing the state once is enough;
        storing it again while a step runs adds the pid-reuse-guarded process groups.
        """
        return {
            "pgids": [[g.pgid, g.create_time] for g in self._groups.values()],
            "dir": str(self.dir),
            "host": socket.gethostname(),
            "build_id": self.build_id,
        }

    async def run_step(
        self,
        command: str,
        *,
        step: int,
        timeout: float | None,  # noqa: ASYNC109 (the Protocol's signature)
        on_output: OutputSink,
        env: Mapping[str, str] | None = None,
    ) -> StepResult:
        """Run ``command`` with bash in ``work/``; see the module docstring for the rules.

        ``on_output`` is awaited for every batch and never called concurrently (stdout
        and stderr take turns), so a slow consumer blocks the step's output.
        """
        group = self._spawn(command, env, kind="step")
        assert group.proc.stdout is not None and group.proc.stderr is not None
        drain = _Drain()
        lock = asyncio.Lock()
        pumps = [
            asyncio.create_task(self._pump(pipe, drain, name, on_output, lock))
            for pipe, name in ((group.proc.stdout, "stdout"), (group.proc.stderr, "stderr"))
        ]
        exit_task = group.exit_task
        assert exit_task is not None
        cancel_task = asyncio.create_task(group.cancel_event.wait())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        reason = "exit"
        error: BaseException | None = None
        try:
            waiting: set[asyncio.Future[Any]] = {exit_task, cancel_task, *pumps}
            while True:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if exit_task in done:
                    reason = "exit"
                    break
                if cancel_task in done:
                    reason = "cancel"
                    break
                if not done:
                    reason = "timeout"
                    break
                failed = [p for p in done if p in pumps and p.exception() is not None]
                if failed:
                    reason = "error"
                    error = failed[0].exception()
                    break
                waiting -= done  # a stream reached EOF: keep waiting for the exit
            await self._terminate(group)
            drain.start()
            results = await asyncio.gather(*pumps, return_exceptions=True)
        except BaseException:
            # The caller was cancelled (e.g. server shutdown): kill hard, right now.
            self._kill_now(group)
            drain.start()
            for pump in pumps:
                pump.cancel()
            self._forget(group, keep=True)
            raise
        finally:
            cancel_task.cancel()
        if error is None:
            error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            raise error
        code = group.proc.returncode
        if code is None:  # could not be reaped (should not happen): report it as killed
            code = -signal.SIGKILL
        return StepResult(
            exit_code=code, timed_out=reason == "timeout", cancelled=reason == "cancel"
        )

    async def cancel(self) -> None:
        """Stop the running step(s); return once their processes are gone.

        The in-flight :meth:`run_step` then returns ``StepResult(cancelled=True)`` after
        passing on what was left in the pipes. Safe to call from inside ``on_output``.
        Not sticky: a step started afterwards runs normally.
        """
        steps = [g for g in self._groups.values() if g.kind == "step"]
        for group in steps:
            group.cancel_event.set()
        for group in steps:
            await group.gone_event.wait()

    async def close(self) -> None:
        """Cancel running steps, stop the service, kill anything still alive."""
        self._closed = True
        await self.stop_service()
        await self.cancel()
        for group in list(self._groups.values()):
            await self._terminate(group)

    async def destroy(self) -> None:
        """:meth:`close`, then remove the sandbox directory."""
        await self.close()
        await asyncio.to_thread(_rmtree, self.dir)

    # ---- workspace files (artifact collection; see workspace_fs)

    def list_files(
        self, *, prune: Callable[[str], bool] | None = None
    ) -> AsyncIterator[WorkspaceEntry]:
        """Walk ``work/`` without following symlinks (see :meth:`Sandbox.list_files`)."""
        return workspace_fs.list_entries(self.work, prune)

    def read_file(self, path: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Read a regular file of ``work/`` in chunks, never through a symlink."""
        return workspace_fs.read_chunks(self.work, path, chunk_size)

    # ---- the port primitive (lessons.md rule 7)

    async def start_service(
        self,
        command: str,
        *,
        port: int | None = None,
        ready_timeout: float = 60.0,
        ready_path: str | None = None,
        on_output: OutputSink | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Start a long-running background process (e.g. a preview web server) and wait
        until it accepts TCP connections on ``127.0.0.1:port`` and, with ``ready_path``,
        until an HTTP GET of that path answers with a status below 500; return the proxy
        target, ``"http://127.0.0.1:{port}"`` (the proxy connects to nothing else).

        ``port=None`` picks a free port. Either way ``$PORT`` is set for the command. The
        service runs in its own process group (listed by :meth:`state`) and lives until
        :meth:`stop_service`, :meth:`close` or :meth:`destroy`. Its output goes to
        ``on_output`` (with back-pressure) or is discarded; a service that listens on more
        than the loopback interface gets a warning line there. Raises :class:`SandboxError`
        if the port is already taken, :class:`ServiceFailed` if the process exits or is
        not ready in time.
        """
        if self._service is not None and self._service.proc.poll() is None:
            raise SandboxError("a service is already running in this sandbox")
        await self.stop_service()
        if port is None:
            port = _free_port()
        elif await _port_open(port):
            raise SandboxError(f"port {port} is already in use on this host")
        extra = {"PORT": str(port), **(env or {})}
        group = self._spawn(command, extra, kind="service")
        assert group.proc.stdout is not None and group.proc.stderr is not None
        sink = on_output or _discard
        lock = asyncio.Lock()
        drain = _Drain()
        self._service = group
        self._service_tasks = [
            asyncio.create_task(self._pump(pipe, drain, name, sink, lock))
            for pipe, name in ((group.proc.stdout, "stdout"), (group.proc.stderr, "stderr"))
        ]
        self._service_drain = drain
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        exit_task = group.exit_task
        assert exit_task is not None
        answer: str = "no connection"
        while True:
            if await _port_open(port):
                if ready_path is None:
                    break
                status = await _http_status(port, ready_path, max(0.1, deadline - loop.time()))
                if status is not None and status < 500:
                    break
                answer = f"HTTP {status}" if status is not None else "no HTTP answer"
            if exit_task.done():
                await self.stop_service()
                raise ServiceFailed(
                    f"the service exited with status {group.proc.returncode} before "
                    f"it was ready on port {port}",
                    exit_code=group.proc.returncode,
                )
            if loop.time() >= deadline:
                await self.stop_service()
                what = f"answer GET {ready_path} below 500 ({answer})" if ready_path else "listen"
                raise ServiceFailed(
                    f"the service did not {what} on port {port} within {ready_timeout:g}s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exit_task), 0.1)
        exposed = await asyncio.to_thread(_non_loopback_listeners, port)
        if exposed:
            await sink(
                "stderr",
                [
                    f"agentbuild: warning: the preview listens on {', '.join(exposed)}, "
                    "reachable from the network; bind 127.0.0.1 (the proxy only uses it)"
                ],
                False,
            )
        self._service_url = f"http://127.0.0.1:{port}"
        return self._service_url

    def service_running(self) -> bool:
        """Is the process started by :meth:`start_service` still running?"""
        return self._service is not None and self._service.proc.poll() is None

    async def wait_service(self) -> int | None:
        """Wait until the service's main process exits; its exit status (negative: the
        signal that killed it), or None when no service was started."""
        group = self._service
        if group is None or group.exit_task is None:
            return None
        return await asyncio.shield(group.exit_task)

    async def stop_service(self) -> None:
        """Stop the service started by :meth:`start_service` (no-op if none)."""
        group, tasks = self._service, self._service_tasks
        self._service, self._service_tasks, self._service_url = None, [], None
        if group is None:
            return
        await self._terminate(group)
        self._service_drain.start()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- internals

    def _spawn(self, command: str, env: Mapping[str, str] | None, *, kind: str) -> _Group:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if not isinstance(command, str) or "\x00" in command:
            raise SandboxError("the command must be text without NUL")
        full_env = dict(self._base_env)
        if env:
            _check_env(env, "step env")
            full_env.update(env)
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
        group = _Group(proc=proc, create_time=create_time, kind=kind)
        group.exit_task = asyncio.create_task(_wait_exit(proc))
        self._groups[group.pgid] = group
        return group

    async def _pump(
        self,
        pipe: IO[bytes],
        drain: _Drain,
        stream: str,
        on_output: OutputSink,
        lock: asyncio.Lock,
    ) -> None:
        """Read one pipe to its end (or the drain bound), passing batches to ``on_output``
        one at a time; the pipe is closed when this ends, however it ends."""
        try:
            reader = _PipeReader(pipe.fileno(), drain)
            splitter = LineSplitter(self._max_line_bytes)
            while True:
                data = await reader.read()
                if not data:
                    break
                for lines, continued in splitter.feed(data):
                    async with lock:
                        await on_output(stream, lines, continued)
            for lines, continued in splitter.finish():
                async with lock:
                    await on_output(stream, lines, continued)
        finally:
            pipe.close()

    def _other_pgids(self, group: _Group) -> list[int]:
        return [pgid for pgid in self._groups if pgid != group.pgid]

    async def _terminate(self, group: _Group) -> None:
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
                        _escapees,
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
                        log.warning("sandbox %s: process group %s did not die", self.id, group.pgid)
                        return
                    sig, deadline = signal.SIGKILL, loop.time() + _KILL_WAIT
                self._send(group, sig)
                await self._wait_gone(group, deadline - loop.time())
        finally:
            self._forget(group, keep=not self._is_gone(group))

    def _send(self, group: _Group, sig: int) -> None:
        if group.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                group.proc.send_signal(sig)
        _killpg(group.pgid, sig)
        for pid, ctime in group.escaped.items():
            _signal_pid(pid, ctime, sig)

    def _kill_now(self, group: _Group) -> None:
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

    def _is_gone(self, group: _Group) -> bool:
        if group.proc.poll() is None:
            return False
        if _group_members(group.pgid):
            return False
        return not any(_alive(pid, ct) for pid, ct in group.escaped.items())

    async def _wait_gone(self, group: _Group, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._is_gone(group):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL)
        return True

    def _forget(self, group: _Group, *, keep: bool = False) -> None:
        """Termination is over: wake :meth:`cancel`; drop the group from :meth:`state`
        unless something of it survived (``keep``: a later close/reap tries again)."""
        if not keep:
            self._groups.pop(group.pgid, None)
        group.gone_event.set()


async def _discard(stream: str, lines: list[str], continued: bool) -> None:
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _port_open(port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=1.0
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _http_status(port: int, path: str, timeout: float) -> int | None:  # noqa: ASYNC109
    """The status of ``GET path`` on ``127.0.0.1:port``, or None (no HTTP answer in time)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: agentbuild-ready-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", "replace")
    writer = None
    try:
        async with asyncio.timeout(min(timeout, 10.0)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


def _non_loopback_listeners(port: int) -> list[str]:
    """Addresses other than loopback on which something listens on TCP ``port``."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    found = []
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        ip = conn.laddr.ip
        if ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1"):
            continue
        found.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    return sorted(set(found))


def _rmtree(path: Path) -> None:
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


# --------------------------------------------------------------------------- provider


class LocalSandboxProvider:
    """Creates :class:`LocalSandbox` directories under ``workspace_root``."""

    name = "local"

    def __init__(
        self,
        workspace_root: Path,
        *,
        max_line_bytes: int = 1_048_576,
        kill_grace: float = 5.0,
        env_passthrough: Sequence[str] = DEFAULT_ENV_PASSTHROUGH,
    ) -> None:
        if max_line_bytes < 4:
            raise ValueError("max_line_bytes must be at least 4")
        # absolute and resolved: the dir is compared with processes' cwd and HOME
        self.workspace_root = Path(workspace_root).expanduser().resolve()
        self.max_line_bytes = max_line_bytes
        self.kill_grace = kill_grace
        self.env_passthrough = tuple(env_passthrough)
        self._bash = shutil.which("bash") or "/bin/bash"

    def base_env(self, build_id: str, sandbox_dir: Path) -> dict[str, str]:
        """The environment every step starts from (before the build's own ``env``)."""
        env = {
            key: os.environ[key]
            for key in self.env_passthrough
            if key in os.environ and not _SECRET_ENV.match(key)
        }
        env["HOME"] = str(sandbox_dir)
        env[MARKER_ENV] = build_id
        env["CI"] = "true"
        return env

    async def create(
        self,
        build_id: str,
        *,
        workspace: Path | None,
        files: Mapping[str, str],
        env: Mapping[str, str],
    ) -> LocalSandbox:
        if not isinstance(build_id, str) or not _BUILD_ID.match(build_id):
            raise SandboxError("invalid build id for a local sandbox")
        _check_env(env, "build env")
        directory = self.workspace_root / build_id
        job = asyncio.ensure_future(
            asyncio.to_thread(self._prepare, directory, workspace, dict(files))
        )
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            # the copy goes on in its thread: remove what it made once it is done
            job.add_done_callback(
                lambda _: threading.Thread(target=_rmtree, args=(directory,), daemon=True).start()
            )
            raise
        base = self.base_env(build_id, directory)
        base.update(env)
        return LocalSandbox(
            build_id=build_id,
            directory=directory,
            base_env=base,
            bash=self._bash,
            max_line_bytes=self.max_line_bytes,
            kill_grace=self.kill_grace,
        )

    def _prepare(self, directory: Path, workspace: Path | None, files: dict[str, str]) -> None:
        try:
            self.workspace_root.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700)
        except FileExistsError:
            raise SandboxError(
                f"the sandbox directory for {directory.name} already exists"
            ) from None
        except OSError as exc:
            raise SandboxError(f"cannot create the sandbox directory: {exc.strerror}") from None
        try:
            work = directory / "work"
            work.mkdir()
            if workspace is not None:
                try:
                    skipped = _copy_workspace(workspace, work, [str(self.workspace_root)])
                except OSError as exc:
                    where = (
                        os.path.relpath(exc.filename, os.path.realpath(workspace))
                        if isinstance(exc.filename, str)
                        else ""
                    )
                    raise SandboxError(
                        f"cannot copy the workspace ({where}): {exc.strerror}"
                    ) from None
                if skipped:
                    log.info(
                        "sandbox %s: skipped %d symlink(s)/special file(s) pointing outside "
                        "the workspace: %s",
                        directory.name,
                        len(skipped),
                        ", ".join(skipped[:10]),
                    )
            _write_files(work, files)
            if workspace is not None:
                _copy_dir_stats(workspace, work)
        except BaseException:
            _rmtree(directory)
            raise

    async def reap(self, sandbox_id: str, state: Mapping[str, Any]) -> None:
        """Kill what a dead server left of this sandbox; never raises for dead processes.

        Only on the host that recorded ``state``. For each recorded process group: if its
        leader still has the recorded create time, every member is killed; otherwise (the
        leader is gone, its pid maybe reused) only members whose cwd is inside the
        recorded sandbox dir. Also killed: processes carrying this build's environment
        marker whose ``HOME`` is the sandbox dir or whose cwd is inside it (``setsid``
        children, jobs of groups that were never recorded).
        """
        try:
            await asyncio.to_thread(_reap, sandbox_id, dict(state))
        except Exception:  # reaping is best effort: log, never fail start-up
            log.exception("sandbox %s: reaping failed", sandbox_id)

    async def remove(self, sandbox_id: str, state: Mapping[str, Any]) -> None:
        """:meth:`reap`, then delete the sandbox dir recorded in ``state`` (for a build
        deleted after the server that ran it died). Only a dir directly under this
        provider's ``workspace_root`` is removed."""
        await self.reap(sandbox_id, state)
        directory = state.get("dir")
        if state.get("host") != socket.gethostname() or not isinstance(directory, str):
            return
        path = Path(directory)
        if path.parent == self.workspace_root and _BUILD_ID.match(path.name):
            await asyncio.to_thread(_rmtree, path)


def _reap(sandbox_id: str, state: dict[str, Any]) -> None:
    if state.get("host") != socket.gethostname():
        return
    directory = state.get("dir")
    if not isinstance(directory, str) or not os.path.isabs(directory):
        return
    directory = os.path.normpath(directory)
    build_id = state.get("build_id")
    if not isinstance(build_id, str):
        build_id = sandbox_id.removeprefix("local-")
    me = os.getpid()
    victims: dict[int, psutil.Process] = {}

    def cwd_inside(proc: psutil.Process) -> bool:
        try:
            return _inside(os.path.normpath(proc.cwd()), directory)
        except (psutil.Error, OSError):
            return False

    pids = psutil.pids()
    recorded = state.get("pgids")
    for item in recorded if isinstance(recorded, list) else ():
        try:
            pgid, ctime = int(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError):
            continue
        if pgid <= 1:
            continue
        trusted = _alive(pgid, ctime)
        for pid in pids:
            try:
                if pid == me or os.getpgid(pid) != pgid:
                    continue
                proc = psutil.Process(pid)
            except (OSError, psutil.Error):
                continue
            if trusted or cwd_inside(proc):
                victims[pid] = proc
    for proc in psutil.process_iter():
        if proc.pid != me and proc.pid not in victims and _marked(proc, build_id, directory):
            victims[proc.pid] = proc
    for proc in victims.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()  # psutil checks the create time: a reused pid is not hit
    deadline = time.monotonic() + _KILL_WAIT
    alive = list(victims.values())
    while alive:
        # zombies count as dead: their parent (maybe gone too) has yet to reap them
        alive = [p for p in alive if p.is_running() and _status(p) != psutil.STATUS_ZOMBIE]
        if alive and time.monotonic() > deadline:
            log.warning("sandbox %s: %d process(es) survived SIGKILL", sandbox_id, len(alive))
            return
        if alive:
            time.sleep(_POLL)


def _status(proc: psutil.Process) -> str | None:
    try:
        status: str = proc.status()
        return status
    except psutil.Error:
        return None


__all__ = [
    "DEFAULT_ENV_PASSTHROUGH",
    "MARKER_ENV",
    "LocalSandbox",
    "LocalSandboxProvider",
]
