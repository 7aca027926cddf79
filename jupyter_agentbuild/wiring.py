"""The extension's object graph: each component made once, with ``parent=`` the app.

A component that owns its configuration reads ``c.<Component>.*`` through its parent;
one that still takes a config object gets it from the ``AgentBuild`` traits here, in a
function of its own, so each can move to its own traits without touching the others.
Nothing here does I/O: the start hook connects and starts what needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_core.paths import (
    jupyter_config_dir,
    jupyter_config_path,
    jupyter_data_dir,
    jupyter_runtime_dir,
)
from sqlalchemy import make_url

from .artifacts.collect import ArtifactCollector
from .artifacts.service import ArtifactService
from .identity import server_user
from .preview import PreviewManager
from .preview.origin import PreviewOrigins
from .providers import ProviderCatalog, configurable_classes
from .runner import Runner
from .sandbox.base import SandboxProvider
from .service import BuildService
from .store.artifacts import ArtifactRecords
from .store.repository import Store

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .app import AgentBuild

#: The components configured on their own (``c.<Class>.<trait>``), in the order the
#: reference and ``--help-all`` list them.
CONFIGURABLES: tuple[type, ...] = (
    BuildService,
    ArtifactService,
    ArtifactCollector,
    Store,
    Runner,
    PreviewManager,
    *configurable_classes(),
)


@dataclass
class AgentBuildState:
    """What handlers reach through ``settings["agentbuild"]``."""

    service: BuildService
    runner: Runner
    store: Store
    personal_owner: str
    artifacts: ArtifactService | None = None
    previews: PreviewManager | None = None
    #: Largest body of ``POST api/builds`` (413 beyond).
    max_request_bytes: int = 16 * 1024**2
    #: The sandbox providers, what each can do here, which builds may use (info endpoint).
    catalog: ProviderCatalog | None = None
    #: Which host names are previews' own origins, and the URL a client is given.
    preview_origins: PreviewOrigins = PreviewOrigins()


def build_state(app: AgentBuild) -> AgentBuildState:
    """Every component, connected: the runner's hooks collect artifacts, then run the
    preview; deleting a build removes its artifacts and its preview."""
    server: Any = app.serverapp
    store = make_store(app)
    artifacts = ArtifactService(ArtifactRecords(store.engine), parent=app)
    catalog = make_catalog(app, hidden_paths(app, artifacts.root, store.db_url))
    collector = ArtifactCollector(artifacts.records, artifacts.blobs, parent=app)
    runner = make_runner(app, store, catalog.providers, collector)
    previews = make_previews(app, store, catalog.providers, runner)
    runner.hooks.append(previews)
    service = BuildService(store, runner, catalog, root_dir=Path(server.root_dir), parent=app)
    artifacts.builds = service
    service.previews = previews
    service.on_delete.extend([artifacts.forget, previews.discard])
    return AgentBuildState(
        service=service,
        runner=runner,
        store=store,
        personal_owner=app.owner_name or server_user(),
        artifacts=artifacts,
        previews=previews,
        max_request_bytes=app.max_request_bytes,
        catalog=catalog,
        preview_origins=PreviewOrigins(previews.origin_template),
    )


def make_store(app: AgentBuild) -> Store:
    return Store(parent=app)


def make_catalog(app: AgentBuild, private_paths: list[str]) -> ProviderCatalog:
    return ProviderCatalog(parent=app, private_paths=tuple(private_paths))


def make_runner(
    app: AgentBuild,
    store: Store,
    providers: Mapping[str, SandboxProvider],
    collector: ArtifactCollector,
) -> Runner:
    return Runner(store, providers, on_activity=app.record_activity, hooks=[collector], parent=app)


def make_previews(
    app: AgentBuild, store: Store, providers: Mapping[str, SandboxProvider], runner: Runner
) -> PreviewManager:
    server: Any = app.serverapp
    return PreviewManager(
        store,
        providers,
        base_url=server.base_url,
        runner=runner,
        on_activity=app.record_activity,
        parent=app,
    )


def hidden_paths(app: AgentBuild, artifacts_root: str, db_url: str) -> list[str]:
    """What an isolated build must not see of this server: its secrets, the notebooks and
    the artifacts (each provider adds its own workspace root and configured paths)."""
    server: Any = app.serverapp
    paths = [
        str(Path.home()),
        "/root",
        "/home",
        jupyter_data_dir(),
        jupyter_runtime_dir(),
        jupyter_config_dir(),
        *jupyter_config_path(),
        artifacts_root,
        str(server.root_dir),
    ]
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database:
        paths.append(str(Path(url.database).expanduser().resolve().parent))
    return [os.path.abspath(os.path.expanduser(p)) for p in paths if p]
