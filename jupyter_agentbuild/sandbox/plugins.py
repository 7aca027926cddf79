"""This package's sandbox provider registrations (entry-point group
``jupyter_agentbuild.providers``).

An entry point names a callable taking ``parent=`` the provider catalog and returning a
provider: a provider class (a ``LoggingConfigurable``) is one. These three pass the
catalog's runtime facts on to the provider that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import SandboxProvider
from .isolated_provider import IsolatedLocalProvider
from .local_provider import ProcessProvider

if TYPE_CHECKING:
    from ..providers import ProviderCatalog


def isolated_local(*, parent: ProviderCatalog) -> SandboxProvider:
    """``local``: the isolated local sandbox (bubblewrap, Linux namespaces)."""
    return IsolatedLocalProvider(
        parent=parent,
        private_paths=parent.private_paths,
        allow_unisolated=parent.allow_unisolated,
    )


def process_local(*, parent: ProviderCatalog) -> SandboxProvider:
    """``process``: plain processes, usable only with ``allow_unisolated``."""
    return ProcessProvider(parent=parent, allowed=parent.allow_unisolated)


def e2b(*, parent: ProviderCatalog) -> SandboxProvider:
    """``e2b``: E2B cloud sandboxes; unavailable without a real-looking key."""
    from ..providers import ProviderUnavailable, check_e2b
    from .e2b import E2BSandboxProvider

    provider = E2BSandboxProvider(parent=parent)
    try:
        check_e2b(provider.api_key)
    except Exception as exc:
        raise ProviderUnavailable(str(exc)) from None
    return provider


__all__ = ["e2b", "isolated_local", "process_local"]
