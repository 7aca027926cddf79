"""Python client for the agentbuild API: :class:`Client` (blocking) and :class:`AsyncClient`.

>>> from jupyter_agentbuild import Client
>>> c = Client()                      # finds the server from the kernel's environment
>>> b = c.start(name="site", steps=["make html"])
>>> c.wait(b.id).status
'succeeded'
"""

from .aio import AsyncClient
from .connection import ServerInfo, resolve_server
from .exceptions import (
    AgentBuildError,
    BuildFailed,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    ServerNotFound,
    ServerUnreachable,
    SpecError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .records import TERMINAL, Build, Entry, Record
from .sync import Client

__all__ = [
    "TERMINAL",
    "AgentBuildError",
    "AsyncClient",
    "Build",
    "BuildFailed",
    "Client",
    "ConfigError",
    "Conflict",
    "Entry",
    "Forbidden",
    "NotFound",
    "QuotaExceeded",
    "Record",
    "ServerInfo",
    "ServerNotFound",
    "ServerUnreachable",
    "SpecError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "resolve_server",
]
