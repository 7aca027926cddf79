"""Sandbox providers: plugins, the admin's allow-list, and the explicit choice.

Providers register in the entry-point group :data:`ENTRY_POINT_GROUP` (the way
jupyter_server and JupyterHub load pluggable classes): each entry point names a callable
``(*, parent: ProviderCatalog) -> SandboxProvider``, such as a provider class (a
``LoggingConfigurable``: made with the catalog as parent, its traits are configured as
``c.<ClassName>.<trait>``). This package registers three: ``local`` (isolated, Linux
namespaces), ``process`` (plain processes, only with ``allow_unisolated``) and ``e2b``;
another package adds a Docker or Kubernetes one without touching this one.

The choice is explicit: the predecessor switched to the real cloud whenever its key
differed from one placeholder. Here the default is ``local``, ``e2b`` or ``auto``;
``auto`` picks E2B only for a key that looks real, and a key is never logged or
returned. A build naming a provider the admin did not allow, or one that does not work
on this server, is refused before anything runs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from traitlets import Bool, List, Unicode, default
from traitlets.config import Configurable, LoggingConfigurable

from .errors import ConfigError, SpecError
from .sandbox.base import ProviderStatus, SandboxProvider

#: The entry-point group sandbox providers register in.
ENTRY_POINT_GROUP = "jupyter_agentbuild.providers"
#: This package's own registrations, used where its metadata is stale (an editable
#: install made before they existed); entry points of the same name win.
BUILTIN_PROVIDERS = {
    "local": "jupyter_agentbuild.sandbox.plugins:isolated_local",
    "process": "jupyter_agentbuild.sandbox.plugins:process_local",
    "e2b": "jupyter_agentbuild.sandbox.plugins:e2b",
}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
log = logging.getLogger(__name__)


class ProviderUnavailable(Exception):
    """Raised by a factory: the provider is registered but cannot work with this
    configuration (the message says why and which setting to change)."""


#: What an entry point names: called with ``parent=`` the catalog (a provider class is one).
ProviderFactory = Callable[..., SandboxProvider]


def load_factories() -> dict[str, ProviderFactory]:
    """Every registered provider factory, by name (entry points over built-ins)."""
    specs: dict[str, Any] = dict(BUILTIN_PROVIDERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not _NAME.match(ep.name):
            log.warning("agentbuild: ignoring provider entry point with bad name %r", ep.name)
            continue
        specs[ep.name] = ep
    factories: dict[str, ProviderFactory] = {}
    for name, spec in specs.items():
        try:
            factories[name] = spec.load() if not isinstance(spec, str) else _load(spec)
        except Exception as exc:  # a broken plugin must not stop the server
            log.error("agentbuild: cannot load sandbox provider %r: %s", name, exc)
    return factories


def _load(spec: str) -> ProviderFactory:
    module, _, attr = spec.partition(":")
    mod = __import__(module, fromlist=[attr])
    factory: ProviderFactory = getattr(mod, attr)
    return factory


class ProviderCatalog(LoggingConfigurable):
    """The providers this server has, what each can do here, and which builds may use.

    ``providers`` is the mapping the runner and the preview manager use; ``statuses``
    covers every registered provider (also those that could not be made). Made once at
    start-up; a setup that cannot work (unknown default, a default the allow-list
    excludes) raises :class:`ConfigError`."""

    provider = Unicode(
        help="""Sandbox provider for builds that do not name one: 'local' (the default
        without a real E2B key) runs steps in Linux namespaces (bubblewrap); 'e2b' uses E2B
        cloud sandboxes and needs a real api_key; 'process' runs plain processes (needs
        allow_unisolated); 'auto' (default) uses E2B only when the key looks real, else
        local. Any provider registered in the 'jupyter_agentbuild.providers' entry-point
        group can be named. Env fallback: AGENTBUILD_PROVIDER.""",
    ).tag(config=True)

    @default("provider")
    def _provider_default(self) -> str:
        return os.environ.get("AGENTBUILD_PROVIDER", "auto")

    allowed_providers = List(
        Unicode(),
        help="""The providers builds may use (default: every registered one). A build that
        names another is refused (400, error.code 'provider_not_allowed') and nothing runs;
        e.g. ['e2b'] keeps every build off this host.""",
    ).tag(config=True)
    allow_unisolated = Bool(
        False,
        help="""Allow builds to run as plain processes of the server's user, which can read
        everything the server can (its token, cookie secret, database, other builds): the
        'process' provider, and 'local' where Linux namespaces cannot be made. Default False:
        such builds are refused with the reason.""",
    ).tag(config=True)

    def __init__(
        self,
        *,
        private_paths: Sequence[str] = (),
        factories: Mapping[str, ProviderFactory] | None = None,
        **kwargs: Any,
    ) -> None:
        """``private_paths``: what this server keeps from isolated builds, found at
        start-up; ``factories``: the registered providers (default: the entry points)."""
        super().__init__(**kwargs)
        self.private_paths = tuple(private_paths)
        factories = load_factories() if factories is None else factories
        self.allowed = frozenset(self.allowed_providers) if self.allowed_providers else None
        self.providers: dict[str, SandboxProvider] = {}
        self.statuses: dict[str, ProviderStatus] = {}
        if self.allowed is not None:
            unknown = sorted(self.allowed - set(factories))
            if unknown:
                raise ConfigError(
                    f"c.ProviderCatalog.allowed_providers names unregistered providers: "
                    f"{', '.join(unknown)} (registered: {', '.join(sorted(factories))})"
                )
        for name, factory in factories.items():
            self._make(name, factory)
        self.default = self._default(set(factories))

    def _make(self, name: str, factory: ProviderFactory) -> None:
        try:
            self.providers[name] = factory(parent=self)
        except ProviderUnavailable as exc:
            self.statuses[name] = ProviderStatus(False, False, str(exc))
        except Exception as exc:
            log.error("agentbuild: sandbox provider %r failed to start: %s", name, exc)
            self.statuses[name] = ProviderStatus(False, False, f"failed to start: {exc}")

    def _default(self, registered: set[str]) -> str:
        """The provider for builds that name none, from the ``provider`` setting."""
        setting = self.provider
        if setting == "e2b" and "e2b" in self.statuses and "e2b" not in self.providers:
            raise ConfigError(self.statuses["e2b"].detail)  # why it could not be made
        key = getattr(self.providers.get("e2b"), "api_key", None)
        if setting == "auto":
            chosen = default_provider("auto", key)
            if self.allowed is not None and chosen not in self.allowed:
                chosen = sorted(self.allowed)[0]
        elif setting in ("local", "e2b"):
            chosen = default_provider(setting, key)
        elif setting in registered:
            chosen = setting
        else:
            raise ConfigError(
                f"c.ProviderCatalog.provider = {setting!r} is not a registered provider "
                f"(registered: {', '.join(sorted(registered))}, or auto)"
            )
        if self.allowed is not None and chosen not in self.allowed:
            raise ConfigError(
                f"c.ProviderCatalog.provider {chosen!r} is not in "
                "c.ProviderCatalog.allowed_providers"
            )
        return chosen

    async def check(self) -> None:
        """Ask each provider whether it works here (e.g. can namespaces be made)."""
        for name, provider in self.providers.items():
            checker = getattr(provider, "check", None)
            try:
                status = await checker() if checker is not None else ProviderStatus(True, False)
            except Exception as exc:
                status = ProviderStatus(False, False, f"check failed: {exc}")
            self.statuses[name] = status

    def is_allowed(self, name: str) -> bool:
        return self.allowed is None or name in self.allowed

    def choose(self, requested: str | None, *, network: bool, preview: bool) -> str:
        """The provider a build runs on; :class:`SpecError` (400) when it may not run."""
        name = requested or self.default
        if name not in self.statuses and name not in self.providers:
            raise SpecError(
                f"unknown provider {name!r}; this server has: {', '.join(sorted(self.statuses))}",
                field="provider",
                code="invalid_provider",
            )
        if not self.is_allowed(name):
            allowed = ", ".join(sorted(self.allowed or ()))
            raise SpecError(
                f"provider {name!r} is not allowed on this server (allowed: {allowed})",
                field="provider",
                code="provider_not_allowed",
            )
        status = self.statuses.get(name)
        if status is None or not status.available or name not in self.providers:
            why = status.detail if status is not None else "not checked yet"
            raise SpecError(
                f"provider {name!r} is unavailable: {why}",
                field="provider",
                code="provider_unavailable",
            )
        if not network:
            if not status.network_off:
                raise SpecError(
                    f"provider {name!r} cannot run a build without network here",
                    field="network",
                    code="network_unsupported",
                )
            if preview:
                raise SpecError(
                    "a preview needs the network: with network false the proxy cannot "
                    "reach it (drop the preview, or the network setting)",
                    field="network",
                )
        return name

    def info(self) -> dict[str, Any]:
        """JSON for the info endpoint: no secret, no path."""
        return {
            "default_provider": self.default,
            "providers": [
                {
                    "name": name,
                    "allowed": self.is_allowed(name),
                    "available": status.available,
                    "isolated": status.isolated,
                    "network_off": status.network_off,
                    "detail": status.detail,
                }
                for name, status in sorted(self.statuses.items())
            ],
        }


def configurable_classes() -> list[type[Configurable]]:
    """The classes whose traits configure this package's sandboxes (for ``--help-all``)."""
    from .sandbox.e2b.provider import E2BSandboxProvider
    from .sandbox.isolated_provider import IsolatedLocalProvider
    from .sandbox.local_provider import LocalSandboxProvider, ProcessProvider
    from .sandbox.provider_base import ProviderBase

    return [
        ProviderCatalog,
        ProviderBase,
        LocalSandboxProvider,
        IsolatedLocalProvider,
        ProcessProvider,
        E2BSandboxProvider,
    ]


