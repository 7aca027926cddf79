"""Sphinx extension: pages generated from the code at build time, with no network.

A page holding a marker line ``<!-- generated: NAME -->`` gets the marker replaced, as its
source is read, by Markdown made from the package itself:

- ``rest-api``: the OpenAPI document the server serves (``agentbuild/api/openapi.json``),
  as one section per route and one per schema;
- ``configuration``: the configuration reference. ``jupyter_agentbuild.config_reference``
  makes it where the package has that module; otherwise it is made here from the
  configurable traits of ``AgentBuild`` and of the classes it lists in ``classes``.
- ``optional-pages``: toctree entries for pages that may not exist yet (``migrations``).

Generating from the code is what keeps the reference true: a route, schema or setting added
to the package appears in the docs without anyone copying it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

MARKER = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.MULTILINE)
OPTIONAL_PAGES = ("migrations",)
METHODS = ("get", "head", "post", "put", "patch", "delete")
MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]<>|#])")


def escape(text: str) -> str:
    """Plain text as Markdown that shows it as it is (help strings hold ``<dir>`` and ``*``;
    backquotes are kept: they mark code in help and descriptions alike)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def schema_label(name: str) -> str:
    return f"schema-{name.lower()}"


def schema_link(schema: dict[str, Any]) -> str:
    """A reference to a component schema as a link; anything else as its JSON."""
    target = schema.get("$ref", "")
    if target.startswith("#/components/schemas/"):
        name = target.rsplit("/", 1)[1]
        return f"{{ref}}`{name} <{schema_label(name)}>`"
    return f"`{json.dumps(schema)}`"


def parameter_rows(parameters: Iterable[dict[str, Any]]) -> list[str]:
    rows = ["| name | in | type | meaning |", "|---|---|---|---|"]
    for p in parameters:
        kind = f"`{json.dumps(p.get('schema', {}))}`"
        rows.append(f"| `{p['name']}` | {p['in']} | {kind} | {escape(p.get('description', ''))} |")
    return rows


def response_rows(responses: dict[str, Any]) -> list[str]:
    rows = ["| status | meaning | body |", "|---|---|---|"]
    for status, answer in responses.items():
        bodies = [
            f"{kind}: {schema_link(media['schema'])}" if "schema" in media else kind
            for kind, media in answer.get("content", {}).items()
        ]
        rows.append(f"| {status} | {escape(answer['description'])} | {'; '.join(bodies)} |")
    return rows


def operation_markdown(path: str, method: str, operation: dict[str, Any], shared: list[Any]) -> str:
    lines = [f"### {method.upper()} `{path}`", "", escape(operation.get("summary", "")), ""]
    if operation.get("description"):
        lines += [operation["description"], ""]
    parameters = [*shared, *operation.get("parameters", [])]
    if parameters:
        lines += ["Parameters:", "", *parameter_rows(parameters), ""]
    body = operation.get("requestBody")
    if body:
        for kind, media in body["content"].items():
            lines += [
                f"Request body ({kind}):",
                "",
                "```json",
                json.dumps(media["schema"], indent=2),
                "```",
                "",
            ]
    lines += ["Responses:", "", *response_rows(operation["responses"]), ""]
    return "\n".join(lines)


def openapi_markdown() -> str:
    """The REST and WebSocket reference, from the document the server serves."""
    from jupyter_agentbuild.handlers.openapi import openapi_document

    document = openapi_document()
    parts = [document["info"]["description"], "", "## Routes", ""]
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        parts += [operation_markdown(path, m, item[m], shared) for m in METHODS if m in item]
    parts += ["## Schemas", "", "From the contract (`agentbuild/api/contract.json`).", ""]
    for name, schema in document["components"]["schemas"].items():
        parts += [
            f"({schema_label(name)})=",
            f"### {name}",
            "",
            "```json",
            json.dumps(schema, indent=2),
            "```",
            "",
        ]
    return "\n".join(parts)


def trait_markdown(owner: str, name: str, trait: Any) -> str:
    kind = type(trait).__name__
    lines = [f"### `c.{owner}.{name}`", "", f"{kind}, default `{trait.default_value_repr()}`.", ""]
    if trait.help:
        lines += [escape(trait.help), ""]
    return "\n".join(lines)


def traits_markdown() -> str:
    """The configuration reference made from the configurable classes' traits."""
    from jupyter_agentbuild.app import AgentBuild

    classes = [AgentBuild, *(c for c in AgentBuild.classes if c is not AgentBuild)]
    parts = []
    for cls in classes:
        traits = cls.class_own_traits(config=True)  # not those of Jupyter's ExtensionApp
        if not traits:
            continue
        parts += [f"## {cls.__name__}", "", escape(inspect.getdoc(cls) or ""), ""]
        parts += [trait_markdown(cls.__name__, name, traits[name]) for name in sorted(traits)]
    return "\n".join(parts)


def reference_function(module: Any) -> Callable[[], str] | None:
    """The module's one public function callable without arguments (its Markdown maker;
    the name is not fixed here, so the module can name it as it likes)."""
    found = [
        obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__ == module.__name__
        and not any(p.default is p.empty for p in inspect.signature(obj).parameters.values())
    ]
    if len(found) > 1:  # e.g. a command-line entry point beside it: take the Markdown one
        found = [f for f in found if "markdown" in f.__name__]
    return found[0] if len(found) == 1 else None


def configuration_markdown() -> str:
    try:
        module = importlib.import_module("jupyter_agentbuild.config_reference")
    except ModuleNotFoundError as exc:
        if exc.name != "jupyter_agentbuild.config_reference":
            raise
        return traits_markdown()
    maker = reference_function(module)
    if maker is None:
        raise RuntimeError("jupyter_agentbuild.config_reference: no single Markdown function")
    return str(maker())


def optional_pages(srcdir: Path) -> str:
    return "\n".join(page for page in OPTIONAL_PAGES if (srcdir / f"{page}.md").exists())


def fill_markers(app: Sphinx, docname: str, source: list[str]) -> None:
    generators: dict[str, Callable[[], str]] = {
        "rest-api": openapi_markdown,
        "configuration": configuration_markdown,
        "optional-pages": lambda: optional_pages(Path(app.srcdir)),
    }

    def replace(match: re.Match[str]) -> str:
        return generators[match.group(1)]()

    source[0] = MARKER.sub(replace, source[0])


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", fill_markers)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
