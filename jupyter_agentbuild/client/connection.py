"""Find the Jupyter server a kernel belongs to, and its credential.

Resolution order (the first that gives a URL wins):

1. explicit ``url=`` / ``token=`` arguments;
2. ``AGENTBUILD_URL`` / ``AGENTBUILD_TOKEN`` (user overrides);
3. ``JPY_AGENTBUILD_URL`` / ``JPY_AGENTBUILD_TOKEN`` (exported by the server extension
   to every kernel it starts);
4. JupyterHub: ``JUPYTERHUB_SERVICE_URL`` (or ``JUPYTERHUB_SERVICE_PREFIX``) with
   ``JUPYTERHUB_API_TOKEN``.

A token is only ever paired with the URL it came with, so pointing ``AGENTBUILD_URL`` at
another server never sends it this server's credential. ``AGENTBUILD_TOKEN`` alone
overrides the token of whichever URL is found. The token is never printed, logged or
shown in a repr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlparse

from .. import urls
from .exceptions import ServerNotFound

HUB_DEFAULT_ORIGIN = "http://127.0.0.1:8888"
HELP = (
    "jupyter_agentbuild cannot find the Jupyter server for this kernel. "
    "Start the kernel from a Jupyter server that has the extension enabled "
    "(`jupyter server extension enable jupyter_agentbuild`, then restart the server and the kernel), "
    "or set AGENTBUILD_URL (for example http://127.0.0.1:8888/, base URL included) "
    "and AGENTBUILD_TOKEN, or pass url= and token= to the client."
)


@dataclass(frozen=True)
class ServerInfo:
    """Where the agentbuild API lives. ``url`` is the server URL with its base URL, ending in ``/``."""

    url: str
    token: str = field(default="", repr=False)
    source: str = "argument"

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServerNotFound(
                f"not an http(s) server URL: {self.url!r} (from {self.source}). {HELP}"
            )
        if not self.url.endswith("/"):
            object.__setattr__(self, "url", self.url + "/")

    @property
    def api_url(self) -> str:
        """``{url}agentbuild/api/``"""
        return urls.api_url(self.url)

    @property
    def ws_api_url(self) -> str:
        scheme, rest = self.api_url.split(":", 1)
        return ("wss" if scheme == "https" else "ws") + ":" + rest

    @property
    def base_path(self) -> str:
        """The server's base URL path (``/`` or ``/user/alice/``): what the browser sees."""
        path = urlparse(self.url).path or "/"
        return path if path.endswith("/") else path + "/"

    def browser_path(self, *parts: str) -> str:
        """A base-url-relative link for the browser, e.g. ``/agentbuild/api/builds/ID/logs``.

        Links never carry the token: the browser authenticates with Jupyter's cookie.
        """
        return urls.extension_path(self.base_path, *(quote(p, safe="/") for p in parts))

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}


def resolve_server(
    url: str | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerInfo:
    """Find the server; raise :class:`ServerNotFound` saying how to fix it."""
    env = os.environ if env is None else env
    override_token = token if token is not None else env.get("AGENTBUILD_TOKEN") or None
    if url:
        return ServerInfo(url, override_token or "", "argument")
    candidates = (
        ("AGENTBUILD_URL", "AGENTBUILD_TOKEN"),
        ("JPY_AGENTBUILD_URL", "JPY_AGENTBUILD_TOKEN"),
    )
    for url_var, token_var in candidates:
        if env.get(url_var):
            return ServerInfo(env[url_var], override_token or env.get(token_var, ""), url_var)
    hub_token = override_token or env.get("JUPYTERHUB_API_TOKEN", "")
    if env.get("JUPYTERHUB_SERVICE_URL"):
        return ServerInfo(env["JUPYTERHUB_SERVICE_URL"], hub_token, "JUPYTERHUB_SERVICE_URL")
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        # Older hubs only give the prefix; single-user servers listen on 8888 by default.
        path = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        return ServerInfo(HUB_DEFAULT_ORIGIN + path, hub_token, "JUPYTERHUB_SERVICE_PREFIX")
    raise ServerNotFound(HELP)
