"""A stdlib-only HTTP/1.1 + WebSocket app that shows what reached it: the preview under test.

The tests pass this file's text as a build's inline file and run it as the preview
(``python app.py``); ``benchmarks/bench_proxy.py`` runs it as the backend it measures.
It listens on 127.0.0.1:$PORT (keep-alive, pipelining not needed) and answers:

    GET  /                     a small HTML page
    ANY  /echo[...]            JSON: method, target, path, query, headers (pairs), body size+sha256
    ANY  /status/NNN           that status (with a short body unless 1xx/204/304)
    GET  /redirect?to=X        302 to X ("{self}" in X: http://127.0.0.1:PORT); &code=NNN
    GET  /loop                 302 to /loop (an app that redirects forever)
    GET  /cookies              sets its own cookies and tries to set Jupyter's
    GET  /hop                  a response carrying hop-by-hop headers
    GET  /headers?h=N:V&h=...  a response carrying the headers given (each ``h``, in order)
    GET  /big?size=N           N bytes (Content-Length), written 1 MiB at a time
    GET  /random?size=N        N pseudo-random bytes (Content-Length), the same for the same
                               N: random.Random(N).randbytes(N), written 1 MiB at a time
    GET  /chunked?n=K&size=S   K chunks of S bytes (Transfer-Encoding: chunked)
    GET  /slow?delay=S         headers after S seconds
    GET  /slowbody?delay=S&size=N  headers and N bytes, then S seconds, then N more
    GET  /tiny                 "ok"
    GET  /unlisten             answers, then stops listening and closes every connection
    GET  /exit?code=N          answers, then exits with status N
    GET  /ws                   WebSocket echo; "__headers__" answers the handshake as JSON,
                               "__close__ CODE" closes with CODE
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import sys
from urllib.parse import parse_qsl, urlsplit

PORT = int(os.environ["PORT"])
BLOCK = b"\0" * (1 << 20)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REASONS = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    400: "Bad Request",
    404: "Not Found",
    418: "I'm a teapot",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
connections: set[asyncio.StreamWriter] = set()
server: asyncio.AbstractServer | None = None


class Request:
    def __init__(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.lower = {k.lower(): v for k, v in headers}
        parts = urlsplit(target)
        self.path = parts.path
        self.query = parts.query
        self.args = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.body_size = 0
        self.body_sha = hashlib.sha256()


async def read_body(reader: asyncio.StreamReader, req: Request) -> None:
    if "chunked" in req.lower.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            await read_exactly(reader, req, size)
            await reader.readexactly(2)
    length = int(req.lower.get("content-length", "0") or 0)
    await read_exactly(reader, req, length)


async def read_exactly(reader: asyncio.StreamReader, req: Request, size: int) -> None:
    while size > 0:
        data = await reader.read(min(size, 1 << 20))
        if not data:
            raise ConnectionError("body cut short")
        req.body_size += len(data)
        req.body_sha.update(data)
        size -= len(data)


def head(status: int, headers: list[tuple[str, str]], reason: str | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Whatever')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send(
    writer: asyncio.StreamWriter,
    req: Request,
    status: int,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    out = list(headers or [])
    if status not in (204, 304) and status >= 200:
        out.append(("Content-Length", str(len(body))))
        out.append(("Content-Type", content_type))
    if req.method == "HEAD" or status in (204, 304):
        body = b""
    writer.write(head(status, out) + body)
    await writer.drain()


async def route(req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Answer ``req``; False when the connection must not be reused.

    One flat dispatch over the routes the module docstring lists (longer than a function
    should be): split up, the table a reader checks a test against would be scattered."""
    path, args = req.path, req.args
    if path == "/tiny":
        await send(writer, req, 200, b"ok")
    elif path.startswith("/echo"):
        body = {
            "method": req.method,
            "target": req.target,
            "path": req.path,
            "query": req.query,
            "headers": req.headers,
            "body_size": req.body_size,
            "body_sha256": req.body_sha.hexdigest(),
        }
        await send(writer, req, 200, json.dumps(body).encode(), content_type="application/json")
    elif path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        await send(writer, req, code, f"status {code}".encode(), [("X-Status", str(code))])
    elif path == "/redirect":
        to = args.get("to", "/").replace("{self}", f"http://127.0.0.1:{PORT}")
        await send(writer, req, int(args.get("code", "302")), b"", [("Location", to)])
    elif path == "/loop":
        await send(writer, req, 302, b"", [("Location", "/loop")])
    elif path == "/cookies":
        cookies = [
            "app_session=abc123; Path=/; HttpOnly",
            "theme=dark; Path=/settings",
            "plain=1",
            "_xsrf=evil; Path=/",
            "username-127-0-0-1-8888=evil; Path=/",
            "jupyterhub-session-id=evil; Path=/",
            "__Host-jupyterhub-hub-login=evil; Path=/; Secure",
        ]
        await send(writer, req, 200, b"cookies", [("Set-Cookie", c) for c in cookies])
    elif path == "/hop":
        hop = [
            ("Connection", "X-Resp-Hop"),
            ("X-Resp-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", "Basic"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("X-Content-Type-Options", "none"),
            ("Content-Security-Policy", "default-src 'self'"),
        ]
        await send(writer, req, 200, b"hop", hop)
    elif path == "/headers":
        given = [v.partition(":") for k, v in parse_qsl(req.query) if k == "h"]
        await send(writer, req, 200, b"headers", [(n.strip(), v.strip()) for n, _, v in given])
    elif path == "/big":
        size = int(args.get("size", "0"))
        writer.write(
            head(200, [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")])
        )
        if req.method != "HEAD":
            while size > 0:
                piece = BLOCK if size >= len(BLOCK) else BLOCK[:size]
                writer.write(piece)
                size -= len(piece)
                await writer.drain()
        await writer.drain()
    elif path == "/random":
        size = int(args.get("size", "0"))
        body = random.Random(size).randbytes(size)
        writer.write(head(200, [("Content-Length", str(size))]))
        for at in range(0, size, 1 << 20):
            writer.write(body[at : at + (1 << 20)])
            await writer.drain()
    elif path == "/chunked":
        n, size = int(args.get("n", "3")), int(args.get("size", "5"))
        writer.write(head(200, [("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")]))
        for i in range(n):
            piece = bytes([97 + i % 26]) * size
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    elif path == "/slow":
        await asyncio.sleep(float(args.get("delay", "1")))
        await send(writer, req, 200, b"slow")
    elif path == "/slowbody":
        size = int(args.get("size", "10"))
        writer.write(head(200, [("Content-Length", str(2 * size))]) + b"x" * size)
        await writer.drain()
        await asyncio.sleep(float(args.get("delay", "1")))
        writer.write(b"y" * size)
        await writer.drain()
    elif path == "/unlisten":
        await send(writer, req, 200, b"bye", [("Connection", "close")])
        if server is not None:
            server.close()
        for other in list(connections):
            other.close()
        return False
    elif path == "/exit":
        await send(writer, req, 200, b"exiting", [("Connection", "close")])
        sys.stdout.flush()
        os._exit(int(args.get("code", "0")))
    elif path == "/ws":
        await websocket(req, reader, writer)
        return False
    elif path == "/":
        await send(writer, req, 200, b"<h1>hello preview</h1>", content_type="text/html")
    else:
        await send(writer, req, 404, b"not found")
    return True


# --------------------------------------------------------------------------- WebSocket


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return header + payload


def unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


async def websocket(
    req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The handshake, then an echo of frames (and the ``__headers__``/``__close__``
    commands): one loop over a frame's life, kept whole for reading."""
    key = req.lower.get("sec-websocket-key", "")
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ]
    offered = [
        p.strip() for p in req.lower.get("sec-websocket-protocol", "").split(",") if p.strip()
    ]
    if offered:
        headers.append(("Sec-WebSocket-Protocol", offered[-1]))
    if "cookie" in req.args:
        headers.append(("Set-Cookie", f"{req.args['cookie']}=1; Path=/"))
    greeting = req.args.get("greet")  # a first message in the same packet as the 101
    writer.write(head(101, headers) + (frame(1, greeting.encode()) if greeting else b""))
    await writer.drain()
    message: list[bytes] = []
    kind = 1
    while True:
        b0, b1 = await reader.readexactly(2)
        fin, opcode = b0 & 0x80, b0 & 0x0F
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if b1 & 0x80 else b""
        data = await reader.readexactly(n)
        if mask:
            data = unmask(data, mask)
        if opcode == 8:
            writer.write(frame(8, data[:2]))
            await writer.drain()
            return
        if opcode == 9:
            writer.write(frame(10, data))
            continue
        if opcode == 10:
            continue
        if opcode in (1, 2):
            kind, message = opcode, [data]
        else:
            message.append(data)
        if not fin:
            continue
        payload = b"".join(message)
        if kind == 1 and payload == b"__headers__":
            info = {"target": req.target, "headers": req.headers, "protocols": offered}
            writer.write(frame(1, json.dumps(info).encode()))
        elif kind == 1 and payload.startswith(b"__close__ "):
            code = int(payload.split()[1])
            writer.write(frame(8, code.to_bytes(2, "big") + b"bye"))
            await writer.drain()
            return
        else:
            writer.write(frame(kind, payload))
        await writer.drain()


# --------------------------------------------------------------------------- server


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    connections.add(writer)
    try:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = raw.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = []
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers.append((name.strip(), value.strip()))
            req = Request(method, target, headers)
            await read_body(reader, req)
            keep = await route(req, reader, writer)
            if (
                not keep
                or version != "HTTP/1.1"
                or req.lower.get("connection", "").lower() == "close"
            ):
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        connections.discard(writer)
        writer.close()


async def main() -> None:
    global server
    server = await asyncio.start_server(handle, "127.0.0.1", PORT, limit=1 << 20, backlog=512)
    print(f"backend listening on 127.0.0.1:{PORT}", flush=True)
    print("base", os.environ.get("AGENTBUILD_PREVIEW_BASE", ""), flush=True)
    async with server:
        try:
            await server.serve_forever()
        except asyncio.CancelledError:
            pass
    await asyncio.Event().wait()  # after /unlisten: alive, but not listening


if __name__ == "__main__":
    # a backend the tests run as a subprocess: its own loop, not a test
    asyncio.run(main())
