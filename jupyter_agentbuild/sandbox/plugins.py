"""This package's sandbox provider registrations (entry-point group
``jupyter_agentbuild.providers``): each a factory ``(ProviderSettings) -> provider``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ProviderStatus, SandboxError, SandboxProvider
from .isolated_provider import IsolatedLocalProvider
from .isolation import IsolationPlan
from .local_provider import LocalSandboxProvider

if TYPE_CHECKING:
    from ..providers import ProviderSettings


def isolated_local(settings: ProviderSettings) -> SandboxProvider:
    """``local``: the isolated local sandbox (bubblewrap, Linux namespaces)."""
    return IsolatedLocalProvider(
        settings.workspace_root,
        plan=IsolationPlan(
            hidden=settings.hidden_paths,
            readonly=settings.readonly_paths,
            limits=settings.limits,
        ),
        allow_unisolated=settings.allow_unisolated,
        max_line_bytes=settings.max_line_bytes,
        kill_grace=settings.kill_grace,
    )


class ProcessProvider(LocalSandboxProvider):
    """``process``: steps as plain processes of the server's user (no isolation).

    Made on every server, so that any server can reap what a dead one left of such a
    sandbox; builds may use it only with ``allow_unisolated`` (its :meth:`check`)."""

    name = "process"

    def __init__(self, *args: Any, allowed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed = allowed

    async def check(self) -> ProviderStatus:
        if not self.allowed:
            return ProviderStatus(
                False,
                False,
                "plain processes can read everything the server can; "
                "set c.AgentBuild.allow_unisolated = True to allow them",
            )
        return ProviderStatus(
            True, False, "UNISOLATED plain processes of the server's user (allow_unisolated)"
        )


def process_local(settings: ProviderSettings) -> SandboxProvider:
    return ProcessProvider(
        settings.workspace_root,
        allowed=settings.allow_unisolated,
        max_line_bytes=settings.max_line_bytes,
        kill_grace=settings.kill_grace,
    )


def e2b(settings: ProviderSettings) -> SandboxProvider:
    """``e2b``: E2B cloud sandboxes; unavailable without a real-looking key."""
    from ..providers import ProviderUnavailable, check_e2b

    try:
        check_e2b(settings.e2b_api_key)
    except Exception as exc:
        raise ProviderUnavailable(str(exc)) from None
    from .e2b import E2BSandbox, E2BSandboxProvider

    class E2BProvider(E2BSandboxProvider):  # type: ignore[misc]
        async def check(self) -> ProviderStatus:
            return ProviderStatus(True, True, "E2B cloud sandboxes: a VM per build")

        async def create(
            self,
            build_id: str,
            *,
            workspace: Path | None,
            files: Mapping[str, str],
            env: Mapping[str, str],
            network: bool = True,
        ) -> E2BSandbox:
            if not network:
                raise SandboxError("the e2b provider cannot run a build without network")
            sandbox: E2BSandbox = await super().create(
                build_id, workspace=workspace, files=files, env=env
            )
            return sandbox

    assert settings.e2b_api_key is not None
    return E2BProvider(
        settings.e2b_api_key,
        template=settings.e2b_template,
        sandbox_timeout=settings.e2b_sandbox_timeout,
        max_line_bytes=settings.max_line_bytes,
        kill_grace=settings.kill_grace,
    )


__all__ = ["ProcessProvider", "e2b", "isolated_local", "process_local"]
