"""A preview process's port on the loopback interface: picking one, probing it, asking HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import psutil


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def port_open(port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=1.0
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def http_status(port: int, path: str, timeout: float) -> int | None:  # noqa: ASYNC109
    """The status of ``GET path`` on ``127.0.0.1:port``, or None (no HTTP answer in time)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: agentbuild-ready-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", "replace")
    writer = None
    try:
        async with asyncio.timeout(min(timeout, 10.0)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


def non_loopback_listeners(port: int) -> list[str]:
    """Addresses other than loopback on which something listens on TCP ``port``."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    found = []
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        ip = conn.laddr.ip
        if ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1"):
            continue
        found.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    return sorted(set(found))
