"""jupyter_agentbuild: run sandboxed builds from Jupyter, with live logs, artifacts and previews."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import AgentBuild

    return [{"module": "jupyter_agentbuild", "app": AgentBuild}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_agentbuild``: register the ``%agentbuild`` magics."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def __getattr__(name: str) -> Any:
    """``Client``, ``AsyncClient`` and ``Build`` load on first use, keeping imports cheap."""
    if name in ("Client", "AsyncClient", "Build"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
