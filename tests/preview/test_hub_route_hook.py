"""Under JupyterHub, a preview asks the hub's routes service for its host's route: when the
service cannot be reached, the preview still starts (its path URL works) and the build's log
says why its own origin is not routed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.preview.conftest import Previews


@pytest.fixture(autouse=True)
def hub_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Set before the server starts: the extension reads them at start-up. Port 9 refuses.
    monkeypatch.setenv("AGENTBUILD_HUB_ROUTES_URL", "http://127.0.0.1:9/services/x/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "a-server-token")
    yield


async def test_an_unreachable_routes_service_is_a_warning_in_the_log(previews: Previews) -> None:
    assert previews.manager.routes is not None
    build = await previews.start()
    entries = await previews.api.all_logs(build["id"])
    lines = [e["text"] for e in entries if e.get("kind") == "log"]
    warning = [line for line in lines if "could not route this preview's origin" in line]
    assert warning and "a-server-token" not in warning[0], lines
    assert (await previews.fetch(build["id"], "/tiny")).code == 200  # the path URL works
    stopped = await previews.api.call("POST", f"builds/{build['id']}/preview/stop")
    assert stopped[0] == 200, stopped  # removing the route fails quietly too
