"""A fake E2B envd: the SDK's own Connect server stubs over real HTTP, real local processes.

The E2B SDK in debug mode (``AsyncSandbox.create(debug=True, sandbox_url=url)``) makes no API
call and talks to envd directly, so serving envd's wire protocol here lets tests drive the
real SDK end to end: Connect RPCs (``process.Process``, ``filesystem.Filesystem``) through the
generated ``*ASGIApplication`` classes, plus envd's plain HTTP routes (``/files``, ``/health``).

It behaves like the real envd (``e2b-dev/infra``, packages/envd) where a test can tell:

- **The VM.** Every command runs in one mount namespace (a holder process made at start)
  where ``/home`` and ``/tmp`` are bind mounts of ``<root>/home`` and ``<root>/tmp``: a
  command names ``/home/user/work`` and gets it, and files and processes persist between
  commands. The rest of the filesystem is this host's, as the rest of a VM is its
  template's. There is no sandbox root: ``..`` is allowed (``/..`` is ``/``).
- **Processes.** As envd: ``/bin/sh -c 'echo 100 > /proc/$$/oom_score_adj && exec ionice
  ... nice ... "$@"' -- cmd args``, setuid to the user, with only PATH, HOME, USER,
  LOGNAME, the ``/init`` envs and the request's envs. No process group of its own: a
  command's children share envd's group, a kill signals the pid only, and children
  survive it (reparented). Output comes in chunks of at most 32 KiB, is dropped while
  nobody follows the command, the pipe readers stop on a kill, and otherwise the end
  event comes only once both pipes closed.
- **Files.** Permissions as Go prints them (``-rw-r--r--``, ``Lrwxrwxrwx``); a symlink is
  reported with its fully resolved absolute target and its target's type and mode (a
  dangling one has no type); removing a missing path succeeds; uploads are written by
  root and then chowned to the user.

Remaining simplifications are commented where they live.

One module over the usual size bound on purpose: the two services (processes and files) and
the HTTP routes share the VM's state (its mount namespace holder, the user, the running
commands), and a reader checking its fidelity against envd reads it side by side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import grp
import json
import os
import posixpath
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import threading
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
)
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from email.message import Message as MimeHeaders
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psutil
import uvicorn
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.filesystem import filesystem_connect, filesystem_pb
from e2b.envd.process import process_connect, process_pb
from protobuf import Oneof
from protobuf.wkt import Timestamp

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The user a command runs as when the request names none. The real envd's default is root
#: until ``/init`` sets one; E2B's ``/init`` (which debug mode skips) sets ``user``, so the
#: fake starts as if it had run.
DEFAULT_USER = "user"
#: envd reads a command's pipes in chunks of at most 32 KiB.
CHUNK = 32 * 1024
# envd answers a stream's Keepalive-Ping-Interval header with keepalive events.
DEFAULT_KEEPALIVE = 50.0
#: envd's PATH for commands (its own, not the caller's).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The VM's own directories (bind mounts of ``<root>/...``); the rest is this host's.
VM_DIRS = ("home", "tmp")

_SIGNALS = {
    process_pb.Signal.SIGKILL: signal.SIGKILL,
    process_pb.Signal.SIGTERM: signal.SIGTERM,
}

#: Run in the VM's mount namespace as root: go to the cwd, drop to the user (envd sets
#: the credential and the directory on its exec), then envd's own wrapper. The ionice
#: and nice values are envd's defaults as far as a test can tell (it only checks they run).
_LAUNCH = (
    'cd "$1" || exit 126; u=$2; g=$3; shift 3; '
    'exec setpriv --reuid="$u" --regid="$g" --init-groups -- /bin/sh -c '
    '\'echo 100 > /proc/$$/oom_score_adj && exec ionice -c 2 -n 4 nice -n 0 "$@"\' -- "$@"'
)


class PathEscapeError(ValueError):
    """A path envd would refuse (empty)."""


@dataclass
class ProcessRecord:
    """What the fake was asked to run, kept after the process ends so tests can assert."""

    pid: int
    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str
    host_cwd: Path
    user: str
    tag: str | None
    exit_code: int | None = None
    #: The ``E2b-Sandbox-Id`` the SDK sent (None in debug mode, which sends none).
    sandbox_id: str | None = None


class SandboxRoot:
    """The VM's filesystem as the fake's own RPCs see it: ``/home`` and ``/tmp`` map to
    ``<root>/home`` and ``<root>/tmp`` (what the commands' mount namespace shows), any
    other path to this host's. Symlinks are resolved in the VM's view.

    Simplification: these RPCs act as this (root) process whatever user a request names;
    envd acts as that user (its commands do run as the user, see ``_LAUNCH``)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @staticmethod
    def home(user: str) -> str:
        return "/root" if user == "root" else f"/home/{user}"

    def sandbox_path(self, path: str, user: str) -> str:
        """Normalise like envd: relative to the user's home, ``~`` expanded, ``..`` above
        ``/`` stays at ``/`` (there is no sandbox root)."""
        if not path:
            raise PathEscapeError("path is required")
        if path == "~" or path.startswith("~/"):
            path = self.home(user) + path[1:]
        elif not path.startswith("/"):
            path = f"{self.home(user)}/{path}"
        return posixpath.normpath("/" + path.lstrip("/")).replace("//", "/")

    def to_host(self, spath: str) -> Path:
        """The host path standing for the VM path ``spath`` (already normalised)."""
        top = spath.lstrip("/").split("/", 1)[0]
        if top in VM_DIRS:
            return self.root / spath.lstrip("/")
        return Path(spath)

    def writable(self, spath: str) -> bool:
        """Simplification: the fake writes only in the VM's own directories (as root the
        real envd may write anywhere in its VM; here the rest is this host's)."""
        return spath.lstrip("/").split("/", 1)[0] in VM_DIRS

    def resolve(self, spath: str) -> str:
        """``realpath`` in the VM's view (a missing part ends the resolution there)."""
        done = "/"
        todo = [p for p in spath.split("/") if p]
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                done = posixpath.dirname(done)
                continue
            candidate = posixpath.join(done, part)
            host = self.to_host(candidate)
            if host.is_symlink() and hops < 40:
                hops += 1
                target = os.readlink(host)
                todo = [p for p in target.split("/") if p] + todo
                if target.startswith("/"):
                    done = "/"
                continue
            done = candidate
        return done

    def host_path(self, path: str, user: str, *, follow: bool = True) -> tuple[str, Path]:
        """``(sandbox path, host path)``; with ``follow=False`` the last component may be a
        symlink (stat, remove, rename act on the link itself)."""
        spath = self.sandbox_path(path, user)
        if follow:
            return spath, self.to_host(self.resolve(spath))
        parent, name = posixpath.split(spath)
        if not name:
            return spath, self.to_host("/")
        return spath, self.to_host(posixpath.join(self.resolve(parent), name))

    def check_writable(self, spath: str) -> None:
        if not self.writable(self.resolve(spath)):
            raise PermissionError(
                f"permission denied: {spath} (the fake writes only in /home and /tmp)"
            )


def _user_from_auth(headers: MutableMapping[str, str]) -> str:
    """envd's user selector: ``Authorization: Basic base64("<user>:")``, the SDK omits it
    for the default user."""
    value = headers.get("authorization", "")
    if value.lower().startswith("basic "):
        try:
            name = base64.b64decode(value[6:]).decode().split(":", 1)[0]
        except ValueError:
            name = ""
        if name:
            return name
    return DEFAULT_USER


@contextmanager
def _connect_errors() -> Iterator[None]:
    """OS errors as the Connect codes envd uses, which the SDK maps to its exceptions."""
    try:
        yield
    except PathEscapeError as e:
        raise ConnectError(Code.INVALID_ARGUMENT, str(e)) from e
    except FileNotFoundError as e:
        raise ConnectError(Code.NOT_FOUND, f"no such file or directory: {e.filename}") from e
    except FileExistsError as e:
        raise ConnectError(Code.ALREADY_EXISTS, f"already exists: {e.filename}") from e
    except PermissionError as e:
        raise ConnectError(Code.PERMISSION_DENIED, str(e)) from e
    except (NotADirectoryError, IsADirectoryError) as e:
        raise ConnectError(Code.INVALID_ARGUMENT, str(e)) from e


def _name(lookup: Callable[[int], Any], ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


_GO_TYPES = (
    (stat.S_ISDIR, "d"),
    (stat.S_ISLNK, "L"),
    (stat.S_ISBLK, "D"),
    (stat.S_ISFIFO, "p"),
    (stat.S_ISSOCK, "S"),
)


def go_filemode(mode: int) -> str:
    """``os.FileMode.String()`` of Go (what envd reports): type letters, then ``rwx``."""
    letters = "".join(letter for test, letter in _GO_TYPES if test(mode))
    if stat.S_ISCHR(mode):
        letters += "Dc"
    if mode & stat.S_ISUID:
        letters += "u"
    if mode & stat.S_ISGID:
        letters += "g"
    if mode & stat.S_ISVTX:
        letters += "t"
    return (letters or "-") + stat.filemode(mode)[1:].replace("s", "x").replace("S", "-").replace(
        "t", "x"
    ).replace("T", "-")


def entry_info(spath: str, host: Path, root: SandboxRoot) -> filesystem_pb.EntryInfo:
    """envd's EntryInfo of ``host``: a symlink not followed for its name and permissions,
    but typed by its target, with the target's mode and resolved absolute path (a dangling
    link has no type)."""
    st = os.lstat(host)
    is_link = stat.S_ISLNK(st.st_mode)
    target: os.stat_result | None = st
    resolved = None
    if is_link:
        resolved = root.resolve(spath)
        try:
            target = os.stat(root.to_host(resolved))
        except OSError:
            target = None
    if target is not None and stat.S_ISDIR(target.st_mode):
        ftype = filesystem_pb.FileType.DIRECTORY
    elif target is not None and stat.S_ISREG(target.st_mode):
        ftype = filesystem_pb.FileType.FILE
    else:
        ftype = filesystem_pb.FileType.UNSPECIFIED
    shown = target if target is not None else st
    return filesystem_pb.EntryInfo(
        name=spath.rsplit("/", 1)[-1] or "/",
        type=ftype,
        path=spath,
        size=shown.st_size,
        mode=stat.S_IMODE(shown.st_mode),
        permissions=go_filemode(st.st_mode),
        owner=_name(pwd.getpwuid, st.st_uid),
        group=_name(grp.getgrgid, st.st_gid),
        modified_time=Timestamp.from_nanos(st.st_mtime_ns),
        symlink_target=resolved,
        is_symlink=is_link,
    )


def _event(
    **kw: process_pb.ProcessEvent.StartEvent
    | process_pb.ProcessEvent.DataEvent
    | process_pb.ProcessEvent.EndEvent
    | process_pb.ProcessEvent.KeepAlive,
) -> process_pb.ProcessEvent:
    ((name, value),) = kw.items()
    return process_pb.ProcessEvent(event=Oneof(name, value))  # type: ignore[arg-type]


@dataclass
class _Running:
    """A live process and the streams (Start, Connect) following its events."""

    record: ProcessRecord
    proc: asyncio.subprocess.Process
    subscribers: set[asyncio.Queue[process_pb.ProcessEvent]] = field(default_factory=set)
    pump: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Queue[process_pb.ProcessEvent]:
        queue: asyncio.Queue[process_pb.ProcessEvent] = asyncio.Queue()
        self.subscribers.add(queue)
        return queue

    #: Set by a SIGKILL through SendSignal: envd's pipe readers stop there.
    killed: bool = False

    def publish(self, event: process_pb.ProcessEvent) -> None:
        """To every follower; with none, the event is lost (as in envd)."""
        for queue in self.subscribers:
            queue.put_nowait(event)


class ProcessService(process_connect.Process):
    """``process.Process``: Start, Connect, List, SendSignal, SendInput, CloseStdin (Update and
    StreamInput answer ``unimplemented`` through the Protocol's defaults)."""

    def __init__(self, root: SandboxRoot, records: list[ProcessRecord]) -> None:
        self._root = root
        self._records = records
        self._running: dict[int, _Running] = {}
        #: The process holding the VM's mount namespace (see :class:`FakeEnvd`).
        self.holder_pid = 0
        #: What ``/init`` would have set for every command (the fake has no ``/init`` RPC).
        self.init_envs: dict[str, str] = {}

    def _select(self, selector: process_pb.ProcessSelector | None) -> _Running:
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=pid):
                if pid in self._running:
                    return self._running[pid]
            case Oneof(field="tag", value=tag):
                for running in self._running.values():
                    if running.record.tag == tag:
                        return running
        raise ConnectError(Code.NOT_FOUND, f"process {selector} not found")

    async def start(
        self,
        request: process_pb.StartRequest,
        ctx: RequestContext[process_pb.StartRequest, process_pb.StartResponse],
        /,
    ) -> AsyncIterator[process_pb.StartResponse]:
        if request.pty is not None:
            # Simplification: envd implements PTYs; the provider never asks for one.
            raise ConnectError(Code.UNIMPLEMENTED, "the fake envd has no PTY")
        config = request.process or process_pb.ProcessConfig()
        user = _user_from_auth(ctx.request_headers)
        with _connect_errors():
            cwd = self._root.sandbox_path(
                config.cwd if config.has_field("cwd") else self._root.home(user), user
            )
            host_cwd = self._root.to_host(self._root.resolve(cwd))
            if not host_cwd.is_dir():
                raise ConnectError(Code.INVALID_ARGUMENT, f"cwd {cwd!r} is not a directory")
            try:
                account = pwd.getpwnam(user)
            except KeyError:
                raise ConnectError(Code.PERMISSION_DENIED, f"no such user {user!r}") from None
            envs = dict(config.envs)
            env = {
                "PATH": PATH,
                "HOME": self._root.home(user),
                "USER": user,
                "LOGNAME": user,
                **self.init_envs,
                **envs,
            }
            proc = await asyncio.create_subprocess_exec(
                "nsenter",
                f"--mount=/proc/{self.holder_pid}/ns/mnt",
                "--",
                "/bin/sh",
                "-c",
                _LAUNCH,
                "fake-envd",
                cwd,
                str(account.pw_uid),
                str(account.pw_gid),
                config.cmd,
                *config.args,
                cwd="/",
                env=env,
                stdin=asyncio.subprocess.PIPE if request.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # no session or group of its own: the children share envd's, as in envd
            )
        record = ProcessRecord(
            pid=proc.pid,
            cmd=config.cmd,
            args=list(config.args),
            envs=envs,
            cwd=cwd,
            host_cwd=host_cwd,
            user=user,
            tag=request.tag if request.has_field("tag") else None,
            sandbox_id=ctx.request_headers.get("e2b-sandbox-id"),
        )
        self._records.append(record)
        running = _Running(record, proc)
        self._running[proc.pid] = running
        queue = running.subscribe()  # before the pump runs, so no output is missed
        running.pump = asyncio.create_task(self._pump(running))
        yield process_pb.StartResponse(
            event=_event(start=process_pb.ProcessEvent.StartEvent(pid=proc.pid))
        )
        async with aclosing(self._follow(running, queue, ctx)) as events:
            async for event in events:
                yield process_pb.StartResponse(event=event)

    async def connect(
        self,
        request: process_pb.ConnectRequest,
        ctx: RequestContext[process_pb.ConnectRequest, process_pb.ConnectResponse],
        /,
    ) -> AsyncIterator[process_pb.ConnectResponse]:
        running = self._select(request.process)
        queue = running.subscribe()
        yield process_pb.ConnectResponse(
            event=_event(start=process_pb.ProcessEvent.StartEvent(pid=running.record.pid))
        )
        async with aclosing(self._follow(running, queue, ctx)) as events:
            async for event in events:
                yield process_pb.ConnectResponse(event=event)

    async def _follow(
        self,
        running: _Running,
        queue: asyncio.Queue[process_pb.ProcessEvent],
        ctx: RequestContext[Any, Any],
    ) -> AsyncGenerator[process_pb.ProcessEvent, None]:
        """A subscriber's events until the end event; keepalives in the silences, which is
        also when connectrpc notices a client that went away."""
        try:
            interval = float(ctx.request_headers.get("keepalive-ping-interval", ""))
        except ValueError:
            interval = DEFAULT_KEEPALIVE
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), interval)
                except TimeoutError:
                    yield _event(keepalive=process_pb.ProcessEvent.KeepAlive())
                    continue
                yield event
                if event.event is not None and event.event.field == "end":
                    return
        finally:
            running.subscribers.discard(queue)

    async def _pump(self, running: _Running) -> None:
        """Publish output as it arrives (``read`` returns what is there, at most 32 KiB),
        then the end event once both pipes closed (or the process was SIGKILLed, which
        stops envd's readers), shaped like envd's (a signal: exit code -1, ``exited``
        false)."""

        async def copy(stream: asyncio.StreamReader | None, name: str) -> None:
            assert stream is not None
            while chunk := await stream.read(CHUNK):
                if running.killed:
                    return
                data = process_pb.ProcessEvent.DataEvent(output=Oneof(name, chunk))  # type: ignore[arg-type]
                running.publish(_event(data=data))

        proc = running.proc
        await asyncio.gather(copy(proc.stdout, "stdout"), copy(proc.stderr, "stderr"))
        code = await proc.wait()
        running.record.exit_code = code
        del self._running[proc.pid]
        if code >= 0:
            end = process_pb.ProcessEvent.EndEvent(
                exit_code=code, exited=True, status=f"exit status {code}"
            )
        else:
            status = f"signal: {(signal.strsignal(-code) or str(-code)).lower()}"
            end = process_pb.ProcessEvent.EndEvent(
                exit_code=-1, exited=False, status=status, error=status
            )
        running.publish(_event(end=end))

    async def list(
        self,
        request: process_pb.ListRequest,
        ctx: RequestContext[process_pb.ListRequest, process_pb.ListResponse],
        /,
    ) -> process_pb.ListResponse:
        return process_pb.ListResponse(
            processes=[
                process_pb.ProcessInfo(
                    pid=r.record.pid,
                    tag=r.record.tag,
                    config=process_pb.ProcessConfig(
                        cmd=r.record.cmd, args=r.record.args, envs=r.record.envs, cwd=r.record.cwd
                    ),
                )
                for r in self._running.values()
            ]
        )

    async def send_signal(
        self,
        request: process_pb.SendSignalRequest,
        ctx: RequestContext[process_pb.SendSignalRequest, process_pb.SendSignalResponse],
        /,
    ) -> process_pb.SendSignalResponse:
        running = self._select(request.process)
        if request.signal not in _SIGNALS:
            raise ConnectError(Code.INVALID_ARGUMENT, f"unsupported signal {request.signal}")
        try:
            os.kill(running.record.pid, _SIGNALS[request.signal])  # the pid only, as envd
        except ProcessLookupError:
            pass  # exited between the lookup and the signal: its end event is on its way
        if request.signal == process_pb.Signal.SIGKILL:
            # envd's readers stop: close our read ends, so the end event does not wait
            # for children still holding the pipes (asyncio's wait() would)
            running.killed = True
            transport = running.proc._transport  # type: ignore[attr-defined]
            for fd in (1, 2):
                pipe = transport.get_pipe_transport(fd)
                if pipe is not None:
                    pipe.close()
        return process_pb.SendSignalResponse()

    async def send_input(
        self,
        request: process_pb.SendInputRequest,
        ctx: RequestContext[process_pb.SendInputRequest, process_pb.SendInputResponse],
        /,
    ) -> process_pb.SendInputResponse:
        stdin = self._select(request.process).proc.stdin
        match request.input.input if request.input is not None else None:
            case Oneof(field="stdin", value=data) if stdin is not None:
                stdin.write(data)
                await stdin.drain()
            case _:
                raise ConnectError(Code.FAILED_PRECONDITION, "the process has no stdin")
        return process_pb.SendInputResponse()

    async def close_stdin(
        self,
        request: process_pb.CloseStdinRequest,
        ctx: RequestContext[process_pb.CloseStdinRequest, process_pb.CloseStdinResponse],
        /,
    ) -> process_pb.CloseStdinResponse:
        stdin = self._select(request.process).proc.stdin
        if stdin is None:
            raise ConnectError(Code.FAILED_PRECONDITION, "the process has no stdin")
        stdin.close()
        return process_pb.CloseStdinResponse()

    def kill_sandbox(self, sandbox_id: str) -> None:
        """SIGKILL the commands started for ``sandbox_id`` and their descendants (the
        fake control plane killing that sandbox; callable from any thread)."""
        for record in self._records:
            if record.sandbox_id != sandbox_id or record.exit_code is not None:
                continue
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(record.pid)
                for child in process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
                process.kill()

    def kill_all(self) -> None:
        """SIGKILL everything in the VM (callable from any thread)."""
        vm_processes(self.holder_pid, kill=True)

    async def shutdown(self) -> None:
        """The VM is switched off: SIGKILL every process in its mount namespace (the
        commands and whatever they left, reparented or not), wait for the end events."""
        vm_processes(self.holder_pid, kill=True)
        await asyncio.gather(*(r.pump for r in list(self._running.values()) if r.pump))


