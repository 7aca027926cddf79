"""What a step's environment may hold: the allow-list, the secrets never passed on, and
the build marker the reaper looks for."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import SandboxError

DEFAULT_ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ")

#: Server variables that never reach a step, even when listed in ``env_passthrough``.
SECRET_ENV = re.compile(r"^(JUPYTER_TOKEN|JPY_.*|JUPYTERHUB_.*|AGENTBUILD_.*|E2B_API_KEY)$")
#: The marker every step process inherits; :meth:`LocalSandboxProvider.reap` looks for it.
MARKER_ENV = "AGENTBUILD_BUILD_ID"


def check_env(env: Mapping[str, str], what: str) -> None:
    for key, value in env.items():
        if (
            not isinstance(key, str)
            or not key
            or "=" in key
            or "\x00" in key
            or not isinstance(value, str)
            or "\x00" in value
        ):
            raise SandboxError(f"{what}: invalid environment variable {key!r}")


def command_environment(
    command: str, base: Mapping[str, str], extra: Mapping[str, str] | None
) -> dict[str, str]:
    """Check a command about to run and build its environment: ``base``, then the
    command's own variables (checked). Shared by every provider, so they refuse alike."""
    if not isinstance(command, str) or "\x00" in command:
        raise SandboxError("the command must be text without NUL")
    env = dict(base)
    if extra:
        check_env(extra, "step env")
        env.update(extra)
    return env
