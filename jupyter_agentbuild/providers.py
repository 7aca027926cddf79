"""Sandbox providers: plugins, the admin's allow-list, and the explicit choice.

Providers register in the entry-point group :data:`ENTRY_POINT_GROUP` (the way
jupyter_server and JupyterHub load pluggable classes): each entry point names a factory
``(ProviderSettings) -> SandboxProvider``. This package registers three: ``local``
(isolated, Linux namespaces), ``process`` (plain processes, only with
``allow_unisolated``) and ``e2b``; another package adds a Docker or Kubernetes one
without touching this one.

The choice is explicit: the predecessor switched to the real cloud whenever its key
differed from one placeholder. Here the default is ``local``, ``e2b`` or ``auto``;
``auto`` picks E2B only for a key that looks real, and a key is never logged or
returned. A build naming a provider the admin did not allow, or one that does not work
on this server, is refused before anything runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import ConfigError, SpecError
from .sandbox.base import ProviderStatus, SandboxProvider
from .sandbox.isolation import StepLimits

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


@dataclass(frozen=True)
class ProviderSettings:
    """What the extension's configuration gives every provider factory."""

    workspace_root: Path
    max_line_bytes: int = 65536
    kill_grace: float = 5.0
    #: Paths an isolated sandbox must not see (data, runtime and config dirs, home,
    #: database, artifacts...), and paths it gets back read-only (the Python install).
    hidden_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    limits: StepLimits = field(default_factory=StepLimits)
    allow_unisolated: bool = False
    e2b_api_key: str | None = None
    e2b_template: str | None = None
    e2b_sandbox_timeout: int = 3600
    #: The server's traitlets config, for third-party providers' own settings.
    config: Any = None


ProviderFactory = Callable[[ProviderSettings], SandboxProvider]


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


@dataclass
class ProviderCatalog:
    """The providers this server has, what each can do here, and which builds may use.

    ``providers`` is the mapping the runner and the preview manager use; ``statuses``
    covers every registered provider (also those that could not be made)."""

    default: str
    allowed: frozenset[str] | None = None
    providers: dict[str, SandboxProvider] = field(default_factory=dict)
    statuses: dict[str, ProviderStatus] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: ProviderSettings,
        *,
        default_setting: str,
        allowed: Iterable[str] | None,
        factories: Mapping[str, ProviderFactory] | None = None,
    ) -> ProviderCatalog:
        """Make every registered provider; raise :class:`ConfigError` for a setup
        that cannot work (unknown default, a default the allow-list excludes)."""
        factories = load_factories() if factories is None else factories
        allowed_set = frozenset(allowed) if allowed else None
        if allowed_set is not None:
            unknown = sorted(allowed_set - set(factories))
            if unknown:
                raise ConfigError(
                    f"c.AgentBuild.allowed_providers names unregistered providers: "
                    f"{', '.join(unknown)} (registered: {', '.join(sorted(factories))})"
                )
        if default_setting == "auto":
            default = default_provider("auto", settings.e2b_api_key)
            if allowed_set is not None and default not in allowed_set:
                default = sorted(allowed_set)[0]
        elif default_setting in ("local", "e2b"):
            default = default_provider(default_setting, settings.e2b_api_key)
        elif default_setting in factories:
            default = default_setting
        else:
            raise ConfigError(
                f"c.AgentBuild.provider = {default_setting!r} is not a registered provider "
                f"(registered: {', '.join(sorted(factories))}, or auto)"
            )
        if allowed_set is not None and default not in allowed_set:
            raise ConfigError(
                f"c.AgentBuild.provider {default!r} is not in c.AgentBuild.allowed_providers"
            )
        catalog = cls(default=default, allowed=allowed_set)
        for name, factory in factories.items():
            try:
                catalog.providers[name] = factory(settings)
            except ProviderUnavailable as exc:
                catalog.statuses[name] = ProviderStatus(False, False, str(exc))
            except Exception as exc:
                log.error("agentbuild: sandbox provider %r failed to start: %s", name, exc)
                catalog.statuses[name] = ProviderStatus(False, False, f"failed to start: {exc}")
        return catalog

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


E2B_KEY_SETTING = "c.AgentBuild.e2b_api_key (or the E2B_API_KEY environment variable)"
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