def vm_processes(holder_pid: int, *, kill: bool = False) -> list[int]:
    """Pids in the VM's mount namespace (the holder excluded); SIGKILLed with ``kill``."""
    try:
        ns = os.readlink(f"/proc/{holder_pid}/ns/mnt")
    except OSError:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == holder_pid:
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/mnt") != ns:
                continue
            if kill:
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue
        found.append(int(entry.name))
    return found


class FilesystemService(filesystem_connect.Filesystem):
    """``filesystem.Filesystem``: Stat, MakeDir, Move, ListDir, Remove (the watchers answer
    ``unimplemented``: envd implements ``watch_dir``, the provider never uses it)."""

    def __init__(self, root: SandboxRoot) -> None:
        self._root = root

    async def stat(
        self,
        request: filesystem_pb.StatRequest,
        ctx: RequestContext[filesystem_pb.StatRequest, filesystem_pb.StatResponse],
        /,
    ) -> filesystem_pb.StatResponse:
        with _connect_errors():
            spath, host = self._root.host_path(
                request.path, _user_from_auth(ctx.request_headers), follow=False
            )
            return filesystem_pb.StatResponse(entry=entry_info(spath, host, self._root))

    async def make_dir(
        self,
        request: filesystem_pb.MakeDirRequest,
        ctx: RequestContext[filesystem_pb.MakeDirRequest, filesystem_pb.MakeDirResponse],
        /,
    ) -> filesystem_pb.MakeDirResponse:
        with _connect_errors():
            user = _user_from_auth(ctx.request_headers)
            spath, host = self._root.host_path(request.path, user)
            if host.exists() and not host.is_dir():
                raise ConnectError(Code.INVALID_ARGUMENT, f"{spath} exists and is not a directory")
            self._root.check_writable(spath)
            made = _missing_parents(host)
            host.mkdir(parents=True)
            _chown(made, user)
            return filesystem_pb.MakeDirResponse(entry=entry_info(spath, host, self._root))

    async def move(
        self,
        request: filesystem_pb.MoveRequest,
        ctx: RequestContext[filesystem_pb.MoveRequest, filesystem_pb.MoveResponse],
        /,
    ) -> filesystem_pb.MoveResponse:
        user = _user_from_auth(ctx.request_headers)
        with _connect_errors():
            _, source = self._root.host_path(request.source, user, follow=False)
            spath, dest = self._root.host_path(request.destination, user, follow=False)
            self._root.check_writable(self._root.sandbox_path(request.source, user))
            self._root.check_writable(spath)
            made = _missing_parents(dest.parent)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _chown(made, user)
            source.rename(dest)
            return filesystem_pb.MoveResponse(entry=entry_info(spath, dest, self._root))

    async def list_dir(
        self,
        request: filesystem_pb.ListDirRequest,
        ctx: RequestContext[filesystem_pb.ListDirRequest, filesystem_pb.ListDirResponse],
        /,
    ) -> filesystem_pb.ListDirResponse:
        entries: list[filesystem_pb.EntryInfo] = []

        def walk(spath: str, host: Path, depth: int) -> None:
            for child in sorted(os.scandir(host), key=lambda e: e.name):
                child_spath = f"{spath.rstrip('/')}/{child.name}"
                entries.append(entry_info(child_spath, Path(child.path), self._root))
                if depth > 1 and child.is_dir(follow_symlinks=False):
                    walk(child_spath, Path(child.path), depth - 1)

        with _connect_errors():
            spath, host = self._root.host_path(request.path, _user_from_auth(ctx.request_headers))
            if host.exists() and not host.is_dir():
                raise ConnectError(Code.INVALID_ARGUMENT, f"{spath} is not a directory")
            walk(spath, host, max(request.depth, 1))
        return filesystem_pb.ListDirResponse(entries=entries)

    async def remove(
        self,
        request: filesystem_pb.RemoveRequest,
        ctx: RequestContext[filesystem_pb.RemoveRequest, filesystem_pb.RemoveResponse],
        /,
    ) -> filesystem_pb.RemoveResponse:
        with _connect_errors():
            spath, host = self._root.host_path(
                request.path, _user_from_auth(ctx.request_headers), follow=False
            )
            if not host.is_symlink() and not host.exists():
                return filesystem_pb.RemoveResponse()  # envd: a missing path is no error
            self._root.check_writable(spath)
            if host.is_dir() and not host.is_symlink():
                shutil.rmtree(host)
            else:
                host.unlink()
        return filesystem_pb.RemoveResponse()


