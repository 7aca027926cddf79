"""The ``%agentbuild`` / ``%%agentbuild`` magic: one client per shell, errors without tracebacks."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from ..client import AgentBuildError, BuildFailed, Client
from .arguments import HelpShown
from .cell import run_cell
from .commands import run_line
from .display import MagicError


@magics_class
class AgentBuildMagics(Magics):  # type: ignore[misc]
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call]
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """Made on first use, from the kernel's environment (the server that started it)."""
        if self._client is None:
            self._client = Client()
        return self._client

    @line_cell_magic  # type: ignore[untyped-decorator]
    def agentbuild(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a build, or manage builds; ``%agentbuild help`` for details."""
        try:
            if cell is None:
                return run_line(self.client, line)
            return run_cell(self.client, line, cell, getattr(self.shell, "user_ns", {}))
        except HelpShown:
            return None
        except AgentBuildError as exc:
            if isinstance(exc, BuildFailed):
                raise  # its message already says why; its traceback is the cell's failure
            raise MagicError(exc) from None
