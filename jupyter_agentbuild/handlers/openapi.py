"""``GET agentbuild/api/openapi.json``: the REST and WebSocket API as an OpenAPI 3.1 document.

The shapes are not written here: ``components.schemas`` is the contract's JSON Schema
(``agentbuild.schema.json``, JSON Schema 2020-12, which OpenAPI 3.1 speaks), its references
moved from ``#/$defs/X`` to ``#/components/schemas/X``. What this module adds is the routes,
their parameters and their answers; a test compares those routes with the handlers the
extension registers, so a route cannot be added without being documented.

The document is behind Jupyter's authentication like the rest of the API: it says nothing
secret, but nothing needs it without credentials either (a client that may call the API may
read its description), and a public route would be the one place that tells an anonymous
caller this extension is installed.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import __version__
from ..contract import schema
from .base import AgentBuildHandler

__all__ = ["OpenAPIHandler", "openapi_document"]

Json = dict[str, Any]

BUILDS = "/agentbuild/api/builds"
BUILD = BUILDS + "/{build_id}"
JSON = "application/json"


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def json_answer(description: str, schema_name: str | None = None) -> Json:
    body: Json = ref(schema_name) if schema_name else {"type": "object"}
    return {"description": description, "content": {JSON: {"schema": body}}}


def errors(*codes: int) -> dict[str, Json]:
    """Error answers, all with the contract's error shape."""
    meaning = {
        400: "invalid request (`error.field` names the culprit)",
        404: "no such build, or another owner's",
        409: "the build's state does not allow it",
        413: "too large",
        416: "range not satisfiable",
        429: "quota exceeded (`Retry-After` says when to try again)",
        503: "the database is unavailable (`Retry-After: 1`), or the server is misconfigured",
    }
    return {str(c): json_answer(meaning[c], "Error") for c in codes}


def query(name: str, description: str, schema: Json) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


