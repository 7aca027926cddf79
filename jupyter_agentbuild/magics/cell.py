"""``%%agentbuild``: the cell's body runs as a build, followed by a live widget."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..client import BuildFailed, Client, Conflict
from ..client.sync import LoopThread
from .arguments import parse_cell
from .cell_spec import build_spec
from .display import display, failure_message


def run_cell(client: Client, line: str, cell: str, user_ns: dict[str, Any]) -> None:
    """Start the build; with ``--wait``, block until it ends and fail the cell if it failed.

    Interrupting the kernel while waiting cancels the build, so a stopped cell leaves no
    build running behind it.
    """
    opts = parse_cell(line)
    session = user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
    build = client.start(build_spec(opts, cell, notebook_path=session))
    widget = None
    if not opts.quiet:
        from ..widgets import BuildWidget

        widget = BuildWidget(build, client.server)
        display(widget)
    if not opts.wait:
        if widget is not None:
            widget.follow()
        else:
            print(f"started build {build.label}")
        return
    try:
        if widget is not None:
            final = LoopThread.shared().run(widget.run())
        else:
            final = client.wait(build.id)
    except KeyboardInterrupt:
        cancel_if_running(client, build.id)
        print(f"interrupted: cancelled build {build.label}", file=sys.stderr)
        if widget is not None:
            widget.follow()  # show it end as "cancelled"
        raise
    if opts.quiet:
        print(f"build {final.label} {final.status}")
    if not final.succeeded:
        raise BuildFailed(failure_message(final), build=final)


def cancel_if_running(client: Client, build_id: str) -> None:
    """Cancel; a build that has already finished (``Conflict``) needs nothing."""
    try:
        client.cancel(build_id)
    except Conflict:
        pass
