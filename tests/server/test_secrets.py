"""Secrets stay secret through the real API: across piece boundaries of a long line, line
by line for a multi-line secret, in every read path, and never in the database file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, texts

SECRET = "s3cr3t-T0ken-0123456789abcdef"
PEM = "\n".join(
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
        "QyNTUxOQAAACBp1uW0z7rKmZ3xJ6tVvL0nQ8yqB2cXfR5kH9sT4mNwAAAAJhF2k4yRdpO",
        "MgAAAAtzc2gtZWQyNTUxOQAAACBp1uW0z7rKmZ3xJ6tVvL0nQ8yqB2cXfR5kH9sT4mNw",
        "-----END OPENSSH PRIVATE KEY-----",
    ]
)


def db_files(agentbuild_config: dict[str, Any]) -> list[Path]:
    """The SQLite database and its WAL: every byte the store ever wrote."""
    path = Path(agentbuild_config["db_url"].split("///", 1)[1])
    return [p for p in (path, Path(f"{path}-wal")) if p.exists()]


async def text_log(api: Api, build_id: str) -> str:
    resp = await api.fetch(
        "agentbuild", "api", "builds", build_id, "logs", params={"format": "text"}
    )
    return str(resp.body.decode())


@pytest.mark.parametrize("before", [65530, 65536 - len(SECRET) // 2, 65536 * 2 - 3])
async def test_a_secret_straddling_a_piece_boundary_is_masked(
    api: Api, agentbuild_config: dict[str, Any], before: int
) -> None:
    # 'x' * before + secret: a 64 KiB piece boundary falls inside the secret.
    script = f"head -c {before} /dev/zero | tr '\\0' x; printf '%s tail\\n' \"$TOKEN\""
    build = await api.create(
        {"steps": [script], "env": {"TOKEN": {"value": SECRET, "secret": True}}}
    )
    entries, _ = await api.stream(build["id"])
    final = await api.get(build["id"])
    assert final["status"] == "succeeded"
    glued = "".join(texts(entries))
    assert glued == "x" * before + "*** tail"
    assert all(len(t.encode()) <= 65536 + len(SECRET) for t in texts(entries))
    assert SECRET not in json.dumps(entries)
    assert await api.all_logs(build["id"]) == entries
    full = await text_log(api, build["id"])
    assert SECRET not in full and full == "x" * before + "*** tail\n"
    assert SECRET not in json.dumps(final)
    for path in db_files(agentbuild_config):
        assert SECRET.encode() not in path.read_bytes(), path


async def test_each_line_of_a_multi_line_secret_is_masked(
    api: Api, agentbuild_config: dict[str, Any]
) -> None:
    script = 'printf "key: %s\\n" "$KEY"; echo "$KEY" | tail -n 2 >&2; echo done'
    build = await api.create({"steps": [script], "env": {"KEY": {"value": PEM, "secret": True}}})
    entries, _ = await api.stream(build["id"])
    assert (await api.get(build["id"]))["status"] == "succeeded"
    out = [e["text"] for e in entries if e["kind"] == "log" and e["stream"] == "stdout"]
    err = [e["text"] for e in entries if e["kind"] == "log" and e["stream"] == "stderr"]
    assert out == ["key: ***", "***", "***", "***", "***", "done"]
    assert err == ["***", "***"]
    blob = json.dumps(entries) + await text_log(api, build["id"])
    stored = b"".join(path.read_bytes() for path in db_files(agentbuild_config))
    for line in PEM.splitlines():
        assert line not in blob
        assert line.encode() not in stored


async def test_a_failed_build_stores_no_secret(api: Api, agentbuild_config: dict[str, Any]) -> None:
    """The stored spec shows the mask, the row and its events hold no secret."""
    build = await api.create(
        {
            "steps": ['echo "$TOKEN" >&2; exit 3'],
            "env": {"TOKEN": {"value": SECRET, "secret": True}},
        }
    )
    entries, _ = await api.stream(build["id"])
    final = await api.get(build["id"])
    assert final["status"] == "failed" and final["exit_code"] == 3
    assert final["spec"]["env"]["TOKEN"] == {"value": "***", "secret": True}
    assert texts(entries) == ["***"]
    for path in db_files(agentbuild_config):
        assert SECRET.encode() not in path.read_bytes(), path
