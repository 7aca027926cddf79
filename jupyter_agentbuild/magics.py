"""IPython magics: ``%%agentbuild`` runs a cell as a build, ``%agentbuild`` manages builds.

Load with ``%load_ext jupyter_agentbuild``. Argument errors raise IPython's ``UsageError``
(a message and the usage, no traceback); server errors show their code and message only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, cast

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display as _display

from . import _magic_args as args
from .client import AgentBuildError, BuildFailed, Client, Conflict
from .client.aio import preview_url_of
from .client.models import Build
from .client.sync import LoopThread
from .widgets.tables import ArtifactTable, BuildTable

display = cast(Callable[[Any], None], _display)


class MagicError(Exception):
    """An API error, shown as one line (``code: message``) instead of a traceback."""

    def __init__(self, error: AgentBuildError) -> None:
        super().__init__(f"{error.message} [{error.code}]")
        self.error = error

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31mAgentBuildError\x1b[0m: {self}"]


@magics_class
class AgentBuildMagics(Magics):  # type: ignore[misc]
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call]
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client()
        return self._client

    @line_cell_magic  # type: ignore[untyped-decorator]
    def agentbuild(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a build, or manage builds; ``%agentbuild help`` for details."""
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except args.HelpShown:
            return None
        except AgentBuildError as exc:
            if isinstance(exc, BuildFailed):
                raise
            raise MagicError(exc) from None

    # -- %%agentbuild -------------------------------------------------------------------------

    def _cell(self, line: str, cell: str) -> None:
        opts = args.parse_cell(line)
        user_ns = getattr(self.shell, "user_ns", {})
        session = user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
        spec = args.build_spec(opts, cell, notebook_path=session)
        build = self.client.start(spec)
        widget = None
        if not opts.quiet:
            from .widgets import BuildWidget

            widget = BuildWidget(build, self.client.server)
            display(widget)
        if not opts.wait:
            if widget is not None:
                widget.follow()
            else:
                print(f"started build {build.label}")
            return None
        try:
            if widget is not None:
                final = LoopThread.shared().run(widget.run())
            else:
                final = self.client.wait(build.id)
        except KeyboardInterrupt:
            self._cancel_quietly(build.id)
            print(f"interrupted: cancelled build {build.label}", file=sys.stderr)
            if widget is not None:
                widget.follow()  # show it end as "cancelled"
            raise
        if opts.quiet:
            print(f"build {final.label} {final.status}")
        if not final.succeeded:
            raise BuildFailed(_failure(final), build=final)
        return None

    def _cancel_quietly(self, build_id: str) -> None:
        try:
            self.client.cancel(build_id)
        except Conflict:
            pass

    # -- %agentbuild SUBCOMMAND -----------------------------------------------------------------

    def _line(self, line: str) -> Any:
        opts = args.parse_line(line)
        handler = getattr(self, f"_cmd_{opts.command}")
        return handler(opts)

    def _cmd_help(self, opts: Any) -> None:
        print(args.HELP)

    def _cmd_list(self, opts: Any) -> BuildTable:
        return BuildTable(self.client.list(status=opts.status, limit=opts.limit))

    def _cmd_show(self, opts: Any) -> None:
        from .widgets import BuildWidget

        widget = BuildWidget(self.client.get(opts.id), self.client.server)
        display(widget)
        widget.follow()

    def _cmd_logs(self, opts: Any) -> None:
        after = 0
        if opts.tail is not None:
            after = max(0, self.client.get(opts.id).last_seq - opts.tail)
        try:
            if opts.follow:
                for batch in self.client.stream(opts.id, after=after):
                    _print_entries(batch)
            else:
                for page in self.client.log_pages(opts.id, after=after):
                    _print_entries(page)
        except KeyboardInterrupt:
            print("(stopped following; the build goes on)", file=sys.stderr)

    def _cmd_cancel(self, opts: Any) -> None:
        try:
            build = self.client.cancel(opts.id)
        except Conflict as exc:
            status = self.client.get(opts.id).status
            raise MagicError(
                Conflict(f"build {opts.id} has already finished ({status})", code=exc.code)
            ) from None
        print(f"cancel requested: build {build.label} is {build.status}")

    def _cmd_delete(self, opts: Any) -> None:
        self.client.delete(opts.id)
        print(f"deleted build {opts.id}")

    def _cmd_artifacts(self, opts: Any) -> ArtifactTable:
        server = self.client.server
        return ArtifactTable(opts.id, self.client.artifacts(opts.id), server)

    def _cmd_preview(self, opts: Any) -> None:
        if opts.stop:
            self.client.preview_stop(opts.id)
            print(f"preview of build {opts.id} stopped")
            return
        build = self.client.get(opts.id)
        if not build.get("preview"):
            raise MagicError(
                Conflict(f"build {opts.id} has no preview (add --preview CMD to the build)")
            )
        from .widgets import PreviewPanel

        panel = PreviewPanel(self.client.server, build.id)
        path = str(((build.get("spec") or {}).get("preview") or {}).get("path") or "/")
        panel.update(build.get("preview"), path)
        if panel.state in ("starting", "ready"):
            # The URL as text too (a plain-text front end, an agent reading the output).
            print(f"preview of build {build.label}: {preview_url_of(build, self.client.server)}")
        display(panel)


def _failure(build: Build) -> str:
    parts = [f"build {build.label} {build.status}"]
    if build.get("exit_code") not in (None, 0):
        parts.append(f"exit code {build['exit_code']}")
    if build.get("error"):
        parts.append(str(build["error"]))
    return "; ".join(parts)


def _print_entries(entries: list[dict[str, Any]]) -> None:
    lines = []
    for entry in entries:
        if entry.get("kind") == "log":
            lines.append(str(entry.get("text", "")))
        elif entry.get("type") == "status":
            lines.append(f"── status: {(entry.get('data') or {}).get('status')}")
        elif entry.get("type") == "step_started":
            data = entry.get("data") or {}
            lines.append(f"── step {data.get('step')} {data.get('name') or ''}".rstrip())
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_agentbuild``"""
    ipython.register_magics(AgentBuildMagics)
