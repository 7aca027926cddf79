"""``GET agentbuild/api/info``: what this server can run, so clients and people can tell
an isolated deployment from one that is not (and why a provider is unavailable)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import Unavailable
from .base import AgentBuildHandler


class InfoHandler(AgentBuildHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        service = self.agentbuild.service
        catalog = self.agentbuild.catalog
        if catalog is None:
            raise Unavailable("this server has no sandbox providers")
        await service.ready_or_starting()
        self.write_json(
            {
                **catalog.info(),
                "allowed_providers": sorted(catalog.allowed) if catalog.allowed else None,
                "ready": service.startup_error is None,
            }
        )
