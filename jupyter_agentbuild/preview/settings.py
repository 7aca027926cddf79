"""What a deployment configures about previews: ``c.PreviewManager.<name>``.

Each setting used to be ``c.AgentBuild.preview_<name>`` (the ``legacy`` tag names it, so
old configurations are forwarded here). How often previews check in, when another
server's previews count as dead, and how long a stop may take are the runner's settings,
read from it: one definition for builds and previews alike.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Float, Int, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..hub.routes_client import HubRoutes
from .origin import PreviewOrigins, TemplateError

#: The path proxy's pages run in an opaque origin (see ``csp``).
PREVIEW_CSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
#: Bound (s) on stopping one preview when the runner does not say (its sandbox's kill
#: grace is inside it).
STOP_TIMEOUT = 30.0


class PreviewSettings(LoggingConfigurable):
    """The configuration traits of :class:`.manager.PreviewManager`."""

    idle_timeout = Float(
        1800.0,
        help="""Seconds without proxied traffic (requests, response data, WebSocket messages)
        after which a preview is stopped and its sandbox destroyed (default 1800). 0: never.""",
    ).tag(config=True, legacy="preview_idle_timeout")
    csp = Unicode(
        PREVIEW_CSP,
        help=f"""Appended to Jupyter's Content-Security-Policy on every response of the path
        proxy ({{base_url}}agentbuild/preview/ID/, on Jupyter's origin). The default,
        '{PREVIEW_CSP}', runs a page seen there in an opaque origin, so its scripts can never
        act as the Jupyter origin; never add allow-same-origin. (Previews on their own origin,
        the URL browsers are given, need none: that origin is another site.)""",
    ).tag(config=True, legacy="preview_csp")
    connect_timeout = Float(
        10.0, help="Seconds to wait for a preview to accept a connection (else 504)."
    ).tag(config=True, legacy="preview_connect_timeout")
    read_timeout = Float(
        300.0,
        help="""Seconds to wait for a preview's response headers, and then between two parts
        of its body (else 504, or the connection is cut once the response has started).""",
    ).tag(config=True, legacy="preview_read_timeout")
    max_request_size = Int(
        1024**3,
        help="Largest request body (bytes) the proxy streams to a preview (default 1 GiB).",
    ).tag(config=True, legacy="preview_max_request_size")
    origin_template = Unicode(
        "",
        help="""The own origin of each preview in a deployment: a URL with {label} in its
        host name, e.g. 'https://{label}.previews.example.org', where a wildcard DNS name
        and TLS in front send every such host to this server (see the deployment guide, docs/deployment.md). Use a
        registrable domain of its own, not a sub-domain of Jupyter's. Empty (default):
        previews get '{label}.localhost' origins when Jupyter is opened at localhost,
        127.0.0.1 or [::1]; elsewhere their URL is the path proxy's.""",
    ).tag(config=True, legacy="preview_origin_template")
    hub_routes_url = Unicode(
        "",
        help="""Under JupyterHub: the URL of the agentbuild-previews hub service, e.g.
        'http://127.0.0.1:10101/services/agentbuild-previews/'. Each preview asks it (with
        this server's JUPYTERHUB_API_TOKEN) to route its host to this server through the
        hub's proxy, and removes the route when it stops (see the deployment guide). Empty (default):
        no routes are asked for. Env fallback: AGENTBUILD_HUB_ROUTES_URL.""",
    ).tag(config=True)

    #: The runner whose heartbeat settings previews follow (set by the manager).
    runner: Any = None

    @default("hub_routes_url")
    def _hub_routes_url_default(self) -> str:
        return os.environ.get("AGENTBUILD_HUB_ROUTES_URL", "")

    @validate("origin_template")
    def _check_origin_template(self, proposal: Any) -> str:
        try:
            return PreviewOrigins.check_template(str(proposal["value"]))
        except TemplateError as exc:
            raise TraitError(f"PreviewManager.origin_template: {exc}") from None

    @validate("csp")
    def _check_csp(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip().rstrip(";")
        tokens = value.lower().split()
        if "sandbox" not in tokens or "allow-same-origin" in tokens:
            self.log.warning(
                "agentbuild: PreviewManager.csp %r does not confine the path proxy's pages "
                "to an opaque origin: a page there could act as the user in Jupyter",
                value,
            )
        return value

    def hub_routes(self) -> HubRoutes | None:
        """Under JupyterHub with a routes service: what routes preview hosts here."""
        return HubRoutes.from_env(url=self.hub_routes_url)

    @property
    def poll_interval(self) -> float:
        """How often (s) this server's previews check in with the store (heartbeat, and
        whether another server stopped or deleted one of them): the runner's heartbeat."""
        return float(self._runner_setting("heartbeat_interval", 5.0))

    @property
    def stale_after(self) -> float:
        """Previews of another host's server that have not checked in for this long (s)
        are taken for dead: stopping one is then done from here."""
        return float(self._runner_setting("stale_after", 30.0))

    @property
    def stop_timeout(self) -> float:
        """Bound (s) on stopping one preview: the runner's shutdown bound."""
        value = getattr(self.runner, "stop_timeout", None)
        return float(value) if isinstance(value, int | float) else STOP_TIMEOUT

    def _runner_setting(self, name: str, fallback: Any) -> Any:
        value = getattr(self.runner, name, None)  # one definition: the runner's trait
        return value if isinstance(value, int | float) else fallback


__all__ = ["PREVIEW_CSP", "STOP_TIMEOUT", "PreviewSettings"]
