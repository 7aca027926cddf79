"""``%agentbuild SUBCOMMAND``: one function per subcommand, each given the client and options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..client import Client, Conflict
from ..client.aio import preview_url_of
from ..vocabulary import LIVE_PREVIEW
from ..widgets.tables import ArtifactTable, BuildTable
from .arguments import HELP, parse_line
from .display import MagicError, display, print_entries


def run_line(client: Client, line: str) -> Any:
    """Parse ``line`` and run its subcommand; its return value is the cell's output."""
    opts = parse_line(line)
    return COMMANDS[opts.command](client, opts)


def show_help(client: Client, opts: argparse.Namespace) -> None:
    print(HELP)


def list_builds(client: Client, opts: argparse.Namespace) -> BuildTable:
    return BuildTable(client.list(status=opts.status, limit=opts.limit))


def show_build(client: Client, opts: argparse.Namespace) -> None:
    from ..widgets import BuildWidget

    widget = BuildWidget(client.get(opts.id), client.server)
    display(widget)
    widget.follow()


def print_log(client: Client, opts: argparse.Namespace) -> None:
    after = 0
    if opts.tail is not None:
        after = max(0, client.get(opts.id).last_seq - opts.tail)
    try:
        if opts.follow:
            for batch in client.stream(opts.id, after=after):
                print_entries(batch)
        else:
            for page in client.log_pages(opts.id, after=after):
                print_entries(page)
    except KeyboardInterrupt:
        print("(stopped following; the build goes on)", file=sys.stderr)


def cancel_build(client: Client, opts: argparse.Namespace) -> None:
    try:
        build = client.cancel(opts.id)
    except Conflict as exc:
        status = client.get(opts.id).status
        raise MagicError(
            Conflict(f"build {opts.id} has already finished ({status})", code=exc.code)
        ) from None
    print(f"cancel requested: build {build.label} is {build.status}")


def delete_build(client: Client, opts: argparse.Namespace) -> None:
    client.delete(opts.id)
    print(f"deleted build {opts.id}")


def list_artifacts(client: Client, opts: argparse.Namespace) -> ArtifactTable:
    return ArtifactTable(opts.id, client.artifacts(opts.id), client.server)


def show_preview(client: Client, opts: argparse.Namespace) -> None:
    if opts.stop:
        client.preview_stop(opts.id)
        print(f"preview of build {opts.id} stopped")
        return
    build = client.get(opts.id)
    if not build.get("preview"):
        raise MagicError(
            Conflict(f"build {opts.id} has no preview (add --preview CMD to the build)")
        )
    from ..widgets import PreviewPanel

    panel = PreviewPanel(client.server, build.id)
    path = str(((build.get("spec") or {}).get("preview") or {}).get("path") or "/")
    panel.update(build.get("preview"), path)
    if panel.state in LIVE_PREVIEW:
        # The URL as text too (a plain-text front end, an agent reading the output).
        print(f"preview of build {build.label}: {preview_url_of(build, client.server)}")
    display(panel)


#: Subcommand name (as :func:`.arguments.parse_line` accepts it) -> what runs it.
COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Any]] = {
    "help": show_help,
    "list": list_builds,
    "show": show_build,
    "logs": print_log,
    "cancel": cancel_build,
    "delete": delete_build,
    "artifacts": list_artifacts,
    "preview": show_preview,
}
