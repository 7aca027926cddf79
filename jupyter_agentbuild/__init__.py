"""jupyter_agentbuild: run sandboxed builds from Jupyter, with live logs, artifacts and previews."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import AgentBuild

    return [{"module": "jupyter_agentbuild", "app": AgentBuild}]
