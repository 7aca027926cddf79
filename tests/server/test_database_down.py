"""A request that meets the database down or restarting answers 503 (the client retries),
never 500: the errors come from real drivers (a refused PostgreSQL connection, a real
SQLite constraint failure), and through a real server."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from jupyter_agentbuild.errors import database_unavailable
from tests.conftest import Api


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns


async def _refused() -> Exception:
    """What the driver raises when PostgreSQL is not there (asyncpg: ConnectionRefusedError;
    the store's engine wraps it into SQLAlchemy's OperationalError)."""
    engine = create_async_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/x", poolclass=NullPool
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("connected to a closed port")


async def test_a_refused_connection_is_unavailable_a_constraint_is_not(tmp_path: Any) -> None:
    refused = await _refused()
    assert database_unavailable(refused)
    assert database_unavailable(OperationalError("SELECT 1", None, refused))
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (a INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(DBAPIError) as integrity:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(DBAPIError) as programming:
                await conn.execute(text("SELECT nope FROM t"))
    finally:
        await engine.dispose()
    assert not database_unavailable(integrity.value)
    assert not database_unavailable(programming.value)
    assert not database_unavailable(ValueError("x"))


async def test_the_api_answers_503_while_the_database_is_down(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = await api.create({"steps": ["true"]})
    await api.finish(build["id"])
    refused = await _refused()
    store = api.app.web_app.settings["agentbuild"].store

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT", None, refused)

    monkeypatch.setattr(store, "get_build", down)
    monkeypatch.setattr(store, "list_builds", down)
    for path in (f"builds/{build['id']}", "builds", f"builds/{build['id']}/logs"):
        status, body, headers = await api.call("GET", path)
        assert status == 503, (path, status, body)
        assert body["error"]["code"] == "unavailable"
        assert headers["Retry-After"] == "1"


async def test_a_build_rides_out_a_database_blip_while_it_starts(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim of a slot and the ``running`` row are retried, as log writes are: a
    database restart at that moment (the soak's) must not fail the build."""
    refused = await _refused()
    store = api.app.web_app.settings["agentbuild"].store
    failures = {"claim_slot": 2, "update_build": 1}
    for name in failures:
        real = getattr(store, name)

        def flaky(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            if failures[_name] > 0:
                failures[_name] -= 1
                raise OperationalError("SELECT", None, refused)
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, flaky)
    build = await api.create({"steps": ["echo fine"]})
    done = await api.finish(build["id"])
    assert done["status"] == "succeeded", done
    assert failures == {"claim_slot": 0, "update_build": 0}


async def test_a_live_server_whose_heartbeat_is_late_keeps_its_builds(api: Api) -> None:
    """On the same host, a server whose process is alive (and older than the build: not a
    reused pid) is alive, however late its heartbeat: under load a beat can take longer
    than ``stale_after``, and reaping would kill a live build (found by the soak). Once
    the process is gone, the build is reaped at once."""
    import asyncio
    import socket
    import sys
    from datetime import timedelta

    from jupyter_agentbuild.entries import utcnow

    agentbuild = api.app.web_app.settings["agentbuild"]
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(600)"
    )
    try:
        build = await api.create({"steps": ["true"]})
        await api.finish(build["id"])
        late = utcnow() - timedelta(seconds=agentbuild.runner.stale_after + 60)
        await agentbuild.store.update_build(
            build["id"],
            status="running",
            finished_at=None,
            runner_id="another-server-here",
            runner_host=socket.gethostname(),
            runner_pid=other.pid,
            heartbeat_at=late,
        )
        await agentbuild.runner.reconcile()
        row = await agentbuild.store.get_build(build["id"])
        assert row is not None and row.status == "running"
    finally:
        other.kill()
        await other.wait()
    await agentbuild.runner.reconcile()
    row = await agentbuild.store.get_build(build["id"])
    assert row is not None and row.status == "interrupted"
