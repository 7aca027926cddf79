"""BuildSpec: parse and validate what a client asks to build.

Validation lives here, not in handlers, so the REST API, the Python client and
the magics all get the same rules and the same ``field`` in their errors.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .errors import SpecError, TooLarge
from .masking import MASK

PROVIDERS = ("local", "e2b")
MAX_NAME = 200
MAX_STEPS = 100
MAX_COMMAND = 100_000
MAX_FILES = 1_000
MAX_FILES_BYTES = 10 * 1024 * 1024
MAX_ENV = 200
#: Linux refuses to start a process with one environment string over 128 KiB (E2BIG).
MAX_ENV_ENTRY = 128 * 1024
#: Paths of the spec (workspace, inline files, artifact globs): PATH_MAX, NAME_MAX, and a
#: depth no project needs, so no path can fail in the file system with "name too long".
MAX_PATH_BYTES = 4096
MAX_PATH_PART_BYTES = 255
MAX_PATH_DEPTH = 128
MAX_GLOBS = 1_000
#: The stored spec (``Build.spec`` as JSON) by default; ``c.BuildService.max_spec_bytes``.
MAX_SPEC_BYTES = 12 * 1024 * 1024
#: What a list shows of each command (``spec_summary``).
SUMMARY_TEXT = 200
SUMMARY_GLOBS = 20
MAX_TIMEOUT = 7 * 24 * 3600.0
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOP_LEVEL = {
    "name", "provider", "workspace", "files", "steps", "env", "timeout", "artifacts", "preview",
    "network",
}  # fmt: skip
#: A provider's name (the registered ones are checked when the build is created).
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class StepSpec:
    run: str
    name: str | None = None
    timeout: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": self.run}
        if self.name is not None:
            out["name"] = self.name
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out


@dataclass(frozen=True)
class ArtifactSpec:
    paths: tuple[str, ...]
    exclude: tuple[str, ...] | None = None  # None: the default excludes apply
    when: str = "success"  # or "always"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"paths": list(self.paths), "when": self.when}
        if self.exclude is not None:
            out["exclude"] = list(self.exclude)
        return out


@dataclass(frozen=True)
class PreviewSpec:
    command: str
    port: int | None = None
    path: str = "/"
    ready_timeout: float = 60.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": self.command,
            "path": self.path,
            "ready_timeout": self.ready_timeout,
        }
        if self.port is not None:
            out["port"] = self.port
        return out


@dataclass(frozen=True)
class BuildSpec:
    steps: tuple[StepSpec, ...]
    name: str | None = None
    provider: str | None = None
    workspace: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: frozenset[str] = frozenset()
    timeout: float | None = None
    artifacts: ArtifactSpec | None = None
    preview: PreviewSpec | None = None
    #: False: the build gets no network at all (providers that can do it).
    network: bool = True

    @property
    def secret_values(self) -> list[str]:
        """Values to mask wherever output could show them."""
        return [self.env[k] for k in self.secret_env if self.env.get(k)]

    def to_json(self) -> dict[str, Any]:
        """The spec as stored and returned: secret values are never included."""
        env: dict[str, Any] = {}
        for key, value in self.env.items():
            env[key] = {"value": MASK, "secret": True} if key in self.secret_env else value
        out: dict[str, Any] = {"steps": [s.to_json() for s in self.steps]}
        for key, val in (
            ("name", self.name),
            ("provider", self.provider),
            ("workspace", self.workspace),
            ("timeout", self.timeout),
        ):
            if val is not None:
                out[key] = val
        if self.files:
            out["files"] = dict(self.files)
        if env:
            out["env"] = env
        if self.artifacts is not None:
            out["artifacts"] = self.artifacts.to_json()
        if self.preview is not None:
            out["preview"] = self.preview.to_json()
        if not self.network:
            out["network"] = False
        return out


def parse_spec(data: Any, *, max_bytes: int = MAX_SPEC_BYTES) -> BuildSpec:
    """Validate a decoded JSON BuildSpec; raise :class:`SpecError` naming the field, or
    :class:`TooLarge` when it (as stored: :meth:`BuildSpec.to_json`) exceeds ``max_bytes``."""
    spec = _parse(data)
    size = len(json.dumps(spec.to_json(), separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise TooLarge(
            f"the build spec holds {size} bytes; at most {max_bytes} are stored",
            code="spec_too_large",
        )
    return spec


def _parse(data: Any) -> BuildSpec:
    if not isinstance(data, dict):
        raise SpecError("the build spec must be a JSON object", code="invalid_body")
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise SpecError(f"unknown field {unknown[0]!r}", field=unknown[0], code="unknown_field")
    env, secret = _env(data.get("env"))
    return BuildSpec(
        name=_optional_text(data.get("name"), "name", MAX_NAME),
        provider=_provider(data.get("provider")),
        workspace=_workspace(data.get("workspace")),
        files=_files(data.get("files")),
        steps=_steps(data.get("steps")),
        env=env,
        secret_env=secret,
        timeout=_timeout(data.get("timeout"), "timeout"),
        artifacts=_artifacts(data.get("artifacts")),
        preview=_preview(data.get("preview")),
        network=_network(data.get("network", True)),
    )


def _optional_text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"{name} must be a string", field=name)
    if len(value) > limit or "\x00" in value:
        raise SpecError(f"{name} must be at most {limit} characters, without NUL", field=name)
    return value


def _provider(value: Any) -> str | None:
    if value is None or value == "auto":
        return None
    if not isinstance(value, str) or not PROVIDER_NAME.match(value):
        raise SpecError(
            f"provider must be a provider's name, e.g. {', '.join(PROVIDERS)} (or auto)",
            field="provider",
            code="invalid_provider",
        )
    return value


def _network(value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError("network must be true or false", field="network")
    return value


def relative_path(value: Any, name: str) -> str:
    """A clean relative POSIX path: no absolute path, no ``..``, no NUL, no backslash."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(
            f"{name} must be a non-empty relative path", field=name, code="invalid_path"
        )
    if "\x00" in value or "\\" in value:
        raise SpecError(f"{name} contains a forbidden character", field=name, code="invalid_path")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise SpecError(
            f"{name} is longer than {MAX_PATH_BYTES} bytes", field=name, code="invalid_path"
        )
    path = PurePosixPath(value)
    parts = path.parts
    if len(parts) > MAX_PATH_DEPTH or any(
        len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_PART_BYTES for part in parts
    ):
        raise SpecError(
            f"{name} is deeper than {MAX_PATH_DEPTH} levels or has a name longer than "
            f"{MAX_PATH_PART_BYTES} bytes",
            field=name,
            code="invalid_path",
        )
    if path.is_absolute() or ".." in parts:
        raise SpecError(
            f"{name} must be relative and stay inside its root (no '..')",
            field=name,
            code="invalid_path",
        )
    normal = path.as_posix()
    return "." if normal in ("", ".") else normal