E2B_KEY_SETTING = (
    "c.E2BSandboxProvider.api_key (formerly c.AgentBuild.e2b_api_key), "
    "or the E2B_API_KEY environment variable"
)
_PLACEHOLDER = re.compile(
    r"(your|xxx|placeholder|example|changeme|change_me|dummy|fake|replace|insert|todo|\.\.\.|<|>)",
    re.IGNORECASE,
)


def looks_like_e2b_key(key: str | None) -> bool:
    """E2B keys start with ``e2b_`` and are long and random; placeholders are not keys."""
    if not key:
        return False
    key = key.strip()
    if not key.startswith("e2b_") or len(key) < 36:
        return False
    body = key[4:]
    if _PLACEHOLDER.search(body) or not re.fullmatch(r"[A-Za-z0-9_\-]+", body):
        return False
    return len(set(body)) >= 10


def default_provider(setting: str, e2b_key: str | None) -> str:
    """The provider for builds that do not name one; raises ConfigError for a bad setup."""
    if setting == "local":
        return "local"
    if setting == "e2b":
        check_e2b(e2b_key)
        return "e2b"
    if looks_like_e2b_key(e2b_key):
        return "e2b"
    return "local"


def check_e2b(e2b_key: str | None) -> None:
    if not e2b_key:
        raise ConfigError(f"provider 'e2b' needs an E2B API key: set {E2B_KEY_SETTING}")
    if not looks_like_e2b_key(e2b_key):
        raise ConfigError(
            f"the E2B API key in {E2B_KEY_SETTING} is malformed or a placeholder "
            "(real keys start with 'e2b_')"
        )
