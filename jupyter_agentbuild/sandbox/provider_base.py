"""What every sandbox provider of this package is configured with, and the hooks the
catalog and :meth:`create` call.

Providers are ``LoggingConfigurable``s made with ``parent=`` the provider catalog, so
``c.<ProviderClass>.<trait>`` configures one provider and ``c.ProviderBase.<trait>`` all of
them (a third-party provider's own traits work the same way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Float, Int, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .base import ProviderStatus, SandboxError


class ProviderBase(LoggingConfigurable):
    """The settings every provider shares; subclasses add their own."""

    #: The name builds use (``"provider": "local"``) and the catalog registers.
    name: str = ""

    workspace_root = Unicode(
        help="""Directory holding one sub-directory per local sandbox. Default:
        <jupyter data dir>/agentbuild/sandboxes. Env fallback: AGENTBUILD_WORKSPACE_ROOT.""",
    ).tag(config=True)

    @default("workspace_root")
    def _workspace_root_default(self) -> str:
        env = os.environ.get("AGENTBUILD_WORKSPACE_ROOT")
        return env or str(Path(jupyter_data_dir()) / "agentbuild" / "sandboxes")

    max_line_bytes = Int(
        65536, help="Longer output lines are split into pieces marked 'continued'."
    ).tag(config=True)

    @validate("max_line_bytes")
    def _check_max_line_bytes(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 4:  # one UTF-8 character must always fit
            raise TraitError("max_line_bytes must be at least 4")
        return value

    kill_grace = Float(5.0, help="Seconds between SIGTERM and SIGKILL when stopping a step.").tag(
        config=True
    )

    async def check(self) -> ProviderStatus:
        """Whether this provider works here (asked once at start-up): by default it does,
        without isolation."""
        return ProviderStatus(True, False)

    async def admit(self, network: bool) -> None:
        """Raise :class:`SandboxError` when no sandbox can be made now (``network``: the
        build's setting); called by ``create`` before anything is made."""
        if not network:
            raise SandboxError(f"the {self.name} provider cannot run a build without network")


__all__ = ["ProviderBase"]
