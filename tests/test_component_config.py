"""Runner and Store take their settings as traits of their own (c.Runner.*, c.Store.*)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlets.config import Config

from jupyter_agentbuild.runner import Runner
from jupyter_agentbuild.store.repository import Store


class Graceful:
    """A provider as far as the runner's stop bound cares: its SIGTERM-to-SIGKILL grace."""

    def __init__(self, kill_grace: float) -> None:
        self.kill_grace = kill_grace


def _store(tmp_path: Path, **kwargs: Any) -> Store:
    return Store(db_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", **kwargs)


async def test_runner_settings_come_from_keywords_or_its_config_section(tmp_path: Path) -> None:
    store = _store(tmp_path)
    runner = Runner(store, {}, parent=None, default_timeout=5, max_log_bytes=0)
    assert runner.default_timeout == 5 and runner.max_concurrent_builds == 4
    config = Config()
    config.Runner.stale_after = 7.0
    config.Runner.max_concurrent_builds = 2
    configured = Runner(store, {}, config=config)
    assert configured.stale_after == 7.0 and configured.max_concurrent_builds == 2
    await store.dispose()


async def test_shutdown_timeout_defaults_to_twice_the_longest_kill_grace(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert Runner(store, {}).stop_timeout == 10.0  # at least 10 s
    slow = {"a": Graceful(2.0), "b": Graceful(8.0)}
    assert Runner(store, slow).stop_timeout == 16.0
    assert Runner(store, slow, shutdown_timeout=3.0).stop_timeout == 3.0
    await store.dispose()


async def test_store_db_url_from_config_or_the_environment(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = Config()
    config.Store.db_url = f"sqlite:///{tmp_path / 'configured.db'}"
    store = Store(config=config)
    assert store.db_url.endswith("configured.db") and store.dialect == "sqlite"
    await store.dispose()
    monkeypatch.setenv("AGENTBUILD_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    from_env = Store()
    assert from_env.db_url.endswith("env.db")
    await from_env.dispose()