BUILD_ID_PARAM: Json = {
    "name": "build_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
AFTER = query(
    "after",
    "only entries with a larger `seq` (resume from the last one seen)",
    {"type": "integer", "minimum": 0, "default": 0},
)
ARTIFACT_PATH_PARAM: Json = {
    "name": "path",
    "in": "path",
    "required": True,
    "description": "the file's path in the manifest, `/`-separated",
    "schema": {"type": "string"},
}
BUILD_SPEC: Json = {
    "type": "object",
    "description": (
        "A BuildSpec: `name`, `provider`, `workspace`, `network`, `files`, `steps` (required), "
        "`env`, `timeout`, `artifacts`, `preview`; see the user guide's BuildSpec section."
    ),
    "required": ["steps"],
    "properties": {
        "steps": {"type": "array", "minItems": 1, "items": {"type": ["string", "object"]}}
    },
}
STREAM_DESCRIPTION = (
    "A WebSocket (send `Upgrade: websocket`). The server sends the backlog after `after`, then "
    "live entries, each message a JSON array of Entry objects (`#/components/schemas/Entry`), "
    "and closes with code 1000 after the entry carrying the terminal status. Reconnect with "
    "`after=<last seq seen>` to resume exactly: nothing is missed or repeated."
)


def build_routes() -> dict[str, Json]:
    """The collection of builds, and one build."""
    built = json_answer("the build, its whole spec (`spec_complete: true`)", "Build")
    return {
        BUILDS: {
            "get": {
                "operationId": "listBuilds",
                "summary": "The caller's builds, newest first, specs summarised",
                "parameters": [
                    query("status", "comma-separated statuses to keep", {"type": "string"}),
                    query(
                        "q",
                        "keep builds whose name or id contains this, ignoring case "
                        "(400 `invalid_query` beyond 200 characters or with control characters)",
                        {"type": "string", "maxLength": 200},
                    ),
                    query(
                        "limit",
                        "builds per page",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    ),
                    query(
                        "before",
                        "the previous page's `next` cursor",
                        {"type": "integer", "minimum": 1},
                    ),
                ],
                "responses": {"200": json_answer("a page of builds", "BuildList"), **errors(400)},
            },
            "post": {
                "operationId": "startBuild",
                "summary": "Start a build",
                "requestBody": {"required": True, "content": {JSON: {"schema": BUILD_SPEC}}},
                "responses": {"201": built, **errors(400, 413, 429, 503)},
            },
        },
        BUILD: {
            "parameters": [BUILD_ID_PARAM],
            "get": {
                "operationId": "getBuild",
                "summary": "One build",
                "responses": {"200": built, **errors(404)},
            },
            "delete": {
                "operationId": "deleteBuild",
                "summary": "Delete a build with its log and artifacts (stopping it and its preview first)",
                "responses": {"204": {"description": "deleted"}, **errors(404)},
            },
        },
    }


def control_routes() -> dict[str, Json]:
    """The routes that stop a build or its preview."""
    return {
        BUILD + "/cancel": {
            "parameters": [BUILD_ID_PARAM],
            "post": {
                "operationId": "cancelBuild",
                "summary": "Ask a running or queued build to stop",
                "responses": {
                    "202": json_answer("the build, stopping", "Build"),
                    **errors(404, 409),
                },
            },
        },
        BUILD + "/preview/stop": {
            "parameters": [BUILD_ID_PARAM],
            "post": {
                "operationId": "stopPreview",
                "summary": "Stop the build's live preview",
                "responses": {
                    "200": json_answer("stopped", "Build"),
                    "202": json_answer("another live server runs it and will stop it", "Build"),
                    **errors(404, 409),
                },
            },
        },
        BUILD + "/preview/restart": {
            "parameters": [BUILD_ID_PARAM],
            "post": {
                "operationId": "restartPreview",
                "summary": "Replace the live preview's process by a fresh one, at the same URLs",
                "description": "409 `preview_gone` once the preview has stopped (its sandbox "
                "went with it), `no_preview`, `preview_starting` or `preview_elsewhere`.",
                "responses": {
                    "200": json_answer("restarted: `preview` is ready again, or failed", "Build"),
                    **errors(404, 409),
                },
            },
        },
    }


def log_routes() -> dict[str, Json]:
    """A build's log: pages over REST, live over a WebSocket."""
    return {
        BUILD + "/logs": {
            "parameters": [BUILD_ID_PARAM],
            "get": {
                "operationId": "getLogs",
                "summary": "A page of log entries (or, with `format=text`, the whole log as plain text)",
                "parameters": [
                    AFTER,
                    query("limit", "entries per page", {"type": "integer", "minimum": 1}),
                    query(
                        "format",
                        "`text`: every log line as streamed plain text",
                        {"type": "string", "enum": ["text"]},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "a page (JSON), or the log as text",
                        "content": {
                            JSON: {"schema": ref("LogPage")},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    **errors(400, 404),
                },
            },
        },
        BUILD + "/stream": {
            "parameters": [BUILD_ID_PARAM],
            "get": {
                "operationId": "streamLogs",
                "summary": "Live log entries over a WebSocket",
                "description": STREAM_DESCRIPTION,
                "parameters": [AFTER],
                "responses": {
                    "101": {"description": "switching to the WebSocket"},
                    **errors(400, 404),
                },
            },
        },
    }


def artifact_routes() -> dict[str, Json]:
    """The routes of a build's artifacts: manifest, archives, single files."""
    file_answer = {"description": "the file's bytes (`Range`, `ETag`, `If-None-Match` supported)"}
    file_operation = {
        "responses": {"200": file_answer, "206": {"description": "a range"}, **errors(404, 416)}
    }
    archives = {
        f"{BUILD}/artifacts.{fmt}": {
            "parameters": [BUILD_ID_PARAM],
            "get": {
                "operationId": f"downloadArtifacts{label}",
                "summary": f"Every artifact in one {fmt} archive, streamed",
                "responses": {
                    "200": {"description": "the archive", "content": {kind: {}}},
                    **errors(404),
                },
            },
        }
        for fmt, label, kind in (
            ("zip", "Zip", "application/zip"),
            ("tar.gz", "TarGz", "application/gzip"),
        )
    }
    return {
        BUILD + "/artifacts": {
            "parameters": [BUILD_ID_PARAM],
            "get": {
                "operationId": "listArtifacts",
                "summary": "The build's artifact manifest",
                "responses": {"200": json_answer("the manifest", "ArtifactList"), **errors(404)},
            },
        },
        **archives,
        BUILD + "/artifacts/{path}": {
            "parameters": [BUILD_ID_PARAM, ARTIFACT_PATH_PARAM],
            "get": {"operationId": "downloadArtifact", "summary": "One artifact", **file_operation},
            "head": {
                "operationId": "headArtifact",
                "summary": "One artifact's headers",
                **file_operation,
            },
        },
    }


def server_routes() -> dict[str, Json]:
    """The routes describing the server itself."""
    return {
        "/agentbuild/api/info": {
            "get": {
                "operationId": "getInfo",
                "summary": "The providers this server has: available, allowed, isolated, and why not",
                "responses": {"200": json_answer("the server's providers"), **errors(503)},
            }
        },
        "/agentbuild/api/contract.json": {
            "get": {
                "operationId": "getContract",
                "summary": "The contract's JSON Schema (statuses and shapes)",
                "responses": {"200": json_answer("a JSON Schema (2020-12)")},
            }
        },
        "/agentbuild/api/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "summary": "This document",
                "responses": {"200": json_answer("an OpenAPI 3.1 document")},
            }
        },
    }


def contract_components() -> dict[str, Json]:
    """The contract's ``$defs``, their references pointed at ``components/schemas``."""
    text = json.dumps(schema()["$defs"]).replace('"#/$defs/', '"#/components/schemas/')
    components: dict[str, Json] = json.loads(text)
    return components


@cache
def openapi_text() -> str:
    """The document's JSON text, made once: it depends only on the installed package."""
    return json.dumps(openapi_document())


def openapi_document() -> Json:
    """The OpenAPI 3.1 document; paths are relative to the server's ``base_url``."""
    auth = (
        "Jupyter's own: `Authorization: token <token>`, or its login cookie with the XSRF header."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jupyter_agentbuild",
            "version": __version__,
            "description": (
                "Sandboxed builds inside a Jupyter server. Every path is relative to the "
                f"server's `base_url`. Authentication: {auth} Errors answer "
                '`{"error": {"code", "message", "field"?}}`. The preview path proxy, '
                "`agentbuild/preview/{build_id}/...`, serves the build's own app, not this "
                "API: it is not listed here."
            ),
        },
        "servers": [{"url": "/", "description": "the Jupyter server's base_url"}],
        "security": [{"jupyterToken": []}],
        "paths": {
            **build_routes(),
            **control_routes(),
            **log_routes(),
            **artifact_routes(),
            **server_routes(),
        },
        "components": {
            "schemas": contract_components(),
            "securitySchemes": {
                "jupyterToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": auth,
                }
            },
        },
    }


class OpenAPIHandler(AgentBuildHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(openapi_text())
