"""The magics' command lines: their usage, their help, and argparse parsers whose errors are
IPython ``UsageError``s (a message and the usage, no traceback)."""

from __future__ import annotations

import argparse
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError

CELL_USAGE = (
    "%%agentbuild [--name N] [--workspace DIR | --no-workspace] [--file PATH ...]\n"
    "             [--env K=V|K ...] [--provider local|e2b|auto] [--timeout S]\n"
    "             [--artifacts GLOB ...] [--preview CMD [--port N] [--preview-path P]]\n"
    "             [--wait] [--quiet]"
)
LINE_USAGE = (
    "%agentbuild list [--status S] [--limit N] | show ID | logs ID [--follow] [--tail N]\n"
    "            | cancel ID | delete ID | artifacts ID | preview ID [--stop] | help"
)
HELP = f"""\
Run a notebook cell as a sandboxed build, and manage builds.

{CELL_USAGE}
    The cell body is the build script (one bash step). A live widget shows status, logs,
    artifacts and the preview; the cell returns at once unless --wait is given.
    --name N            a name for the build
    --workspace DIR     directory (relative to the Jupyter root) copied into the sandbox;
                        default: the notebook's own directory, when known
    --no-workspace      start from an empty workspace
    --file PATH         send a local text file (repeatable)
    --env K=V | K       set a variable; a bare K sends this kernel's $K as a secret
    --provider P        local, e2b or auto (the server's default when omitted)
    --timeout S         stop the build after S seconds
    --artifacts GLOB    keep matching files as artifacts (repeatable)
    --preview CMD       after the steps, start CMD and show it in an iframe
    --port N            the port CMD listens on
    --preview-path P    the path to open in the preview (default /)
    --wait              block until the build ends; fail the cell if the build fails;
                        interrupting the kernel cancels the build
    --quiet             no widget, one line of text

{LINE_USAGE}
    list       recent builds (newest first)
    show ID    the live widget of any build, finished or not
    logs ID    print the log (--follow: until the build ends; --tail N: the last N entries)
    cancel ID  stop a running build
    delete ID  remove a build, its logs, artifacts and sandbox
    artifacts ID  the files a build kept, with download links
    preview ID    the build's preview: its URL and a frame (--stop: stop it)
    help       this text

From Python: jupyter_agentbuild.Client (or AsyncClient).
"""


class HelpShown(Exception):
    """``--help`` was handled: the help has been printed."""


class MagicArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting: a magic must never end the kernel."""

    def __init__(self, prog: str | None = None, *, usage_text: str, **kw: Any) -> None:
        super().__init__(prog=prog, usage=usage_text, allow_abbrev=False, **kw)
        self.usage_text = usage_text

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\nusage: {self.usage_text}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError(f"{message or ''}\nusage: {self.usage_text}")
        raise HelpShown()

    def print_help(self, file: Any = None) -> None:
        print(HELP)


def _split(line: str, usage: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc}\nusage: {usage}") from None


def _cell_parser() -> MagicArgumentParser:
    p = MagicArgumentParser(prog="%%agentbuild", usage_text=CELL_USAGE)
    p.add_argument("--name")
    ws = p.add_mutually_exclusive_group()
    ws.add_argument("--workspace")
    ws.add_argument("--no-workspace", action="store_true")
    p.add_argument("--file", action="extend", nargs="+", default=[], metavar="PATH")
    p.add_argument("--env", action="extend", nargs="+", default=[], metavar="K=V")
    p.add_argument("--provider", choices=["local", "e2b", "auto"])
    p.add_argument("--timeout", type=_positive_float, metavar="S")
    p.add_argument("--artifacts", action="extend", nargs="+", default=[], metavar="GLOB")
    p.add_argument("--preview", metavar="CMD")
    p.add_argument("--port", type=_port, metavar="N")
    p.add_argument("--preview-path", metavar="P")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def _line_parser() -> MagicArgumentParser:
    p = MagicArgumentParser(prog="%agentbuild", usage_text=LINE_USAGE)
    sub = p.add_subparsers(dest="command", parser_class=MagicArgumentParser)
    ls = sub.add_parser("list", usage_text=LINE_USAGE)
    ls.add_argument("--status")
    ls.add_argument("--limit", type=_positive_int, default=20)
    for name in ("show", "cancel", "delete", "artifacts"):
        sub.add_parser(name, usage_text=LINE_USAGE).add_argument("id")
    logs = sub.add_parser("logs", usage_text=LINE_USAGE)
    logs.add_argument("id")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--tail", type=_positive_int, metavar="N")
    preview = sub.add_parser("preview", usage_text=LINE_USAGE)
    preview.add_argument("id")
    preview.add_argument("--stop", action="store_true")
    sub.add_parser("help", usage_text=LINE_USAGE)
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {text!r}")
    return int(text)


def parse_cell(line: str) -> argparse.Namespace:
    opts = _cell_parser().parse_args(_split(line, CELL_USAGE))
    if (opts.port is not None or opts.preview_path) and not opts.preview:
        raise UsageError(f"--port and --preview-path need --preview CMD\nusage: {CELL_USAGE}")
    return opts


def parse_line(line: str) -> argparse.Namespace:
    words = _split(line, LINE_USAGE)
    if not words:
        raise UsageError(f"missing subcommand\nusage: {LINE_USAGE}")
    return _line_parser().parse_args(words)