def _workspace(value: Any) -> str | None:
    if value is None:
        return None
    return relative_path(value, "workspace")


def _files(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError("files must be an object of path -> text", field="files")
    if len(value) > MAX_FILES:
        raise TooLarge(f"files may hold at most {MAX_FILES} entries", field="files")
    out: dict[str, str] = {}
    total = 0
    for raw_path, text in value.items():
        where = f"files.{raw_path[:MAX_PATH_BYTES]}"
        path = relative_path(raw_path, where)
        if path == ".":
            raise SpecError(f"{where} must name a file", field=where, code="invalid_path")
        if not isinstance(text, str):
            raise SpecError(f"{where} must be a string", field=where)
        total += len(text.encode("utf-8", "surrogatepass"))
        if total > MAX_FILES_BYTES:
            raise TooLarge(f"files may hold at most {MAX_FILES_BYTES} bytes", field="files")
        out[path] = text
    return out


def _steps(value: Any) -> tuple[StepSpec, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError("steps must be a non-empty list", field="steps", code="missing_steps")
    if len(value) > MAX_STEPS:
        raise SpecError(f"at most {MAX_STEPS} steps", field="steps")
    steps = []
    for index, item in enumerate(value):
        where = f"steps[{index}]"
        if isinstance(item, str):
            item = {"run": item}
        if not isinstance(item, dict):
            raise SpecError(f"{where} must be a string or an object", field=where)
        extra = sorted(set(item) - {"name", "run", "timeout"})
        if extra:
            raise SpecError(f"{where}: unknown field {extra[0]!r}", field=f"{where}.{extra[0]}")
        run = item.get("run")
        if not isinstance(run, str) or not run.strip():
            raise SpecError(f"{where}.run must be a non-empty command", field=f"{where}.run")
        if len(run) > MAX_COMMAND or "\x00" in run:
            raise SpecError(f"{where}.run is too long or has NUL", field=f"{where}.run")
        steps.append(
            StepSpec(
                run=run,
                name=_optional_text(item.get("name"), f"{where}.name", MAX_NAME),
                timeout=_timeout(item.get("timeout"), f"{where}.timeout"),
            )
        )
    return tuple(steps)


def _env(value: Any) -> tuple[dict[str, str], frozenset[str]]:
    """``{"K": "v"}`` or ``{"K": {"value": "v", "secret": true}}``."""
    if value is None:
        return {}, frozenset()
    if not isinstance(value, dict):
        raise SpecError("env must be an object of NAME -> string", field="env")
    if len(value) > MAX_ENV:
        raise SpecError(f"env may hold at most {MAX_ENV} variables", field="env")
    env: dict[str, str] = {}
    secret: set[str] = set()
    for key, raw in value.items():
        where = f"env.{str(key)[:MAX_NAME]}"
        if not isinstance(key, str) or len(key) > MAX_NAME or not ENV_NAME.match(key):
            raise SpecError(f"{where}: not a valid variable name", field=where, code="invalid_env")
        if isinstance(raw, dict):
            extra = set(raw) - {"value", "secret"}
            if extra or not isinstance(raw.get("secret", False), bool):
                raise SpecError(
                    f"{where} must be {{value, secret}}", field=where, code="invalid_env"
                )
            if raw.get("secret"):
                secret.add(key)
            raw = raw.get("value")
        if not isinstance(raw, str) or "\x00" in raw:
            raise SpecError(
                f"{where} must be a string without NUL", field=where, code="invalid_env"
            )
        if len(key) + len(raw.encode("utf-8", "surrogatepass")) + 1 > MAX_ENV_ENTRY:
            raise TooLarge(
                f"{where}: a variable may hold at most {MAX_ENV_ENTRY} bytes", field=where
            )
        env[key] = raw
    return env, frozenset(secret)


def _timeout(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{name} must be a number of seconds", field=name, code="invalid_timeout")
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TIMEOUT:
        raise SpecError(
            f"{name} must be between 0 and {int(MAX_TIMEOUT)} seconds",
            field=name,
            code="invalid_timeout",
        )
    return seconds


def _globs(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{name} must be a list of glob patterns", field=name)
    if len(value) > MAX_GLOBS:
        raise SpecError(f"{name} may hold at most {MAX_GLOBS} patterns", field=name)
    for pattern in value:
        relative_path(pattern, name)
    return tuple(value)


def _artifacts(value: Any) -> ArtifactSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError("artifacts must be an object", field="artifacts")
    extra = sorted(set(value) - {"paths", "exclude", "when"})
    if extra:
        raise SpecError(f"artifacts: unknown field {extra[0]!r}", field=f"artifacts.{extra[0]}")
    when = value.get("when", "success")
    if when not in ("success", "always"):
        raise SpecError("artifacts.when must be 'success' or 'always'", field="artifacts.when")
    exclude = value.get("exclude")
    return ArtifactSpec(
        paths=_globs(value.get("paths"), "artifacts.paths"),
        exclude=None if exclude is None else _globs(exclude, "artifacts.exclude"),
        when=when,
    )


def _preview(value: Any) -> PreviewSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError("preview must be an object", field="preview")
    extra = sorted(set(value) - {"command", "port", "path", "ready_timeout"})
    if extra:
        raise SpecError(f"preview: unknown field {extra[0]!r}", field=f"preview.{extra[0]}")
    command = value.get("command")
    if not isinstance(command, str) or not command.strip():
        raise SpecError("preview.command must be a non-empty command", field="preview.command")
    if len(command) > MAX_COMMAND or "\x00" in command:
        raise SpecError("preview.command is too long or has NUL", field="preview.command")
    port = value.get("port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise SpecError("preview.port must be an integer 1-65535", field="preview.port")
    path = value.get("path", "/")
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or "\x00" in path
        or len(path) > MAX_PATH_BYTES
    ):
        raise SpecError("preview.path must be a path starting with '/'", field="preview.path")
    ready = _timeout(value.get("ready_timeout"), "preview.ready_timeout")
    return PreviewSpec(command=command, port=port, path=path, ready_timeout=ready or 60.0)


def spec_summary(spec: Any) -> Any:
    """What a list of builds shows of a stored spec: its shape, without what can be large.

    Inline ``files`` and ``env`` are left out, each command (``run``, ``preview.command``)
    is cut to ``SUMMARY_TEXT`` characters and each glob list to ``SUMMARY_GLOBS`` patterns;
    the rest (name, provider, workspace, timeouts, preview path) is kept. ``GET`` of the
    build returns the whole spec.
    """
    if not isinstance(spec, dict):
        return spec
    out = {k: v for k, v in spec.items() if k not in ("files", "env", "steps")}
    steps = spec.get("steps")
    if isinstance(steps, list):
        out["steps"] = [_summary_step(step) for step in steps]
    preview = spec.get("preview")
    if isinstance(preview, dict) and isinstance(preview.get("command"), str):
        out["preview"] = {**preview, "command": preview["command"][:SUMMARY_TEXT]}
    artifacts = spec.get("artifacts")
    if isinstance(artifacts, dict):
        out["artifacts"] = {
            k: v[:SUMMARY_GLOBS] if isinstance(v, list) else v for k, v in artifacts.items()
        }
    return out


def _summary_step(step: Any) -> Any:
    if isinstance(step, dict) and isinstance(step.get("run"), str):
        return {**step, "run": step["run"][:SUMMARY_TEXT]}
    return step
