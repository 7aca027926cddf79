"""Drive a kernel through the Jupyter server's kernel WebSocket, as a front end does.

Messages are read one at a time; every comm message updates :attr:`KernelSession.comms`
(widget model states), whoever caused it. Waiting is always for a message or a state,
bounded by a timeout: never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

State = dict[str, Any]


@dataclass
class Execution:
    msg_id: str
    reply: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # execute_result data
    displays: list[dict[str, Any]] = field(default_factory=list)  # display_data data
    error: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return str(self.reply.get("status"))

    @property
    def text(self) -> str:
        """Every text/plain result and the stdout stream."""
        plain = [r.get("text/plain", "") for r in self.results + self.displays]
        return self.stdout + "\n".join(plain)


class KernelSession:
    def __init__(self, ws: Any, kernel_id: str) -> None:
        self.ws = ws
        self.kernel_id = kernel_id
        self.session = uuid.uuid4().hex
        self.comms: dict[str, State] = {}
        self.comm_msgs = 0
        self.comm_bytes = 0
        self.closed_comms: set[str] = set()

    async def recv(self) -> dict[str, Any]:
        raw = await self.ws.read_message()
        if raw is None:
            raise ConnectionError("the kernel WebSocket closed")
        msg: dict[str, Any] = json.loads(raw)
        kind = msg.get("msg_type") or msg["header"]["msg_type"]
        content = msg.get("content", {})
        if kind == "comm_open":
            self.comms[content["comm_id"]] = dict(content.get("data", {}).get("state", {}))
        elif kind == "comm_msg":
            self.comm_msgs += 1
            self.comm_bytes += len(raw)
            data = content.get("data", {})
            if data.get("method") == "update" and content["comm_id"] in self.comms:
                self.comms[content["comm_id"]].update(data.get("state", {}))
        elif kind == "comm_close":
            self.closed_comms.add(content["comm_id"])
        return msg

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "test",
            "session": self.session,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        }
        msg = {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": channel,
            "buffers": [],
        }
        self.ws.write_message(json.dumps(msg))
        return msg_id

    def send_execute(self, code: str) -> str:
        return self.send(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )

    async def execute(self, code: str, within: float = 60.0) -> Execution:
        """Run ``code``; return once its reply and its final ``idle`` status have arrived."""
        return await self.collect(self.send_execute(code), within)

    async def collect(self, msg_id: str, within: float = 60.0) -> Execution:
        """The outputs, reply and idle status of the request ``msg_id``."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        result = Execution(msg_id)
        replied = idle = False

        async def collect() -> None:
            nonlocal replied, idle
            while not (replied and idle):
                msg = await self.recv()
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                content = msg["content"]
                if kind == "execute_reply":
                    replied = True
                    result.reply = content
                    result.seconds = loop.time() - began
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                elif kind == "stream":
                    if content["name"] == "stdout":
                        result.stdout += content["text"]
                    else:
                        result.stderr += content["text"]
                elif kind == "execute_result":
                    result.results.append(content["data"])
                elif kind == "display_data":
                    result.displays.append(content["data"])
                elif kind == "error":
                    result.error = content

        await asyncio.wait_for(collect(), within)
        return result

    async def wait_for(self, predicate: Callable[[], bool], within: float = 60.0) -> None:
        """Read messages until ``predicate()`` holds."""

        async def loop() -> None:
            while not predicate():
                await self.recv()

        await asyncio.wait_for(loop(), within)

    def with_class(self, dom_class: str) -> list[State]:
        return [s for s in self.comms.values() if dom_class in s.get("_dom_classes", ())]

    def status_values(self) -> list[str]:
        return [str(s.get("value", "")) for s in self.with_class("agentbuild-status")]

    def log_html(self) -> str:
        return "\n".join(str(s.get("value", "")) for s in self.with_class("agentbuild-log-block"))
