"""``GET agentbuild/api/contract.json``: the contract's JSON Schema, for clients that check
(or generate their types from) what this server speaks."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..contract import schema_text
from .base import AgentBuildHandler


class ContractHandler(AgentBuildHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(schema_text())
