"""Where the extension answers, relative to Jupyter's base URL: defined once.

The server's routes, the URLs it puts in responses (``Location``, a preview's
``path_url``) and the notebook client's requests are all made from these, so a path
cannot be spelled two ways.
"""

from __future__ import annotations

#: Everything of the extension is under ``{base_url}agentbuild/``.
ROOT = "agentbuild"
#: The REST and WebSocket API.
API = f"{ROOT}/api"
BUILDS = f"{API}/builds"
#: The path proxy of previews, on Jupyter's origin.
PREVIEW = f"{ROOT}/preview"
#: A build id in a route (what the store's ids look like, bounded).
BUILD_ID = r"(?P<build_id>[A-Za-z0-9_-]{1,64})"


def with_slash(url: str) -> str:
    """``url`` ending with one ``/`` (base URLs are joined by appending)."""
    return url if url.endswith("/") else url + "/"


def api_url(server_url: str) -> str:
    """``{server_url}agentbuild/api/``."""
    return f"{with_slash(server_url)}{API}/"


def build_url(base_url: str, build_id: str) -> str:
    """``{base_url}agentbuild/api/builds/{id}``: a Build's own URL."""
    return f"{with_slash(base_url)}{BUILDS}/{build_id}"


def preview_path(base_url: str, build_id: str) -> str:
    """``{base_url}agentbuild/preview/{id}/``: a preview's path proxy."""
    return f"{with_slash(base_url)}{PREVIEW}/{build_id}/"


def extension_path(base_url: str, *parts: str) -> str:
    """``{base_url}agentbuild/{parts joined by /}``: any path of the extension."""
    return f"{with_slash(base_url)}{ROOT}/" + "/".join(parts)
