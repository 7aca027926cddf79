"""The contract's one definition (agentbuild.schema.json) is served, agrees with the
server's status lists, and real responses validate against it: the JupyterLab extension
generates its types from this file, so a drift here would be a drift there."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from jupyter_agentbuild.contract import active_statuses, schema, terminal_statuses
from jupyter_agentbuild.store import ACTIVE_STATUSES, TERMINAL_STATUSES
from tests.conftest import Api


def validator(name: str) -> Any:
    """A validator of ``$defs/name`` with the whole schema as its resolution scope."""
    whole = schema()
    return jsonschema.Draft202012Validator({**whole, "$ref": f"#/$defs/{name}"})


def test_status_lists_are_the_servers() -> None:
    assert active_statuses() == ACTIVE_STATUSES
    assert terminal_statuses() == TERMINAL_STATUSES
    assert schema()["$defs"]["Status"]["enum"] == [*ACTIVE_STATUSES, *TERMINAL_STATUSES]
    jsonschema.Draft202012Validator.check_schema(schema())


async def test_contract_is_served(api: Api) -> None:
    code, body, headers = await api.call("GET", "contract.json")
    assert code == 200
    assert body == schema()
    assert headers["Content-Type"].startswith("application/json")


async def test_real_responses_validate(api: Api, tmp_path: Any) -> None:
    build = await api.create(
        {
            "name": "shapes",
            "steps": [{"name": "make", "run": "echo out > out.txt; echo done"}],
            "env": {"TOKEN": {"value": "s3cret", "secret": True}},
            "artifacts": {"paths": ["out.txt"]},
        }
    )
    validator("Build").validate(build)
    final = await api.finish(build["id"])
    validator("Build").validate(final)
    assert final["status"] == "succeeded"
    code, page, _ = await api.call("GET", "builds")
    assert code == 200
    validator("BuildList").validate(page)
    code, logs, _ = await api.call("GET", f"builds/{build['id']}/logs")
    validator("LogPage").validate(logs)
    for entry in logs["entries"]:
        validator("Entry").validate(entry)
    code, artifacts, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    validator("ArtifactList").validate(artifacts)
    code, error, _ = await api.call("GET", "builds/nope")
    assert code == 404
    validator("Error").validate(error)


@pytest.mark.parametrize("status", ["bogus"])
async def test_unknown_status_is_refused_in_the_contract_shape(api: Api, status: str) -> None:
    code, error, _ = await api.call("GET", "builds", params={"status": status})
    assert code == 400
    validator("Error").validate(error)
