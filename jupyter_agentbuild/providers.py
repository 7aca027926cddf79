"""Choosing the sandbox provider explicitly (lessons rule 1).

The predecessor switched to the real cloud whenever its key differed from one
placeholder. Here the choice is ``local``, ``e2b`` or ``auto``; ``auto`` picks E2B
only for a key that looks real, and a key is never logged or returned.
"""

from __future__ import annotations

import re

from .errors import ConfigError

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
