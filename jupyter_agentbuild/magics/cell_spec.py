"""The BuildSpec a ``%%agentbuild`` cell sends, from its parsed options and its body."""

from __future__ import annotations

import argparse
import os
import posixpath
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError

from .arguments import CELL_USAGE


def secret_aware_env(
    items: list[str], environ: dict[str, str] | os._Environ[str]
) -> dict[str, Any]:
    """``--env`` items: ``K=V`` as given, a bare ``K`` as this kernel's ``$K``, sent as a secret."""
    env: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"--env needs K=V or K, got {item!r}\nusage: {CELL_USAGE}")
        if sep:
            env[key] = value
        elif key in environ:
            env[key] = {"value": environ[key], "secret": True}
        else:
            raise UsageError(f"--env {key}: ${key} is not set in this kernel")
    return env


def file_contents(paths: list[str]) -> dict[str, str]:
    """``--file`` paths read as text, keyed by a relative path that cannot leave the workspace."""
    files: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"--file {raw}: no such file") from None
        except (UnicodeDecodeError, IsADirectoryError):
            raise UsageError(
                f"--file {raw}: only text files can be sent; use --workspace for directories "
                "and binary files"
            ) from None
        name = raw if not path.is_absolute() and ".." not in path.parts else path.name
        files[posixpath.normpath(name.replace(os.sep, "/"))] = text
    return files


def notebook_dir(session_path: str | None) -> str | None:
    """The notebook's directory relative to the Jupyter root, from the kernel's session path."""
    if not session_path or os.path.isabs(session_path) or "://" in session_path:
        return None
    parent = posixpath.dirname(session_path.replace(os.sep, "/"))
    return parent or "."


def build_spec(
    opts: argparse.Namespace,
    script: str,
    *,
    notebook_path: str | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
) -> dict[str, Any]:
    """The BuildSpec for a ``%%agentbuild`` cell."""
    if not script.strip():
        raise UsageError(
            f"the cell is empty: write the build script below the magic\nusage: {CELL_USAGE}"
        )
    spec: dict[str, Any] = {"steps": [{"name": opts.name or "cell", "run": script}]}
    if opts.name:
        spec["name"] = opts.name
    workspace = None if opts.no_workspace else opts.workspace or notebook_dir(notebook_path)
    if workspace:
        spec["workspace"] = workspace
    if opts.file:
        spec["files"] = file_contents(opts.file)
    if opts.env:
        spec["env"] = secret_aware_env(opts.env, os.environ if environ is None else environ)
    if opts.provider:
        spec["provider"] = opts.provider
    if opts.timeout is not None:
        spec["timeout"] = opts.timeout
    if opts.artifacts:
        spec["artifacts"] = {"paths": opts.artifacts}
    if opts.preview:
        preview: dict[str, Any] = {"command": opts.preview}
        if opts.port is not None:
            preview["port"] = opts.port
        if opts.preview_path:
            preview["path"] = opts.preview_path
        spec["preview"] = preview
    return spec
