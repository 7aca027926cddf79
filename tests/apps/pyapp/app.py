"""A small web app as a user's build would serve it, with nothing preview-specific in it.

Absolute asset paths (``/static/...``), a module script importing another module, an image,
``fetch`` GET and JSON POST to its own API, a WebSocket echo, a cookie of its own set by the
server, and ``localStorage`` (in ``static/app.js``). Runs on ``$PORT`` at 127.0.0.1, at
``/``: ``python3 app.py``. Only tornado (a Jupyter dependency) is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import tornado.web
import tornado.websocket

HERE = Path(__file__).parent
COOKIE = "pyapp_session"


class Index(tornado.web.RequestHandler):
    def get(self) -> None:
        # The app's own cookie, as any web app sets one.
        self.set_cookie(COOKIE, "from-the-server", path="/", httponly=True, samesite="Lax")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write((HERE / "index.html").read_bytes())


class Data(tornado.web.RequestHandler):
    def get(self) -> None:
        # Which cookies reached the app: its own only (never Jupyter's).
        self.write({"items": [1, 2, 3], "cookies": sorted(self.request.cookies)})


class Echo(tornado.web.RequestHandler):
    def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        own = self.get_cookie(COOKIE)
        self.write({"echo": body, "method": "POST", "own_cookie": own})


class Ws(tornado.websocket.WebSocketHandler):
    # tornado's own origin check (Origin must match Host) stays on, as in most apps.

    def on_message(self, message: str | bytes) -> None:
        self.write_message(f"echo: {message!s}")


def make_app() -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/", Index),
            (r"/api/data", Data),
            (r"/api/echo", Echo),
            (r"/ws", Ws),
            (r"/static/(.*)", tornado.web.StaticFileHandler, {"path": str(HERE / "static")}),
        ]
    )


async def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    make_app().listen(port, address="127.0.0.1")
    print(f"pyapp listening on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
