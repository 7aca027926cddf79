"""Who owns a build: a stable name for the requesting Jupyter identity.

jupyter_server's own IdentityProviders give a token-authenticated request without
a cookie a fresh random anonymous user each time, so on such a personal server
every request belongs to one owner: the server's user. Any other provider
(JupyterHub's, or a custom one) names real users, and its username is the owner.
"""

from __future__ import annotations

import getpass
from typing import Any

from jupyter_server.auth.identity import (
    IdentityProvider,
    LegacyIdentityProvider,
    PasswordIdentityProvider,
)

PERSONAL_PROVIDERS = (IdentityProvider, PasswordIdentityProvider, LegacyIdentityProvider)


def server_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return "jupyter"


def request_owner(handler: Any) -> str:
    """The owner of an authenticated request to one of the extension's handlers: the one
    place that decides, so the API, the stream, the preview proxy and the static preview
    can never disagree about whose builds a request may see."""
    return owner_of(
        handler.identity_provider,
        handler.current_user,
        handler.settings["agentbuild"].personal_owner,
    )


def owner_of(identity_provider: Any, user: Any, personal_owner: str) -> str:
    """The owner for a request made by ``user`` (already authenticated)."""
    if type(identity_provider) in PERSONAL_PROVIDERS:
        return personal_owner
    name = getattr(user, "username", None)
    if not name:
        raise PermissionError("the identity provider returned a user without a username")
    return str(name)