def _missing_parents(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet (to chown once created)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _chown(paths: list[Path], user: str) -> None:
    """envd writes as root, then gives what it made to the user."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)


class HttpError(Exception):
    """An error answer of envd's HTTP API: ``{"code": status, "message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def _http_errors() -> Iterator[None]:
    try:
        yield
    except PathEscapeError as e:
        raise HttpError(400, str(e)) from e
    except FileNotFoundError as e:
        raise HttpError(404, f"no such file or directory: {e.filename}") from e
    except (IsADirectoryError, NotADirectoryError) as e:
        raise HttpError(400, str(e)) from e
    except PermissionError as e:
        raise HttpError(403, str(e)) from e


async def _send(
    send: Send, status: int, body: bytes = b"", content_type: str = "application/json"
) -> None:
    headers = [(b"content-type", content_type.encode())] if body else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client disconnected")
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body", False):
            return


def parse_multipart(body: bytes, boundary: bytes) -> list[tuple[str | None, bytes]]:
    """``(filename, data)`` of each ``file`` part of a multipart/form-data body, exactly (the
    boundary is chosen not to occur in the data, so splitting on it is sound)."""
    files: list[tuple[str | None, bytes]] = []
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = MimeHeaders()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
        if headers.get_param("name", header="content-disposition") == "file":
            files.append((headers.get_filename(), data.removesuffix(b"\r\n")))
    return files


class FakeEnvdApp:
    """The ASGI app: the two Connect apps by path prefix, ``/files`` and ``/health``."""

    def __init__(self, root: SandboxRoot, records: list[ProcessRecord]) -> None:
        self.root = root
        self.processes = ProcessService(root, records)
        self.started = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Set by a fake control plane: given a request's headers, why it is refused
        #: (a sandbox that is not running, a wrong access token), or None.
        self.gate: Callable[[dict[str, str]], str | None] | None = None
        self._connect_apps: dict[str, Any] = {
            app.path + "/": app
            for app in (
                process_connect.ProcessASGIApplication(self.processes),
                filesystem_connect.FilesystemASGIApplication(FilesystemService(root)),
            )
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self.loop = asyncio.get_running_loop()
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            await self.processes.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if self.gate is not None and path != "/health":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            refused = self.gate(headers)
            if refused is not None:
                body = json.dumps({"code": 502, "message": refused}).encode()
                await _send(send, 502, body)
                return
        for prefix, app in self._connect_apps.items():
            if path.startswith(prefix):
                await app(scope, receive, send)
                return
        try:
            match scope["method"], path:
                case "GET", "/health":
                    await _send(send, 204)
                case "GET", "/files":
                    await self._download(scope, send)
                case "POST", "/files":
                    await self._upload(scope, receive, send)
                case _:
                    raise HttpError(404, f"no route {scope['method']} {path}")
        except HttpError as e:
            await _send(send, e.status, json.dumps({"code": e.status, "message": str(e)}).encode())

    @staticmethod
    def _query(scope: Scope) -> tuple[str | None, str]:
        query = parse_qs(scope["query_string"].decode())
        return query.get("path", [None])[0], query.get("username", [DEFAULT_USER])[0]

    async def _download(self, scope: Scope, send: Send) -> None:
        """``GET /files?path=&username=``: the raw bytes, gzipped if the client asks.

        Simplification: read by this (root) process whatever ``username`` says; envd reads
        as that user, so a file its user may not read is refused there."""
        path, user = self._query(scope)
        with _http_errors():
            _, host = self.root.host_path(path or "", user)
            data = host.read_bytes()
        headers = [(b"content-type", b"application/octet-stream")]
        request_headers = dict(scope["headers"])
        if b"gzip" in request_headers.get(b"accept-encoding", b""):
            data = zlib.compress(data, wbits=31)
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /files?path=&username=``: multipart ``file`` parts (their filename is the
        path when ``path`` is absent) or an octet-stream body, possibly gzipped."""
        path, user = self._query(scope)
        request_headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        content_type = MimeHeaders()
        content_type["content-type"] = request_headers.get("content-type", "")
        written: list[dict[str, str]] = []
        with _http_errors():
            if content_type.get_content_type() == "multipart/form-data":
                boundary = content_type.get_param("boundary")
                if not isinstance(boundary, str):
                    raise HttpError(400, "multipart body without a boundary")
                body = b"".join([chunk async for chunk in _body_chunks(receive)])
                parts = parse_multipart(body, boundary.encode())
                for name, data in parts:
                    target = path if path and len(parts) == 1 else name
                    spath, host = self.root.host_path(target or "", user)
                    self.root.check_writable(spath)
                    made = _missing_parents(host.parent)
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.write_bytes(data)  # by root, then chowned (as envd)
                    _chown([*made, host], user)
                    written.append(
                        {"name": spath.rsplit("/", 1)[-1], "type": "file", "path": spath}
                    )
            else:
                spath, host = self.root.host_path(path or "", user)
                self.root.check_writable(spath)
                gzipped = request_headers.get("content-encoding") == "gzip"
                decoder = zlib.decompressobj(wbits=31) if gzipped else None
                made = _missing_parents(host.parent)
                host.parent.mkdir(parents=True, exist_ok=True)
                with host.open("wb") as f:
                    async for chunk in _body_chunks(receive):
                        f.write(decoder.decompress(chunk) if decoder else chunk)
                    if decoder:
                        f.write(decoder.flush())
                _chown([*made, host], user)
                written.append({"name": spath.rsplit("/", 1)[-1], "type": "file", "path": spath})
        await _send(send, 200, json.dumps(written).encode())


class FakeEnvd:
    """The fake envd served by uvicorn on 127.0.0.1 (a free port) in a thread with its own
    event loop, so tests' own loops stay free to drive the SDK."""

    def __init__(self, root: Path) -> None:
        ensure_user(DEFAULT_USER)
        root.mkdir(parents=True, exist_ok=True)
        # a VM's home exists (and stays) before any command, owned by its user
        (root / "home" / DEFAULT_USER).mkdir(parents=True, exist_ok=True)
        _chown([root / "home" / DEFAULT_USER], DEFAULT_USER)
        (root / "tmp").mkdir(exist_ok=True)
        (root / "tmp").chmod(0o1777)
        self.root = root.resolve()
        self.processes: list[ProcessRecord] = []
        self.app = FakeEnvdApp(SandboxRoot(self.root), self.processes)
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._holder: subprocess.Popen[bytes] | None = None

    def _start_vm(self) -> None:
        """The process holding the VM's mount namespace: ``/home`` and ``/tmp`` bound to
        the root's; every command enters it (``nsenter``), so all see the same VM."""
        self._holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                'mount --bind "$1/home" /home && mount --bind "$1/tmp" /tmp && echo ready '
                "&& exec sleep infinity",
                "fake-vm",
                str(self.root),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline() != b"ready\n":
            self._holder.kill()
            raise RuntimeError("the fake envd could not make its VM's mount namespace")
        self.app.processes.holder_pid = self._holder.pid

    def vm_pids(self) -> list[int]:
        """Every process running in the VM (commands and what they left behind)."""
        return vm_processes(self.app.processes.holder_pid)

    def start(self, timeout: float = 10.0) -> None:
        self._start_vm()
        # proto IPPROTO_TCP, not 0: asyncio then sets TCP_NODELAY on the accepted connections
        # (without it, a reused keep-alive connection stalls ~40 ms per response on delayed ACKs).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            http="h11",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = server = uvicorn.Server(config)

        def serve() -> None:
            with sock:
                # a server in its own thread, so it needs a loop of its own: not a test
                asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=serve, name="fake-envd", daemon=True)
        self._thread.start()
        if not self.app.started.wait(timeout):
            raise RuntimeError("the fake envd did not start")

    def stop(self, timeout: float = 10.0) -> None:
        """Kill what still runs first (ending its streams, which uvicorn would otherwise wait
        for), then stop serving."""
        if self._server is None or self._thread is None:
            return
        if self.app.loop is not None:
            asyncio.run_coroutine_threadsafe(self.app.processes.shutdown(), self.app.loop).result(
                timeout
            )
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
        if self._thread.is_alive():
            raise RuntimeError("the fake envd did not stop")
        self._server = self._thread = None

    def host(self, path: str) -> Path:
        """The host path of the sandbox path ``path`` (absolute or relative to the home)."""
        return self.app.root.host_path(path, DEFAULT_USER, follow=False)[1]


def ensure_user(name: str) -> None:
    """The VM's unprivileged user, created on this host when missing (tests run as root:
    envd runs commands setuid to it, so a command cannot write what its user may not)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--no-create-home",
                "--home-dir",
                f"/home/{name}",
                "--shell",
                "/bin/bash",
                "--user-group",
                name,
            ],
            check=False,
            capture_output=True,
        )
        pwd.getpwnam(name)  # raises if it could not be made
