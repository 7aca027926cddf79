"""One build's E2B sandbox (a micro-VM), behind the same Protocol as the local one.

What the local sandbox guarantees holds here too, by other means:

- steps run under ``bash`` with ``set -eo pipefail`` in ``/home/user/work``; stdout and
  stderr are split into lines as locally (UTF-8 with replacement, long lines cut and marked
  ``continued``), and the SDK awaits our callbacks, so a slow consumer slows the stream;
- a step ends when its shell exits, as locally, not when envd closes the command (which
  waits for every background child holding the pipes): see :mod:`.scripts`;
- nothing a step starts survives it: every process of a step carries a marker variable,
  and after the step (and on timeout or cancel) every process in the VM carrying it is
  sent SIGTERM, then SIGKILL after the grace period, while its output is still read; a
  stopped step reports ``-signal`` of the last signal sent, as locally;
- the VM is killed when the build (or its preview) ends, and by id after a crash
  (:meth:`E2BSandboxProvider.reap`); E2B's own sandbox timeout is the last resort.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shlex
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ...swallow import swallowed
from ...vocabulary import Stream
from ..base import OutputSink, SandboxError, StepResult, discard_output
from ..environment import command_environment
from ..ports import free_port, port_open
from ..readiness import wait_until_ready
from .common import HOME, WORK_DIR, redacted
from .files import WorkspaceFiles
from .run import CommandRun, bash_script, exit_code_of
from .scripts import ENV_FILE, FOLLOW, PLUMB_MARKER, RUNS_DIR, STEP_MARKER, SWEEP, step_command

log = logging.getLogger(__name__)


class E2BSandbox(WorkspaceFiles):
    """One build's E2B sandbox (see the module docstring)."""

    def __init__(
        self,
        sdk_sandbox: Any,
        *,
        build_id: str,
        base_env: Mapping[str, str],
        max_line_bytes: int,
        kill_grace: float,
        keep_alive: int,
        on_destroy: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(sdk_sandbox)
        self.id = f"e2b-{sdk_sandbox.sandbox_id}"
        self.build_id = build_id
        self._base_env = dict(base_env)
        self._max_line_bytes = max_line_bytes
        self._kill_grace = kill_grace
        self._keep_alive = keep_alive
        self._on_destroy = on_destroy
        self._steps: dict[str, CommandRun] = {}
        self._cancel = asyncio.Event()
        self._preview: CommandRun | None = None
        self._closed = False
        #: Set when the server stops gracefully and leaves the build to the next server:
        #: the running step is no longer followed but goes on in the VM.
        self._detached = False
        #: Set by a server re-attaching to this VM: the step that was running and the line
        #: pieces per stream its predecessor stored (see :meth:`run_step`).
        self.resume_step: int | None = None
        self.resume_skip: dict[str, int] = {}

    @property
    def debug(self) -> bool:
        """The SDK's debug mode: no VM, envd at ``localhost``, the preview on the host."""
        return bool(getattr(self.sdk.connection_config, "debug", False))

    def state(self) -> dict[str, Any]:
        """What a later server needs to kill the VM or re-attach to it: its id (never the
        key); each step's files in the VM are found by its marker."""
        return {"sandbox_id": self.sdk.sandbox_id}

    # ---- commands

    async def _launch(
        self, run: CommandRun, cmd: str, envs: Mapping[str, str], user: str | None = None
    ) -> CommandRun:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        try:
            run.handle = await self.sdk.commands.run(
                cmd,
                background=True,
                envs=dict(envs),
                cwd=WORK_DIR,
                on_stdout=lambda text: run.emit(Stream.STDOUT, text),
                on_stderr=lambda text: run.emit(Stream.STDERR, text),
                timeout=0,
                retain_output=False,
            )
        except Exception as exc:
            raise SandboxError(f"E2B could not start the command: {redacted(exc)}") from None
        run.waited = asyncio.ensure_future(exit_code_of(run.handle))
        return run

    async def _stop_marked(self, name: str, marker: str, first: str = "TERM") -> bool:
        """Signal every process carrying ``name=marker`` (``first``, then SIGKILL after the
        grace); True when SIGKILL was needed."""
        grace = max(0, int(self._kill_grace * 1000)) if first == "TERM" else 0
        args = f"{name}={marker} {grace} {first}"
        try:
            result = await self.sdk.commands.run(
                f"bash -c {shlex.quote(SWEEP)} sweep {args}",
                user="root",
                cwd="/",
                timeout=self._kill_grace + 30,
            )
        except Exception as exc:
            log.warning("sandbox %s: cleaning up after a step failed: %s", self.id, redacted(exc))
            return first == "KILL"
        return first == "KILL" or "KILL" in (result.stdout or "")

    async def run_step(
        self,
        command: str,
        *,
        step: int,
        timeout: float | None,  # noqa: ASYNC109 (the Protocol's signature)
        on_output: OutputSink,
        env: Mapping[str, str] | None = None,
    ) -> StepResult:
        """Run ``command`` in the VM's workspace; see the module docstring for the rules.

        On a re-attached VM, the step that was running when the previous server died is
        followed instead of started again: its output is read back from the copies the
        wrapper keeps in the VM, from the start, skipping the line pieces already stored
        (the same bytes split the same way), then followed live until the step ends."""
        self._cancel.clear()
        await self._extend()
        marker = self.step_marker(step)
        if step == self.resume_step:
            self.resume_step = None
            followed = await self._reattach(marker, on_output)
            if followed is not None:
                return await self._follow(followed, timeout)
        envs = command_environment(command, self._base_env, env)
        envs[PLUMB_MARKER] = marker
        run = CommandRun(marker, self._max_line_bytes, on_output)
        await self._launch(run, step_command(marker, command), envs)
        return await self._follow(run, timeout)

    async def _extend(self) -> None:
        """Give the VM its full lifetime again (E2B's timeout is a last resort against a
        lost server, not a limit on a long build: the build's own timeout is that)."""
        if not self.debug:
            try:
                await self.sdk.set_timeout(self._keep_alive)
            except Exception as exc:
                log.warning("sandbox %s: extending its lifetime failed: %s", self.id, redacted(exc))

    async def _reattach(self, marker: str, on_output: OutputSink) -> CommandRun | None:
        """Follow the copies of a step started by a previous server (None when it never
        started: its wrapper wrote no pid)."""
        run_dir = f"{HOME}/{RUNS_DIR}/{marker}"
        try:
            pid = int(await self.sdk.files.read(f"{run_dir}/pid"))
        except Exception:
            return None
        run = CommandRun(marker, self._max_line_bytes, on_output, skip=self.resume_skip)
        command = f"bash -c {shlex.quote(FOLLOW)} follow {shlex.quote(run_dir)} {pid}"
        return await self._launch(run, command, {})

    async def save_env(self) -> None:
        """Keep the build's environment in the VM, readable by root only, for a server
        that re-attaches (the store never holds secret values)."""
        data = json.dumps(self._base_env)
        # made root's and 0600 before anything is written into it
        protect = f"install -m 600 -o root -g root /dev/null {ENV_FILE}"
        await self.sdk.commands.run(protect, cwd=HOME, user="root")
        await self.sdk.files.write(f"{HOME}/{ENV_FILE}", data, user="root")
        await self.sdk.commands.run(
            f"chown root:root {ENV_FILE} && chmod 600 {ENV_FILE}", cwd=HOME, user="root"
        )

    async def load_env(self) -> None:
        """The build's environment as :meth:`save_env` kept it."""
        data = await self.sdk.files.read(f"{HOME}/{ENV_FILE}", user="root")
        loaded = json.loads(data)
        if not isinstance(loaded, dict):
            raise SandboxError("the build's environment in the VM is not readable")
        self._base_env = {str(k): str(v) for k, v in loaded.items()}

    @property
    def build_env(self) -> dict[str, str]:
        """The build's environment (secret values included: for a re-attaching runner's
        log masking, never shown)."""
        return dict(self._base_env)

    def step_marker(self, step: int) -> str:
        """A step's marker: the same for any server, so a successor finds its files."""
        return f"{self.build_id}.{step}"

    async def _follow(self, run: CommandRun, timeout: float | None) -> StepResult:  # noqa: ASYNC109
        """Wait for the step's end (or stop it), sweep what it left, drain its output."""
        self._steps[run.marker] = run
        assert run.waited is not None
        cancelled: asyncio.Future[Any] = asyncio.ensure_future(self._cancel.wait())
        ended: asyncio.Future[Any] = asyncio.ensure_future(run.ended.wait())
        waited: asyncio.Future[Any] = run.waited
        signal = 0
        try:
            done, _ = await asyncio.wait(
                {waited, ended, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            stopped = not ({waited, ended} & done)
            reason = "cancel" if cancelled in done else "timeout"
            # the step's processes: background children after an exit, all of them on a
            # stop (SIGTERM, the grace, SIGKILL; the plumbing keeps reading meanwhile)
            killed = await self._stop_marked(STEP_MARKER, run.marker)
            if stopped:
                signal = 9 if killed else 15
            code = await self._wrapper_exit(run, stopped)
            await run.flush()
        except asyncio.CancelledError:
            await self._leave_or_stop(run)
            raise
        finally:
            cancelled.cancel()
            ended.cancel()
            self._steps.pop(run.marker, None)
            run.done.set()
        if signal:
            code = -signal
        elif run.status is not None:
            code = run.status
        else:  # the wrapper died before the shell (killed in the VM, out of memory)
            raise SandboxError(
                f"the step ended without its exit status (its wrapper ended with {code})"
            )
        return StepResult(
            exit_code=code,
            timed_out=bool(signal) and reason == "timeout",
            cancelled=bool(signal) and reason == "cancel",
        )

    async def _wrapper_exit(self, run: CommandRun, stopped: bool) -> int:
        """The step wrapper's exit status, once its processes were stopped; when envd
        does not tell it in time, the command is killed and ``-9`` stands for it (unless
        the step had not ended: then the connection to E2B was lost)."""
        assert run.waited is not None
        try:
            return await asyncio.wait_for(asyncio.shield(run.waited), self._kill_grace + 30)
        except Exception as exc:
            if run.error is not None:
                raise run.error from None
            # the pipes stay open (a process out of the marker's reach holds them)
            await self._stop_marked(PLUMB_MARKER, run.marker, "KILL")
            with swallowed(log, f"killing E2B command {run.marker}", describe=redacted):
                await run.handle.kill()
            if not stopped and run.status is None:
                raise SandboxError(f"lost the step's connection to E2B: {redacted(exc)}") from None
            return -9

    async def _leave_or_stop(self, run: CommandRun) -> None:
        """The caller of ``run_step`` was cancelled: a detached sandbox stops listening and
        leaves the step to the next server; otherwise (server shutdown) the step is
        stopped in the VM first."""
        if self._detached:
            assert run.waited is not None
            run.waited.cancel()
            with swallowed(log, f"leaving E2B step {run.marker}", describe=redacted):
                await asyncio.shield(run.handle.disconnect())
            return
        with swallowed(log, f"stopping E2B step {run.marker}", describe=redacted):
            await asyncio.wait_for(
                asyncio.shield(self._stop_marked(STEP_MARKER, run.marker)), self._kill_grace + 5
            )

    def detach(self) -> None:
        """Leave the VM to the next server (a graceful stop of this one): from now on a
        cancelled ``run_step`` stops following its step but leaves it running, and no
        command starts. The build's rows tell the next server where it stood."""
        self._detached = self._closed = True

    async def keep_for(self, seconds: float) -> None:
        """Bound the life of a VM left behind to ``seconds`` (at most its usual lifetime):
        if no server takes the build over, E2B's timeout ends it then. A server that
        reconnects gives it its full lifetime again."""
        if self.debug:
            return
        lifetime = min(self._keep_alive, max(1, math.ceil(seconds)))
        try:
            await self.sdk.set_timeout(lifetime)
        except Exception as exc:
            log.warning("sandbox %s: bounding its lifetime failed: %s", self.id, redacted(exc))

    async def cancel(self) -> None:
        """Stop the running step; returns once it is gone (``run_step`` then returns)."""
        self._cancel.set()
        for run in list(self._steps.values()):
            await run.done.wait()

    async def close(self) -> None:
        self._closed = True  # first, as the local sandbox does: no step starts meanwhile
        await self.stop_preview_process()
        await self.cancel()

    async def destroy(self) -> None:
        """Kill the VM (with it, its files: artifacts were collected before). The kill
        happens whatever becomes of the polite stop before it (a slow envd, or the caller's
        time limit cancelling us): a VM nobody kills would run until E2B's own timeout.
        In debug mode there is no VM to kill (envd runs on this host): its workspace and
        step files are removed instead, so the next build starts clean."""
        try:
            await asyncio.wait_for(self.close(), self._kill_grace + 10)
        except Exception as exc:
            log.warning("sandbox %s: stopping its commands failed: %s", self.id, redacted(exc))
        finally:
            try:
                if self.debug:
                    await asyncio.shield(self.delete_files())
                else:
                    await asyncio.shield(self.sdk.kill())
            except Exception as exc:
                log.warning(
                    "sandbox %s: killing the E2B sandbox failed: %s", self.id, redacted(exc)
                )
            finally:
                if self._on_destroy is not None:
                    self._on_destroy()

    async def delete_files(self) -> None:
        """Remove the workspace and the step files (the debug sandbox is reused)."""
        await self.sdk.commands.run(
            f"rm -rf work {RUNS_DIR.split('/')[0]} {ENV_FILE}", cwd=HOME, user="root", timeout=60
        )

    # ---- the port primitive

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
        """Start the preview server in the VM and wait until E2B's edge reaches it
        (an HTTP GET of ``ready_path``, else ``/``, answered by the app itself); return
        its public URL, ``https://{port}-{id}.{domain}`` (``http://localhost:{port}`` in
        the SDK's debug mode, where the "VM" is this host: there, no port is a default,
        ``None`` picks a free one and a port already in use is refused, as locally)."""
        if self.preview_running():
            raise SandboxError("a preview process is already running in this sandbox")
        await self.stop_preview_process()
        debug = self.debug
        if debug and port is None:
            port = free_port()
        elif debug and await port_open(port or 0):
            raise SandboxError(f"port {port} is already in use on this host")
        port = port or 8000  # in a VM of its own, nothing else listens there
        extra = {"PORT": str(port), **(env or {})}
        marker = f"{self.build_id}.service"
        envs = command_environment(command, self._base_env, extra)
        envs[STEP_MARKER] = marker
        run = CommandRun(marker, self._max_line_bytes, on_output or discard_output)
        await self._launch(run, bash_script(command), envs)
        self._preview = run
        url = ("http" if debug else "https") + "://" + str(self.sdk.get_host(port))
        await self._extend()  # the preview outlives the build's timeout
        waited = run.waited
        assert waited is not None
        async with httpx.AsyncClient(timeout=5.0, headers=self.preview_headers()) as client:
            await wait_until_ready(
                lambda _seconds: _probe(client, url, ready_path),
                waited,
                exit_code=lambda: waited.result() if not waited.exception() else None,
                stop=self.stop_preview_process,
                port=port,
                timeout=ready_timeout,
                interval=0.2,
                not_ready=lambda answer: (
                    f"the preview process did not answer on port {port} within "
                    f"{ready_timeout:g}s ({answer})"
                ),
            )
        return url

    def preview_headers(self) -> dict[str, str]:
        """E2B's traffic token: the VM was created without public traffic, so its URL
        answers only requests bearing it (the proxy's, after Jupyter's checks)."""
        token = getattr(self.sdk, "traffic_access_token", None)
        return {"e2b-traffic-access-token": token} if isinstance(token, str) and token else {}

    def preview_running(self) -> bool:
        run = self._preview
        return run is not None and run.waited is not None and not run.waited.done()

    async def wait_preview_process(self) -> int | None:
        run = self._preview
        if run is None or run.waited is None:
            return None
        try:
            return await asyncio.shield(run.waited)
        except Exception:
            return None

    async def stop_preview_process(self) -> None:
        run, self._preview = self._preview, None
        if run is None:
            return
        await self._stop_marked(STEP_MARKER, run.marker)
        if run.waited is not None:
            with swallowed(log, f"waiting for E2B preview process {run.marker}", describe=redacted):
                await asyncio.wait_for(asyncio.shield(run.waited), self._kill_grace + 30)
        with swallowed(log, f"flushing E2B preview process {run.marker}", describe=redacted):
            await run.flush()


async def _probe(client: httpx.AsyncClient, url: str, ready_path: str | None) -> str | None:
    """None when the app itself answers (an HTTP GET of ``ready_path`` below 500, else of
    ``/`` below 502: E2B's edge answers 502 while nothing listens); else what answered."""
    try:
        response = await client.get(url + (ready_path or "/"))
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if response.status_code < (500 if ready_path else 502):
        return None
    return f"HTTP {response.status_code}"
