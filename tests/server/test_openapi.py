"""The OpenAPI document the server serves lists exactly the API routes (and methods) the
extension registers, is a valid OpenAPI 3.1 document, and takes its shapes from the contract:
the API reference in the docs is rendered from it, so a route missing here is a route
missing from the docs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_spec_validator import validate
from tornado import web
from tornado.httpclient import HTTPClientError

from jupyter_agentbuild.app import AgentBuild
from jupyter_agentbuild.contract import schema
from tests.conftest import Api

API_PREFIX = "/agentbuild/api/"
#: HTTP methods a route may implement (OPTIONS is Jupyter's own CORS pre-flight answer).
METHODS = ("get", "head", "post", "put", "patch", "delete")
GROUP = re.compile(r"\(\?P<(\w+)>([^()]*)\)")


def templates(pattern: str) -> list[str]:
    """The OpenAPI path(s) of a tornado route pattern: a named group is ``{name}``, except
    a group that is a plain alternation of literals (``zip|tar\\.gz``), which gives one path
    per alternative."""
    match = GROUP.search(pattern)
    if match is None:
        return [pattern.replace("\\", "")]
    name, body = match.groups()
    literal = all(re.fullmatch(r"[\w\\.-]+", alt) for alt in body.split("|"))
    options = [alt.replace("\\", "") for alt in body.split("|")] if literal else [f"{{{name}}}"]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [path for option in options for path in templates(head + option + tail)]


def implemented(handler: type[web.RequestHandler]) -> set[str]:
    """The HTTP methods ``handler`` defines itself (not tornado's 405 default)."""
    return {m for m in METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)}


def registered_routes(app: AgentBuild) -> dict[str, set[str]]:
    """``{path template: methods}`` of every API route the extension registered."""
    routes: dict[str, set[str]] = {}
    for pattern, handler, *_ in app.handlers:
        if pattern.startswith(API_PREFIX):
            for path in templates(pattern):
                routes[path] = implemented(handler)
    return routes


def extension_app(serverapp: Any) -> AgentBuild:
    (app,) = serverapp.extension_manager.extension_apps["jupyter_agentbuild"]
    assert isinstance(app, AgentBuild)
    return app


def test_templates_of_patterns() -> None:
    build = r"(?P<build_id>[A-Za-z0-9_-]{1,64})"
    assert templates(rf"/a/{build}/artifacts\.(?P<fmt>zip|tar\.gz)") == [
        "/a/{build_id}/artifacts.zip",
        "/a/{build_id}/artifacts.tar.gz",
    ]
    assert templates(rf"/a/{build}/artifacts/(?P<path>.+)") == ["/a/{build_id}/artifacts/{path}"]


async def test_document_lists_exactly_the_registered_routes(api: Api, jp_fetch: Any) -> None:
    response = await jp_fetch("agentbuild", "api", "openapi.json")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = json.loads(response.body)
    validate(document)  # raises on an invalid OpenAPI document

    routes = registered_routes(extension_app(api.app))
    assert len(routes) >= 12, routes  # the builds, logs, stream, artifacts, preview... routes
    documented = {
        path: {m for m in item if m in METHODS} for path, item in document["paths"].items()
    }
    assert documented == routes


async def test_shapes_are_the_contracts(api: Api, jp_fetch: Any) -> None:
    document = json.loads((await jp_fetch("agentbuild", "api", "openapi.json")).body)
    components = document["components"]["schemas"]
    assert set(components) == set(schema()["$defs"])
    # the same shape, only its references moved into the OpenAPI document
    build = json.dumps(schema()["$defs"]["Build"]).replace("#/$defs/", "#/components/schemas/")
    assert components["Build"] == json.loads(build)
    assert "#/$defs/" not in json.dumps(document)


async def test_document_needs_credentials(api: Api, jp_fetch: Any) -> None:
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("agentbuild", "api", "openapi.json", headers={"Authorization": ""})
    assert caught.value.code in (401, 403)  # Jupyter answers 403 to an API call without credentials
